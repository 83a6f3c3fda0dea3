"""Store fixtures: every conformance test runs on memory://, a private Redis, a 3-node Redis Cluster, and a
Cluster of 3 masters with a replica each under durable acknowledgement."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rnnstream import StreamModel, Streams
from rnnstream.cluster import RedisShards
from tests.redis_server import REDIS_CLI, REDIS_SERVER, RedisCluster, RedisServer
from tests.stores.small import small_model


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed; run `make test`, which installs it")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.fail("redis-server and redis-cli are not installed; run `make test`, which installs them")
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def replicated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisShards]:
    """3 masters with a replica each (rnnstream.cluster), for durable acknowledgement (``?replicas=1``)."""
    cluster = RedisShards(tmp_path_factory.mktemp("replicated"), masters=3, replicas=1).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["memory", "redis", "redis-cluster", "redis-cluster-durable"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_server").url)
    if request.param == "redis-cluster-durable":
        return str(request.getfixturevalue("replicated_cluster").url(replicas=1))
    return str(request.getfixturevalue("redis_cluster").url)


@pytest.fixture(scope="session")
def model() -> StreamModel:
    return small_model()


@pytest.fixture
def make_streams(store_url: str, model: StreamModel) -> Iterator[Callable[..., Streams]]:
    """Streams on the store under test, each in a namespace of its own; closed afterwards."""
    made: list[Streams] = []

    def make(**options: Any) -> Streams:
        options.setdefault("namespace", f"test-{uuid.uuid4().hex[:12]}:")
        streams = Streams(options.pop("model", model), store_url, **options)
        made.append(streams)
        return streams

    yield make
    for streams in made:
        streams.close_store()
