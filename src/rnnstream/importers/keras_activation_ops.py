"""The activation operations of both op tables: tf.keras 2 TF functions (``tf.nn.gelu``) and Keras 3
``keras.ops`` classes (``Gelu``), each read with its options.

An option changes what an activation computes (``keras.ops.gelu`` is the tanh approximation unless
``approximate=False``; ``keras.ops.elu(x, alpha)``; ``tf.nn.silu(x, beta)``), so every builder reads the
options it implements and refuses any other option, or a value it does not compute, by name: an option is
never ignored.

>>> from rnnstream.errors import UnsupportedLayerError
>>> from rnnstream.importers.keras_context import LayerContext
>>> from rnnstream.importers.keras_tf_call import TFCall, TensorArg
>>> gelu_op = LayerContext("g", "Gelu", {}, [], [], 3)
>>> KERAS3_ACTIVATIONS["Gelu"](gelu_op, TFCall(TensorArg(0), {"approximate": False})).activation_name
'gelu'
>>> silu_op = LayerContext("s", "nn.silu", {}, [], [], 2)
>>> try:
...     TF_ACTIVATIONS["nn.silu"](silu_op, TFCall(TensorArg(0), {"beta": 2.0}))
... except UnsupportedLayerError as refused:
...     print(refused)
layer 's' (nn.silu): option beta=2.0 is not supported: rnnstream computes beta=1.0 only
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnstream.importers.keras_context import LayerContext
from rnnstream.importers.keras_tf_call import TFCall
from rnnstream.layers.dense import Activation, ReLU
from rnnstream.layers.elementwise import ParametricActivation, parametric_name
from rnnstream.layers.layer import Layer

ActivationBuilder = Callable[[LayerContext, TFCall], Layer]
"""``(context, the call read as data) -> layer``."""


def expect_options(ctx: LayerContext, call: TFCall, only: dict[str, Any], read: tuple[str, ...] = ()) -> None:
    """Refuse an option of ``call`` that is neither ``read`` by the builder nor set to the one value
    rnnstream computes (``only``)."""
    for key, value in call.kwargs.items():
        if key in read or (key in only and value == only[key]):
            continue
        known = f"rnnstream computes {key}={only[key]!r} only" if key in only else "rnnstream does not read it"
        raise ctx.refuse(f"option {key}={value!r} is not supported: {known}")


def activation(name: str, **only: Any) -> ActivationBuilder:
    """The activation ``name``; ``only``: options it may be given, each with the one value it computes."""

    def build(ctx: LayerContext, call: TFCall) -> Layer:
        expect_options(ctx, call, only)
        return Activation(ctx.name, activation=name, keras_major=ctx.keras_major)

    return build


def last_axis(name: str) -> ActivationBuilder:
    """An activation over one axis (softmax-like): rnnstream computes it over the last feature axis."""

    def build(ctx: LayerContext, call: TFCall) -> Layer:
        expect_options(ctx, call, {}, read=("axis",))
        axis = call.arg(ctx, "axis")
        if ctx.feature_axis(-1 if axis is None else int(axis)) != -1:
            raise ctx.refuse(f"{name} over axis {axis}: rnnstream computes it over the last axis only")
        return Activation(ctx.name, activation=name, keras_major=ctx.keras_major)

    return build


def gelu(approximate: bool) -> ActivationBuilder:
    """GELU, exact or its tanh approximation as the call's ``approximate`` says (default: ``approximate``,
    True for ``keras.ops.gelu``, False for ``tf.nn.gelu``)."""

    def build(ctx: LayerContext, call: TFCall) -> Layer:
        expect_options(ctx, call, {}, read=("approximate",))
        tanh_form = bool(call.arg(ctx, "approximate", approximate))
        return Activation(ctx.name, activation="gelu_approximate" if tanh_form else "gelu",
                          keras_major=ctx.keras_major)

    return build


def elu(ctx: LayerContext, call: TFCall) -> Layer:
    """``x if x > 0 else α(eˣ − 1)``; α = 1 is Keras' ``elu``, any other α its parametric form."""
    expect_options(ctx, call, {}, read=("alpha",))
    alpha = float(call.arg(ctx, "alpha", 1.0))
    if alpha == 1.0:
        return Activation(ctx.name, activation="elu", keras_major=ctx.keras_major)
    return ParametricActivation(ctx.name, activation=parametric_name("elu", alpha=alpha))


def leaky_relu(option: str) -> ActivationBuilder:
    """``x if x ≥ 0 else slope · x``, the slope read from ``option`` (``alpha`` in TF, ``negative_slope``
    in Keras 3; 0.2 by default in both)."""

    def build(ctx: LayerContext, call: TFCall) -> Layer:
        expect_options(ctx, call, {}, read=(option,))
        slope = float(call.arg(ctx, option, 0.2))
        return ReLU(ctx.name, max_value=None, negative_slope=slope, threshold=0.0)

    return build


def absolute(ctx: LayerContext, call: TFCall) -> Layer:
    """``|x|``: the ReLU layer with slope −1 below 0 (one layer every backend already steps)."""
    expect_options(ctx, call, {})
    return ReLU(ctx.name, max_value=None, negative_slope=-1.0, threshold=0.0)


TF_ACTIVATIONS: dict[str, ActivationBuilder] = {
    "nn.relu": activation("relu"), "nn.relu6": activation("relu6"), "math.tanh": activation("tanh"),
    "math.sigmoid": activation("sigmoid"), "nn.selu": activation("selu"), "math.softplus": activation("softplus"),
    "nn.softsign": activation("softsign"), "math.softsign": activation("softsign"),
    "nn.silu": activation("silu", beta=1.0), "math.exp": activation("exponential"),
    "math.log_sigmoid": activation("log_sigmoid"), "nn.softmax": last_axis("softmax"),
    "nn.log_softmax": last_axis("log_softmax"), "nn.elu": elu, "nn.gelu": gelu(approximate=False),
    "nn.leaky_relu": leaky_relu("alpha"), "math.abs": absolute,
}
"""TensorFlow function name (as tf.keras 2 records it; ``tf.nn.swish`` is ``nn.silu``, ``tf.abs`` is
``math.abs``) → builder."""

KERAS3_ACTIVATIONS: dict[str, ActivationBuilder] = {
    **{op: activation(name) for op, name in {
        "Relu": "relu", "Relu6": "relu6", "Tanh": "tanh", "Sigmoid": "sigmoid", "Selu": "selu",
        "Softplus": "softplus", "Softsign": "softsign", "Silu": "silu", "Exp": "exponential",
        "LogSigmoid": "log_sigmoid", "HardSigmoid": "hard_sigmoid", "HardSilu": "hard_silu", "HardTanh": "hard_tanh",
        "TanhShrink": "tanh_shrink", "SparsePlus": "sparse_plus", "SparseSigmoid": "sparse_sigmoid",
    }.items()},
    "Celu": activation("celu", alpha=1.0), "Squareplus": activation("squareplus", b=4),
    "SoftShrink": activation("soft_shrink", threshold=0.5), "HardShrink": activation("hard_shrink", threshold=0.5),
    **{op: last_axis(name) for op, name in {
        "Softmax": "softmax", "LogSoftmax": "log_softmax", "Sparsemax": "sparsemax", "Glu": "glu"}.items()},
    "Elu": elu, "Gelu": gelu(approximate=True), "LeakyRelu": leaky_relu("negative_slope"), "Absolute": absolute,
}
"""Keras 3 ``keras.ops`` operation class (``keras.ops.abs`` is ``Absolute``, ``keras.ops.swish`` is ``Silu``)
→ builder."""
