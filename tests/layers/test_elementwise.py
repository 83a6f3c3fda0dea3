"""Parametric activations (ONNX's alpha/beta; their formulas are checked against ONNX Runtime's recurrent
operators in tests/importers/test_onnx_operators.py, and here against ONNX Runtime's standalone operators),
arithmetic with a constant, and LastStep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnnstream
from rnnstream.layers.elementwise import ConstantOp, ParametricActivation, get, parametric_name, parse
from rnnstream.layers.layer import TensorSpec
from rnnstream.layers.sequence import LastStep


def sample() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.concatenate([np.linspace(-4, 4, 33), rng.normal(0, 2, 31)]).astype(np.float32).reshape(4, 16)


@pytest.mark.parametrize(
    ("op", "attrs", "name"),
    [
        ("LeakyRelu", {"alpha": 0.3}, parametric_name("leaky_relu", alpha=0.3)),
        ("Elu", {"alpha": 0.6}, parametric_name("elu", alpha=0.6)),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, parametric_name("hard_sigmoid", alpha=0.3, beta=0.4)),
        ("ThresholdedRelu", {"alpha": 0.7}, parametric_name("thresholded_relu", alpha=0.7)),
    ],
)
def test_parametric_activations_equal_onnx_runtime_operators(op: str, attrs: dict[str, float], name: str,
                                                            tmp_path: Path) -> None:  # fmt: skip
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 16]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "g", info[:1], info[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "a.onnx"))
    session = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    x = sample()
    np.testing.assert_allclose(get(name)(x), session.run(None, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_names_round_trip_and_plain_names_pass_through() -> None:
    name = parametric_name("scaled_tanh", alpha=1.5, beta=0.5)
    assert parse(name) == ("scaled_tanh", {"alpha": 1.5, "beta": 0.5})
    assert parse("tanh") is None
    np.testing.assert_array_equal(get("tanh")(sample()), np.tanh(sample()))
    np.testing.assert_allclose(get(parametric_name("affine", alpha=2.0, beta=-1.0))(sample()), 2 * sample() - 1)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("swishy(alpha=1.0)", r"unknown activation 'swishy\(alpha=1.0\)'"),
        ("elu(alpha=x)", r"parameter 'alpha=x' is not 'name=number'"),
        ("hard_sigmoid(alpha=0.2)", r"needs parameters \('alpha', 'beta'\)"),
        ("not_an_activation", "unknown activation 'not_an_activation'"),
    ],
)
def test_bad_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message):
        get(name)


def test_parametric_layer_needs_parameters() -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match="is not an activation with parameters"):
        ParametricActivation("a", activation="relu")
    layer = ParametricActivation("a", activation=parametric_name("elu", alpha=0.5))
    assert layer.config() == {"activation": "elu(alpha=0.5)"}


@pytest.mark.parametrize(
    ("op", "expected"),
    [("add", lambda x, c: x + c), ("sub", lambda x, c: x - c), ("rsub", lambda x, c: c - x),
     ("mul", lambda x, c: x * c), ("div", lambda x, c: x / c), ("rdiv", lambda x, c: c / x)],
)  # fmt: skip
def test_constant_ops_compute_exactly_what_they_say(op: str, expected: object) -> None:
    c = np.float32([0.5, -2.0, 3.0, 1.5] * 4)
    layer = ConstantOp("c", op=op, constant=c)
    x = sample() + np.float32(0.05)  # no zeros: c / x stays finite
    np.testing.assert_array_equal(layer.apply([x]), expected(x, c))  # type: ignore[operator]
    assert layer.output_spec(TensorSpec((16,))) == TensorSpec((16,))


def test_constant_ops_refuse_what_does_not_broadcast() -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match=r"constant of shape \(3,\) does not broadcast"):
        ConstantOp("c", op="add", constant=np.ones(3, np.float32)).output_spec(TensorSpec((16,)))
    with pytest.raises(rnnstream.UnsupportedLayerError, match="unknown operation 'pow'"):
        ConstantOp("c", op="pow", constant=np.ones(1, np.float32))


def test_last_step_makes_a_whole_sequence_value() -> None:
    layer = LastStep("last")
    assert layer.output_spec(TensorSpec((3,))) == TensorSpec((3,), sequence=False)
    with pytest.raises(rnnstream.UnsupportedLayerError, match="is fed a whole-sequence value"):
        layer.output_spec(TensorSpec((3,), sequence=False))
