"""Forecasting: the rollout equals a manual feed-back loop; noise, paths, exogenous inputs, forks."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream import InputError, State, StreamModel, StreamNotFoundError, Streams
from tests.generation.models import forecaster

FEEDBACK = {0: 1, 2: 0}  # input column 0 ← output 1, input column 2 ← output 0; column 1 is exogenous


def manual(model: StreamModel, history: np.ndarray, horizon: int, exogenous: np.ndarray, sigma: np.ndarray,
           paths: int, seed: int, state: State | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rollout written out: prime with steps, then feed each (noisy) output back with the calendar."""
    state = state if state is not None else model.initial_state(1)
    for x in history:
        y, state = model.step(x[None], state)
    rng = np.random.default_rng(seed)
    rows = State.concat([state] * (paths + 1))
    y = np.repeat(y, paths + 1, axis=0)  # type: ignore[arg-type]
    out = []
    for k in range(horizon):
        if paths:
            y[1:] += rng.normal(0.0, 1.0, (paths, 2)).astype(np.float32) * sigma
        out.append(y.copy())
        if k < horizon - 1:
            x = np.stack([y[:, 1], np.full(paths + 1, exogenous[k, 0]), y[:, 0]], axis=1).astype(np.float32)
            y, rows = model.step(x, rows)
    result = np.stack(out, axis=1)  # (P+1, H, 2)
    return result[0], result[1:]


def test_the_rollout_equals_a_manual_feedback_loop(rng: np.random.Generator) -> None:
    model = forecaster()
    history = rng.normal(0, 1, (25, 3)).astype(np.float32)
    future = rng.normal(0, 1, (8, 1)).astype(np.float32)
    result = rnnstream.forecast(model, history, 8, feedback=FEEDBACK, exogenous=future)
    point, _ = manual(model, history, 8, future, np.zeros(2, np.float32), 0, 0)
    np.testing.assert_allclose(result.point, point, atol=1e-6)
    assert result.paths.shape == (1, 8, 2) and np.array_equal(result.paths[0], result.point)


def test_noisy_paths_equal_the_manual_loop_and_are_seeded(rng: np.random.Generator) -> None:
    model = forecaster()
    history = rng.normal(0, 1, (25, 3)).astype(np.float32)
    future = rng.normal(0, 1, (6, 1)).astype(np.float32)
    sigma = np.float32([0.1, 0.3])
    result = rnnstream.forecast(model, history, 6, feedback=FEEDBACK, exogenous=future, noise=sigma.tolist(),
                                paths=7, seed=11)
    point, paths = manual(model, history, 6, future, sigma, 7, 11)
    np.testing.assert_allclose(result.point, point, atol=1e-6)
    np.testing.assert_allclose(result.paths, paths, atol=1e-5)
    again = rnnstream.forecast(model, history, 6, feedback=FEEDBACK, exogenous=future, noise=sigma.tolist(),
                               paths=7, seed=11)
    assert np.array_equal(again.paths, result.paths)
    other = rnnstream.forecast(model, history, 6, feedback=FEEDBACK, exogenous=future, noise=sigma.tolist(),
                               paths=7, seed=12)
    assert not np.array_equal(other.paths, result.paths) and np.array_equal(other.point, result.point)
    assert result.quantiles([0.1, 0.5, 0.9]).shape == (3, 6, 2)
    np.testing.assert_allclose(result.mean, paths.mean(axis=0), atol=1e-5)


def test_residual_noise_is_the_std_of_the_one_step_errors(rng: np.random.Generator) -> None:
    model = forecaster()
    history = rng.normal(0, 1, (40, 3)).astype(np.float32)
    ys, _ = model.run(history[None], model.initial_state(1))
    errors_out1 = history[1:, 0] - ys[0, :-1, 1]  # type: ignore[call-overload]  # column 0 is fed from output 1
    errors_out0 = history[1:, 2] - ys[0, :-1, 0]  # type: ignore[call-overload]
    result = rnnstream.forecast(model, history, 3, feedback=FEEDBACK, exogenous=np.zeros((2, 1)), noise="residual",
                                seed=0)
    np.testing.assert_allclose(result.sigma, [np.std(errors_out0, ddof=1), np.std(errors_out1, ddof=1)], rtol=1e-5)
    assert result.paths.shape == (100, 3, 2)


def test_exogenous_may_give_the_last_forecast_time_too(rng: np.random.Generator) -> None:
    model = forecaster()
    history = rng.normal(0, 1, (10, 3)).astype(np.float32)
    future = rng.normal(0, 1, (5, 1)).astype(np.float32)
    short = rnnstream.forecast(model, history, 5, feedback=FEEDBACK, exogenous=future[:4])
    full = rnnstream.forecast(model, history, 5, feedback=FEEDBACK, exogenous=future)
    assert np.array_equal(short.point, full.point)


def test_identity_feedback_when_the_output_is_the_next_input(rng: np.random.Generator) -> None:
    model = forecaster(features=2, outputs=2)
    history = rng.normal(0, 1, (12, 2)).astype(np.float32)
    result = rnnstream.forecast(model, history, 4)
    ys, state = model.run(history[None], model.initial_state(1))
    y = ys[:, -1]  # type: ignore[call-overload]
    want = [y[0]]
    for _ in range(3):
        y, state = model.step(y, state)
        want.append(y[0])  # type: ignore[index]
    np.testing.assert_allclose(result.point, np.stack(want), atol=1e-6)
    by_name = rnnstream.forecast(model, history, 4, feedback={"x": [0, 1]})
    assert np.array_equal(by_name.point, result.point)


def test_forecasting_a_live_stream_leaves_it_unchanged(rng: np.random.Generator) -> None:
    model = forecaster()
    streams = Streams(model)
    history = rng.normal(0, 1, (15, 3)).astype(np.float32)
    for x in history:
        streams.step({"live": x})
    control = Streams(model)
    for x in history:
        control.step({"live": x})
    before = streams.snapshot("live")
    future = rng.normal(0, 1, (5, 1)).astype(np.float32)
    result = rnnstream.forecast_stream(streams, "live", 5, feedback=FEEDBACK, exogenous=future, noise=0.2, seed=1)
    assert streams.snapshot("live") == before
    np.testing.assert_allclose(result.point, manual(model, history, 5, future, np.zeros(2), 0, 0)[0], atol=1e-6)
    more = rng.normal(0, 1, (3, 3)).astype(np.float32)
    primed = rnnstream.forecast_stream(streams, "live", 4, history=more, feedback=FEEDBACK, exogenous=future[:3])
    assert streams.snapshot("live") == before
    want = manual(model, more, 4, future, np.zeros(2), 0, 0, state=streams.states(["live"]))[0]
    np.testing.assert_allclose(primed.point, want, atol=1e-6)
    x = rng.normal(0, 1, 3).astype(np.float32)
    assert np.array_equal(streams.step({"live": x})["live"], control.step({"live": x})["live"])  # type: ignore[arg-type]


def test_a_forked_stream_tries_a_future_without_touching_the_original(rng: np.random.Generator) -> None:
    model = forecaster()
    streams = Streams(model)
    for x in rng.normal(0, 1, (5, 3)).astype(np.float32):
        streams.step({"live": x})
    before = streams.snapshot("live")
    streams.fork("live", "what-if")
    for x in rng.normal(0, 1, (4, 3)).astype(np.float32):
        streams.step({"what-if": x})
    assert streams.snapshot("live") == before
    result = rnnstream.forecast_stream(streams, "what-if", 3, feedback=FEEDBACK, exogenous=np.zeros((2, 1)))
    assert result.point.shape == (3, 2) and streams.snapshot("live") == before


def test_two_input_models_take_feedback_and_exogenous_by_name() -> None:
    model = rnnstream.load(rnnstream.demo.CO2_MODEL, backend="numpy")
    series = rnnstream.demo.co2_series()
    n = 600
    calendar = rnnstream.demo.co2_calendar(series.dates[: n + 4])
    result = rnnstream.forecast(model, {"co2": series.values[:n, None], "calendar": calendar[:n]}, 4,
                                feedback={"co2": [0]}, exogenous={"calendar": calendar[n:]})
    ys, state = model.run([series.values[None, :n, None], calendar[None, :n]], model.initial_state(1))
    y = ys[:, -1]  # type: ignore[call-overload]
    want = [y[0]]
    for k in range(3):
        y, state = model.step([y, calendar[n + k][None]], state)
        want.append(y[0])  # type: ignore[index]
    np.testing.assert_allclose(result.point, np.stack(want), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon": 0}, "horizon"),
        ({"feedback": {0: 5}}, "output columns 0..1"),
        ({"feedback": {3: 0}}, "input columns are 0..2"),
        ({"feedback": {"y": [0]}}, "inputs are"),
        ({"exogenous": None}, "not fed back"),
        ({"exogenous": np.zeros((2, 1))}, "expected"),
        ({"exogenous": np.zeros((4, 2))}, "expected"),
        ({"noise": -1.0}, "≥ 0"),
        ({"noise": [0.1, 0.2, 0.3]}, "one per output"),
        ({"noise": "wide"}, "residual"),
        ({"paths": 5}, "needs noise"),
        ({"noise": 0.1, "paths": 0}, "paths"),
        ({"history": np.zeros((10, 4))}, "expected"),
        ({"history": np.zeros((0, 3))}, "empty"),
        ({"feedback": None}, "feedback="),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    model = forecaster()
    args: dict[str, object] = {"history": np.zeros((10, 3), np.float32), "horizon": 4, "feedback": FEEDBACK,
                               "exogenous": np.zeros((4, 1), np.float32), **kwargs}
    history, horizon = args.pop("history"), args.pop("horizon")
    with pytest.raises(InputError, match=message):
        rnnstream.forecast(model, history, horizon, **args)  # type: ignore[arg-type]


def test_forecast_stream_needs_a_stream_with_an_output() -> None:
    streams = Streams(forecaster())
    with pytest.raises(StreamNotFoundError):
        rnnstream.forecast_stream(streams, "nobody", 3, feedback=FEEDBACK, exogenous=np.zeros((2, 1)))
    streams.step({"s": np.zeros(3, np.float32)})
    streams.reset("s")
    with pytest.raises(InputError, match="no output yet"):
        rnnstream.forecast_stream(streams, "s", 3, feedback=FEEDBACK, exogenous=np.zeros((2, 1)))
    with pytest.raises(InputError, match="residual"):
        rnnstream.forecast_stream(streams, "s", 3, feedback=FEEDBACK, exogenous=np.zeros((2, 1)), noise="residual")
