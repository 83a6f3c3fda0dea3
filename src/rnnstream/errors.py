"""The errors rnnstream raises on purpose; every one derives from :class:`RnnstreamError`.

Each message says what was received, what was expected and what to do about it.

>>> issubclass(UnsupportedLayerError, RnnstreamError)
True
"""

from __future__ import annotations


class RnnstreamError(Exception):
    """Root of every error that rnnstream raises on purpose."""


class ModelFileError(RnnstreamError, ValueError):
    """A model file cannot be read: not a model, truncated, or its weights are missing or mis-shaped."""


class UnsupportedLayerError(RnnstreamError, ValueError):
    """A layer cannot be streamed (it needs the future of the sequence) or is not known to rnnstream."""


class InputError(RnnstreamError, ValueError):
    """An input to ``step``/``run`` has the wrong shape, dtype, batch size or values."""


class StateError(RnnstreamError, ValueError):
    """A state does not belong to this model, or its bytes are malformed."""


class MissingDependencyError(RnnstreamError, ImportError):
    """An optional dependency is needed for this call; the message says what to install."""
