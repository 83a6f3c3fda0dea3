"""What each importer reads and what it refuses, from the importers' own tables (the docs' coverage table is
generated here, and a test keeps the page equal to it). Needs torch and onnx installed (it reads their tables).

>>> rows = coverage()
>>> ("Keras", "layers") in {(framework, kind) for framework, kind, _ in rows}
True
>>> "LSTM" in dict(((f, k), names) for f, k, names in rows)["Keras", "layers"]
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rnnstream.importers import (
    keras_layers,
    keras_ops,
    keras_refusals,
    keras_tf_ops,
    onnx_model,
    torch_glue,
    torch_layers,
    torch_weights,
)


def _names(keys: Iterable[Any]) -> list[str]:
    """Table keys as names: strings as they are, classes and functions by their names."""
    found = {key if isinstance(key, str) else getattr(key, "__name__", str(key)) for key in keys}
    return sorted(found, key=str.lower)


def coverage() -> list[tuple[str, str, list[str]]]:
    """``(framework, what, names)``: the layers, operations and functions each importer reads, and what it
    refuses by name (with the reason, when met)."""
    return [
        ("Keras", "layers", _names(keras_layers.BUILDERS)),
        ("Keras", "keras.ops in Keras 3 files", _names(keras_ops.OPS)),
        ("Keras", "TensorFlow functions in tf.keras 2 files", _names(keras_tf_ops.TF_OPS)),
        ("Keras", "refused with the reason", _names(keras_refusals.REFUSED)),
        ("PyTorch", "modules", _names(torch_layers.MODULES)),
        ("PyTorch", "functions in forward", _names([*torch_glue.FUNCTIONS, *torch_layers.FUNCTIONAL])),
        ("PyTorch", "tensor methods in forward", _names(torch_glue.METHODS)),
        ("PyTorch", "weights computed before each call", _names(torch_weights.computed())),
        ("PyTorch", "refused with the reason", _names(torch_layers.REFUSED)),
        ("ONNX", "operators", _names(onnx_model.OPERATORS)),
        ("ONNX", "refused with the reason", _names(onnx_model.REFUSED)),
    ]


def markdown_table() -> str:
    """The coverage as a Markdown table (docs/models.md#coverage)."""
    rows = ["| framework | what | names |", "|---|---|---|"]
    rows += [f"| {framework} | {what} | {', '.join(f'`{n}`' for n in names)} |"
             for framework, what, names in coverage()]
    return "\n".join(rows)
