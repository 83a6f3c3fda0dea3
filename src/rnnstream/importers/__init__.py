"""Importers: model files and live framework objects → StreamModel.

``load`` picks the importer by the file's suffix: ``.onnx`` → ONNX (:mod:`~rnnstream.importers.onnx_model`),
anything else → Keras (``.keras``, ``.h5``, recognised by their contents). PyTorch modules come in
live, with :func:`from_torch`: a ``.pt`` checkpoint holds weights but no architecture.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rnnstream.errors import MissingDependencyError, ModelFileError, RnnstreamError, UnsupportedLayerError
from rnnstream.importers.keras_files import KerasSource, read_keras_file
from rnnstream.importers.keras_graph import build_graph
from rnnstream.importers.torch_files import is_torchscript
from rnnstream.model import StreamModel
from rnnstream.types import Array


def load(
    path: str | os.PathLike[str], *, backend: str = "auto", threads: int | None = None, precision: str = "fp32"
) -> StreamModel:
    """Load a trained model file as a StreamModel; TensorFlow is not needed.

    Reads Keras 3 ``.keras`` archives and legacy ``.h5`` files (tf.keras 2 or Keras 3). No code from
    the file is ever run. Layers that cannot stream are refused with the reason. ``backend``,
    ``threads`` and ``precision`` (``"fp32"``, bfloat16 weights: ``"bf16"``, ``"bf16-dot"``, ..., or ``"int8"``:
    :mod:`rnnstream.precision`): see
    :class:`~rnnstream.StreamModel`.

    ``.onnx`` files (needs the ``onnx`` package) are read by the ONNX importer; see
    :mod:`rnnstream.importers.onnx_model` for the operators it reads.

    >>> import rnnstream
    >>> rnnstream.load(rnnstream.demo.SEED_MODEL).state_size
    600
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        try:
            import onnx  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError(
                "loading an .onnx file needs the onnx package: pip install 'rnnstream[onnx]'"
            ) from e
        from rnnstream.importers.onnx_model import read_onnx

        with malformed_as_file_error(path.name):
            graph, name, description = read_onnx(path)
            return StreamModel(
                graph, name=name, source=description, backend=backend, threads=threads, precision=precision
            )
    if suffix in TORCH_SUFFIXES and is_torchscript(path):
        raise ModelFileError(
            f"{path.name} is a TorchScript archive (torch.jit.save): rnnstream reads a module's architecture from "
            "its Python code, which TorchScript replaces. Build the nn.Module in Python, load the weights "
            "(torch.jit.load(...).state_dict()) into it, and import it with rnnstream.from_torch(module, example_input)"
        )
    if suffix in TORCH_SUFFIXES:
        raise ModelFileError(
            f"{path.name} is a PyTorch checkpoint: it holds weights but not the architecture (the module's code), "
            "so rnnstream cannot load it alone. Build the module in Python and import it with "
            f"rnnstream.from_torch(module, example_input, checkpoint={str(path)!r})"
        )
    with malformed_as_file_error(path.name):
        source = read_keras_file(path)
        return _from_source(source, backend=backend, threads=threads, precision=precision)


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, OSError)
"""What Python (and h5py, for broken bytes) raises when a model file's config or weights do not have the structure
its importer reads. A missing or unreadable file is refused before, by name."""


@contextlib.contextmanager
def malformed_as_file_error(name: str) -> Iterator[None]:
    """Refuse (ModelFileError) a file whose config or weights do not fit together: the importers read what
    Keras and the ONNX exporters write, and anything else surfaces as Python's own error, named here.

    >>> with malformed_as_file_error("model.keras"):  # doctest: +ELLIPSIS
    ...     {}["layers"]
    Traceback (most recent call last):
    rnnstream.errors.ModelFileError: model.keras: its config or weights ... (KeyError: 'layers'); re-save ...
    """
    try:
        yield
    except RnnstreamError:
        raise
    except MALFORMED as error:
        raise ModelFileError(
            f"{name}: its config or weights are not what the framework writes, or do not fit together "
            f"({type(error).__name__}: {error}); re-save the model with its framework, and if the framework "
            "wrote this file, please report it"
        ) from error


def _from_source(
    source: KerasSource, *, backend: str = "auto", threads: int | None = None, precision: str = "fp32"
) -> StreamModel:
    graph, name = build_graph(source)
    return StreamModel(
        graph, name=name, source=source.description, backend=backend, threads=threads, precision=precision
    )


def from_keras(
    model: Any, *, backend: str = "auto", threads: int | None = None, precision: str = "fp32"
) -> StreamModel:
    """Build a StreamModel from a live Keras model object (Keras 3 or tf.keras 2), e.g. in a notebook.

    The model's config and current weights are read; nothing is saved to disk. ``precision``: as for
    :func:`load`.
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
    return _from_source(source, backend=backend, threads=threads, precision=precision)


def from_torch(
    module: Any,
    example_input: Any,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    input_layout: str | Sequence[str | None] | None = None,
    backend: str = "auto",
    threads: int | None = None,
    precision: str = "fp32",
) -> StreamModel:
    """Build a StreamModel from a PyTorch module: ``forward`` is traced with torch.fx, never run on data.

    Sequence modules (``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` over ``[B, T, F]``, either ``batch_first``)
    and step modules (``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` called once on ``[B, F]``) both
    stream; see :mod:`rnnstream.importers.torch_module` for what ``forward`` may contain.
    ``example_input``: one example of ``forward``'s inputs (a tensor or a tuple); only its shapes and
    dtypes are used. ``checkpoint``: a ``state_dict`` file, read with ``torch.load(weights_only=True)``,
    checked and loaded into ``module`` first. ``input_layout``: how each input's axes are laid out, where the
    graph cannot tell: ``"NTC"`` (``[B, T, F]``), ``"TNC"`` or ``"NCT"`` (channels first, ``[B, C, T]``, a TCN's
    input; found by itself when the input goes straight into a ``Conv1d``); one string, or one per input.
    ``precision``: as for :func:`load`. Needs torch (``pip install 'rnnstream[torch]'``).

    >>> import torch, numpy as np, rnnstream
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())
    >>> model = rnnstream.from_torch(net, torch.zeros(1, 3))
    >>> y, _ = model.step(np.zeros((2, 3), np.float32), model.initial_state(2))
    >>> y.shape
    (2, 4)
    """
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            "from_torch needs PyTorch: pip install 'rnnstream[torch]' (or any torch >= 2.1)"
        ) from e
    from rnnstream.importers.torch_module import import_module

    return import_module(module, example_input, checkpoint=checkpoint, input_layout=input_layout, backend=backend,
                         threads=threads, precision=precision)  # fmt: skip


__all__ = ["from_keras", "from_torch", "load"]
