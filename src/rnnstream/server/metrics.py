"""Prometheus metrics in the text exposition format: counters and histograms with labels.

>>> m = Metrics()
>>> m.requests.inc(model="seed", protocol="http", code="200")
>>> "rnnstream_requests_total{code=\\"200\\",model=\\"seed\\",protocol=\\"http\\"} 1" in m.render()
True
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str], extra: str = "") -> str:
    parts = [f'{k}="{v}"' for k, v in sorted(labels.items())]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help_text = name, help_text
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} counter"]
        for key, value in sorted(self._values.items()):
            lines.append(f"{self.name}{_labels(dict(key))} {value:g}")
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help_text, self.buckets = name, help_text, buckets
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(self._counts.items()):
            labels, running = dict(key), 0
            for bound, count in zip([*self.buckets, float("inf")], counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                bucket = _labels(labels, 'le="' + le + '"')
                lines.append(f"{self.name}_bucket{bucket} {running}")
            lines.append(f"{self.name}_sum{_labels(labels)} {self._sums[key]:g}")
            lines.append(f"{self.name}_count{_labels(labels)} {running}")
        return lines


_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    """Everything the server reports at ``/metrics``."""

    def __init__(self) -> None:
        self.requests = Counter("rnnstream_requests_total", "Step requests answered, by model, protocol and code.")
        self.errors = Counter("rnnstream_errors_total", "Step requests that failed, by model and error.")
        self.batch_size = Histogram("rnnstream_batch_size", "Streams per engine call.", _SIZES)
        self.queue_delay = Histogram("rnnstream_queue_delay_seconds", "Time a request waited for its batch.", _SECONDS)
        self.step_latency = Histogram("rnnstream_step_seconds", "Duration of one batched engine call.", _SECONDS)
        self.active_streams: dict[str, Callable[[], int]] = {}

    def render(self) -> str:
        lines: list[str] = []
        for metric in (self.requests, self.errors, self.batch_size, self.queue_delay, self.step_latency):
            lines += metric.render()
        lines += ["# HELP rnnstream_active_streams Streams held by the store.", "# TYPE rnnstream_active_streams gauge"]
        for model, count in sorted(self.active_streams.items()):
            lines.append(f'rnnstream_active_streams{{model="{model}"}} {count()}')
        return "\n".join(lines) + "\n"
