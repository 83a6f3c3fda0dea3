"""Keras layer configs + weights → canonical layers, through one explicit table.

Each builder checks the number and shape of the weights it is given and names the one that is wrong;
layers that cannot stream are refused with the reason.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rnnstream.importers.keras_context import Builder, LayerContext, activation_name, first
from rnnstream.importers.keras_recurrent import build_recurrent, build_stack, stacked_cells
from rnnstream.importers.keras_refusals import refusal
from rnnstream.importers.keras_shapes import build_permute, build_rescaling, build_reshape
from rnnstream.layers.conv import CausalConv1D
from rnnstream.layers.dense import Activation, Dense, Embedding, Identity, ReLU
from rnnstream.layers.elementwise import ParametricActivation, parametric_name
from rnnstream.layers.layer import Layer, StatelessLayer
from rnnstream.layers.merge import Concatenate, Masking, Merge
from rnnstream.layers.norm import BatchNorm, LayerNorm, Normalization

# -- per-step layers -------------------------------------------------------------------------------


def _build_dense(ctx: LayerContext) -> Layer:
    units = int(ctx.config["units"])
    use_bias = bool(ctx.config.get("use_bias", True))
    expected: list[tuple[str, tuple[int | None, ...]]] = [("kernel", (None, units))]
    if use_bias:
        expected.append(("bias", (units,)))
    arrays = ctx.take(*expected)
    activation = activation_name(ctx.config.get("activation"))
    return Dense(ctx.name, W=arrays[0], b=arrays[1] if use_bias else None, activation=activation,
                 keras_major=ctx.keras_major)


def _build_embedding(ctx: LayerContext) -> Layer:
    vocab, dim = int(ctx.config["input_dim"]), int(ctx.config["output_dim"])
    (E,) = ctx.take(("embeddings", (vocab, dim)))
    return Embedding(ctx.name, E=E, mask_zero=bool(ctx.config.get("mask_zero", False)))


def _build_activation(ctx: LayerContext) -> Layer:
    ctx.take()
    return Activation(ctx.name, activation=activation_name(ctx.config.get("activation")), keras_major=ctx.keras_major)


def _build_softmax(ctx: LayerContext) -> Layer:
    ctx.take()
    if ctx.feature_axis(int(first(ctx.config.get("axis", -1)))) != -1:
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


def _build_thresholded_relu(ctx: LayerContext) -> Layer:
    ctx.take()
    theta = float(ctx.config.get("theta", 1.0))
    return ParametricActivation(ctx.name, activation=parametric_name("thresholded_relu", alpha=theta))


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
    if ctx.feature_axis(int(first(c.get("axis", -1)))) != -1:
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
    k = int(first(c["kernel_size"]))
    if int(first(c.get("strides", 1))) != 1:
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
                        dilation=int(first(c.get("dilation_rate", 1))),
                        activation=activation_name(c.get("activation")), keras_major=ctx.keras_major)


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
    inner_ctx = replace(ctx, class_name=inner_class, config=inner.get("config", {}),
                        module=str(inner.get("module") or ""))
    layer = build_layer(inner_ctx)
    if not isinstance(layer, StatelessLayer):
        raise ctx.refuse(f"TimeDistributed({inner_class}) keeps state per sub-step; only per-step layers fit")
    return layer


BUILDERS: dict[str, Builder] = {
    "LSTM": build_recurrent,
    "GRU": build_recurrent,
    "SimpleRNN": build_recurrent,
    "RNN": build_recurrent,
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
    "Identity": _build_identity,
    "ThresholdedReLU": _build_thresholded_relu,
    "Reshape": build_reshape,
    "Permute": build_permute,
    "Rescaling": build_rescaling,
}

def build_layer(ctx: LayerContext) -> Layer:
    """The canonical layer for one Keras layer, or a clear refusal."""
    builder = BUILDERS.get(ctx.class_name)
    if builder is None:
        raise refusal(ctx, sorted(BUILDERS))
    return builder(ctx)


def build_layers(ctx: LayerContext) -> list[Layer]:
    """The canonical layers one Keras layer becomes, in order, each reading the previous one's output 0:
    one layer, or one recurrent layer per cell of ``RNN(StackedRNNCells([...]))``."""
    cells = stacked_cells(ctx)
    return [build_layer(ctx)] if cells is None else build_stack(ctx, cells)
