"""What a Generation keeps per stream: each request, and the rows of arrays every token step reads.

A :class:`TokenRequest` is one stream's prompt, rules, limits and generator until it joins; :class:`Rows`
holds the generating streams' sampling rules, uniforms, counts and pending tokens as arrays in the
engine's row order, so that a step samples every stream with a few vectorised operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnnstream.generation.sampling import Rules, Sampling
from rnnstream.state import State
from rnnstream.types import FloatArray, IntArray

BLOCK = 64
"""Uniforms a stream draws from its generator at a time (the same numbers as one by one, in order)."""


@dataclass(eq=False)
class TokenRequest:
    """One stream added to a Generation: its prompt (``primed`` tokens of it run so far), its sampling rule,
    limit, stop tokens and generator, and where it starts (``start``: a state; ``restart``: afresh)."""

    stream_id: str
    prompt: IntArray
    rule: Sampling
    max_tokens: int
    stop: frozenset[int]
    rng: np.random.Generator
    start: State | None = None
    restart: bool = False
    primed: int = 0  # prompt tokens run so far (a long prompt is primed PRIME_CHUNK tokens a step)


class Rows:
    """What the generating streams need at every step, as arrays in the engine's order: sampling rules,
    each stream's next uniforms (drawn from its generator ``BLOCK`` at a time), tokens produced so far,
    the limit, and the token sampled last (fed at the next step)."""

    def __init__(self) -> None:
        self.requests: list[TokenRequest] = []
        self.rules = Rules.of([], 0)
        self.uniforms = np.zeros((0, BLOCK))  # (n, BLOCK)
        self.cursor = np.zeros(0, np.int64)  # (n,): the next unused column of each row of ``uniforms``
        self.produced = np.zeros(0, np.int64)
        self.limit = np.zeros(0, np.int64)
        self.pending = np.zeros(0, np.int64)
        self.stopping: list[int] = []  # rows that have stop tokens

    def __len__(self) -> int:
        return len(self.requests)

    def append(self, requests: Sequence[TokenRequest]) -> None:
        n = len(requests)
        self.requests = [*self.requests, *requests]
        self.rules = Rules.concat([self.rules, Rules.of([r.rule for r in requests], n)])
        fresh = np.stack([r.rng.random(BLOCK) for r in requests])  # (n, BLOCK)
        self.uniforms = np.concatenate([self.uniforms, fresh])
        self.cursor = np.concatenate([self.cursor, np.zeros(n, np.int64)])
        self.produced = np.concatenate([self.produced, np.zeros(n, np.int64)])
        self.limit = np.concatenate([self.limit, [r.max_tokens for r in requests]]).astype(np.int64)
        self.pending = np.concatenate([self.pending, np.full(n, -1, np.int64)])
        self._index_stops()

    def keep(self, rows: list[int]) -> None:
        self.requests = [self.requests[i] for i in rows]
        self.rules = self.rules.select(rows)
        self.uniforms, self.cursor = self.uniforms[rows], self.cursor[rows]
        self.produced, self.limit, self.pending = self.produced[rows], self.limit[rows], self.pending[rows]
        self._index_stops()

    def _index_stops(self) -> None:
        self.stopping = [i for i, r in enumerate(self.requests) if r.stop]

    def next_uniforms(self, rows: IntArray) -> FloatArray:
        """One uniform for each of ``rows``, in order, each from that stream's own generator."""
        spent = rows[self.cursor[rows] == BLOCK]
        for i in spent.tolist():  # once every BLOCK tokens per stream
            self.uniforms[i] = self.requests[i].rng.random(BLOCK)
            self.cursor[i] = 0
        u: FloatArray = self.uniforms[rows, self.cursor[rows]]
        self.cursor[rows] += 1
        return u
