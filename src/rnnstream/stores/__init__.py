"""State stores behind one interface, chosen by URL: ``memory://`` (default) or ``redis://``."""

from __future__ import annotations

from rnnstream.errors import StoreError
from rnnstream.stores.memory import MemoryStore
from rnnstream.stores.store import Records, Store

KNOWN = ("memory://", "redis://host:port/db", "rediss://host:port/db", "redis-cluster://host:port")


def open_store(url: str, *, state_size: int, output_size: int, ttl: float | None, namespace: str) -> Store:
    """The store for ``url``; unknown schemes are refused with the list of known ones.

    >>> open_store("memory://", state_size=4, output_size=1, ttl=None, namespace="x:")
    MemoryStore(state_size=4, ttl=None)
    """
    if ttl is not None and ttl <= 0:
        raise StoreError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
    if url == "memory://":
        return MemoryStore(state_size, output_size, ttl)
    if url.startswith(("redis://", "rediss://", "redis-cluster://", "redis+cluster://", "unix://")):
        from rnnstream.stores.redis import RedisStore

        return RedisStore(url, state_size, output_size, ttl, namespace)
    raise StoreError(f"unknown store {url!r}; known stores: {', '.join(KNOWN)}")


__all__ = ["MemoryStore", "Records", "Store", "open_store"]
