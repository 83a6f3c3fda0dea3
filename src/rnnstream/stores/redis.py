"""``redis://host:port/db`` (and ``redis-cluster://host:port``): stream state in Redis.

One hash per stream, ``<namespace><stream id>``, with fields ``v`` (a random write token), ``n``
(steps applied), ``s`` (the state row, little-endian float32), ``y`` (the stored answer: the last output,
or the T outputs of a history-priming request that asked for all, ``(T, O)``) and ``e`` once the
stream has ended (its state is dropped; the record expires after ``end_retention``). Every write
is a Lua script that touches that one key — a compare-and-set on ``v`` — so the store works on a
Redis Cluster too. A batch of N streams is one pipelined read and one pipelined write (with one more
command: the live streams' index, a sorted set that ``count`` and ``admit`` read in O(log n); see
``redis_scripts``). Idle streams expire through Redis' own key expiry.

With persistence on (``appendonly yes``; ``appendfsync always`` to lose nothing), a write that
returned is durable: any process can continue the stream where the last acknowledged step left it.
Redis replicates asynchronously, so a master's failover can lose what it acknowledged last; with
``?replicas=N`` in the URL a write counts only once N replicas have it (``durability``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnstream.errors import MissingDependencyError, StoreError
from rnnstream.stores import redis_scripts
from rnnstream.stores.durability import ReplicatedWrites, shortfall, split_url
from rnnstream.stores.store import Records, Store
from rnnstream.types import BoolArray, FloatArray, IntArray

logger = logging.getLogger(__name__)
CLUSTER_SCHEMES = ("redis-cluster://", "redis+cluster://")
SCRIPTS = ("WRITE", "ADMIT", "TOUCH", "COUNT", "DELETE", "SYNC")


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise MissingDependencyError(
            "the redis:// store needs the redis package: pip install 'rnnstream[redis]'"
        ) from None
    return redis


class RedisStore(Store):
    """Streams' state in a Redis server or cluster, shared by every process that opens it."""

    def __init__(self, url: str, state_size: int, output_size: int, ttl: float | None, namespace: str) -> None:
        super().__init__(state_size, output_size, ttl)
        redis = _import_redis()
        self.url = url
        self.namespace = namespace
        self._errors = redis.exceptions
        client_url, self.durability = split_url(url)
        try:
            if url.startswith(CLUSTER_SCHEMES):
                plain = "redis://" + client_url.split("://", 1)[1]
                self._client = redis.cluster.RedisCluster.from_url(plain)
            else:
                self._client = redis.Redis.from_url(client_url)
            self._client.ping()
            self._scripts = {name: self._client.script_load(getattr(redis_scripts, name)) for name in SCRIPTS}
        except redis.exceptions.RedisError as exc:
            raise StoreError(f"cannot reach Redis at {url}: {exc}; is redis-server running there?") from None
        self._replicated = None if self.durability.replicas == 0 else ReplicatedWrites(
            self._client, self.durability, url, {name: getattr(redis_scripts, name) for name in SCRIPTS})
        """With ``?replicas=N``: writes wait for N replicas (``durability``)."""
        self._ttl_ms = 0 if ttl is None else max(1, round(ttl * 1000))
        self._end_ms = max(1, round(self.end_retention * 1000))
        self.index = "rnnstream-index:" + namespace
        """The sorted set of live streams (``redis_scripts``)."""

    def _key(self, stream_id: str) -> str:
        return self.namespace + stream_id

    def _script(self, name: str, keys: list[str], *args: Any) -> tuple[Any, ...]:
        return ("EVALSHA", self._scripts[name], len(keys), *keys, *args)

    def _run(self, commands: list[tuple[Any, ...]], essential: int | None = None,
             streams: Sequence[str] | None = None) -> list[Any]:
        """Run commands in one pipeline; reload the scripts on nodes that lost them, and retry those. A failure
        of any of the first ``essential`` commands (default all) is a StoreError; of the others (the index's
        upkeep after writes that went through) only a warning: the writes stand, the count may drift.
        ``streams`` (the stream of each of the first commands) marks durable writes: they wait for the store's
        replicas (``durability``) when it asks for any, and a ReplicationError names the streams whose master
        heard from too few."""
        short, detail = set[int](), ""
        try:
            if streams is not None and self._replicated is not None:
                replies = self._replicated.run(commands)
                results, short, detail = replies.results, replies.short, replies.detail
            else:
                results = self._pipelined(commands)
        except self._errors.RedisError as exc:
            raise StoreError(f"Redis at {self.url} failed: {exc}") from None
        essential = len(results) if essential is None else essential
        failures = [r for r in results[:essential] if isinstance(r, Exception)]
        if failures:
            raise StoreError(f"Redis at {self.url} failed: {failures[0]}")
        for failure in [r for r in results[essential:] if isinstance(r, Exception)]:
            logger.warning("Redis at %s: the index of live streams was not updated (%s)", self.url, failure)
        unconfirmed = [s for i, s in enumerate(streams or ()) if i in short]
        if unconfirmed:
            raise shortfall(self.durability, detail, unconfirmed,
                            {s: results[i] == 1 for i, s in enumerate(streams or ()) if i not in short})
        return results

    def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``commands`` in one pipeline; the scripts loaded again where a node lost them, and those sent again."""
        results = self._pipeline(commands)
        lost = [i for i, r in enumerate(results) if isinstance(r, self._errors.NoScriptError)]
        if lost:
            for name in SCRIPTS:
                self._client.script_load(getattr(redis_scripts, name))  # the same sha everywhere
            for i, again in zip(lost, self._pipeline([commands[i] for i in lost]), strict=True):
                results[i] = again
        return results

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))

    def _write_command(
        self, stream_id: str, expected: str, steps: int, row: FloatArray, output: FloatArray, ended: bool = False
    ) -> tuple[Any, ...]:
        token = str(secrets.randbits(63) or 1)
        state = b"" if ended else np.asarray(row, "<f4").tobytes()
        out = np.asarray(output, "<f4").tobytes()
        return self._script("WRITE", [self._key(stream_id)], expected, token, steps, state, out, self._ttl_ms,
                            "1" if ended else "0", self._end_ms)

    # -- Store ----------------------------------------------------------------------------------------

    def load(self, ids: Sequence[str]) -> Records:
        replies = self._run([("HMGET", self._key(i), "v", "n", "s", "y", "e") for i in ids])
        records = Records.empty(len(ids), self.state_size, self.output_size)
        for k, (token, steps, state, output, ended) in enumerate(replies):
            if token is None:
                continue
            row_bytes, answer_bytes = 4 * self.output_size, len(output or b"")
            answer_fits = answer_bytes == row_bytes or (row_bytes > 0 < answer_bytes and answer_bytes % row_bytes == 0)
            if not answer_fits or (ended is None and len(state or b"") != 4 * self.state_size):
                raise StoreError(
                    f"the record of stream {ids[k]!r} in {self.url} ({self._key(ids[k])}) is not a state of this "
                    "model; delete the key or use another namespace"
                )
            records.versions[k] = int(token)
            records.steps[k] = int(steps)
            records.outputs[k] = np.frombuffer(output, "<f4")[len(output) // 4 - self.output_size :]
            if answer_bytes > row_bytes:  # the answer of T steps, (T, O)
                records.answers[k] = np.frombuffer(output, "<f4").reshape(-1, self.output_size).astype(np.float32)
            if ended is None:
                records.rows[k] = np.frombuffer(state, "<f4")
            else:
                records.ended[k] = True
        return records

    def commit(
        self,
        ids: Sequence[str],
        versions: IntArray,
        rows: FloatArray,
        steps: IntArray,
        outputs: FloatArray,
        ended: BoolArray | None = None,
        answers: Mapping[int, FloatArray] | None = None,
    ) -> BoolArray:
        ending = [False] * len(ids) if ended is None else ended.tolist()
        answers = answers or {}
        commands = [
            self._write_command(i, str(int(versions[k])), int(steps[k]), rows[k], answers.get(k, outputs[k]),
                                ending[k])
            for k, i in enumerate(ids)
        ]
        live = [i for i, end in zip(ids, ending, strict=True) if not end]
        gone = [i for i, end in zip(ids, ending, strict=True) if end]
        if live:  # the index follows the writes (a stream that lost its write is another writer's, and live)
            commands.append(self._script("TOUCH", [self.index], self._ttl_ms, *live))
        if gone:
            commands.append(("ZREM", self.index, *gone))
        replies = self._run(commands, essential=len(ids), streams=ids)
        return np.array([reply == 1 for reply in replies[: len(ids)]], dtype=bool)

    def admit(self, ids: Sequence[str], limit: int) -> list[bool]:
        if not ids:
            return []
        (replies,) = self._run([self._script("ADMIT", [self.index], limit, redis_scripts.RESERVATION_MS, *ids)])
        return [reply == 1 for reply in replies]

    def release(self, ids: Sequence[str]) -> None:
        if ids:
            self._run([("ZREM", self.index, *ids)])

    def put(self, stream_id: str, row: FloatArray, steps: int, output: FloatArray) -> None:
        self._run([self._write_command(stream_id, "*", steps, row, output),
                   self._script("TOUCH", [self.index], self._ttl_ms, stream_id)], essential=1,
                  streams=[stream_id])

    def delete(self, stream_id: str) -> bool:
        removed, _ = self._run([self._script("DELETE", [self._key(stream_id)]), ("ZREM", self.index, stream_id)],
                               essential=1, streams=[stream_id])
        return bool(removed)

    def ids(self) -> list[str]:
        """Every live stream, by a SCAN of the namespace (for listing; ``count`` needs no scan)."""
        try:
            keys = [k.decode()[len(self.namespace) :] for k in self._client.scan_iter(match=self.namespace + "*",
                                                                                     count=1000)]
        except self._errors.RedisError as exc:
            raise StoreError(f"Redis at {self.url} failed: {exc}") from None
        ended = self._run([("HEXISTS", self.namespace + i, "e") for i in keys])
        return [i for i, gone in zip(keys, ended, strict=True) if not gone]

    def recent(self, limit: int) -> list[str]:
        """Up to ``limit`` live streams from the index, the latest expiry first: with a ttl, the most recently
        written first (without one every stream scores +inf: in reverse id order). One ZREVRANGE, no scan."""
        members = self._run([("ZREVRANGE", self.index, 0, max(0, limit - 1))])[0]
        ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        fields = self._run([("HMGET", self.namespace + i, "e", "v") for i in ids]) if ids else []
        return [i for i, (ended, token) in zip(ids, fields, strict=True) if ended is None and token is not None]

    def count(self) -> int:
        (count,) = self._run([self._script("COUNT", [self.index])])
        return int(count)

    def confirm(self, ids: Sequence[str]) -> None:
        """With ``?replicas=N``: return once the records of ``ids`` as last read are on N replicas — a write to
        each record's master (``redis_scripts.SYNC``), then its WAIT (``durability``); else nothing to do."""
        if ids and self._replicated is not None:
            self._run([self._script("SYNC", [self._key(i)]) for i in ids], streams=ids)

    def close(self) -> None:
        if self._replicated is not None:
            self._replicated.close()
        self._client.close()
