"""Forecasting: roll a model forward by feeding its predictions back as its next inputs.

With history ``x_1 … x_n`` primed in one ``run``, the model's output after ``x_n`` is the first forecast
``ŷ_1``. Then for ``k = 1 … H−1``: the next input ``x_{n+k}`` takes the fed-back columns from ``ŷ_k``
(plus noise, for scenario paths) and the other columns from ``exogenous`` (features known in advance, such
as the calendar), and one step gives ``ŷ_{k+1}``. ``H`` forecasts cost one run and ``H − 1`` steps.

Scenario paths add Gaussian noise ``ε ~ N(0, σ²)`` to every forecast before it is fed back; all paths (and
the noiseless point forecast) step together as one batch, seeded, and give quantiles: a forecast cone.

>>> import numpy as np, rnnstream
>>> model = rnnstream.load(rnnstream.demo.SEED_MODEL)      # 4 features in, 1 out: feed y into column 0
>>> history = np.random.default_rng(0).random((30, 4), np.float32)
>>> future = np.zeros((5, 3), np.float32)                   # columns 1..3 for the forecast times
>>> result = forecast(model, history, 6, feedback={0: 0}, exogenous=future, noise=0.05, paths=50, seed=0)
>>> result.point.shape, result.paths.shape, result.quantiles([0.1, 0.9]).shape
((6, 1), (50, 6, 1), (2, 6, 1))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnstream.errors import InputError, StreamNotFoundError
from rnnstream.generation.engines import output_index
from rnnstream.model import Outputs, StreamModel
from rnnstream.output_codec import Codec
from rnnstream.state import State
from rnnstream.streams import Streams
from rnnstream.types import Array, FloatArray


@dataclass(frozen=True)
class Forecast:
    """``point [H, O]``: the rollout without noise. ``paths [P, H, O]``: scenario paths (noise fed back);
    the point forecast alone (P = 1) when there is no noise. ``sigma [O]``: the noise scale used."""

    point: FloatArray
    paths: FloatArray
    sigma: FloatArray

    @property
    def horizon(self) -> int:
        return int(self.point.shape[0])

    def quantiles(self, q: Sequence[float]) -> FloatArray:
        """Quantiles of the paths at each forecast time: ``[len(q), H, O]``."""
        return np.quantile(self.paths, np.asarray(q, np.float64), axis=0).astype(np.float32)

    @property
    def mean(self) -> FloatArray:
        mean: FloatArray = self.paths.mean(axis=0)
        return mean


@dataclass(frozen=True)
class _Column:
    """One model input: column j is fed back from output column ``source[j]`` where ``fed[j]``, and
    exogenous otherwise (the exogenous values fill those columns in order)."""

    fed: Array  # (F,) bool
    source: Array  # (F,) int; 0 where not fed


def forecast(
    model: StreamModel,
    history: Any,
    horizon: int,
    *,
    state: State | None = None,
    feedback: Mapping[Any, Any] | None = None,
    exogenous: Any = None,
    noise: float | Sequence[float] | str | None = None,
    paths: int | None = None,
    seed: int | None = None,
    output: int | str | None = None,
) -> Forecast:
    """Forecast ``horizon`` steps after ``history`` (``[T, F]``, or a list/dict by input name, no batch axis).

    ``state``: a one-row State to prime from (e.g. a live stream's ``streams.states([id])``; the stream is
    not changed). ``feedback``: which output columns feed which input columns, as ``{input_column:
    output_column}`` for a one-input model or ``{input_name: [output columns] or {column: output_column}}``;
    None feeds the output into the whole input (same width). ``exogenous``: the inputs' other columns at
    each forecast time, ``[H, E]`` (or by input name; the last row may be left out: it is never fed).
    ``noise``: σ (one, or one per output column) or ``"residual"`` (the std of the history's one-step
    errors); ``paths``: scenario paths (default 100 with noise); ``seed``: the noise's generator.
    """
    horizon = _check_horizon(horizon)
    index = output_index(model, output)
    columns = _plan(model, index, feedback)
    xs = _batch_of_one(model, history)
    start = _one_row(model, state)
    ys, primed = model.run(xs if len(xs) > 1 else xs[0], start)
    y_seq = _pick(ys, index)[0]  # (T, O)
    if y_seq.shape[0] == 0:
        raise InputError("history is empty; give at least one step to forecast from")
    sigma = _sigma(noise, model, index, columns, xs, y_seq)
    return _rollout(model, index, columns, primed, y_seq[-1], horizon, exogenous, sigma, paths, seed)


def forecast_stream(
    streams: Streams,
    stream_id: str,
    horizon: int,
    *,
    history: Any = None,
    feedback: Mapping[Any, Any] | None = None,
    exogenous: Any = None,
    noise: float | Sequence[float] | str | None = None,
    paths: int | None = None,
    seed: int | None = None,
    output: int | str | None = None,
) -> Forecast:
    """Forecast a live stream of ``streams`` from its state and last output, on a copy: the stream itself
    (state, step count, last output) is left exactly as it was.

    ``history``: new observations to prime first (not written to the stream); without it the stream's last
    output is the first forecast. Other arguments as for :func:`forecast`.

    >>> import numpy as np, rnnstream
    >>> streams = rnnstream.Streams(rnnstream.load(rnnstream.demo.SEED_MODEL))
    >>> _ = streams.step({"s": np.ones(4, np.float32)})
    >>> before = streams.snapshot("s")
    >>> forecast_stream(streams, "s", 3, feedback={0: 0}, exogenous=np.zeros((2, 3))).point.shape
    (3, 1)
    >>> streams.snapshot("s") == before
    True
    """
    model = streams.model
    record = streams.store.load([stream_id])  # one read: state, step count and last output of the same step
    if not record.exists[0]:
        raise StreamNotFoundError(f"no stream {stream_id!r} to forecast from (never stepped, closed, or expired)")
    state = State.adopt(record.rows, model.fingerprint)
    if history is not None:
        return forecast(model, history, horizon, state=state, feedback=feedback, exogenous=exogenous, noise=noise,
                        paths=paths, seed=seed, output=output)
    horizon = _check_horizon(horizon)
    if isinstance(noise, str):
        raise InputError("noise='residual' measures the errors over a history; pass history=, or give σ")
    if record.steps[0] == 0:
        raise InputError(f"stream {stream_id!r} has no output yet; pass history= to prime it first")
    index = output_index(model, output)
    columns = _plan(model, index, feedback)
    last = Codec([s.shape for s in model.output_specs]).unflatten(record.outputs[0])
    y_last = np.asarray(_pick(last, index), np.float32)  # (O,)
    sigma = _sigma(noise, model, index, columns, [], np.zeros((0, *y_last.shape), np.float32))
    return _rollout(model, index, columns, state, y_last, horizon, exogenous, sigma, paths, seed)


def _rollout(
    model: StreamModel,
    index: int,
    columns: list[_Column],
    state: State,
    y_last: FloatArray,
    horizon: int,
    exogenous: Any,
    sigma: FloatArray,
    paths: int | None,
    seed: int | None,
) -> Forecast:
    noisy = bool(np.any(sigma > 0))
    if paths is not None and not noisy:
        raise InputError(f"paths={paths} needs noise: without it every path is the point forecast")
    P = (100 if paths is None else _positive("paths", paths)) if noisy else 0
    future = _exogenous(model, columns, exogenous, horizon)
    rng = np.random.default_rng(seed)
    rows = state.select([0] * (P + 1))  # row 0: the point forecast; rows 1..P: the scenario paths
    y = np.repeat(y_last[None].astype(np.float32), P + 1, axis=0)  # (P+1, O)
    out = np.empty((P + 1, horizon, y.shape[1]), np.float32)
    for k in range(horizon):
        if P:
            y[1:] += rng.normal(0.0, 1.0, (P, y.shape[1])).astype(np.float32) * sigma  # (P, O)
        out[:, k] = y
        if k == horizon - 1:
            break
        x = [np.where(c.fed, y[:, c.source], e[k]) for c, e in zip(columns, future, strict=True)]  # (P+1, F) each
        ys, rows = model.step(x if len(x) > 1 else x[0], rows)
        y = np.array(_pick(ys, index), np.float32)
    return Forecast(point=out[0], paths=out[1:] if P else out[:1], sigma=sigma)


def _plan(model: StreamModel, index: int, feedback: Mapping[Any, Any] | None) -> list[_Column]:
    """Per model input: which columns are fed from which output column, and which are exogenous."""
    _check_forecastable(model, index)
    n_out = model.output_specs[index].shape[0]
    widths = {s.name: s.spec.shape[0] for s in model.inputs}
    maps = _feedback_maps(feedback, [s.name for s in model.inputs], widths, n_out)
    return [_fed_columns(s.name, widths[s.name], maps.get(s.name, {}), n_out) for s in model.inputs]


def _check_forecastable(model: StreamModel, index: int) -> None:
    """Refuse a model whose inputs are not real-valued rows ``(B, F)``, or whose output ``index`` is not ``(B, O)``."""
    out_spec = model.output_specs[index]
    for spec in model.inputs:
        if spec.spec.dtype != "float32" or len(spec.spec.shape) != 1:
            raise InputError(f"forecasting feeds real-valued inputs (B, F); input {spec.name!r} is "
                             f"{spec.spec.describe()} (token models generate with rnnstream.generate)")
    if len(out_spec.shape) != 1:
        raise InputError(f"forecasting needs an output (B, O); output {model.output_names[index]!r} is "
                         f"{out_spec.describe()}")


def _feedback_maps(
    feedback: Mapping[Any, Any] | None, names: list[str], widths: dict[str, int], n_out: int
) -> dict[str, dict[int, int]]:
    """``feedback`` as ``{input name: {input column: output column}}`` (not yet checked against the widths)."""
    if feedback is None:
        if len(names) != 1 or widths[names[0]] != n_out:
            raise InputError(
                f"say which outputs feed which inputs (feedback=...): the model's output has {n_out} columns and its "
                f"inputs are {widths}, so the output cannot simply become the next input"
            )
        return {names[0]: {c: c for c in range(n_out)}}
    if all(isinstance(k, int | np.integer) and not isinstance(k, bool) for k in feedback):
        if len(names) != 1:
            raise InputError(f"this model has inputs {list(widths)}: give feedback by input name")
        return {names[0]: {int(k): v for k, v in feedback.items()}}
    return _feedback_by_name(feedback, widths)


def _feedback_by_name(feedback: Mapping[Any, Any], widths: dict[str, int]) -> dict[str, dict[int, int]]:
    """``{input_name: [output columns] or {column: output_column}}`` as ``{input name: {column: output column}}``."""
    unknown = sorted(str(k) for k in feedback if k not in widths)
    if unknown:
        raise InputError(f"feedback names inputs {unknown}; this model's inputs are {list(widths)}")
    maps = {}
    for name, spec in feedback.items():
        if isinstance(spec, Mapping):
            maps[name] = {_column(name, k): v for k, v in spec.items()}
        elif not isinstance(spec, Sequence) or isinstance(spec, str):
            raise InputError(f"feedback for input {name!r} is a list of output columns or a dict "
                             f"{{column: output_column}}, got {spec!r}")
        elif len(spec) != widths[name]:
            raise InputError(f"feedback for input {name!r} lists {len(spec)} output columns for its "
                             f"{widths[name]} columns; give all, or a dict {{column: output_column}}")
        else:
            maps[name] = dict(enumerate(spec))
    return maps


def _fed_columns(name: str, F: int, feeds: Mapping[int, Any], n_out: int) -> _Column:
    """Input ``name`` of width ``F`` with the columns ``feeds`` maps to output columns (of ``n_out``) fed back."""
    fed, source = np.zeros(F, bool), np.zeros(F, np.int64)
    for column, out in feeds.items():
        is_index = isinstance(out, int | np.integer) and not isinstance(out, bool)
        if not 0 <= column < F or not is_index or not 0 <= out < n_out:
            raise InputError(f"feedback {column} → {out} for input {name!r}: input columns are 0..{F - 1}, "
                             f"output columns 0..{n_out - 1}")
        fed[column], source[column] = True, out
    return _Column(fed, source)


def _column(name: str, key: Any) -> int:
    """A column of input ``name`` named by a feedback key: an integer, or its digits (JSON keys are text)."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str) and key.isdigit():
        return int(key)
    raise InputError(f"feedback for input {name!r}: columns are named by their index (0, 1, ...), got {key!r}")


def _exogenous(model: StreamModel, columns: list[_Column], exogenous: Any, horizon: int) -> list[FloatArray]:
    """Per input, ``[H, F]``: row k holds the exogenous columns at the time of forecast k (fed columns: 0).

    Step k builds the input at the time of forecast k from forecast k and row k; the last row is never fed.
    """
    names = [s.name for s in model.inputs]
    needs = {n: int((~c.fed).sum()) for n, c in zip(names, columns, strict=True)}
    wanted = {n: e for n, e in needs.items() if e}
    if not wanted:
        if exogenous is not None:
            raise InputError("every input column is fed back; exogenous values have nowhere to go")
        return [np.zeros((horizon, len(c.fed)), np.float32) for c in columns]
    if exogenous is None:
        raise InputError(f"inputs {wanted} (name: columns) are not fed back: give their future values, exogenous=")
    given = exogenous if isinstance(exogenous, Mapping) else {names[0]: exogenous} if len(names) == 1 else None
    if given is None or set(given) != set(wanted):
        raise InputError(f"exogenous must give the inputs {sorted(wanted)} by name, got "
                         f"{sorted(given) if given is not None else type(exogenous).__name__}")
    rows = []
    for name, column in zip(names, columns, strict=True):
        full = np.zeros((horizon, len(column.fed)), np.float32)  # (H, F)
        if name in wanted:
            try:
                e = np.asarray(given[name], np.float32)
            except (TypeError, ValueError):
                raise InputError(f"exogenous for input {name!r} must be rows of numbers, [H][columns]") from None
            if e.ndim != 2 or e.shape[1] != wanted[name] or e.shape[0] not in (horizon - 1, horizon):
                raise InputError(
                    f"exogenous for input {name!r} has shape {e.shape}; expected ({horizon}, {wanted[name]}): one row "
                    f"per forecast time (or {horizon - 1}: the last row is never fed), one column per column not fed"
                )
            full[: e.shape[0], ~column.fed] = e
        rows.append(full)
    return rows


def _sigma(
    noise: float | Sequence[float] | str | None,
    model: StreamModel,
    index: int,
    columns: list[_Column],
    xs: list[FloatArray] | Any,
    y_seq: FloatArray,
) -> FloatArray:
    n_out = model.output_specs[index].shape[0]
    if noise is None:
        return np.zeros(n_out, np.float32)
    if isinstance(noise, str):
        if noise != "residual":
            raise InputError(f"noise is σ (a number, or one per output column), 'residual' or None; got {noise!r}")
        if y_seq.shape[0] < 3:
            raise InputError("noise='residual' needs a history of at least 3 steps (2 one-step errors)")
        residual = np.zeros(n_out, np.float32)
        for c, x in zip(columns, xs, strict=True):
            for column in np.flatnonzero(c.fed):
                out = int(c.source[column])
                errors = x[0, 1:, column] - y_seq[:-1, out]  # (T-1,): what came vs what was forecast
                residual[out] = float(np.std(errors, ddof=1))
        return residual
    try:
        sigma: FloatArray = np.broadcast_to(np.asarray(noise, np.float32), (n_out,)).copy()
    except (ValueError, TypeError):
        sigma = np.full(n_out, np.nan, np.float32)
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise InputError(f"noise σ must be ≥ 0: one number or {n_out} (one per output column), got {noise!r}")
    return sigma


def _batch_of_one(model: StreamModel, history: Any) -> list[FloatArray]:
    if isinstance(history, Mapping):
        missing = [s.name for s in model.inputs if s.name not in history]
        if missing:
            names = [s.name for s in model.inputs]
            raise InputError(f"history lacks inputs {missing}; this model's inputs are {names}")
        parts = [history[s.name] for s in model.inputs]
    elif len(model.inputs) > 1:
        if not isinstance(history, list | tuple) or len(history) != len(model.inputs):
            raise InputError(f"this model has inputs {[s.name for s in model.inputs]}: give history as a list or dict")
        parts = list(history)
    else:
        parts = [history]
    arrays = []
    for spec, part in zip(model.inputs, parts, strict=True):
        a = np.asarray(part, np.float32)
        if a.ndim != 2 or a.shape[1:] != spec.spec.shape:
            raise InputError(f"history for input {spec.name!r} has shape {a.shape}; expected (T, {spec.spec.shape[0]})")
        arrays.append(a[None])  # (1, T, F)
    return arrays


def _one_row(model: StreamModel, state: State | None) -> State:
    if state is None:
        return model.initial_state(1)
    model.check_state(state)
    if state.batch_size != 1:
        raise InputError(f"a forecast starts from one stream's state; this State has {state.batch_size} rows")
    return state


def _pick(ys: Outputs, index: int) -> FloatArray:
    return ys[index] if isinstance(ys, list) else ys


def _check_horizon(horizon: int) -> int:
    return _positive("horizon", horizon)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
