"""Generation throughput and latency with the bundled text model: tokens/s at 1 and 1,000 streams.

For each stream count, every stream gets the same prompt and its own seed (temperature 0.8) and
generates ``tokens`` tokens through one :class:`~rnnstream.Generation`: the first ``step()`` primes every
prompt and samples the first tokens (time to first token), each later ``step()`` is one batched engine
call plus the sampling (per-token latency; tokens/s = streams × tokens ÷ time). Measured with states kept
by the Generation (a StreamModel) and in a ``Streams`` memory store, beside the bare engine step at the
same batch size. Run: ``rnnstream bench generate [--streams 1 1000] [--tokens 200]``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from rnnstream.bench.timing import format_seconds, median_seconds
from rnnstream.generation.tokens import Generation
from rnnstream.model import StreamModel
from rnnstream.streams import Streams

PROMPT = "ROMEO.\n"


@dataclass(frozen=True)
class GenerationTiming:
    streams: int
    target: str
    first_token: float  # seconds: priming every prompt and sampling the first tokens
    per_token: list[float]  # seconds per later step (one token for every stream)
    engine_step: float  # seconds per bare model.step at this batch size

    @property
    def tokens_per_second(self) -> float:
        return self.streams * len(self.per_token) / sum(self.per_token)


def time_generation(model: StreamModel, target: str, streams: int, tokens: int, prompt: list[int]) -> GenerationTiming:
    """Generate ``tokens`` tokens for ``streams`` streams on ``target`` (``"model"`` or ``"streams"``)."""
    source: StreamModel | Streams = model if target == "model" else Streams(model)
    _warm_up(source, prompt)
    generation = Generation(source)
    for i in range(streams):
        generation.add(f"s{i}", prompt, max_tokens=tokens, temperature=0.8, seed=i)
    start = time.perf_counter()
    generation.step()
    first = time.perf_counter() - start
    per_token = []
    while generation:
        start = time.perf_counter()
        generation.step()
        per_token.append(time.perf_counter() - start)
    state = model.initial_state(streams)
    x = np.array(prompt[-1:] * streams)
    engine = median_seconds(lambda: model.step(x, state), repeats=max(5, min(200, 20_000 // streams)))
    label = "Generation(StreamModel)" if target == "model" else "Generation(Streams memory://)"
    return GenerationTiming(streams, label, first, per_token, engine)


def _warm_up(source: StreamModel | Streams, prompt: list[int]) -> None:
    """One untimed generation, so one-time costs (a store's first arena, first calls) stay out of the timing."""
    warm = Generation(source)
    warm.add("warm-up", prompt, max_tokens=2, seed=0)
    while warm:
        warm.step()
    if isinstance(source, Streams):
        source.close("warm-up")


def run(model: StreamModel, prompt: list[int], counts: tuple[int, ...] = (1, 1_000), tokens: int = 200) -> str:
    """Measure every count on both targets; return the table."""
    rows = [time_generation(model, target, n, tokens, prompt) for n in counts for target in ("model", "streams")]
    return report(rows, tokens, len(prompt))


def report(rows: list[GenerationTiming], tokens: int, prompt_length: int) -> str:
    header = (f"{'streams':>7}  {'states in':<29}  {'first token':>11}  {'per token (median, p99)':>23}  "
              f"{'tokens/s':>10}  {'bare step':>9}")
    lines = [f"{tokens} tokens per stream after a {prompt_length}-character prompt, temperature 0.8", header,
             "-" * len(header)]
    for r in rows:
        p99 = sorted(r.per_token)[min(len(r.per_token) - 1, int(0.99 * len(r.per_token)))]
        latency = f"{format_seconds(statistics.median(r.per_token))}, {format_seconds(p99)}"
        lines.append(f"{r.streams:>7,}  {r.target:<29}  {format_seconds(r.first_token):>11}  {latency:>23}  "
                     f"{r.tokens_per_second:>10,.0f}  {format_seconds(r.engine_step):>9}")
    lines.append("first token: priming every prompt + the first sample; per token: one batched step + sampling "
                 "for every stream; bare step: model.step alone at that batch size")
    return "\n".join(lines)
