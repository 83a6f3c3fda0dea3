"""Durable acknowledgement on Redis: a write counts once N replicas have it (``?replicas=N`` in the store URL).

Redis replicates asynchronously: a master answers a write before its replicas have it, and a master that
dies in between loses the write when a replica takes its place. With ``replicas=N``
(``redis-cluster://host:port?replicas=1&wait_ms=1000``) the store sends a batch's writes to each master that
holds their keys as one pipeline on one connection, ending in ``WAIT N wait_ms``: WAIT returns once N
replicas have acknowledged every earlier write of that connection (or the time is up) and says how many
did. The masters are asked at once, one thread each, so a batch waits for its slowest master, not for their
sum.

A step whose record's master heard from fewer than N replicas in time fails with a
:class:`ReplicationError` (a ``StoreError``: the server answers 503, ``"retryable": true``): it is not
reported done; the batch's steps on other masters are. Its write may stand on the master; the retry with
the same step number then finds the step applied and is answered with its stored output, after a write
to that record's master and the same WAIT (``RedisStore.confirm``): replication keeps a master's order,
so the record read is then on N replicas too. If the master died instead, the retry applies the step
afresh (it was never acknowledged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from rnnstream.errors import ReplicationError, StoreError

logger = logging.getLogger(__name__)
Command = tuple[Any, ...]


@dataclass(frozen=True)
class Durability:
    """What a write waits for before it counts: ``replicas`` Redis replicas (0: the master's answer alone),
    for at most ``wait_ms`` milliseconds."""

    replicas: int = 0
    wait_ms: int = 1000


def split_url(url: str) -> tuple[str, Durability]:
    """The URL for redis-py (rnnstream's parameters taken out) and the durability it asks for.

    >>> split_url("redis-cluster://127.0.0.1:7000?replicas=1")
    ('redis-cluster://127.0.0.1:7000', Durability(replicas=1, wait_ms=1000))
    >>> split_url("redis://h:6379/0?replicas=2&wait_ms=250&ssl_cert_reqs=none")
    ('redis://h:6379/0?ssl_cert_reqs=none', Durability(replicas=2, wait_ms=250))
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in query if name in ("replicas", "wait_ms")}
    values = {}
    for name, value in ours.items():
        if not value.isdigit() or (name == "wait_ms" and int(value) == 0):
            raise StoreError(f"{name}={value!r} in the store URL {url!r} is not a number of "
                             f"{'replicas (0 or more)' if name == 'replicas' else 'milliseconds (1 or more)'}")
        values[name] = int(value)
    rest = urlencode([(name, value) for name, value in query if name not in ours])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), Durability(**values)


def key_of(command: Command) -> str:
    """The key a store command touches: a script's first key, else the command's first argument."""
    return str(command[3] if command[0] == "EVALSHA" else command[1])


@dataclass(frozen=True)
class Replies:
    """The replies of ``ReplicatedWrites.run``, one per command; ``short``: the positions of the commands
    whose master heard from fewer replicas than asked, which ``detail`` lists (master → replicas)."""

    results: list[Any]
    short: set[int]
    detail: str


def shortfall(durability: Durability, detail: str, stream_ids: list[str], written: Mapping[str, bool]
              ) -> ReplicationError:
    """The error of steps whose records fewer than ``durability.replicas`` replicas acknowledged."""
    return ReplicationError(
        f"the steps of streams {stream_ids[:10]}{' …' if len(stream_ids) > 10 else ''} reached fewer than "
        f"replicas={durability.replicas} replicas within {durability.wait_ms} ms (replicas that acknowledged, "
        f"by master: {detail}), so they are not reported done. Retry with the same step numbers (safe); if it "
        "persists, the shard lacks live replicas: start one, or lower replicas=",
        stream_ids=stream_ids, written=written,
    )


class ReplicatedWrites:
    """Writes grouped by the master that holds their keys, each group one pipeline ending in WAIT."""

    def __init__(self, client: Any, durability: Durability, url: str, scripts: Mapping[str, str]) -> None:
        import redis

        self.client, self.durability, self.url, self.scripts = client, durability, url, scripts
        self.cluster = isinstance(client, redis.cluster.RedisCluster)
        self.errors = redis.exceptions
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="rnnstream-wait")

    def run(self, commands: list[Command]) -> Replies:
        """Each command's reply (an exception for one that failed), once every master that took one has
        heard from ``replicas`` replicas or ``wait_ms`` passed (``short``: the commands of those that had
        not); a StoreError when a master cannot be reached (the cluster's map of slots is then read again
        for the next call). Commands sent to a node that has become a replica since the map was read (a
        failover: it refuses them, applying nothing) are sent once more after the map is read again."""
        results: list[Any] = [None] * len(commands)
        short: set[int] = set()
        detail: list[str] = []
        failure, moved = self.send(commands, list(range(len(commands))), results, short, detail)
        if moved and failure is None:
            logger.info("Redis at %s: %d commands met a replica (a failover); sending them again", self.url, len(moved))
            self.refresh()
            failure, moved = self.send(commands, moved, results, short, detail)
            if moved and failure is None:
                failure = self.errors.ResponseError(f"{len(moved)} commands reached a replica after the map was read")
        if failure is not None or any(isinstance(r, Exception) for r in results):
            self.refresh()
        if failure is not None:
            raise StoreError(f"Redis at {self.url} failed: {failure}")
        return Replies(results, short, ", ".join(detail))

    def send(
        self, commands: list[Command], which: list[int], results: list[Any], short: set[int], detail: list[str]
    ) -> tuple[Exception | None, list[int]]:
        """Commands ``which`` on their masters, their replies into ``results``; the first failure, and the
        positions whose node answered as a replica (MOVED, READONLY, or WAIT refused)."""
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i in which:
            node = self.client.get_node_from_key(key_of(commands[i])) if self.cluster else None
            groups.setdefault("" if node is None else node.name, (node, []))[1].append(i)
        jobs = {name: self.pool.submit(self.on_node, node, [commands[i] for i in positions])
                for name, (node, positions) in groups.items()}  # fmt: skip
        failure: Exception | None = None
        moved: list[int] = []
        for name, job in jobs.items():
            positions = groups[name][1]
            try:
                replies, acknowledged = job.result()
            except self.errors.ResponseError as error:
                if self.cluster and "replica" in str(error).lower():  # WAIT on a node that is a replica now
                    moved.extend(positions)
                else:
                    failure = error
                continue
            except self.errors.RedisError as error:
                failure = error
                continue
            if self.cluster and any(isinstance(r, self.errors.MovedError | self.errors.ReadOnlyError) for r in replies):
                moved.extend(positions)
                continue
            for i, reply in zip(positions, replies, strict=True):
                results[i] = reply
            if acknowledged < self.durability.replicas:
                short.update(positions)
                detail.append(f"{name or self.url} → {acknowledged}")
        return failure, moved

    def on_node(self, node: Any, commands: list[Command]) -> tuple[list[Any], int]:
        """``commands`` and WAIT in one pipeline on one connection of ``node`` (None: the one server);
        scripts the node lacks (a replica just promoted) are loaded, and their commands sent again."""
        connection = self.client if node is None else self.client.get_redis_connection(node)
        replies, acknowledged = self.pipeline(connection, commands)
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, self.errors.NoScriptError)]
        if lost:
            for source in self.scripts.values():
                connection.script_load(source)
            again, acknowledged = self.pipeline(connection, [commands[i] for i in lost])
            for i, reply in zip(lost, again, strict=True):
                replies[i] = reply
        return replies, acknowledged

    def pipeline(self, connection: Any, commands: list[Command]) -> tuple[list[Any], int]:
        pipe = connection.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute_command("WAIT", self.durability.replicas, self.durability.wait_ms)
        *replies, acknowledged = pipe.execute(raise_on_error=False)
        if isinstance(acknowledged, Exception):
            raise acknowledged
        return list(replies), int(acknowledged)

    def refresh(self) -> None:
        """Read the cluster's slots again (after a failover the keys' master is another node)."""
        if not self.cluster:
            return
        try:
            self.client.nodes_manager.initialize()
        except self.errors.RedisError as error:
            logger.warning("Redis at %s: cannot read the cluster's slots yet (%s)", self.url, error)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
