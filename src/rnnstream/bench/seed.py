"""``rnnstream bench seed``: the seed blog's experiment (docs/benchmarks.md), every approach timed.

Batch 10, length 200, 4 features, LSTM(100) → LSTM(200) → Dense(1, sigmoid), one set of weights.
Each approach produces the output at every step t = 1..T:

- classic: ``predict`` on the whole context ``X[:, :t]`` (O(t) work per step);
- windowed: ``predict`` on the last ``window`` steps only (cheaper, and approximate);
- stateful: a ``stateful=True`` copy, ``predict`` one step at a time;
- functional: states as explicit model inputs/outputs, ``predict`` per step (the blog's model4);
- subclassed: the same with a subclassed ``keras.Model``;
- call: the stateful model called directly, ``model(x)``; tf.function: the functional step compiled;
- rnnstream: ``StreamModel.step``.

Every exact approach must agree with the classic one (≤ 1e-5); the windowed one reports its error.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnstream.errors import MissingDependencyError

BATCH, LENGTH, FEATURES, UNITS_1, UNITS_2 = 10, 200, 4, 100, 200
WINDOW = 20
TOLERANCE = 1e-5


@dataclass
class Result:
    approach: str
    seconds: float
    outputs: np.ndarray[Any, Any]  # (B, T)
    exact: bool = True

    @property
    def per_step(self) -> float:
        return self.seconds / int(self.outputs.shape[1])


def _progress(label: str, total: int) -> Callable[[Iterator[int]], Iterator[int]]:
    """Wrap a step loop with a text progress bar on stderr."""

    def wrap(steps: Iterator[int]) -> Iterator[int]:
        for done, i in enumerate(steps, 1):
            if done % max(1, total // 50) == 0 or done == total:
                bar = "#" * (30 * done // total)
                print(f"\r  {label:<12} [{bar:<30}] {done}/{total}", end="", file=sys.stderr, flush=True)
            yield i
        print(file=sys.stderr)

    return wrap


def _timed(label: str, length: int, step: Callable[[int], np.ndarray[Any, Any]], exact: bool = True) -> Result:
    outputs = []
    start = time.perf_counter()
    for i in _progress(label, length)(iter(range(length))):
        outputs.append(np.asarray(step(i)).reshape(-1))
    return Result(label, time.perf_counter() - start, np.stack(outputs, axis=1), exact)


_STATE_SHAPES = {"lstm1_h": UNITS_1, "lstm1_c": UNITS_1, "lstm2_h": UNITS_2, "lstm2_c": UNITS_2}
"""The states that the functional and subclassed models take and return, and their widths."""


def keras_approaches(X: np.ndarray[Any, Any], window: int) -> tuple[list[Result], Any]:
    """Every Keras approach of the blog on ``X (B, T, F)``; returns the results and the classic model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    B, T, _ = X.shape
    keras.utils.set_random_seed(0)
    classic, stateful, functional, subclassed = _keras_models(X)
    compiled = tf.function(lambda feed: functional(feed))
    results = [
        _timed("classic", T, lambda i: classic.predict(X[:, : i + 1], verbose=0)),
        _timed("windowed", T, lambda i: classic.predict(X[:, max(0, i + 1 - window) : i + 1], verbose=0), False),
        _timed("stateful", T, lambda i: stateful.predict(X[:, i : i + 1], verbose=0, batch_size=B)),
        _timed("functional", T, _passing_states(X, lambda feed: functional.predict(feed, verbose=0))),
        _timed("subclassed", T, _passing_states(X, lambda feed: subclassed.predict(feed, verbose=0))),
    ]
    for layer in stateful.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()
    results.append(_timed("model(x)", T, lambda i: stateful(X[:, i : i + 1])))
    results.append(_timed("tf.function", T, _passing_states(X, compiled)))
    return results, classic


def _keras_models(X: np.ndarray[Any, Any]) -> tuple[Any, Any, Any, Any]:
    """The classic, stateful, functional and subclassed models for ``X (B, T, F)``, all with the classic
    model's weights."""
    import keras

    L = keras.layers
    B, _, F = X.shape
    classic = _stack(L.Input((None, F)), stateful=False)
    stateful = _stack(L.Input((None, F), batch_size=B), stateful=True)
    stateful.set_weights(classic.get_weights())
    inputs = {"input": L.Input((None, F)), **{k: L.Input((n,)) for k, n in _STATE_SHAPES.items()}}
    functional = keras.Model(inputs, _with_states(inputs, *_state_layers()))
    functional.set_weights(classic.get_weights())
    subclassed = _subclassed()
    subclassed({"input": X[:, :1], **_zero_states(B)})
    subclassed.set_weights(classic.get_weights())
    return classic, stateful, functional, subclassed


def _stack(inp: Any, stateful: bool) -> Any:
    """LSTM(UNITS_1) → LSTM(UNITS_2) → Dense(1, sigmoid) on ``inp``, as a ``keras.Model``."""
    import keras

    L = keras.layers
    x = L.LSTM(UNITS_1, return_sequences=True, stateful=stateful)(inp)
    x = L.LSTM(UNITS_2, stateful=stateful)(x)
    return keras.Model(inp, L.Dense(1, activation="sigmoid")(x))


def _state_layers() -> tuple[Any, Any, Any]:
    """The layers of the stack, the LSTMs returning their states."""
    import keras

    L = keras.layers
    return (L.LSTM(UNITS_1, return_sequences=True, return_state=True), L.LSTM(UNITS_2, return_state=True),
            L.Dense(1, activation="sigmoid"))  # fmt: skip


def _with_states(inputs: dict[str, Any], lstm1: Any, lstm2: Any, dense: Any) -> dict[str, Any]:
    """The stack from the states in ``inputs``: its output and new states, by name."""
    o1, h1, c1 = lstm1(inputs["input"], initial_state=[inputs["lstm1_h"], inputs["lstm1_c"]])
    o2, h2, c2 = lstm2(o1, initial_state=[inputs["lstm2_h"], inputs["lstm2_c"]])
    return {"output": dense(o2), "lstm1_h": h1, "lstm1_c": c1, "lstm2_h": h2, "lstm2_c": c2}


def _subclassed() -> Any:
    """The stack with explicit states as a subclassed ``keras.Model`` (its weights are made on its first call)."""
    import keras

    class Subclassed(keras.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.lstm1, self.lstm2, self.dense = _state_layers()

        def call(self, inputs: dict[str, Any]) -> dict[str, Any]:
            return _with_states(inputs, self.lstm1, self.lstm2, self.dense)

    return Subclassed()


def _zero_states(B: int) -> dict[str, Any]:
    return {k: np.zeros((B, n), np.float32) for k, n in _STATE_SHAPES.items()}


def _passing_states(
    X: np.ndarray[Any, Any], run: Callable[[dict[str, Any]], dict[str, Any]]
) -> Callable[[int], np.ndarray[Any, Any]]:
    """A step ``i`` that runs ``X[:, i]`` from the states ``run`` returned at the step before (zeros first)."""
    states = _zero_states(X.shape[0])

    def step(i: int) -> np.ndarray[Any, Any]:
        nonlocal states
        out = run({"input": X[:, i : i + 1], **states})
        states = {k: out[k] for k in _STATE_SHAPES}
        return np.asarray(out["output"])

    return step


def rnnstream_approach(model: Any, X: np.ndarray[Any, Any]) -> Result:
    state = model.initial_state(X.shape[0])

    def step(i: int) -> np.ndarray[Any, Any]:
        nonlocal state
        y, state = model.step(X[:, i], state)
        return np.asarray(y)

    return _timed("rnnstream", X.shape[1], step)


def report(results: list[Result]) -> str:
    reference = results[0]
    header = "max |Δ| vs " + reference.approach
    lines = [f"{'approach':<12} {'total':>10} {'per step':>10} {'speed-up':>10} {header:>20}"]
    for r in results:
        diff = float(np.max(np.abs(r.outputs - reference.outputs)))
        note = "" if r.exact else "  (approximate by design)"
        lines.append(f"{r.approach:<12} {r.seconds:>9.3f}s {r.per_step * 1e3:>8.3f}ms "
                     f"{reference.seconds / r.seconds:>9.1f}× {diff:>20.2e}{note}")  # fmt: skip
    return "\n".join(lines)


def check_agreement(results: list[Result]) -> list[str]:
    """The exact approaches that differ from the first result by more than the tolerance."""
    reference = results[0].outputs
    return [r.approach for r in results if r.exact and float(np.max(np.abs(r.outputs - reference))) > TOLERANCE]


def save_png(results: list[Result], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingDependencyError("the PNG needs matplotlib: pip install matplotlib") from e
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for r in results:
        left.plot(r.outputs[0], label=r.approach, lw=1.2, ls="--" if not r.exact else "-")
    left.set(title="output of stream 0 at each step, per approach", xlabel="step", ylabel="output")
    left.legend(fontsize=8)
    names = [r.approach for r in results]
    right.barh(names, [r.per_step * 1e3 for r in results], color=["C3" if n == "rnnstream" else "C0" for n in names])
    right.set(xscale="log", xlabel="ms per step (log)", title="time per step")
    for i, r in enumerate(results):
        right.text(r.per_step * 1e3, i, f" {r.per_step * 1e3:.3g} ms", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(length: int = LENGTH, window: int = WINDOW, png: Path | None = None) -> tuple[str, bool]:
    """The experiment; returns the printed report and whether every exact approach agreed."""
    X = np.random.default_rng(0).uniform(0, 1, (BATCH, length, FEATURES)).astype(np.float32)
    import rnnstream

    try:
        results, classic = keras_approaches(X, window)
    except ImportError:
        model = rnnstream.load(rnnstream.demo.SEED_MODEL)
        ours = rnnstream_approach(model, X)
        return (
            "TensorFlow/Keras is not installed, so only rnnstream ran (on the bundled seed model):\n"
            f"  {ours.per_step * 1e6:.1f} µs per step, batch {BATCH}.\n"
            "For the whole comparison: pip install 'rnnstream[bench]' (tensorflow-cpu, keras, matplotlib)",
            True,
        )
    results.append(rnnstream_approach(rnnstream.from_keras(classic), X))
    text = f"batch {BATCH}, length {length}, LSTM({UNITS_1}) → LSTM({UNITS_2}) → Dense(1)\n" + report(results)
    disagree = check_agreement(results)
    agreed = f"all exact approaches agree within {TOLERANCE}"
    text += "\n" + (f"DISAGREE with classic: {disagree}" if disagree else agreed)
    if png:
        try:
            save_png(results, png)
            text += f"\nPNG: {png}"
        except MissingDependencyError as e:
            text += f"\nno PNG: {e}"
    return text, not disagree
