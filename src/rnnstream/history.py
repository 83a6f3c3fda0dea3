"""History priming: a request that carries T steps of one stream, stepped in one engine pass.

A stream that (re)joins with a backlog sends its history as one request (:class:`StepRequest` with
``steps=T``, each input ``[T, *features]``) instead of T requests. Its inputs are cast and checked here,
on their own (a bad history fails its own request only), and :func:`run_history` steps it with
:meth:`StreamModel.run` from the stream's state row: exactly T calls of the step.

>>> import numpy as np, rnnstream
>>> from rnnstream.step_request import StepRequest
>>> model = rnnstream.load(rnnstream.demo.SEED_MODEL)
>>> request = StepRequest("a", np.zeros((5, 4), np.float32), steps=5)
>>> histories, errors = cast_histories(model, [request], [0])
>>> [a.shape for a in histories[0]], errors
([(5, 4)], {})
>>> ys, row = run_history(model, model.initial_state().rows, histories[0])
>>> ys[0].shape, row.shape
((5, 1), (1, 600))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnstream.batch_inputs import cast_dtype, input_parts
from rnnstream.errors import InputError, StepOrderError
from rnnstream.graph import InputSpec
from rnnstream.model import StreamModel
from rnnstream.state import State
from rnnstream.step_request import StepRequest
from rnnstream.types import Array, FloatArray


def cast_histories(
    model: StreamModel, requests: Sequence[StepRequest], positions: Sequence[int], *, check_finite: bool = False
) -> tuple[dict[int, list[Array]], dict[int, InputError]]:
    """The inputs of the history requests at ``positions``: per position one ``[T, *features]`` array per
    model input (in the model's order), or the request's InputError."""
    histories: dict[int, list[Array]] = {}
    errors: dict[int, InputError] = {}
    for k in positions:
        request = requests[k]
        try:
            histories[k] = history_inputs(model, request, check_finite=check_finite)
        except InputError as error:
            errors[k] = InputError(f"stream {request.stream_id!r}: {error}")
    return histories, errors


def history_inputs(model: StreamModel, request: StepRequest, *, check_finite: bool = False) -> list[Array]:
    """``request``'s T steps of each model input, cast and checked; InputError says what is wrong."""
    T = request.steps
    if isinstance(T, bool) or not isinstance(T, int | np.integer) or T < 1:
        raise InputError(f"steps is the number of steps the inputs hold, an integer from 1; got {T!r}")
    arrays = [cast_steps(spec, part, int(T)) for spec, part in zip(model.inputs, input_parts(request.x, model.inputs),
                                                                    strict=True)]
    for spec, array in zip(model.inputs, arrays, strict=True):
        limit = model.token_ranges.get(spec.name)
        if limit is not None and array.size and (int(array.min()) < 0 or int(array.max()) >= limit):
            bad = array[(array < 0) | (array >= limit)].reshape(-1)[0]
            raise InputError(f"input {spec.name!r}: token id {int(bad)} is out of range (this model takes ids "
                             f"0..{limit - 1})")
        if check_finite and array.dtype.kind == "f" and not np.isfinite(array).all():
            value = array[~np.isfinite(array)].reshape(-1)[0]
            raise InputError(f"input {spec.name!r} has a non-finite value {value} (NaN or ±Inf, or a number beyond "
                             "float32's range); send finite values")
    return arrays


def cast_steps(spec: InputSpec, value: Any, steps: int) -> Array:
    """``steps`` steps of one stream's value for input ``spec`` (``[steps, *features]``), as its dtype.

    >>> from rnnstream.layers.layer import TensorSpec
    >>> cast_steps(InputSpec("x", TensorSpec((2,)), 0), [[1, 2], [3, 4.5]], 2).tolist()
    [[1.0, 2.0], [3.0, 4.5]]
    >>> cast_steps(InputSpec("x", TensorSpec((2,)), 0), [1, 2], 2)
    Traceback (most recent call last):
    rnnstream.errors.InputError: input 'x' has shape (2,), expected (2, 2) (2 steps of (2,))
    """
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError):  # a ragged list, or an int too large for any dtype
        raise InputError(f"input {spec.name!r} takes {steps} steps of shape {spec.spec.shape}") from None
    expected = (steps, *spec.spec.shape)
    if array.shape != expected:
        raise InputError(f"input {spec.name!r} has shape {array.shape}, expected {expected} ({steps} steps of "
                         f"{spec.spec.shape})")
    return cast_dtype(spec, array)


def run_history(model: StreamModel, row: FloatArray, history: list[Array]) -> tuple[list[FloatArray], FloatArray]:
    """Step one stream from its state ``row (1, S)`` through ``history`` (per input ``[T, *features]``,
    checked): every step's outputs (per output ``[T, *shape]``) and the new row ``(1, S)``."""
    state = State.adopt(row, model.fingerprint)
    inputs = {spec.name: a[None] for spec, a in zip(model.inputs, history, strict=True)}  # each (1, T, *features)
    ys, new_state = model.run(inputs, state)  # each (1, T, *shape)
    outputs = ys if isinstance(ys, list) else [ys]
    return [y[0] for y in outputs], new_state.rows


def stored_steps(
    request: StepRequest, applied: int, last: FloatArray, answer: FloatArray | None
) -> FloatArray | StepOrderError:
    """The stored answer ``(T, O)`` of a retried history request asking for every step's outputs, from its
    stream's record (``last``: the last step's outputs; ``answer``: the answer of several steps kept, if
    any); a StepOrderError when the store kept the outputs of another number of steps."""
    T = request.steps or 1
    kept = last[None] if T == 1 or answer is None else answer
    if len(kept) == T:
        return kept
    return StepOrderError(
        f"stream {request.stream_id!r} has applied steps {request.step_number}..{applied} already, and the store "
        f"keeps the answer of the request that applied step {applied}: the outputs of its last {len(kept)} step(s), "
        f'not of these {T} (send the same steps and sequence_outputs "all" again); its next step is {applied + 1}',
        stream_id=request.stream_id, expected=applied + 1, received=request.step_number or 0)
