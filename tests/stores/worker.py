"""A stepping process for the multi-process Redis tests: ``python -m tests.stores.worker MODE URL NS N IDS...``.

Stream ``sid``'s input at step n is ``stream_inputs(sid, N)[n - 1]``. Every step carries its number.
- ``hammer``: each stream from step 1 to N, one stream per call; a step another process already applied
  comes back as a retry (or is skipped if that process got further). Prints ``sid n y0`` per step.
- ``ack``: all streams together, each from where the store says it is, to N; prints ``ack n`` after every
  call returns (an acknowledged step).
"""

from __future__ import annotations

import sys
import zlib

import numpy as np

from rnnstream import ConflictError, StepOrderError, Streams
from tests.stores.small import inputs, small_model


def stream_inputs(stream_id: str, N: int) -> np.ndarray:
    return inputs(zlib.crc32(stream_id.encode()), N)[0]


def hammer(streams: Streams, ids: list[str], N: int) -> None:
    xs = {sid: stream_inputs(sid, N) for sid in ids}
    for n in range(1, N + 1):
        for sid in ids:
            while True:
                try:
                    y = streams.step({sid: xs[sid][n - 1]}, step_numbers={sid: n})[sid]
                    print(sid, n, float(y[0][0]), flush=True)
                    break
                except StepOrderError as error:
                    if error.expected > n:  # the other process is ahead: this step is done
                        break
                    raise
                except ConflictError:
                    continue


def ack(streams: Streams, ids: list[str], N: int) -> None:
    xs = {sid: stream_inputs(sid, N) for sid in ids}
    applied = {sid: streams.steps_applied(sid) for sid in ids}
    while True:
        todo = [sid for sid in ids if applied[sid] < N]
        if not todo:
            return
        numbers = {sid: applied[sid] + 1 for sid in todo}
        streams.step({sid: xs[sid][numbers[sid] - 1] for sid in todo}, step_numbers=numbers)
        applied.update(numbers)
        print("ack", min(applied.values()), flush=True)


def main(argv: list[str]) -> int:
    mode, url, namespace, N, *ids = argv
    streams = Streams(small_model(), url, namespace=namespace)
    (hammer if mode == "hammer" else ack)(streams, ids, int(N))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
