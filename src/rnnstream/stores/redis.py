"""``redis://host:port/db`` (and ``redis-cluster://host:port``): stream state in Redis.

One hash per stream, ``<namespace><stream id>``, with fields ``v`` (a random write token), ``n``
(steps applied), ``s`` (the state row, little-endian float32) and ``y`` (the last output). Every write
is a Lua script that touches that one key — a compare-and-set on ``v`` — so the store works on a
Redis Cluster too. A batch of N streams is one pipelined read and one pipelined write. Idle streams
expire through Redis' own key expiry.

With persistence on (``appendonly yes``; ``appendfsync always`` to lose nothing), a write that
returned is durable: any process can continue the stream where the last acknowledged step left it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnstream.errors import MissingDependencyError, StoreError
from rnnstream.stores.base import Records, Store
from rnnstream.types import BoolArray, FloatArray, IntArray

# KEYS[1]: the stream. ARGV: expected token ("*" = unconditional), new token, steps, state, output, ttl ms.
WRITE_SCRIPT = """
local token = redis.call('HGET', KEYS[1], 'v') or '0'
if ARGV[1] ~= '*' and token ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'n', ARGV[3], 's', ARGV[4], 'y', ARGV[5])
if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) else redis.call('PERSIST', KEYS[1]) end
return 1
"""

CLUSTER_SCHEMES = ("redis-cluster://", "redis+cluster://")


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
        try:
            if url.startswith(CLUSTER_SCHEMES):
                plain = "redis://" + url.split("://", 1)[1]
                self._client = redis.cluster.RedisCluster.from_url(plain)
            else:
                self._client = redis.Redis.from_url(url)
            self._client.ping()
            self._sha = self._client.script_load(WRITE_SCRIPT)
        except redis.exceptions.RedisError as exc:
            raise StoreError(f"cannot reach Redis at {url}: {exc}; is redis-server running there?") from None
        self._ttl_ms = 0 if ttl is None else max(1, round(ttl * 1000))

    def _key(self, stream_id: str) -> str:
        return self.namespace + stream_id

    def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run commands in one pipeline; reload the script on nodes that lost it, and retry those."""
        try:
            results = self._pipeline(commands)
            lost = [i for i, r in enumerate(results) if isinstance(r, self._errors.NoScriptError)]
            if lost:
                self._sha = self._client.script_load(WRITE_SCRIPT)
                for i, again in zip(lost, self._pipeline([commands[i] for i in lost]), strict=True):
                    results[i] = again
        except self._errors.RedisError as exc:
            raise StoreError(f"Redis at {self.url} failed: {exc}") from None
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            raise StoreError(f"Redis at {self.url} failed: {failures[0]}")
        return results

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))

    def _write_command(
        self, stream_id: str, expected: str, steps: int, row: FloatArray, output: FloatArray
    ) -> tuple[Any, ...]:
        token = str(secrets.randbits(63) or 1)
        state = np.asarray(row, "<f4").tobytes()
        out = np.asarray(output, "<f4").tobytes()
        return ("EVALSHA", self._sha, 1, self._key(stream_id), expected, token, steps, state, out, self._ttl_ms)

    # -- Store ----------------------------------------------------------------------------------------

    def load(self, ids: Sequence[str]) -> Records:
        replies = self._run([("HMGET", self._key(i), "v", "n", "s", "y") for i in ids])
        records = Records.empty(len(ids), self.state_size, self.output_size)
        for k, (token, steps, state, output) in enumerate(replies):
            if token is None:
                continue
            sizes = (len(state or b""), len(output or b""))
            if sizes != (4 * self.state_size, 4 * self.output_size):
                raise StoreError(
                    f"the record of stream {ids[k]!r} in {self.url} ({self._key(ids[k])}) is not a state of this "
                    "model; delete the key or use another namespace"
                )
            records.versions[k] = int(token)
            records.steps[k] = int(steps)
            records.rows[k] = np.frombuffer(state, "<f4")
            records.outputs[k] = np.frombuffer(output, "<f4")
        return records

    def commit(
        self, ids: Sequence[str], versions: IntArray, rows: FloatArray, steps: IntArray, outputs: FloatArray
    ) -> BoolArray:
        commands = [
            self._write_command(i, str(int(versions[k])), int(steps[k]), rows[k], outputs[k])
            for k, i in enumerate(ids)
        ]
        return np.array([reply == 1 for reply in self._run(commands)], dtype=bool)

    def put(self, stream_id: str, row: FloatArray, steps: int, output: FloatArray) -> None:
        self._run([self._write_command(stream_id, "*", steps, row, output)])

    def delete(self, stream_id: str) -> bool:
        return bool(self._run([("DEL", self._key(stream_id))])[0])

    def ids(self) -> list[str]:
        try:
            keys = self._client.scan_iter(match=self.namespace + "*", count=1000)
            return [k.decode()[len(self.namespace) :] for k in keys]
        except self._errors.RedisError as exc:
            raise StoreError(f"Redis at {self.url} failed: {exc}") from None

    def count(self) -> int:
        return len(self.ids())

    def close(self) -> None:
        self._client.close()
