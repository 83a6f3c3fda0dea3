"""Prometheus metrics: counters and histograms with labels, exposed through prometheus_client; and the live
figures of the last few seconds (``Metrics.live``) that ``GET /v2/stats`` and the live page show.

The hot path (a counter increment, a batch's observations) stays a dict update under a lock here; at
scrape time a prometheus_client collector hands every series to its registry, whose exposition escapes
label values. The ``model`` label only ever takes the names of served models, and ``_unknown`` for any
other name a client sends (``Metrics.label``), so requests cannot grow the page or write into it.
Measured on a Zen 4 core with four models' series (27 KB): a scrape takes 2.2 ms, on a worker thread (the
hand-written exposition it replaced took 0.6 ms, on the event loop); a counter increment on the hot path
is the same 0.41 µs as before.

>>> m = Metrics(["seed"])
>>> m.requests.inc(model="seed", protocol="http", code="200")
>>> 'rnnstream_requests_total{code="200",model="seed",protocol="http"} 1.0' in m.render()
True
>>> m.refused('x"} 1', "http", LookupError("no such model"))
>>> 'rnnstream_requests_total{code="500",model="_unknown",protocol="http"} 1.0' in m.render()
True
>>> m.batch_size.observe(8, model="seed")
>>> m.live("seed")["steps_per_second"] > 0
True
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rnnstream.server.refusals import status_for

Labels = tuple[tuple[str, str], ...]


def labels_key(**labels: str) -> Labels:
    """The key of a label set.

    >>> labels_key(protocol="http", model="seed")
    (('model', 'seed'), ('protocol', 'http'))
    """
    return tuple(sorted(labels.items()))


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help_text = name, help_text
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.add(labels_key(**labels), amount)

    def add(self, key: Labels, amount: float = 1.0) -> None:
        """``inc`` for a label set made once with ``labels_key`` (a hot path's: ~0.5 µs less a call)."""
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def family(self) -> Metric:
        """The counter as a prometheus_client family (label names from its label sets)."""
        with self._lock:
            values = sorted(self._values.items())
        names = [k for k, _ in values[0][0]] if values else []
        family = CounterMetricFamily(self.name, self.help_text, labels=names)
        for key, value in values:
            family.add_metric([v for _, v in key], value)
        return family


class Window:
    """The observations of the last ``seconds``, at most ``limit`` per label set (the newest), with their times.

    >>> w, key = Window(seconds=5.0), (("model", "a"),)
    >>> w.add(key, 3.0, now=100.0)
    >>> w.add(key, 4.0, now=103.0)
    >>> w.recent(key, now=106.0)
    (5.0, [4.0])
    """

    def __init__(self, seconds: float = 5.0, limit: int = 16_384) -> None:
        self.seconds, self.limit = seconds, limit
        self._items: dict[Labels, deque[tuple[float, float]]] = {}

    def add(self, key: Labels, value: float, now: float) -> None:
        """Record one observation (the caller holds its metric's lock)."""
        items = self._items.get(key)
        if items is None:
            items = self._items[key] = deque(maxlen=self.limit)
        items.append((now, value))

    def extend(self, key: Labels, values: list[float], now: float) -> None:
        """Record several observations made at ``now``."""
        items = self._items.get(key)
        if items is None:
            items = self._items[key] = deque(maxlen=self.limit)
        items.extend((now, value) for value in values)

    def recent(self, key: Labels, now: float) -> tuple[float, list[float]]:
        """The seconds covered (the window, or less when ``limit`` cut it short) and the values in them."""
        items = self._items.get(key)
        if not items:
            return self.seconds, []
        start = now - self.seconds
        while items and items[0][0] < start:
            items.popleft()
        span = self.seconds if len(items) < self.limit else max(now - items[0][0], 1e-3)
        return span, [v for _, v in items]


class Histogram:
    """Cumulative buckets by label set; with ``window`` (seconds) it also keeps the recent observations."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...], window: float | None = None) -> None:
        self.name, self.help_text, self.buckets = name, help_text, buckets
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}
        self._lock = threading.Lock()
        self._window = Window(window) if window is not None else None

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value
            if self._window is not None:
                self._window.add(key, value, time.monotonic())

    def observe_many(self, values: list[float], **labels: str) -> None:
        """Record several observations of one label set at once (one lock, one bucket search).

        >>> h = Histogram("h", "", (1.0, 2.0))
        >>> h.observe_many([0.5, 1.5, 3.0], model="a")
        >>> [(s.labels["le"], s.value) for s in h.family().samples if s.name == "h_bucket"]
        [('1', 1), ('2', 2), ('+Inf', 3)]
        """
        if not values:
            return
        key = tuple(sorted(labels.items()))
        found = np.bincount(np.searchsorted(self.buckets, values), minlength=len(self.buckets) + 1).tolist()
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            for bucket, count in enumerate(found):
                counts[bucket] += count
            self._sums[key] = self._sums.get(key, 0.0) + sum(values)
            if self._window is not None:
                self._window.extend(key, values, time.monotonic())

    def recent(self, now: float | None = None, **labels: str) -> tuple[float, list[float]]:
        """The seconds covered and the values observed in the window (``window=`` histograms only)."""
        if self._window is None:
            raise ValueError(f"histogram {self.name} keeps no window of recent observations")
        with self._lock:
            return self._window.recent(tuple(sorted(labels.items())), time.monotonic() if now is None else now)

    def family(self) -> Metric:
        """The histogram as a prometheus_client family: cumulative buckets by label set, sum and count."""
        with self._lock:
            series = [(key, list(counts), self._sums[key]) for key, counts in sorted(self._counts.items())]
        names = [k for k, _ in series[0][0]] if series else []
        family = HistogramMetricFamily(self.name, self.help_text, labels=names)
        bounds = [f"{bound:g}" for bound in self.buckets] + ["+Inf"]
        for key, counts, total in series:
            cumulative = np.cumsum(counts).tolist()
            family.add_metric([v for _, v in key], list(zip(bounds, cumulative, strict=True)), total)
        return family


_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
LIVE_SECONDS = 5.0
"""The window of the live figures (``Metrics.live``)."""


UNKNOWN_MODEL = "_unknown"
"""The ``model`` label of requests that name a model the server does not serve."""


@dataclass
class VersionStatistics:
    """One model version's requests and engine calls (its batcher's record): Triton's statistics extension
    (rnnstream.server.triton_model) and the ``rnnstream_version_*`` series report them."""

    success: int = 0
    fail: int = 0
    queued: int = 0  # requests that reached an engine call
    queue_seconds: float = 0.0  # their waits for it
    compute_seconds: float = 0.0  # each engine call's duration, once for each of its requests
    executions: int = 0  # engine calls
    last: float = 0.0  # when the last engine call ended (seconds since the epoch)

    def computed(self, waits: list[float], seconds: float) -> None:
        """An engine call of ``seconds`` for requests that waited ``waits`` for it."""
        self.queued += len(waits)
        self.queue_seconds += sum(waits)
        self.compute_seconds += seconds * len(waits)
        self.executions += 1
        self.last = time.time()

    def passed_on(self) -> None:
        """A request this version answered "unknown stream" went on to an older version that holds it."""
        self.fail -= 1

    def settled(self, results: Sequence[object]) -> None:
        """A batch's requests are answered: their outputs, or their errors."""
        failed = sum([isinstance(result, Exception) for result in results])
        self.fail += failed
        self.success += len(results) - failed


class Metrics:
    """Everything the server reports at ``/metrics``; ``models``: the served names (the ``model`` label's values)."""

    def __init__(self, models: Iterable[str] = ()) -> None:
        self.models = set(models)
        self.requests = Counter("rnnstream_requests_total", "Step requests answered, by model, protocol and code.")
        self.errors = Counter("rnnstream_errors_total", "Step requests that failed, by model and error.")
        self.batch_size = Histogram("rnnstream_batch_size", "Streams per engine call.", _SIZES, LIVE_SECONDS)
        self.queue_delay = Histogram("rnnstream_queue_delay_seconds", "Time a request waited for its engine call.",
                                     _SECONDS, LIVE_SECONDS)
        self.step_latency = Histogram("rnnstream_step_seconds", "Duration of one batched engine call.", _SECONDS,
                                      LIVE_SECONDS)
        self.active_streams: dict[str, Callable[[], int]] = {}
        self.tokens = Counter("rnnstream_generated_tokens_total", "Tokens generated, by model.")
        self.token_batch = Histogram("rnnstream_generate_streams", "Generating streams per token step (one engine "
                                     "call for all of them).", _SIZES, LIVE_SECONDS)
        self.token_step = Histogram("rnnstream_generate_step_seconds", "Duration of one token step: prime the new "
                                    "prompts, feed every stream, sample.", _SECONDS, LIVE_SECONDS)
        self.generations: dict[str, Callable[[], int]] = {}
        self.versions: dict[tuple[str, str], tuple[VersionStatistics, Callable[[], int]]] = {}
        """Each served (model, version): its statistics and its live-stream count."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def add_model(self, name: str) -> None:
        """A model loaded after start-up: its name becomes a ``model`` label."""
        self.models.add(name)

    def label(self, model: str) -> str:
        """The ``model`` label for a name a request gave: itself when served, else ``UNKNOWN_MODEL``."""
        return model if model in self.models else UNKNOWN_MODEL

    def refused(self, model: str, protocol: str, error: Exception) -> None:
        """Count a request for ``model`` (any name a client sent) that failed with ``error``."""
        label = self.label(model)
        self.requests.inc(model=label, protocol=protocol, code=str(status_for(error)))
        self.errors.inc(model=label, error=type(error).__name__)

    def render(self) -> str:
        """The text exposition format (prometheus_client's, which escapes every label value)."""
        return generate_latest(self.registry).decode()

    def live(self, model: str) -> dict[str, float]:
        """One model's figures over the last ``LIVE_SECONDS``: stream-steps/s through the batcher with the
        engine-call and queue-wait percentiles (ms), tokens/s with the token-step percentiles, and the
        streams and generations active now."""
        now = time.monotonic()
        figures: dict[str, float] = {
            "active_streams": self.active_streams[model]() if model in self.active_streams else 0,
            "active_generations": self.generations[model]() if model in self.generations else 0,
        }
        span, sizes = self.batch_size.recent(now, model=model)
        figures["steps_per_second"] = sum(sizes) / span
        figures["engine_calls_per_second"] = len(sizes) / span
        figures.update(_percentiles("step", self.step_latency.recent(now, model=model)[1]))
        figures.update(_percentiles("wait", self.queue_delay.recent(now, model=model)[1]))
        span, streams = self.token_batch.recent(now, model=model)
        figures["tokens_per_second"] = sum(streams) / span
        figures.update(_percentiles("token_step", self.token_step.recent(now, model=model)[1]))
        return figures


class _Collector(Collector):
    """Hands the server's series to prometheus_client's registry at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for series in (m.requests, m.errors, m.batch_size, m.queue_delay, m.step_latency):
            yield series.family()
        yield _gauge("rnnstream_active_streams", "Streams held by the store.", m.active_streams)
        for series in (m.tokens, m.token_batch, m.token_step):
            yield series.family()
        yield _gauge("rnnstream_active_generations", "Token streams generating now.", m.generations)
        yield from _version_series(m.versions)


def _gauge(name: str, help_text: str, counts: dict[str, Callable[[], int]]) -> Metric:
    family = GaugeMetricFamily(name, help_text, labels=["model"])
    for model, count in sorted(counts.items()):
        family.add_metric([model], count())
    return family


def _percentiles(name: str, seconds: list[float]) -> dict[str, float]:
    """``{name}_p50_ms`` and ``{name}_p99_ms`` of ``seconds`` (0 when there are none)."""
    if not seconds:
        return {f"{name}_p50_ms": 0.0, f"{name}_p99_ms": 0.0}
    p50, p99 = np.percentile(np.asarray(seconds) * 1e3, [50, 99])
    return {f"{name}_p50_ms": round(float(p50), 3), f"{name}_p99_ms": round(float(p99), 3)}


def _version_series(versions: dict[tuple[str, str], tuple[VersionStatistics, Callable[[], int]]]) -> Iterator[Metric]:
    """Each model version's requests, engine calls, times and live streams (labels ``model``, ``version``)."""
    labels = ["model", "version"]
    requests = CounterMetricFamily("rnnstream_version_requests", "Steps answered by a model version, by result "
                                   "(success or fail).", labels=[*labels, "result"])
    calls = CounterMetricFamily("rnnstream_version_engine_calls", "Engine calls of a model version.", labels=labels)
    queue = CounterMetricFamily("rnnstream_version_queue_seconds", "Time steps waited for their engine call.",
                                labels=labels)
    compute = CounterMetricFamily("rnnstream_version_compute_seconds", "Engine time, each call's once for each "
                                  "of its steps.", labels=labels)
    streams = GaugeMetricFamily("rnnstream_version_active_streams", "Live streams of a model version.", labels=labels)
    for (model, version), (figures, count) in sorted(versions.items()):
        requests.add_metric([model, version, "success"], figures.success)
        requests.add_metric([model, version, "fail"], figures.fail)
        calls.add_metric([model, version], figures.executions)
        queue.add_metric([model, version], figures.queue_seconds)
        compute.add_metric([model, version], figures.compute_seconds)
        streams.add_metric([model, version], count())
    yield from (requests, calls, queue, compute, streams)
