"""History priming on the wire: a step request whose inputs carry a time axis steps its stream T times.

Over HTTP and gRPC an input tensor of shape ``[1, T, *features]`` (one more axis than a step's
``[1, *features]``, right after the batch axis) carries T steps; every input of a request has the same T,
at most ``max_prime_steps``. Over the WebSocket a request says ``"steps": T`` and its values are T steps
(JSON: T × the step's values, flat or nested; binary frames: T records of the request's inputs). The
request parameter ``sequence_outputs`` (``"last"``, the default, or ``"all"``) picks the answer: the last
step's outputs, or every step's (``[1, T, *shape]``).

>>> import numpy as np
>>> from rnnstream.graph import InputSpec
>>> from rnnstream.layers.layer import TensorSpec
>>> spec = InputSpec("x", TensorSpec((2,)), 0)
>>> x, T = step_or_history(np.zeros((1, 3, 2), np.float32), spec, "FP32", "inputs[0]", 10)
>>> x.shape, T
((3, 2), 3)
>>> step_or_history(np.zeros((1, 2), np.float32), spec, "FP32", "inputs[0]", 10)[1] is None
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from rnnstream.graph import InputSpec
from rnnstream.history import cast_steps
from rnnstream.server import limits
from rnnstream.server.refusals import ProtocolError
from rnnstream.server.tensors import DATATYPES, one_step, spec_datatype, values
from rnnstream.types import Array

STEP_NUMBER_MAX = 2**63 - 1


def step_or_history(
    array: Array, spec: InputSpec, datatype: str, where: str, max_steps: int
) -> tuple[Array, int | None]:
    """A decoded input tensor as one step of input ``spec`` (``[1, *features]`` or ``[*features]``: the step,
    None) or as T steps (``[1, T, *features]``: ``[T, *features]`` and T), cast to the input's dtype."""
    features = spec.spec.shape
    if array.shape in (features, (1, *features)):
        return one_step(array, spec, datatype), None
    history = "[" + ", ".join(["1", "T", *map(str, features)]) + "]"
    if array.ndim != len(features) + 2 or array.shape[0] != 1 or array.shape[2:] != features:
        raise ProtocolError(f"input {spec.name!r} has shape {list(array.shape)}; one step of one sequence is "
                            f"{[1, *features]}, and T steps of it {history}")
    T = int(array.shape[1])
    if T < 1:
        raise ProtocolError(f"{where}: shape {list(array.shape)} carries no steps (a time axis of 0); send "
                            f"{history} with T ≥ 1")
    limits.check("max_prime_steps", T, max_steps)
    return cast_steps(spec, array[0], T), T


def request_inputs(
    tensors: Mapping[str, tuple[Array, str, str]], specs: Sequence[InputSpec], max_steps: int
) -> tuple[Any, int | None]:
    """A request's inputs (``{name: (array, datatype, where)}``, one per model input) as a step (``x``: an
    array for a one-input model, else a dict by name) and its number of steps (None: one step)."""
    arrays: dict[str, Array] = {}
    counts: dict[str, int | None] = {}
    for spec in specs:
        array, datatype, where = tensors[spec.name]
        arrays[spec.name], counts[spec.name] = step_or_history(array, spec, datatype, where, max_steps)
    if len(set(counts.values())) > 1:
        shown = {name: "one step" if T is None else f"{T} steps" for name, T in counts.items()}
        raise ProtocolError(f"inputs: every input of a request carries the same steps (one step [1, *features], "
                            f"or T steps [1, T, *features]); got {shown}")
    return arrays[specs[0].name] if len(specs) == 1 else arrays, counts[specs[0].name]


def history_values(raw: msgspec.Raw, spec: InputSpec, steps: int, where: str) -> Array:
    """T steps of input ``spec`` from plain JSON values (a WebSocket request with ``steps``): T × the step's
    values, flat or nested, as ``[T, *features]``."""
    datatype = spec_datatype(spec)
    found = values(raw, datatype, where)
    count = steps * math.prod(spec.spec.shape)
    if len(found) != count:
        raise ProtocolError(f"{where} has {len(found)} values; {steps} steps of input {spec.name!r} take {count} "
                            f"(shape {[steps, *spec.spec.shape]})")
    return cast_steps(spec, np.array(found, DATATYPES[datatype]).reshape(steps, *spec.spec.shape), steps)


def all_outputs(value: str | None, steps: int | None, where: str) -> bool:
    """Whether a request asks for every step's outputs: ``sequence_outputs`` is ``"last"`` (or absent) or
    ``"all"``; a one-step request (``steps`` None) has one step's outputs either way."""
    if value not in (None, "last", "all"):
        raise ProtocolError(f'{where}: "last" (the last step\'s outputs) or "all" (every step\'s), got {value!r}')
    return value == "all" and steps is not None


def check_numbers(number: int | None, steps: int | None, where: str) -> None:
    """The last step a request covers (``number + steps - 1``) within the step numbers' range."""
    if number is not None and steps is not None and number + steps - 1 > STEP_NUMBER_MAX:
        raise ProtocolError(f"{where}: steps {number}..{number + steps - 1} run past the last step number "
                            f"{STEP_NUMBER_MAX}")
