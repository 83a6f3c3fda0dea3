"""A batch's inputs: each request's own values cast to the model's inputs, checked, then stacked.

Every request is cast on its own to each input's shape and dtype (float32, or int64 token ids) before
anything is stacked, so a request of another kind (a float sent as a token id, a string, a ragged list)
is set aside with its error and never changes the dtype of its batch-mates' arrays. Values are then
checked on the stacked batch, one vectorised test per input: token ids within the Embedding's range,
and (``check_finite``) no NaN or ±Inf. A request that fails any check fails alone.

>>> import numpy as np, rnnstream
>>> from rnnstream.step_request import StepRequest
>>> text = rnnstream.load(rnnstream.demo.TEXT_MODEL)
>>> (batch,), errors = stack_inputs(text, [StepRequest("a", np.int64(3)), StepRequest("b", np.float32(1.5)),
...                                        StepRequest("c", np.int64(99))])
>>> batch.tolist(), sorted(errors)
([3], [1, 2])
>>> print(errors[1])
stream 'b': input 'chars' takes integer token ids, got float32 values
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnstream.errors import InputError
from rnnstream.graph import InputSpec
from rnnstream.types import Array

if TYPE_CHECKING:
    from rnnstream.model import StreamModel
    from rnnstream.step_request import StepRequest

INT64_MAX = np.iinfo(np.int64).max


def stack_inputs(
    model: StreamModel, requests: Sequence[StepRequest], *, check_finite: bool = False
) -> tuple[list[Array], dict[int, InputError]]:
    """One batch array per model input, rows in request order, without the requests set aside; and the
    error of each request set aside, by its position in ``requests``."""
    specs = model.inputs
    if len(specs) == 1:  # the usual case: arrays of the right shape and dtype, stacked at once
        spec = specs[0]
        shape, dtype = spec.spec.shape, np.dtype(spec.spec.dtype)
        arrays = [x for r in requests if isinstance(x := r.x, np.ndarray) and x.shape == shape and x.dtype == dtype]
        if len(arrays) == len(requests):
            # 0-d values (token ids) do not concatenate; concatenate takes a third of np.stack's time
            batch = np.concatenate(arrays).reshape(len(arrays), *shape) if shape else np.stack(arrays)
            return _checked(model, requests, list(range(len(requests))), [batch], {}, check_finite)
    columns: list[list[Array]] = [[] for _ in specs]
    errors: dict[int, InputError] = {}
    kept: list[int] = []
    for k, request in enumerate(requests):
        try:
            arrays = [cast_input(spec, part) for spec, part in zip(specs, input_parts(request.x, specs), strict=True)]
        except InputError as error:
            errors[k] = InputError(f"stream {request.stream_id!r}: {error}")
            continue
        kept.append(k)
        for column, array in zip(columns, arrays, strict=True):
            column.append(array)
    if not kept:
        return [], errors
    return _checked(model, requests, kept, [np.stack(column) for column in columns], errors, check_finite)


def cast_input(spec: InputSpec, value: Any) -> Array:
    """One step of one stream's value for input ``spec``, as its dtype; InputError says what is wrong.

    >>> from rnnstream.layers.layer import TensorSpec
    >>> cast_input(InputSpec("x", TensorSpec((2,)), 0), [1, 2.5]).tolist()
    [1.0, 2.5]
    >>> cast_input(InputSpec("x", TensorSpec((2,)), 0), ["a", "b"])
    Traceback (most recent call last):
    rnnstream.errors.InputError: input 'x' takes real numbers (float32), got <U1 values
    """
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError):  # a ragged list, or an int too large for any dtype
        raise InputError(f"input {spec.name!r} takes an array of shape {spec.spec.shape}, got {_short(value)}") \
            from None
    if array.shape != spec.spec.shape:
        raise InputError(
            f"input {spec.name!r} has shape {array.shape}, expected {spec.spec.shape} (one step, no batch axis)"
        )
    return cast_dtype(spec, array)


def cast_dtype(spec: InputSpec, array: Array) -> Array:
    """``array`` (of the right shape) as input ``spec``'s dtype: int64 token ids from integers only, float32
    from real numbers; anything else is an InputError.

    >>> from rnnstream.layers.layer import TensorSpec
    >>> cast_dtype(InputSpec("x", TensorSpec((2,)), 0), np.array([1, 2])).dtype
    dtype('float32')
    """
    kind = array.dtype.kind
    if spec.spec.dtype == "int64":
        if kind not in "iu":
            raise InputError(f"input {spec.name!r} takes integer token ids, got {array.dtype} values")
        if kind == "u" and array.dtype.itemsize == 8 and array.size and int(array.max()) > INT64_MAX:
            raise InputError(f"input {spec.name!r}: token id {int(array.max())} is out of range")
        return array.astype(np.int64, copy=False)
    if kind not in "fiu":
        raise InputError(f"input {spec.name!r} takes real numbers (float32), got {array.dtype} values")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes ±inf: the finite check sees it
        return array.astype(np.float32, copy=False)


def input_parts(x: Any, specs: Sequence[InputSpec]) -> list[Any]:
    """One request's value of each input, in ``specs``' order: ``x`` itself for a one-input model, else a
    list in that order or a dict by name (InputError says what is missing)."""
    if isinstance(x, Mapping):
        missing = [spec.name for spec in specs if spec.name not in x]
        if missing:
            raise InputError(f"give one value per model input {[s.name for s in specs]}; missing {missing}")
        return [x[spec.name] for spec in specs]
    if len(specs) > 1:
        if not isinstance(x, list | tuple) or len(x) != len(specs):
            raise InputError(f"give one value per model input {[s.name for s in specs]} (a list or a dict)")
        return list(x)
    return [x]


def _checked(
    model: StreamModel,
    requests: Sequence[StepRequest],
    kept: list[int],
    batch: list[Array],
    errors: dict[int, InputError],
    check_finite: bool,
) -> tuple[list[Array], dict[int, InputError]]:
    """``batch`` (rows: the requests ``kept``) without the rows whose values fail a check."""
    bad = np.zeros(len(kept), bool)
    reasons: dict[int, str] = {}
    for spec, column in zip(model.inputs, batch, strict=True):
        flat = column.reshape(len(kept), -1)  # (n, features)
        limit = model.token_ranges.get(spec.name)
        if limit is not None and flat.size and (int(flat.min()) < 0 or int(flat.max()) >= limit):
            out = ((flat < 0) | (flat >= limit)).any(axis=1)
            for row in np.flatnonzero(out & ~bad).tolist():
                ids = flat[row]
                reasons[row] = (f"input {spec.name!r}: token id {int(ids[(ids < 0) | (ids >= limit)][0])} is out of "
                                f"range (this model takes ids 0..{limit - 1})")
            bad |= out
        if check_finite and column.dtype.kind == "f" and not np.isfinite(flat).all():
            out = ~np.isfinite(flat).all(axis=1)
            for row in np.flatnonzero(out & ~bad).tolist():
                value = flat[row][~np.isfinite(flat[row])][0]
                reasons[row] = (f"input {spec.name!r} has a non-finite value {value} (NaN or ±Inf, or a number "
                                "beyond float32's range); send finite values")
            bad |= out
    if not bad.any():
        return batch, errors
    for row in np.flatnonzero(bad).tolist():
        k = kept[row]
        errors[k] = InputError(f"stream {requests[k].stream_id!r}: {reasons[row]}")
    good = ~bad
    if not good.any():
        return [], errors
    return [column[good] for column in batch], errors


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
