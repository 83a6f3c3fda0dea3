"""Importers: model files and live framework objects → StreamModel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rnnstream.errors import UnsupportedLayerError
from rnnstream.importers.keras_files import KerasSource, read_keras_file
from rnnstream.importers.keras_graph import build_graph
from rnnstream.model import StreamModel
from rnnstream.types import Array


def load(path: str | os.PathLike[str], *, backend: str = "auto", threads: int | None = None) -> StreamModel:
    """Load a trained model file as a StreamModel; TensorFlow is not needed.

    Reads Keras 3 ``.keras`` archives and legacy ``.h5`` files (tf.keras 2 or Keras 3). No code from
    the file is ever run. Layers that cannot stream are refused with the reason. ``backend`` and
    ``threads``: see :class:`~rnnstream.StreamModel`.

    >>> import rnnstream
    >>> rnnstream.load(rnnstream.demo.SEED_MODEL).state_size
    600
    """
    source = read_keras_file(Path(path))
    return _from_source(source, backend=backend, threads=threads)


def _from_source(source: KerasSource, *, backend: str = "auto", threads: int | None = None) -> StreamModel:
    graph, name = build_graph(source)
    return StreamModel(graph, name=name, source=source.description, backend=backend, threads=threads)


def from_keras(model: Any, *, backend: str = "auto", threads: int | None = None) -> StreamModel:
    """Build a StreamModel from a live Keras model object (Keras 3 or tf.keras 2), e.g. in a notebook.

    The model's config and current weights are read; nothing is saved to disk.
    """
    modules = [cls.__module__ for cls in type(model).__mro__]
    if any(m.startswith(("tf_keras", "tensorflow.python.keras")) for m in modules):
        keras_major = 2
    elif any(m.startswith("keras") for m in modules):
        keras_major = 3
    else:
        raise UnsupportedLayerError(f"from_keras expects a Keras model, got {type(model).__qualname__}")
    try:
        config = {"class_name": type(model).__name__, "config": model.get_config()}
    except NotImplementedError:
        config = {"class_name": type(model).__name__, "config": {}}
    if config["class_name"] not in ("Sequential", "Functional", "Model"):
        config["class_name"] = "Subclassed:" + config["class_name"]

    def weights(layer_name: str) -> list[Array]:
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            return []
        return list(layer.get_weights())

    source = KerasSource(config, weights, keras_major, f"live Keras {keras_major} model {type(model).__name__}")
    return _from_source(source, backend=backend, threads=threads)


__all__ = ["from_keras", "load"]
