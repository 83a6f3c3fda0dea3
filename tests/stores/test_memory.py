"""The memory store's arena: rows reused through the free list, growth by doubling, compact per stream."""

from __future__ import annotations

import numpy as np

from rnnstream.stores.memory import CHUNK_ROWS, INITIAL_CAPACITY, ChunkedRows, MemoryStore


def fill(store: MemoryStore, ids: list[str], value: float) -> None:
    records = store.load(ids)
    rows = np.full((len(ids), store.state_size), value, np.float32)
    outputs = np.zeros((len(ids), store.output_size), np.float32)
    store.commit(ids, records.versions, rows, records.steps + 1, outputs)


def test_arena_grows_by_doubling_and_keeps_rows() -> None:
    store = MemoryStore(state_size=3, output_size=1)
    first = [f"a{i}" for i in range(INITIAL_CAPACITY)]
    fill(store, first, 1.0)
    assert store.capacity == INITIAL_CAPACITY
    fill(store, ["one-more"], 2.0)
    assert store.capacity == 2 * INITIAL_CAPACITY
    assert store.load(["a0", "one-more"]).rows[:, 0].tolist() == [1.0, 2.0]
    assert store.count() == INITIAL_CAPACITY + 1


def test_closed_rows_are_reused() -> None:
    store = MemoryStore(state_size=2, output_size=1)
    fill(store, [f"s{i}" for i in range(INITIAL_CAPACITY)], 1.0)
    for i in range(100):
        store.delete(f"s{i}")
    fill(store, [f"t{i}" for i in range(100)], 5.0)
    assert store.capacity == INITIAL_CAPACITY
    assert store.load(["t0"]).rows[0, 0] == 5.0 and store.load(["s0"]).versions[0] == 0


def test_state_rows_grow_a_chunk_at_a_time() -> None:
    """Bytes per stream stay within 1.1x the state plus the small columns, at any stream count."""
    state_size = 600
    store = MemoryStore(state_size=state_size, output_size=1)
    for count in (1, 5_000, 40_000):
        fill(store, [f"s{i}" for i in range(store.count(), count)], 0.5)
        assert store._rows.capacity - count < CHUNK_ROWS
        if count >= 10 * CHUNK_ROWS:
            assert store.nbytes / count <= 1.1 * 4 * state_size + 2 * (8 + 8 + 8 + 4)


def test_rows_gather_and_scatter_across_chunks() -> None:
    rows = ChunkedRows(width=2)
    rows.grow_to(3 * CHUNK_ROWS)
    picked = np.array([5, CHUNK_ROWS + 1, 2 * CHUNK_ROWS + 7, 6])
    rows.scatter(picked, np.arange(8, dtype=np.float32).reshape(4, 2))
    assert rows.gather(picked[::-1]).tolist() == [[6, 7], [4, 5], [2, 3], [0, 1]]
