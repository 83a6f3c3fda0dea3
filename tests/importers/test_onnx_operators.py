"""rnnstream.load of hand-built ONNX graphs: every recurrent variant (layouts, peepholes, clip, input_forget,
activations with parameters, linear_before_reset 0 and 1) and the surrounding operators equal ONNX Runtime
step by step within 1e-5, for T = 1, 5, 33; refusals name the node and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tests.importers.onnx_graphs import (  # noqa: E402
    BATCH,
    FEATURES,
    TOLERANCE,
    compare_rnn,
    rnn_model,
    run_both,
    save,
    weights,
)

LENGTHS = (1, 5, 33)

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "lstm": ("LSTM", {}),
    "lstm_layout1_no_bias": ("LSTM", {"layout": 1, "bias": False}),
    "lstm_peepholes": ("LSTM", {"peepholes": True}),
    "lstm_clip": ("LSTM", {"clip": 0.7}),
    "lstm_input_forget": ("LSTM", {"input_forget": 1}),
    "lstm_everything": ("LSTM", {"peepholes": True, "clip": 1.1, "input_forget": 1,
                                 "activations": ["HardSigmoid", "ScaledTanh", "Softsign"],
                                 "activation_alpha": [0.3, 1.2], "activation_beta": [0.4, 0.7]}),
    "lstm_leaky_affine": ("LSTM", {"activations": ["Sigmoid", "LeakyRelu", "Affine"], "activation_alpha": [0.1, 0.9],
                                   "activation_beta": [0.1]}),
    "lstm_elu_cell": ("LSTM", {"activations": ["Sigmoid", "Tanh", "Elu"], "activation_alpha": [0.7]}),
    "gru_linear_before_reset": ("GRU", {"linear_before_reset": 1}),
    "gru_reset_before": ("GRU", {"linear_before_reset": 0}),
    "gru_reset_before_clip": ("GRU", {"linear_before_reset": 0, "clip": 0.5}),
    "gru_layout1": ("GRU", {"linear_before_reset": 0, "layout": 1}),
    "rnn_layout1": ("RNN", {"layout": 1}),
    "gru_activations": ("GRU", {"linear_before_reset": 1, "activations": ["HardSigmoid", "ScaledTanh"],
                                "activation_alpha": [0.25, 1.1], "activation_beta": [0.45, 0.8]}),
    "rnn_tanh": ("RNN", {}),
    "rnn_relu_clip": ("RNN", {"activations": ["Relu"], "clip": 0.9}),
    "rnn_thresholded_relu": ("RNN", {"activations": ["ThresholdedRelu"], "activation_alpha": [0.2]}),
    "rnn_softplus_zero_state": ("RNN", {"activations": ["Softplus"], "initial": "zeros"}),
    "lstm_zero_state_from_shape": ("LSTM", {"initial": "shape_zeros"}),
    "gru_zero_state_from_shape_layout1": ("GRU", {"initial": "shape_zeros", "layout": 1, "linear_before_reset": 1}),
}  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return {name: rnn_model(folder / f"{name}.onnx", kind, seed=k, **attrs)
            for k, (name, (kind, attrs)) in enumerate(VARIANTS.items())}  # fmt: skip


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_recurrent_operator_equals_the_reference(models: dict[str, Path], name: str, T: int) -> None:
    compare_rnn(models[name], VARIANTS[name][1].get("layout", 0), T, seed=T)


@pytest.mark.parametrize("name", ["lstm_everything", "gru_reset_before_clip", "gru_layout1", "rnn_relu_clip"])
def test_numpy_oracle_equals_onnx_runtime(models: dict[str, Path], name: str) -> None:
    compare_rnn(models[name], VARIANTS[name][1].get("layout", 0), 9, backend="numpy")


@pytest.mark.parametrize("name", ["lstm", "lstm_everything", "gru_reset_before", "gru_activations", "rnn_relu_clip"])
def test_imported_variants_export_back_to_onnx(models: dict[str, Path], name: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = rnnstream.load(models[name])
    model.export_onnx(tmp_path / "step.onnx")
    session = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    state = model.initial_state(BATCH)
    for _ in range(6):
        x = rng.normal(0, 1, (BATCH, FEATURES)).astype(np.float32)
        *ys_onnx, rows = session.run(None, {"X": x, "state": np.array(state.rows)})
        ys, state = model.step(x, state)
        for ours, theirs in zip(ys, ys_onnx, strict=True):
            np.testing.assert_allclose(theirs, ours, **TOLERANCE)
        np.testing.assert_allclose(rows, state.rows, **TOLERANCE)


def _const(name: str, value: Any) -> Any:
    return numpy_helper.from_array(np.asarray(value), name)


def _out(name: str, rank: int | None) -> Any:
    """A float graph output of ``rank`` axes of any size (any rank when None)."""
    shape = None if rank is None else [None] * rank
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_surrounding_operators_equal_onnx_runtime(tmp_path: Path) -> None:
    """Transposes, squeezes, MatMul+Add+Relu (one Dense), Gemm, LayerNormalization, arithmetic with
    constants, Concat of features, activations, the last step by Gather and by Slice."""
    rng = np.random.default_rng(3)
    H = 6
    inits = [_const("W", weights(rng, 1, 4 * H, FEATURES)), _const("R", weights(rng, 1, 4 * H, H)),
             _const("B", weights(rng, 1, 8 * H)), _const("one", np.array([1], np.int64)),
             _const("last", np.array(-1, np.int64)), _const("M", weights(rng, H, 7)), _const("b", weights(rng, 7)),
             _const("G", weights(rng, 3, 7)), _const("c", weights(rng, 3)), _const("scale", weights(rng, 7)),
             _const("shift", weights(rng, 7)), _const("k", np.float32(1.5)), _const("row", weights(rng, 1, 1, 7)),
             _const("start", np.array([-1], np.int64)), _const("end", np.array([2**62], np.int64)),
             _const("time", np.array([1], np.int64))]  # fmt: skip
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["xt", "W", "R", "B"], ["Y", "Y_h"], hidden_size=H),
        helper.make_node("Squeeze", ["Y", "one"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["y"], perm=[1, 0, 2]),  # [B, T, H]
        helper.make_node("MatMul", ["y", "M"], ["mm"]),
        helper.make_node("Add", ["b", "mm"], ["biased"]),
        helper.make_node("Relu", ["biased"], ["dense"]),  # [B, T, 7]: one Dense(relu)
        helper.make_node("Gather", ["dense", "last"], ["at_last"], axis=1),  # [B, 7]
        helper.make_node("Gemm", ["at_last", "G", "c"], ["gemm"], transB=1, alpha=0.5),
        helper.make_node("Softmax", ["gemm"], ["out_last"], axis=-1),
        helper.make_node("LayerNormalization", ["dense", "scale", "shift"], ["normed"], epsilon=1e-3),
        helper.make_node("Mul", ["normed", "k"], ["scaled"]),
        helper.make_node("Sub", ["row", "scaled"], ["flipped"]),
        helper.make_node("Div", ["flipped", "k"], ["divided"]),
        helper.make_node("Concat", ["divided", "dense", "y"], ["joined"], axis=-1),  # [B, T, 20]
        helper.make_node("Elu", ["joined"], ["elu"], alpha=0.5),
        helper.make_node("LeakyRelu", ["elu"], ["leaky"], alpha=0.2),
        helper.make_node("HardSigmoid", ["leaky"], ["hard"], alpha=0.3, beta=0.6),
        helper.make_node("Add", ["hard", "joined"], ["residual"]),
        helper.make_node("Slice", ["residual", "start", "end", "time"], ["sliced"]),  # [B, 1, 20]
        helper.make_node("Squeeze", ["sliced", "time"], ["out_slice"]),
    ]
    outputs = [_out("out_last", 2), _out("residual", 3), _out("out_slice", 2)]
    path = save(tmp_path / "ops.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 4])],
                outputs, inits)  # fmt: skip
    kinds = [layer.kind for layer in rnnstream.load(path).layers]
    assert kinds.count("dense") == 2 and "constant_op" in kinds and "activation" in kinds  # MatMul+Add+Relu fused
    for backend in ("auto", "numpy"):
        for T in LENGTHS:
            xs = np.random.default_rng(T).normal(0, 1, (BATCH, T, FEATURES)).astype(np.float32)
            (last, seq, sliced), (e_last, e_seq, e_sliced) = run_both(path, {"x": xs}, backend=backend)
            np.testing.assert_allclose(last[:, -1], e_last, **TOLERANCE)
            np.testing.assert_allclose(seq, e_seq, **TOLERANCE)
            np.testing.assert_allclose(sliced[:, -1], e_sliced, **TOLERANCE)


def test_token_ids_through_an_embedding(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    H = 5
    inits = [_const("E", weights(rng, 20, 6)), _const("W", weights(rng, 1, 3 * H, 6)),
             _const("R", weights(rng, 1, 3 * H, H)), _const("B", weights(rng, 1, 6 * H))]  # fmt: skip
    nodes = [helper.make_node("Gather", ["E", "ids"], ["e"], axis=0),  # [T, B, 6]
             helper.make_node("GRU", ["e", "W", "R", "B"], ["Y", "Y_h"], hidden_size=H, linear_before_reset=1)]
    path = save(tmp_path / "ids.onnx", nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["T", "B"])],
                [_out("Y_h", 3)], inits)  # fmt: skip
    model = rnnstream.load(path)
    assert model.inputs[0].spec.dtype == "int64"
    ids = np.random.default_rng(5).integers(0, 20, (BATCH, 7))
    expected = rnnstream.load(path, backend="numpy")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y_h,) = session.run(None, {"ids": ids.T.copy()})
    for m in (model, expected):
        ys, _ = m.run(ids, m.initial_state(BATCH))
        np.testing.assert_allclose(ys[:, -1], y_h[0], **TOLERANCE)


# -- refusals --------------------------------------------------------------------------------------

REFUSED_VARIANTS = [
    ("reverse", "LSTM", {"direction": "reverse"}, r"node 'lstm' \(LSTM\): cannot stream: direction='reverse'"),
    ("bidirectional", "GRU", {"direction": "bidirectional"}, r"direction='bidirectional' reads the sequence from"),
    ("nonzero_initial_state", "RNN", {"initial": "nonzero"}, r"initial_h is a non-zero constant; rnnstream starts"),
    ("state_input", "LSTM", {"initial": "input"}, r"initial_h comes from the graph .* export the model without state"),
    ("unknown_activation", "RNN", {"activations": ["Gelu"]}, r"activation 'Gelu' is not an ONNX recurrent activation"),
    ("missing_alpha", "RNN", {"activations": ["ScaledTanh"]}, r"activation 'ScaledTanh' needs activation_alpha"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "kind", "attrs", "message"), REFUSED_VARIANTS, ids=[r[0] for r in REFUSED_VARIANTS])
def test_recurrent_refusals(tmp_path: Path, name: str, kind: str, attrs: dict[str, Any], message: str) -> None:
    path = rnn_model(tmp_path / f"{name}.onnx", kind, **attrs)
    model = onnx.load(str(path))
    model.graph.node[-1].name = kind.lower()
    onnx.save(model, str(path))
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message):
        rnnstream.load(path)


def _one_node_model(tmp_path: Path, node: Any, inits: list[Any], x_dims: list[Any] | None = None) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims or ["B", "T", 4])
    return save(tmp_path / "one.onnx", [node], [x], [_out(node.output[0], 3)], inits)


@pytest.mark.parametrize(
    ("node", "inits", "message"),
    [
        (helper.make_node("Gather", ["x", "i"], ["y"], axis=1, name="first"), [_const("i", np.array(0, np.int64))],
         r"node 'first' \(Gather\): takes time step 0 of \[B, T, F\]: .*only the last step \(-1\)"),
        (helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="cut"),
         [_const("s", np.array([1])), _const("e", np.array([3])), _const("a", np.array([2]))],
         r"node 'cut' \(Slice\): slices 1:3:1 of a feature axis of \[B, T, F\]"),
        (helper.make_node("ReduceMean", ["x"], ["y"], name="pool"), [],
         r"node 'pool' \(ReduceMean\) cannot stream: it reduces over an axis"),
        (helper.make_node("Einsum", ["x", "w"], ["y"], name="mix", equation="btf,fg->btg"),
         [_const("w", np.zeros((4, 4), np.float32))],
         r"node 'mix' \(Einsum\) is not an operator rnnstream reads. Known: .*LSTM"),
        (helper.make_node("Reshape", ["x", "s"], ["y"], name="flat"), [_const("s", np.array([0, -1]))],
         r"node 'flat' \(Reshape\): reshapes \[B, T, F\] .* features stay as they are"),
        (helper.make_node("MyOp", ["x"], ["y"], name="custom", domain="com.example"), [],
         r"node 'custom' \(MyOp\) is from operator set 'com.example'"),
    ],
    ids=["time_step_0", "feature_slice", "pooling", "unknown_op", "merging_features", "custom_domain"],
)
def test_operator_refusals(tmp_path: Path, node: Any, inits: list[Any], message: str) -> None:
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 4])],
                              [_out("y", None)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message):
        rnnstream.load(tmp_path / "bad.onnx")


def test_sequence_lens_and_unknown_feature_sizes_are_refused(tmp_path: Path) -> None:
    path = rnn_model(tmp_path / "lens.onnx", "RNN")
    model = onnx.load(str(path))
    model.graph.initializer.append(_const("lens", np.array([2, 2, 2], np.int32)))
    model.graph.node[-1].input[4] = "lens"
    onnx.save(model, str(path))
    with pytest.raises(rnnstream.UnsupportedLayerError, match="sequence_lens is given; rnnstream reads every sequence"):
        rnnstream.load(path)
    node = helper.make_node("Relu", ["x"], ["y"])
    with pytest.raises(rnnstream.UnsupportedLayerError, match=r"input 'x' has a feature axis of unknown size \(F\)"):
        rnnstream.load(_one_node_model(tmp_path, node, [], ["B", "T", "F"]))


def test_files_that_are_not_onnx_models(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not a protobuf at all" * 10)
    with pytest.raises(rnnstream.ModelFileError, match=r"is not a readable ONNX model|has no graph nodes"):
        rnnstream.load(garbage)
    with pytest.raises(rnnstream.ModelFileError, match="does not exist"):
        rnnstream.load(tmp_path / "missing.onnx")


def test_without_onnx_load_says_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "import rnnstream\n"
        "try:\n    rnnstream.load('model.onnx')\n"
        "except rnnstream.MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'rnnstream[onnx]'" in out
