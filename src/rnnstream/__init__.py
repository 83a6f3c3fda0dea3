"""rnnstream: step trained recurrent models one observation at a time, with explicit per-stream state.

>>> import rnnstream, numpy as np
>>> model = rnnstream.load(rnnstream.demo.SEED_MODEL)
>>> state = model.initial_state(batch_size=1)
>>> y, state = model.step(np.zeros((1, 4), np.float32), state)
>>> y.shape
(1, 1)
"""

from rnnstream import demo
from rnnstream.client import AsyncClient, Client
from rnnstream.errors import (
    ConflictError,
    InputError,
    MissingDependencyError,
    ModelFileError,
    RnnstreamError,
    StateError,
    StepOrderError,
    StoreError,
    StreamLimitError,
    StreamNotFoundError,
    UnsupportedLayerError,
)
from rnnstream.generation import (
    Forecast,
    Generation,
    Sampling,
    TokenEvent,
    Vocabulary,
    agenerate,
    forecast,
    forecast_stream,
    generate,
)
from rnnstream.importers import from_keras, from_torch, load
from rnnstream.model import StreamModel
from rnnstream.state import State
from rnnstream.streams import Streams

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "ConflictError",
    "Forecast",
    "Generation",
    "InputError",
    "MissingDependencyError",
    "ModelFileError",
    "RnnstreamError",
    "Sampling",
    "State",
    "StateError",
    "StepOrderError",
    "StoreError",
    "StreamLimitError",
    "StreamModel",
    "StreamNotFoundError",
    "Streams",
    "TokenEvent",
    "UnsupportedLayerError",
    "Vocabulary",
    "__version__",
    "agenerate",
    "demo",
    "forecast",
    "forecast_stream",
    "from_keras",
    "from_torch",
    "generate",
    "load",
]
