"""One step of one stream, as the pool, the server and the background launcher take it.

>>> import numpy as np
>>> plain = StepRequest("a", np.zeros(4, np.float32))
>>> is_plain_next_step(plain), is_plain_next_step(plain._replace(step_number=3))
(True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rnnstream.errors import RnnstreamError
from rnnstream.types import Inputs, Outputs

Result = Outputs | RnnstreamError
"""What a step request comes to: its outputs, or its own error."""


class StepRequest(NamedTuple):
    """One step of one stream (a named tuple: the server makes one per request, and a frozen dataclass costs
    three times as much to make).

    ``step_number``: for exactly-once retries (the first step is 1). ``start``: begin the stream afresh
    (Triton's ``sequence_start``). ``end``: forget the stream after this step (``sequence_end``).
    ``must_exist``: refuse a stream the store does not hold (a step of an unknown sequence).
    ``steps``: None for one step; T for history priming: ``x`` holds T steps along a leading time axis
    (``[T, *features]`` per input), stepped in one engine pass; ``step_number`` is then the first of the
    T steps. ``all_outputs``: answer every step's outputs (``[T, *out]``), not only the last step's.
    """

    stream_id: str
    x: Inputs
    step_number: int | None = None
    start: bool = False
    end: bool = False
    must_exist: bool = False
    steps: int | None = None
    all_outputs: bool = False


def is_plain_next_step(request: StepRequest) -> bool:
    """Whether ``request`` is the next step of its stream with nothing to decide: no start, no end, no
    step number, one step (the steady state, which needs no per-stream decision before the engine runs)."""
    return not (request.start or request.end or request.step_number is not None or request.steps is not None)


def all_plain(requests: Sequence[StepRequest]) -> bool:
    """Whether every request of a batch is a plain next step (:func:`is_plain_next_step`).

    >>> import numpy as np
    >>> all_plain([StepRequest("a", np.zeros(4)), StepRequest("b", np.zeros(4), end=True)])
    False
    """
    return not any([r.start or r.end or r.step_number is not None or r.steps is not None for r in requests])
