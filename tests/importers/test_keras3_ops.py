"""Issue #20, Keras 3 ``keras.ops`` nodes in .keras files: functional models that call ``keras.ops`` on
symbolic tensors, compared with Keras step by step for T = 1, 7, 50, and the refusals of operations
outside the table, each naming the operation and the reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rnnstream
from tests.importers.test_keras_coverage import LENGTHS, Case, assert_matches, assert_refused, build_saved

keras = pytest.importorskip("keras")
L = keras.layers
ops = keras.ops


def activations_and_arithmetic(k: Any) -> Any:
    inp = L.Input((None, 5))
    h = L.LSTM(8, return_sequences=True)(inp)
    y = ops.tanh(h * 2.0 + 1.0) - ops.relu(h) / 3.0
    return k.Model(inp, L.Dense(3)(1.0 - ops.sigmoid(-y)))


def tensor_products_and_concat(k: Any) -> Any:
    inp = L.Input((None, 4))
    h = L.GRU(6, return_sequences=True)(inp)
    g = L.Dense(6, activation="sigmoid")(inp)
    joined = ops.concatenate([ops.multiply(h, g), ops.maximum(h, g), ops.leaky_relu(h, 0.1)], axis=-1)
    return k.Model(inp, L.SimpleRNN(5, return_sequences=True)(joined))


def last_step_head(k: Any) -> Any:
    inp = L.Input((None, 3))
    h = L.LSTM(8, return_sequences=True)(inp)
    last = h[:, -1, :]
    return k.Model(inp, ops.softmax(L.Dense(4)(ops.reshape(last, (-1, 2, 4))), axis=-1))


def feature_slices_and_reductions(k: Any) -> Any:
    inp = L.Input((None, 6))
    h = L.GRU(8, return_sequences=True)(inp)
    mean = ops.mean(h, axis=-1, keepdims=True)
    top = ops.expand_dims(ops.max(h, axis=2), -1)
    head = L.Dense(3)(ops.concatenate([h[..., :3] * 0.5 - 0.1, mean, top], axis=-1))
    return k.Model(inp, [head, h[:, :, 1:7:2], h[:, -1, 4], ops.sum(ops.silu(h), axis=-1)])


CASES = [
    Case("activations_and_arithmetic", activations_and_arithmetic, (5,)),
    Case("tensor_products_and_concat", tensor_products_and_concat, (4,)),
    Case("last_step_head", last_step_head, (3,)),
    Case("feature_slices_and_reductions", feature_slices_and_reductions, (6,)),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Any, Path]:
    case: Case = request.param
    folder = tmp_path_factory.mktemp(case.name)
    return case, build_saved(keras, case, 7, folder, "model.keras", "model.h5"), folder


def test_keras_ops_are_operation_nodes(built: tuple[Case, Any, Path]) -> None:
    _, model, _ = built
    assert any(type(op).__module__.startswith("keras.src.ops") for op in model.operations)


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_file_with_keras_ops_steps_equal_keras(built: tuple[Case, Any, Path], suffix: str, T: int) -> None:
    case, model, folder = built
    assert_matches(rnnstream.load(folder / f"model{suffix}"), model, case, T)
    if T == 7 and suffix == ".keras":
        assert_matches(rnnstream.from_keras(model), model, case, T)


# -- refusals ---------------------------------------------------------------------------------------


def _one_op(op: Callable[[Any], Any]) -> Callable[[], Any]:
    def build() -> Any:
        inp = L.Input((None, 4))
        return keras.Model(inp, op(L.GRU(6, return_sequences=True)(inp)))

    return build


REFUSALS: list[tuple[str, Callable[[], Any], str]] = [
    ("op_not_in_table", _one_op(lambda h: ops.cumsum(h, axis=-1)),
     r"\(Cumsum\): Cumsum is a keras\.ops operation rnnstream does not convert .*never runs code"),
    ("first_step", _one_op(lambda h: h[:, 0, :]),
     r"\(GetItem\): selects 0 of the time axis: at step t a stream knows steps up to t only"),
    ("mean_over_time", _one_op(lambda h: ops.mean(h, axis=1)),
     r"\(Mean\) works along axis 1 of \(B, T, 6\), the batch or time axis"),
    ("tensor_division", _one_op(lambda h: h / ops.relu(h)),
     r"\(TrueDivide\): divides a tensor by a tensor"),
]


@pytest.mark.parametrize(("case", "build", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_keras_op_refused_with_the_real_reason(case: str, build: Callable[[], Any], message: str,
                                               tmp_path: Path) -> None:
    assert_refused(build(), tmp_path / "model.keras", message)
