"""The Redis store against real redis-server processes: concurrent processes, SIGKILL, Redis restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from rnnstream import MissingDependencyError, StoreError, StreamLimitError, Streams
from rnnstream.step_request import StepRequest
from tests.redis_server import RedisServer, free_port
from tests.stores.small import small_model
from tests.stores.worker import stream_inputs

ROOT = Path(__file__).resolve().parents[2]
TOL = {"rtol": 1e-6, "atol": 1e-6}


def worker(mode: str, url: str, namespace: str, N: int, ids: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stores.worker", mode, url, namespace, str(N), *ids],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def reference(stream_id: str, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Outputs y0 of the first model output at steps 1..N, and the state rows after each step."""
    model = small_model()
    state, ys, rows = model.initial_state(1), [], []
    for x in stream_inputs(stream_id, N):
        y, state = model.step(x[None], state)
        ys.append(y[0][0, 0])
        rows.append(state.rows[0])
    return np.array(ys), np.array(rows)


def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


def test_two_processes_hammering_the_same_streams(redis_server: RedisServer) -> None:
    ns, ids, N = namespace(), ["a", "b", "c"], 40
    procs = [worker("hammer", redis_server.url, ns, N, ids) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    streams = Streams(small_model(), redis_server.url, namespace=ns)
    for sid in ids:
        _, rows = reference(sid, N)
        assert streams.steps_applied(sid) == N  # no step lost, none doubled
        np.testing.assert_allclose(streams.states([sid]).rows[0], rows[-1], **TOL)
    for out, _ in outputs:  # every output either process saw, applied or retried, is the right one
        for line in out.splitlines():
            sid, n, y0 = line.split()
            np.testing.assert_allclose(float(y0), reference(sid, N)[0][int(n) - 1], **TOL)


def test_sigkill_mid_run_loses_no_acknowledged_step(redis_server: RedisServer) -> None:
    ns, ids, N = namespace(), ["p", "q", "r", "s"], 300
    first = worker("ack", redis_server.url, ns, N, ids)
    assert first.stdout is not None
    last_ack = 0
    for line in first.stdout:
        last_ack = int(line.split()[1])
        if last_ack >= 40:
            break
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    streams = Streams(small_model(), redis_server.url, namespace=ns)
    for sid in ids:
        applied = streams.steps_applied(sid)
        assert last_ack <= applied <= N
        np.testing.assert_allclose(streams.states([sid]).rows[0], reference(sid, N)[1][applied - 1], **TOL)
    second = worker("ack", redis_server.url, ns, N, ids)
    _, err = second.communicate(timeout=240)
    assert second.returncode == 0, err
    for sid in ids:
        assert streams.steps_applied(sid) == N
        np.testing.assert_allclose(streams.states([sid]).rows[0], reference(sid, N)[1][-1], **TOL)


def test_redis_restart_with_aof_keeps_every_acknowledged_step(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "aof", appendonly=True).start()
    try:
        ns, ids, K = namespace(), ["x", "y", "z"], 25
        streams = Streams(small_model(), server.url, namespace=ns)
        xs = {sid: stream_inputs(sid, K + 1) for sid in ids}
        for n in range(1, K + 1):
            streams.step({sid: xs[sid][n - 1] for sid in ids}, step_numbers=dict.fromkeys(ids, n))
        server.kill()  # SIGKILL: no shutdown save; only the append-only file remains
        server.start()
        resumed = Streams(small_model(), server.url, namespace=ns)
        for sid in ids:
            assert resumed.steps_applied(sid) == K
            np.testing.assert_allclose(resumed.states([sid]).rows[0], reference(sid, K + 1)[1][K - 1], **TOL)
        out = streams.step({sid: xs[sid][K] for sid in ids}, step_numbers=dict.fromkeys(ids, K + 1))
        for sid in ids:  # the first Streams reconnects by itself and carries on
            np.testing.assert_allclose(out[sid][0][0], reference(sid, K + 1)[0][K], **TOL)
    finally:
        server.stop()


def test_keys_are_one_per_stream_under_the_model_namespace(redis_server: RedisServer) -> None:
    import redis

    model = small_model()
    streams = Streams(model, redis_server.url)
    streams.step({"k1": np.zeros(3, np.float32)})
    client = redis.Redis.from_url(redis_server.url)
    key = f"rnnstream:{model.fingerprint[:16]}:k1"
    assert client.type(key) == b"hash"
    assert set(client.hkeys(key)) == {b"v", b"n", b"s", b"y"}
    assert len(client.hget(key, "s")) == 4 * model.state_size
    streams.close("k1")


def test_ttl_uses_redis_expiry(redis_server: RedisServer) -> None:
    import redis

    streams = Streams(small_model(), redis_server.url, namespace=namespace(), ttl=30)
    streams.step({"t": np.zeros(3, np.float32)})
    ttl_ms = redis.Redis.from_url(redis_server.url).pttl(streams.store.namespace + "t")  # type: ignore[attr-defined]
    assert 25_000 < ttl_ms <= 30_000


def test_unreachable_redis_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot reach Redis"):
        Streams(small_model(), f"redis://127.0.0.1:{free_port()}/0")


def test_unknown_store_is_refused_with_the_known_ones() -> None:
    with pytest.raises(StoreError, match="known stores: memory://"):
        Streams(small_model(), "mongodb://localhost")


def test_missing_redis_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'rnnstream\[redis\]'"):
        Streams(small_model(), "redis://127.0.0.1:6379/0")


def test_a_foreign_record_is_a_store_error(redis_server: RedisServer) -> None:
    import redis

    ns = namespace()
    redis.Redis.from_url(redis_server.url).hset(ns + "bad", mapping={"v": "7", "n": "1", "s": b"xx", "y": b""})
    streams = Streams(small_model(), redis_server.url, namespace=ns)
    with pytest.raises(StoreError, match=r"'bad'.*not a state of this model"):
        streams.step({"bad": np.zeros(3, np.float32)})


def _scans(redis_server: RedisServer) -> int:
    import redis

    stats = redis.Redis.from_url(redis_server.url).info("commandstats")
    return int(stats.get("cmdstat_scan", {}).get("calls", 0))


def test_counting_and_admitting_streams_scans_nothing(redis_server: RedisServer) -> None:
    """``len`` and ``max_streams`` read the index of live streams (O(log n)), never a SCAN of the keys."""
    streams = Streams(small_model(), redis_server.url, namespace=namespace(), max_streams=5_000, ttl=60)
    x = np.zeros(3, np.float32)
    for start in range(0, 2_000, 500):
        streams.step({f"s{k}": x for k in range(start, start + 500)})
    scans = _scans(redis_server)
    assert len(streams) == 2_000
    streams.step({"one-more": x})
    streams.step_each([StepRequest("ending", x, start=True)])
    assert len(streams) == 2_002
    streams.step_each([StepRequest("ending", x, end=True)])  # an ended stream counts no more
    assert len(streams) == 2_001 and _scans(redis_server) == scans
    streams.close("s0")
    assert len(streams) == 2_000


def test_a_reservation_that_is_never_written_lapses(redis_server: RedisServer) -> None:
    streams = Streams(small_model(), redis_server.url, namespace=namespace(), max_streams=1)
    assert streams.store.admit(["ghost"], 1) == [True]  # a replica admitted it, then died before writing
    with pytest.raises(StreamLimitError):
        streams.step({"real": np.zeros(3, np.float32)})
    streams.store.release(["ghost"])
    streams.step({"real": np.zeros(3, np.float32)})
    assert len(streams) == 1


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_max_streams_holds_for_replicas_sharing_the_store(request: pytest.FixtureRequest, kind: str) -> None:
    """Two Streams on one store (two replicas) start streams at once: never more than the limit between them."""
    url = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster").url
    ns = namespace()
    replicas = [Streams(small_model(), url, namespace=ns, max_streams=30) for _ in range(2)]
    x = np.zeros(3, np.float32)
    started: list[int] = [0, 0]

    def start(k: int) -> None:
        for n in range(40):
            try:
                replicas[k].step({f"r{k}-{n}": x})
                started[k] += 1
            except StreamLimitError:
                pass

    threads = [threading.Thread(target=start, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(started) == 30 and len(replicas[0]) == 30 and len(replicas[0].ids()) == 30
    replicas[1].close("r0-0" if "r0-0" in replicas[1] else "r1-0")
    replicas[0].step({"late": x})  # a close makes room at once
    assert len(replicas[1]) == 30
