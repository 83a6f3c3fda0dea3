"""Durable acknowledgement (``?replicas=N``) on a real Redis Cluster of 3 masters with a replica each."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnstream import StepOrderError, StoreError, StreamModel, Streams
from rnnstream.cluster import RedisNode, RedisShards
from rnnstream.errors import ReplicationError
from rnnstream.step_request import StepRequest
from rnnstream.stores.durability import Durability, split_url
from tests.redis_server import REDIS_CLI, RedisServer
from tests.stores.small import small_model
from tests.stores.worker import stream_inputs

TOL = {"rtol": 1e-6, "atol": 1e-6}


@pytest.fixture
def shards(replicated_cluster: RedisShards) -> RedisShards:
    return replicated_cluster


def namespace() -> str:
    return f"durable-{uuid.uuid4().hex[:12]}:"


@pytest.mark.parametrize("url", ["redis://h?replicas=x", "redis://h?wait_ms=0", "redis://h?replicas=-1"])
def test_bad_durability_parameters_are_refused(url: str) -> None:
    with pytest.raises(StoreError, match="in the store URL"):
        split_url(url)


def test_other_query_parameters_reach_redis_py() -> None:
    assert split_url("rediss://h:1/0?ssl_cert_reqs=none") == ("rediss://h:1/0?ssl_cert_reqs=none", Durability())


def master_of(shards: RedisShards, key: str) -> RedisNode:
    """The master that holds ``key``."""
    return next(n for n in shards.master_nodes() if n.cli("exists", key).strip() == "1")


def test_steps_wait_for_a_replica_and_equal_a_replay(shards: RedisShards) -> None:
    model, ns, N = small_model(), namespace(), 7
    streams = Streams(model, shards.url(replicas=1), namespace=ns)
    ids = [f"s{i}" for i in range(20)]  # spread over the three masters
    for n in range(1, N + 1):
        results = streams.step_each([StepRequest(i, stream_inputs(i, N)[n - 1], start=n == 1, step_number=n)
                                     for i in ids])
        assert not [r for r in results if isinstance(r, Exception)]
    for i in ids:
        state = model.initial_state(1)
        for x in stream_inputs(i, N):
            _, state = model.step(x[None], state)
        np.testing.assert_allclose(streams.states([i]).rows[0], state.rows[0], **TOL)
    streams.close_store()


def test_a_step_short_of_replicas_is_not_done_and_its_retry_is_safe(shards: RedisShards) -> None:
    model, ns = small_model(), namespace()
    streams = Streams(model, shards.url(replicas=1) + "&wait_ms=200", namespace=ns)
    xs = stream_inputs("w", 3)
    streams.step_each([StepRequest("w", xs[0], start=True, step_number=1)])
    replica = shards.replica_of(master_of(shards, ns + "w"))
    replica.kill()
    try:
        with pytest.raises(ReplicationError, match="Retry with the same step numbers"):
            streams.step({"w": xs[1]}, {"w": 2})
        assert streams.steps_applied("w") == 2  # the write stands on the master, unacknowledged
        (again,) = streams.step_each([StepRequest("w", xs[1], step_number=2)])
        assert isinstance(again, ReplicationError)  # a retry answered from the record waits for it too
    finally:
        shards.restart(replica)
    (retried,) = streams.step_each([StepRequest("w", xs[1], step_number=2)])
    (third,) = streams.step_each([StepRequest("w", xs[2], step_number=3)])
    state = model.initial_state(1)
    ys = []
    for x in xs:
        y, state = model.step(x[None], state)
        ys.append(y)
    np.testing.assert_allclose(np.asarray(retried[0]).ravel(), np.asarray(ys[1][0]).ravel(), **TOL)
    np.testing.assert_allclose(np.asarray(third[0]).ravel(), np.asarray(ys[2][0]).ravel(), **TOL)
    assert streams.steps_applied("w") == 3  # applied once each: not doubled
    streams.close_store()


def test_only_the_steps_on_a_master_short_of_replicas_fail(shards: RedisShards) -> None:
    model, ns = small_model(), namespace()
    streams = Streams(model, shards.url(replicas=1) + "&wait_ms=200", namespace=ns)
    ids = [f"i{k}" for k in range(12)]
    streams.step_each([StepRequest(i, stream_inputs(i, 2)[0], start=True, step_number=1) for i in ids])
    master = master_of(shards, ns + ids[0])
    on_it = {i for i in ids if master.cli("exists", ns + i).strip() == "1"}
    assert 0 < len(on_it) < len(ids)
    replica = shards.replica_of(master)
    replica.kill()
    try:
        results = streams.step_each([StepRequest(i, stream_inputs(i, 2)[1], step_number=2) for i in ids])
    finally:
        shards.restart(replica)
    for i, result in zip(ids, results, strict=True):
        if i in on_it:
            assert isinstance(result, ReplicationError) and i in result.stream_ids
        else:  # acknowledged: on another master, its replica has it
            np.testing.assert_allclose(np.asarray(result[0]).ravel(), outputs_of(model, stream_inputs(i, 2))[1], **TOL)
    retried = streams.step_each([StepRequest(i, stream_inputs(i, 2)[1], step_number=2) for i in ids])
    for i, result in zip(ids, retried, strict=True):  # every one answered now, from its record: none doubled
        np.testing.assert_allclose(np.asarray(result[0]).ravel(), outputs_of(model, stream_inputs(i, 2))[1], **TOL)
        assert streams.steps_applied(i) == 2
    streams.close_store()


def test_more_replicas_than_the_cluster_has_never_acknowledge(shards: RedisShards) -> None:
    streams = Streams(small_model(), shards.url(replicas=2) + "&wait_ms=50", namespace=namespace())
    with pytest.raises(ReplicationError, match="replicas=2"):
        streams.step({"x": stream_inputs("x", 1)[0]})
    streams.close_store()


def outputs_of(model: StreamModel, xs: np.ndarray) -> list[np.ndarray]:
    """The first output of each step of one stream, stepped in-process."""
    state, ys = model.initial_state(1), []
    for x in xs:
        y, state = model.step(x[None], state)
        ys.append(np.asarray(y[0]).ravel())
    return ys


@pytest.mark.parametrize("replicas", [0, 1], ids=["plain", "durable"])
def test_a_failover_behind_a_lagging_replica(replicas: int, shards: RedisShards) -> None:
    """The master dies while its replica lags (paused, its link down): without durable acknowledgement, the
    step the master acknowledged last is lost; with it, that step was never acknowledged, and its retry
    applies it."""
    model, ns = small_model(), namespace()
    streams = Streams(model, shards.url(replicas) + ("&" if replicas else "?") + "wait_ms=300", namespace=ns)
    xs, expected = stream_inputs("f", 3), outputs_of(model, stream_inputs("f", 3))
    streams.step_each([StepRequest("f", xs[0], start=True, step_number=1)])
    master = master_of(shards, ns + "f")
    replica = shards.replica_of(master)
    replica.pause()
    master.cli("client", "kill", "type", "replica")  # and its link down: what the master writes now, it keeps
    (second,) = streams.step_each([StepRequest("f", xs[1], step_number=2)])
    master.kill()  # before the replica wakes up: it never gets step 2 ...
    replica.pause(False)
    shards.wait_until(shards.serving, "the replica to take over")  # ... and takes over
    shards.restart(master)
    if replicas:
        assert isinstance(second, ReplicationError)  # not acknowledged ...
        second = _retried(streams, StepRequest("f", xs[1], step_number=2))  # ... so the client retries it
        np.testing.assert_allclose(np.asarray(second[0]).ravel(), expected[1], **TOL)
    else:
        np.testing.assert_allclose(np.asarray(second[0]).ravel(), expected[1], **TOL)  # acknowledged ...
        (third,) = streams.step_each([StepRequest("f", xs[2], step_number=3)])
        assert isinstance(third, StepOrderError) and third.expected == 2  # ... and lost
        streams.step_each([StepRequest("f", xs[1], step_number=2)])  # what a client does: send it again
    (third,) = streams.step_each([StepRequest("f", xs[2], step_number=3)])
    np.testing.assert_allclose(np.asarray(third[0]).ravel(), expected[2], **TOL)
    assert streams.steps_applied("f") == 3
    streams.close_store()


def _retried(streams: Streams, request: StepRequest, attempts: int = 50) -> Any:
    """What a client does with a ReplicationError (retryable): send the step again, until its replica has it
    (the old master, restarted, syncs with the new one first)."""
    for _ in range(attempts):
        (outcome,) = streams.step_each([request])
        if not isinstance(outcome, ReplicationError):
            return outcome
        time.sleep(0.2)
    raise AssertionError(f"still not acknowledged after {attempts} attempts: {outcome}")


def test_a_write_after_a_failover_the_client_has_not_seen_reaches_the_new_master(shards: RedisShards) -> None:
    """A coordinated failover (CLUSTER FAILOVER: the replica becomes the master, the master its replica, both
    alive) behind the client's back: its next durable write goes to the old master, which refuses it; the
    store reads the map again and sends it to the new one, instead of failing the step (seen once in
    test_a_failover_behind_a_lagging_replica: a StoreError when the restarted master was a replica)."""
    model, ns = small_model(), namespace()
    streams = Streams(model, shards.url(1) + "&wait_ms=300", namespace=ns)
    xs, expected = stream_inputs("g", 2), outputs_of(model, stream_inputs("g", 2))
    streams.step_each([StepRequest("g", xs[0], start=True, step_number=1)])
    master = master_of(shards, ns + "g")
    replica = shards.replica_of(master)
    _fail_over_to(shards, replica)
    (second,) = streams.step_each([StepRequest("g", xs[1], step_number=2)])
    np.testing.assert_allclose(np.asarray(second[0]).ravel(), expected[1], **TOL)
    assert streams.steps_applied("g") == 2
    streams.close_store()
    _fail_over_to(shards, master)  # back as it was, for the tests after this one


def _fail_over_to(shards: RedisShards, node: RedisNode) -> None:
    """CLUSTER FAILOVER on replica ``node`` until it is a master again (it refuses while still syncing)."""

    def master_now() -> bool:
        if "role:master" in node.cli("info", "replication"):
            return shards.serving()
        node.cli("cluster", "failover")
        time.sleep(1.0)
        return False

    shards.wait_until(master_now, f"node {node.address} to take over again")


def test_one_redis_with_a_replica(tmp_path: Path) -> None:
    """``redis://…?replicas=1`` on one master (no cluster) with a replica: steps wait for it; without it they
    are not acknowledged."""
    master = RedisServer(tmp_path / "master").start()
    replica = RedisServer(tmp_path / "replica").start()
    try:
        subprocess.run([str(REDIS_CLI), "-p", str(replica.port), "replicaof", "127.0.0.1", str(master.port)],
                       check=True, capture_output=True, timeout=10)
        deadline = time.monotonic() + 30
        while "master_link_status:up" not in subprocess.run(
                [str(REDIS_CLI), "-p", str(replica.port), "info", "replication"], capture_output=True, text=True,
                timeout=10).stdout:
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.1)
        model, xs = small_model(), stream_inputs("one", 2)
        streams = Streams(model, master.url + "?replicas=1&wait_ms=300", namespace=namespace())
        (first,) = streams.step_each([StepRequest("one", xs[0], start=True, step_number=1)])
        np.testing.assert_allclose(np.asarray(first[0]).ravel(), outputs_of(model, xs)[0], **TOL)
        replica.kill()
        with pytest.raises(ReplicationError):
            streams.step({"one": xs[1]}, {"one": 2})
        streams.close_store()
    finally:
        master.stop()
        replica.stop()
