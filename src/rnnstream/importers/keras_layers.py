"""Keras layer configs + weights → canonical layers, through one explicit table.

Each builder checks the number and shape of the weights it is given and names the one that is wrong;
layers that cannot stream are refused with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnstream.errors import ModelFileError, UnsupportedLayerError
from rnnstream.layers.conv import CausalConv1D
from rnnstream.layers.dense import Activation, Dense, Embedding, Identity, ReLU
from rnnstream.layers.layer import Layer, StatelessLayer, TensorSpec
from rnnstream.layers.merge import Concatenate, Masking, Merge
from rnnstream.layers.norm import BatchNorm, LayerNorm, Normalization
from rnnstream.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnstream.types import Array, FloatArray


@dataclass(frozen=True)
class LayerContext:
    """What a builder needs besides the config: the weights, the input specs, the writer's Keras major."""

    name: str
    class_name: str
    config: dict[str, Any]
    weights: list[Array]
    inputs: list[TensorSpec]
    keras_major: int

    def take(self, *expected: tuple[str, tuple[int | None, ...]]) -> list[FloatArray]:
        """Check the weights against ``(name, shape)`` pairs (None = any size) and return them as float32."""
        names = ", ".join(name for name, _ in expected)
        if len(self.weights) != len(expected):
            raise ModelFileError(
                f"layer {self.name!r} ({self.class_name}) should have {len(expected)} weights ({names}); "
                f"the file has {len(self.weights)}"
            )
        taken = []
        for (wname, shape), array in zip(expected, self.weights, strict=True):
            fits = len(array.shape) == len(shape) and all(
                e is None or e == a for e, a in zip(shape, array.shape, strict=True)
            )
            if not fits:
                wanted = "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
                raise ModelFileError(
                    f"layer {self.name!r} ({self.class_name}): weight {wname!r} has shape {tuple(array.shape)}, "
                    f"expected {wanted}"
                )
            taken.append(np.ascontiguousarray(array, dtype=np.float32))
        return taken

    def feature_axis(self, axis: int) -> int:
        """Map a Keras axis of the full tensor (batch, [time,] features…) to a feature axis (negative)."""
        x = self.inputs[0]
        lead = 2 if x.sequence else 1
        rank = lead + len(x.shape)
        full = axis if axis < 0 else axis - rank
        if not -len(x.shape) <= full < 0:
            raise UnsupportedLayerError(
                f"layer {self.name!r} ({self.class_name}) works along axis {axis} of {x.describe()}, "
                "the batch or time axis: only feature axes can stream"
            )
        return full

    def refuse(self, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"layer {self.name!r} ({self.class_name}): {why}")


Builder = Callable[[LayerContext], Layer]


def _activation(value: Any) -> str:
    if value is None:
        return "linear"
    if isinstance(value, dict):  # a serialised function: {"class_name": "function", "config": "tanh", ...}
        inner = value.get("config")
        if isinstance(inner, str):
            return inner
        raise UnsupportedLayerError(f"activation {value!r} is not a built-in activation name")
    return str(value)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list | tuple) else value


# -- recurrent -------------------------------------------------------------------------------------


def _recurrent_flags(ctx: LayerContext, cell: dict[str, Any]) -> dict[str, Any]:
    c = ctx.config
    if c.get("go_backwards"):
        raise ctx.refuse("go_backwards=True reads the sequence from its end; a stream has no end yet")
    if c.get("time_major"):
        raise ctx.refuse("time_major=True models are not supported; re-save with time_major=False")
    return {
        "activation": _activation(cell.get("activation", "tanh")),
        "recurrent_activation": _activation(cell.get("recurrent_activation", "sigmoid")),
        "keras_major": ctx.keras_major,
        "return_sequences": bool(c.get("return_sequences", False)),
        "return_state": bool(c.get("return_state", False)),
        "zero_output_for_mask": bool(c.get("zero_output_for_mask", False)),
    }


def _cell_config(ctx: LayerContext) -> tuple[str, dict[str, Any]]:
    """(kind, cell config) for LSTM/GRU/SimpleRNN and for ``RNN(cell=...)``."""
    if ctx.class_name != "RNN":
        return ctx.class_name, ctx.config
    cell = ctx.config.get("cell")
    if not isinstance(cell, dict) or cell.get("class_name") not in ("LSTMCell", "GRUCell", "SimpleRNNCell"):
        raise ctx.refuse("RNN wrapping anything but one LSTMCell, GRUCell or SimpleRNNCell is not supported")
    return str(cell["class_name"]).removesuffix("Cell"), cell["config"]


def _build_recurrent(ctx: LayerContext) -> Layer:
    kind, cell = _cell_config(ctx)
    units = int(cell["units"])
    flags = _recurrent_flags(ctx, cell)
    use_bias = bool(cell.get("use_bias", True))
    gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[kind]
    G = gates * units
    reset_after = bool(cell.get("reset_after", ctx.keras_major >= 3)) if kind == "GRU" else False
    bias_shape: tuple[int, ...] = (2, G) if reset_after else (G,)
    expected: list[tuple[str, tuple[int | None, ...]]] = [("kernel", (None, G)), ("recurrent_kernel", (units, G))]
    if use_bias:
        expected.append(("bias", bias_shape))
    arrays = ctx.take(*expected)
    Wx, Wh = arrays[0], arrays[1]
    b = arrays[2] if use_bias else np.zeros(bias_shape, np.float32)
    if kind == "LSTM":
        return LSTM(ctx.name, Wx=Wx, Wh=Wh, b=b, **flags)
    if kind == "SimpleRNN":
        return SimpleRNN(ctx.name, Wx=Wx, Wh=Wh, b=b, **flags)
    if reset_after:
        return GRU(ctx.name, Wx=Wx, Wh=Wh, bx=b[0], bh=b[1], reset_after=True, **flags)
    return GRU(ctx.name, Wx=Wx, Wh=Wh, bx=b, bh=None, reset_after=False, **flags)


# -- per-step layers -------------------------------------------------------------------------------


def _build_dense(ctx: LayerContext) -> Layer:
    units = int(ctx.config["units"])
    use_bias = bool(ctx.config.get("use_bias", True))
    expected: list[tuple[str, tuple[int | None, ...]]] = [("kernel", (None, units))]
    if use_bias:
        expected.append(("bias", (units,)))
    arrays = ctx.take(*expected)
    activation = _activation(ctx.config.get("activation"))
    return Dense(ctx.name, W=arrays[0], b=arrays[1] if use_bias else None, activation=activation,
                 keras_major=ctx.keras_major)


def _build_embedding(ctx: LayerContext) -> Layer:
    vocab, dim = int(ctx.config["input_dim"]), int(ctx.config["output_dim"])
    (E,) = ctx.take(("embeddings", (vocab, dim)))
    return Embedding(ctx.name, E=E, mask_zero=bool(ctx.config.get("mask_zero", False)))


def _build_activation(ctx: LayerContext) -> Layer:
    ctx.take()
    return Activation(ctx.name, activation=_activation(ctx.config.get("activation")), keras_major=ctx.keras_major)


def _build_softmax(ctx: LayerContext) -> Layer:
    ctx.take()
    if ctx.feature_axis(int(_first(ctx.config.get("axis", -1)))) != -1:
        raise ctx.refuse("softmax over a feature axis other than the last is not supported")
    return Activation(ctx.name, activation="softmax")


def _build_relu(ctx: LayerContext) -> Layer:
    ctx.take()
    c = ctx.config
    if ctx.class_name == "LeakyReLU":
        slope = c.get("negative_slope", c.get("alpha", 0.3))
        return ReLU(ctx.name, max_value=None, negative_slope=float(slope), threshold=0.0)
    max_value = c.get("max_value")
    return ReLU(
        ctx.name,
        max_value=None if max_value is None else float(max_value),
        negative_slope=float(c.get("negative_slope", 0.0)),
        threshold=float(c.get("threshold", 0.0)),
    )


def _build_elu(ctx: LayerContext) -> Layer:
    ctx.take()
    if float(ctx.config.get("alpha", 1.0)) != 1.0:
        raise ctx.refuse("ELU with alpha other than 1.0 is not supported; use Activation('elu')")
    return Activation(ctx.name, activation="elu")


def _build_identity(ctx: LayerContext) -> Layer:
    ctx.take()
    return Identity(ctx.name)


def _build_masking(ctx: LayerContext) -> Layer:
    ctx.take()
    return Masking(ctx.name, mask_value=float(ctx.config.get("mask_value", 0.0)))


def _build_layer_norm(ctx: LayerContext) -> Layer:
    c = ctx.config
    axes = c.get("axis", -1)
    axes = axes if isinstance(axes, list) else [axes]
    if len(axes) != 1 or ctx.feature_axis(int(axes[0])) != -1:
        raise ctx.refuse(f"normalises over axis {c.get('axis')}; only the last axis is supported")
    F = ctx.inputs[0].shape[-1] if ctx.inputs[0].shape else None
    rms_scaling = bool(c.get("rms_scaling", False))
    has_gamma = bool(c.get("scale", True)) or rms_scaling  # as Keras builds it
    has_beta = bool(c.get("center", True)) and not rms_scaling
    names = [n for n, present in (("gamma", has_gamma), ("beta", has_beta)) if present]
    named = dict(zip(names, ctx.take(*[(n, (F,)) for n in names]), strict=True))
    return LayerNorm(ctx.name, gamma=named.get("gamma"), beta=named.get("beta"),
                     epsilon=float(c.get("epsilon", 1e-3)), rms_scaling=rms_scaling)


def _build_batch_norm(ctx: LayerContext) -> Layer:
    c = ctx.config
    if ctx.feature_axis(int(_first(c.get("axis", -1)))) != -1:
        raise ctx.refuse(f"normalises over axis {c.get('axis')}; only the last axis is supported")
    if c.get("renorm"):
        raise ctx.refuse("renorm=True is not supported")
    F = ctx.inputs[0].shape[-1] if ctx.inputs[0].shape else None
    names = [n for n, on in (("gamma", c.get("scale", True)), ("beta", c.get("center", True))) if on]
    names += ["moving_mean", "moving_variance"]
    named = dict(zip(names, ctx.take(*[(n, (F,)) for n in names]), strict=True))
    return BatchNorm(ctx.name, gamma=named.get("gamma"), beta=named.get("beta"), mean=named["moving_mean"],
                     variance=named["moving_variance"], epsilon=float(c.get("epsilon", 1e-3)))


def _build_normalization(ctx: LayerContext) -> Layer:
    c = ctx.config
    axes = c.get("axis", -1)
    axes = [] if axes is None else (axes if isinstance(axes, list | tuple) else [axes])
    if axes and [ctx.feature_axis(int(a)) for a in axes] != [-1]:
        raise ctx.refuse(f"normalises per index of axis {c.get('axis')}; only the last axis is supported")
    if c.get("mean") is not None:
        ctx.take()
        mean = np.asarray(c["mean"], np.float32).reshape(-1)
        variance = np.asarray(c["variance"], np.float32).reshape(-1)
    else:
        F = ctx.inputs[0].shape[-1] if axes and ctx.inputs[0].shape else None
        shape: tuple[int | None, ...] = (F,) if axes else ()
        mean, variance, _count = ctx.take(("mean", shape), ("variance", shape), ("count", ()))
        mean, variance = mean.reshape(-1), variance.reshape(-1)
    return Normalization(ctx.name, mean=mean, variance=variance, invert=bool(c.get("invert", False)))


def _build_conv1d(ctx: LayerContext) -> Layer:
    c = ctx.config
    k = int(_first(c["kernel_size"]))
    if int(_first(c.get("strides", 1))) != 1:
        raise ctx.refuse("strides > 1 change the time axis; only stride 1 can stream")
    if c.get("padding", "valid") != "causal" and k != 1:
        raise ctx.refuse(
            f"padding={c.get('padding')!r} makes each output depend on later inputs; "
            "only padding='causal' (or kernel_size=1) can stream"
        )
    if c.get("data_format", "channels_last") != "channels_last":
        raise ctx.refuse("data_format='channels_first' puts features before time; use channels_last")
    if int(c.get("groups", 1)) != 1:
        raise ctx.refuse("grouped convolutions (groups > 1) are not supported")
    filters = int(c["filters"])
    use_bias = bool(c.get("use_bias", True))
    expected: list[tuple[str, tuple[int | None, ...]]] = [("kernel", (k, None, filters))]
    if use_bias:
        expected.append(("bias", (filters,)))
    arrays = ctx.take(*expected)
    return CausalConv1D(ctx.name, K=arrays[0], b=arrays[1] if use_bias else None,
                        dilation=int(_first(c.get("dilation_rate", 1))),
                        activation=_activation(c.get("activation")), keras_major=ctx.keras_major)


def _build_merge(ctx: LayerContext) -> Layer:
    ctx.take()
    return Merge(ctx.name, op=ctx.class_name.lower(), keras_major=ctx.keras_major)


def _build_concatenate(ctx: LayerContext) -> Layer:
    ctx.take()
    return Concatenate(ctx.name, axis=ctx.feature_axis(int(ctx.config.get("axis", -1))), keras_major=ctx.keras_major)


def _build_time_distributed(ctx: LayerContext) -> Layer:
    inner = ctx.config.get("layer")
    if not isinstance(inner, dict):
        raise ctx.refuse("the wrapped layer is missing from the config")
    inner_class = str(inner.get("class_name"))
    inner_ctx = LayerContext(ctx.name, inner_class, inner.get("config", {}), ctx.weights, ctx.inputs,
                             ctx.keras_major)
    layer = build_layer(inner_ctx)
    if not isinstance(layer, StatelessLayer):
        raise ctx.refuse(f"TimeDistributed({inner_class}) keeps state per sub-step; only per-step layers fit")
    return layer


BUILDERS: dict[str, Builder] = {
    "LSTM": _build_recurrent,
    "GRU": _build_recurrent,
    "SimpleRNN": _build_recurrent,
    "RNN": _build_recurrent,
    "Dense": _build_dense,
    "Embedding": _build_embedding,
    "Activation": _build_activation,
    "Softmax": _build_softmax,
    "ReLU": _build_relu,
    "LeakyReLU": _build_relu,
    "ELU": _build_elu,
    "Dropout": _build_identity,
    "SpatialDropout1D": _build_identity,
    "GaussianNoise": _build_identity,
    "GaussianDropout": _build_identity,
    "AlphaDropout": _build_identity,
    "ActivityRegularization": _build_identity,
    "Masking": _build_masking,
    "LayerNormalization": _build_layer_norm,
    "BatchNormalization": _build_batch_norm,
    "Normalization": _build_normalization,
    "Conv1D": _build_conv1d,
    "Add": _build_merge,
    "Subtract": _build_merge,
    "Multiply": _build_merge,
    "Average": _build_merge,
    "Maximum": _build_merge,
    "Minimum": _build_merge,
    "Concatenate": _build_concatenate,
    "TimeDistributed": _build_time_distributed,
}

_NEEDS_FUTURE = "needs the whole sequence, including steps that have not arrived yet"
REFUSED: dict[str, str] = {
    "Bidirectional": "its backward half reads the sequence from the end; a stream has no end yet",
    "Attention": f"attends over every time step: it {_NEEDS_FUTURE}",
    "AdditiveAttention": f"attends over every time step: it {_NEEDS_FUTURE}",
    "MultiHeadAttention": f"attends over every time step: it {_NEEDS_FUTURE}",
    "GroupQueryAttention": f"attends over every time step: it {_NEEDS_FUTURE}",
    "GroupedQueryAttention": f"attends over every time step: it {_NEEDS_FUTURE}",
    "Lambda": "it holds Python code, and rnnstream never runs code from a model file",
    "GlobalAveragePooling1D": f"pools over time: it {_NEEDS_FUTURE}",
    "GlobalMaxPooling1D": f"pools over time: it {_NEEDS_FUTURE}",
    "MaxPooling1D": "pools over windows of time steps, changing the time axis",
    "AveragePooling1D": "pools over windows of time steps, changing the time axis",
    "Flatten": "it folds the time axis into the features",
    "RepeatVector": "it makes a new time axis from one vector",
    "Cropping1D": "it cuts steps off the time axis",
    "ZeroPadding1D": "it adds steps to the time axis",
    "UpSampling1D": "it repeats steps of the time axis",
    "CuDNNLSTM": "the old CuDNN layer's weights are laid out differently; re-save the model with LSTM",
    "CuDNNGRU": "the old CuDNN layer's weights are laid out differently; re-save the model with GRU",
    "Sequential": "a model nested inside a model is not supported; rebuild it as one flat model",
    "Functional": "a model nested inside a model is not supported; rebuild it as one flat model",
    "Model": "a model nested inside a model is not supported; rebuild it as one flat model",
}


def build_layer(ctx: LayerContext) -> Layer:
    """The canonical layer for one Keras layer, or a clear refusal."""
    builder = BUILDERS.get(ctx.class_name)
    if builder is not None:
        return builder(ctx)
    reason = REFUSED.get(ctx.class_name)
    if reason is not None:
        raise ctx.refuse(f"cannot stream: {reason}")
    raise ctx.refuse(
        "is not a built-in layer rnnstream knows (custom layers are code, which rnnstream never loads "
        f"from a file). Supported: {', '.join(sorted(BUILDERS))}"
    )
