"""Generation: feed a model's outputs back as its next inputs, one step at a time.

- :func:`generate` / :func:`agenerate` and :class:`Generation`: token models (Embedding → RNN → scores),
  sampled greedily or with temperature, top-k and top-p, seeded per stream; many streams share one
  batched step per token.
- :func:`forecast` / :func:`forecast_stream`: rollouts of real-valued models, with exogenous inputs,
  noise for scenario paths and forecast cones, from a fork of a live stream's state.
"""

from rnnstream.generation.api import agenerate, generate
from rnnstream.generation.forecast import Forecast, forecast, forecast_stream
from rnnstream.generation.sampling import Sampling, sample
from rnnstream.generation.tokens import Generation, TokenEvent
from rnnstream.generation.vocab import Vocabulary

__all__ = [
    "Forecast",
    "Generation",
    "Sampling",
    "TokenEvent",
    "Vocabulary",
    "agenerate",
    "forecast",
    "forecast_stream",
    "generate",
    "sample",
]
