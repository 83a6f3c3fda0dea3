"""Hand-built ONNX graphs (onnx.helper) around one LSTM / GRU / RNN operator, with random non-trivial weights,
and a runner that compares rnnstream with ONNX Runtime on the same sequences.

ONNX Runtime does not implement ``layout=1`` ("batchwise recurrent operations are not supported"), so
those graphs are checked against ONNX's own reference evaluator (``onnx.reference``), which agrees
with ONNX Runtime on ``layout=0`` graphs (checked here too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import rnnstream

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
FEATURES, HIDDEN, BATCH = 4, 5, 3


def weights(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return rng.normal(0.0, scale, shape).astype(np.float32)


def save(path: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any], initializers: list[Any],
         opset: int = 17) -> Path:  # fmt: skip
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def rnn_model(
    path: Path,
    kind: str,
    *,
    layout: int = 0,
    peepholes: bool = False,
    bias: bool = True,
    initial: str = "none",
    seed: int = 0,
    **attrs: Any,
) -> Path:
    """X → one recurrent operator → Y, Y_h (and Y_c for LSTM), in ``layout``; ``initial`` is "none",
    "zeros" (a zero initializer), "shape_zeros" (ConstantOfShape of a shape read from X), "nonzero" or "input"."""
    rng = np.random.default_rng(seed)
    G, H, F = GATES[kind], HIDDEN, FEATURES
    x_dims = ["T", "B", F] if layout == 0 else ["B", "T", F]
    inits = [numpy_helper.from_array(weights(rng, 1, G * H, F), "W"),
             numpy_helper.from_array(weights(rng, 1, G * H, H), "R")]  # fmt: skip
    ins = ["X", "W", "R"]
    if bias:
        inits.append(numpy_helper.from_array(weights(rng, 1, 2 * G * H), "B"))
    ins += ["B" if bias else "", ""]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_dims)]
    nodes = []
    state_shape = [1, BATCH, H] if layout == 0 else [BATCH, 1, H]
    if initial == "zeros":
        inits.append(numpy_helper.from_array(np.zeros(state_shape, np.float32), "h0"))
    elif initial == "nonzero":
        inits.append(numpy_helper.from_array(np.full(state_shape, 0.1, np.float32), "h0"))
    elif initial == "input":
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, state_shape))
    elif initial == "shape_zeros":  # [1, B, H] built from X's shape, as torch.onnx.export writes it
        batch_axis = 1 if layout == 0 else 0
        inits += [numpy_helper.from_array(np.array([batch_axis], np.int64), "batch_axis"),
                  numpy_helper.from_array(np.array([1], np.int64), "one"),
                  numpy_helper.from_array(np.array([H], np.int64), "hidden")]  # fmt: skip
        order = ["one", "batch", "hidden"] if layout == 0 else ["batch", "one", "hidden"]
        nodes += [helper.make_node("Shape", ["X"], ["x_shape"]),
                  helper.make_node("Gather", ["x_shape", "batch_axis"], ["batch"], axis=0),
                  helper.make_node("Concat", order, ["h0_shape"], axis=0),
                  helper.make_node("ConstantOfShape", ["h0_shape"], ["h0"])]  # fmt: skip
    if initial != "none":
        ins.append("h0")
        if kind == "LSTM":
            ins.append("h0")
    outs = ["Y", "Y_h", "Y_c"] if kind == "LSTM" else ["Y", "Y_h"]
    if peepholes:
        ins += [""] * (7 - len(ins)) + ["P"]
        inits.append(numpy_helper.from_array(weights(rng, 1, 3 * H), "P"))
    nodes.append(helper.make_node(kind, ins, outs, hidden_size=H, layout=layout, **attrs))
    y_dims = ["T", 1, "B", H] if layout == 0 else ["B", "T", 1, H]
    s_dims = [1, "B", H] if layout == 0 else ["B", 1, H]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_dims)]
    outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, s_dims) for o in outs[1:]]
    return save(path, nodes, inputs, outputs, inits)


def reference(path: Path, layout: int) -> Any:
    """ONNX Runtime for layout 0; ONNX's reference evaluator for layout 1, which ONNX Runtime lacks."""
    if layout == 0:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ReferenceEvaluator(str(path))


def compare_rnn(path: Path, layout: int, T: int, *, backend: str = "auto", seed: int = 1) -> None:
    """rnnstream's run over a [B, T, F] sequence equals the reference's Y, Y_h (and Y_c)."""
    model = rnnstream.load(path, backend=backend)
    xs = np.random.default_rng(seed).normal(0, 1, (BATCH, T, FEATURES)).astype(np.float32)
    feed = xs.transpose(1, 0, 2).copy() if layout == 0 else xs
    expected = reference(path, layout).run(None, {"X": feed})
    ys, _ = model.run(xs, model.initial_state(BATCH))
    y, *states = ys
    np.testing.assert_allclose(y, expected[0][:, 0].transpose(1, 0, 2) if layout == 0 else expected[0][:, :, 0],
                               **TOLERANCE)  # fmt: skip
    for ours, theirs in zip(states, expected[1:], strict=True):
        np.testing.assert_allclose(ours[:, -1], theirs[0] if layout == 0 else theirs[:, 0], **TOLERANCE)


def run_both(path: Path, feeds: dict[str, np.ndarray], *, backend: str = "auto") -> tuple[list[Any], list[Any]]:
    """ONNX Runtime's outputs of ``feeds`` (batch-first sequences) and rnnstream's run of the same."""
    model = rnnstream.load(path, backend=backend)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    ys, _ = model.run(list(feeds.values()) if len(feeds) > 1 else next(iter(feeds.values())),
                      model.initial_state(next(iter(feeds.values())).shape[0]))  # fmt: skip
    return (ys if isinstance(ys, list) else [ys]), expected
