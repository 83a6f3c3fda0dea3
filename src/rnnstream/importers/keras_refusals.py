"""Why a Keras layer cannot stream: the built-in layers rnnstream refuses by name, each with its reason,
and the message for a layer it does not know at all.

Every built-in is refused for what it is: a layer that needs the whole sequence, one that changes the
time axis, one that works on images, a preprocessing step that belongs before the model, or a per-step
layer rnnstream has no step for yet. Only a layer that is not built into Keras is called custom.
"""

from __future__ import annotations

from rnnstream.errors import UnsupportedLayerError
from rnnstream.importers.keras_context import LayerContext

_NEEDS_FUTURE = "needs the whole sequence, including steps that have not arrived yet"
_NESTED = "a model nested inside a model is not supported; rebuild it as one flat model"
_ATTENTION = f"attends over every time step: it {_NEEDS_FUTURE}"
_WINDOWS = (
    "its windows slide over axis 1, which is the time axis of a sequence, together with the features: it "
    "reads several steps at once and shrinks, pads or resamples the time axis; only Conv1D "
    "(padding='causal', stride 1) streams over time"
)
_CONV_RNN = "a convolutional recurrent layer over images per step; rnnstream has no step for it"
_STRINGS = (
    "a preprocessing layer on strings or lookup tables: rnnstream streams numbers, so run it before the model "
    "and feed its output (token ids or features)"
)
_IMAGES = "an image preprocessing layer (it works on height and width): it has no time axis to stream over"
_NO_STEP = "a per-step layer rnnstream has no step for yet"

REFUSED: dict[str, str] = {
    "Bidirectional": "its backward half reads the sequence from the end; a stream has no end yet",
    **dict.fromkeys(
        ("Attention", "AdditiveAttention", "MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention"),
        _ATTENTION,
    ),
    "Lambda": "it holds Python code, and rnnstream never runs code from a model file",
    "TFSMLayer": "it wraps a TensorFlow SavedModel (a TensorFlow graph, not Keras layers)",
    "GlobalAveragePooling1D": f"pools over time: it {_NEEDS_FUTURE}",
    "GlobalMaxPooling1D": f"pools over time: it {_NEEDS_FUTURE}",
    "MaxPooling1D": "pools over windows of time steps, changing the time axis",
    "AveragePooling1D": "pools over windows of time steps, changing the time axis",
    "Conv1DTranspose": "it upsamples the time axis (several output steps per input step)",
    "SeparableConv1D": "a separable 1-D convolution; rnnstream streams Conv1D only (padding='causal' or kernel_size=1)",
    "DepthwiseConv1D": "a depthwise 1-D convolution; rnnstream streams Conv1D only (padding='causal' or kernel_size=1)",
    "Flatten": "it folds the time axis into the features",
    "RepeatVector": "it makes a new time axis from one vector",
    "Cropping1D": "it cuts steps off the time axis",
    "ZeroPadding1D": "it adds steps to the time axis",
    "UpSampling1D": "it repeats steps of the time axis",
    **dict.fromkeys(
        (f"{kind}{d}D" for d in (2, 3) for kind in (
            "Conv", "ConvTranspose", "MaxPooling", "AveragePooling", "GlobalMaxPooling", "GlobalAveragePooling",
            "Cropping", "ZeroPadding", "UpSampling",
        )),
        _WINDOWS,
    ),
    "SeparableConv2D": _WINDOWS,
    "DepthwiseConv2D": _WINDOWS,
    **dict.fromkeys(("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"), _CONV_RNN),
    **dict.fromkeys(
        ("TextVectorization", "StringLookup", "IntegerLookup", "Hashing", "HashedCrossing", "CategoryEncoding"),
        _STRINGS,
    ),
    **dict.fromkeys(("Resizing", "CenterCrop", "RandomCrop"), _IMAGES),
    **dict.fromkeys(
        ("Dot", "EinsumDense", "PReLU", "UnitNormalization", "GroupNormalization", "Discretization"), _NO_STEP
    ),
    "CuDNNLSTM": "the old CuDNN layer's weights are laid out differently; re-save the model with LSTM",
    "CuDNNGRU": "the old CuDNN layer's weights are laid out differently; re-save the model with GRU",
    "Sequential": _NESTED,
    "Functional": _NESTED,
    "Model": _NESTED,
}
"""Keras built-in layer class → why it cannot stream."""


def refusal(ctx: LayerContext, supported: list[str]) -> UnsupportedLayerError:
    """The error for a layer no builder converts: its reason if it is a known built-in, else what it is."""
    reason = REFUSED.get(ctx.class_name)
    if reason is not None:
        return ctx.refuse(f"cannot stream: {reason}")
    listed = f"Supported: {', '.join(supported)}"
    if ctx.module.startswith("keras"):
        return ctx.refuse(
            f"is a built-in Keras layer ({ctx.module}.{ctx.class_name}) that rnnstream has no step for yet, so it "
            f"cannot stream. {listed}"
        )
    return ctx.refuse(
        "is not a layer rnnstream converts: neither one of the Keras layers it streams nor a built-in it "
        "refuses by name. If it is a custom layer, its call() is code, which rnnstream never runs from a "
        f"file. {listed}"
    )
