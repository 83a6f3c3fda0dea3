"""Choosing the next token from a model's scores: greedy, temperature, top-k, top-p; batched and exact.

For one row of scores ``s`` (logits, or log-probabilities of a softmax output) and temperature ``T``:

- ``T = 0``: greedy, ``argmax s`` (ties go to the lowest id).
- otherwise ``p = softmax(s / T)``; top-k keeps the k largest entries of ``p`` (ties at the boundary go
  to the lowest ids) and renormalises; top-p then keeps the smallest prefix of the sorted distribution
  whose mass is ≥ p and renormalises (the order of Hugging Face's and OpenAI's samplers).
- one uniform ``u ∈ [0, 1)`` from the stream's own generator picks the id by inverse CDF over the ids in
  increasing order: the first id whose cumulative probability exceeds ``u``.

Every stream draws exactly one uniform per sampled token from its own generator, so its sequence depends
only on its seed and its scores, never on which other streams share the batch.

>>> import numpy as np
>>> scores = np.log(np.float32([[0.1, 0.6, 0.3]]))
>>> sample(scores, Sampling(temperature=0.0), [np.random.default_rng(0)]).tolist()
[1]
>>> probabilities(scores, Sampling(top_k=2)).round(3).tolist()
[[0.0, 0.667, 0.333]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnnstream.errors import InputError, RnnstreamError
from rnnstream.types import Array, FloatArray, IntArray

TOP_K_ALL = 2**31
"""Any ``top_k`` from here on keeps every id (no vocabulary is this large); larger values are stored as it."""


@dataclass(frozen=True)
class Sampling:
    """How one stream picks its tokens. ``temperature=0`` is greedy; ``top_k``/``top_p`` None keep all.

    >>> Sampling(temperature=0.7, top_k=40)
    Sampling(temperature=0.7, top_k=40, top_p=None)
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise InputError(f"temperature must be a finite number ≥ 0 (0 is greedy), got {t!r}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1):
            raise InputError(f"top_k must be a positive integer or None, got {k!r}")
        p = self.top_p
        if p is not None and (isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1):
            raise InputError(f"top_p must be a number in (0, 1] or None, got {p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Rules:
    """Per-row sampling rules as arrays: temperature ``T`` (0: greedy), ``k`` (0: no top-k) and ``p``
    (1: no top-p), each ``[B]``. Built once per set of rows, reused at every step."""

    T: FloatArray
    k: IntArray
    p: FloatArray

    @staticmethod
    def of(sampling: Sampling | Sequence[Sampling], rows: int) -> Rules:
        rules = [sampling] * rows if isinstance(sampling, Sampling) else list(sampling)
        if len(rules) != rows:
            raise InputError(f"got {len(rules)} Sampling rules for {rows} rows of scores; give one, or one per row")
        return Rules(
            T=np.array([r.temperature for r in rules], np.float64),
            k=np.array([min(r.top_k or 0, TOP_K_ALL) for r in rules], np.int64),  # k past V keeps every id
            p=np.array([1.0 if r.top_p is None else r.top_p for r in rules], np.float64),
        )

    def select(self, rows: Sequence[int]) -> Rules:
        return Rules(self.T[rows], self.k[rows], self.p[rows])

    @staticmethod
    def concat(parts: Sequence[Rules]) -> Rules:
        return Rules(*(np.concatenate([getattr(r, f) for r in parts]) for f in ("T", "k", "p")))


def probabilities(scores: Array, sampling: Sampling | Sequence[Sampling] | Rules) -> FloatArray:
    """The distribution each row is sampled from, ``[B, V]`` float64 (one-hot for greedy rows).

    ``scores``: ``[B, V]`` logits or log-probabilities; ``sampling``: one for all rows or one per row.
    """
    s, top = _scores(scores)  # (B, V), (B,)
    B, V = s.shape
    rules = sampling if isinstance(sampling, Rules) else Rules.of(sampling, B)
    greedy = rules.T == 0
    p = np.zeros_like(s)  # (B, V)
    if greedy.any():
        rows = np.flatnonzero(greedy)
        p[rows, np.argmax(s[rows], axis=1)] = 1.0
    warm = np.flatnonzero(~greedy)
    if warm.size:
        every = warm.size == B  # the usual case: no greedy row, no gather
        sw = s if every else s[warm]
        q = np.exp((sw - top[warm, None]) / rules.T[warm, None])  # (b, V): softmax(s / T), not yet normalised
        q /= q.sum(axis=1, keepdims=True)
        k = np.where((rules.k[warm] > 0) & (rules.k[warm] < V), rules.k[warm], V)  # (b,)
        filtered = np.flatnonzero((k < V) | (rules.p[warm] < 1.0))
        if filtered.size:
            q[filtered] *= _keep(sw[filtered], q[filtered], k[filtered], rules.p[warm[filtered]])
            q[filtered] /= q[filtered].sum(axis=1, keepdims=True)
        if every:
            return q
        p[warm] = q
    return p


def _keep(s: FloatArray, q: FloatArray, k: IntArray, top_p: FloatArray) -> FloatArray:
    """0/1 mask ``[b, V]`` of the ids top-k and then top-p keep, in id order."""
    b, V = s.shape
    order = np.argsort(-s, axis=1, kind="stable")  # (b, V): descending, ties → lowest id first
    rank = np.arange(V)[None, :]  # (1, V): sorted positions
    rank_ok = rank < k[:, None]  # (b, V): top-k
    sorted_q = np.take_along_axis(q, order, axis=1) * rank_ok  # (b, V), top-k applied
    sorted_q /= sorted_q.sum(axis=1, keepdims=True)
    before = np.cumsum(sorted_q, axis=1) - sorted_q  # mass strictly before each sorted position
    rank_ok &= (before < top_p[:, None]) | (rank == 0)  # the smallest prefix with mass ≥ top_p
    keep = np.zeros((b, V))
    np.put_along_axis(keep, order, rank_ok.astype(np.float64), axis=1)
    return keep


def draw(p: FloatArray, greedy: Array, u: FloatArray) -> IntArray:
    """Token ids from distributions ``p [B, V]``: argmax for ``greedy`` rows, inverse CDF at ``u`` (one
    uniform per other row, in order) for the rest."""
    warm = np.flatnonzero(~greedy)
    ids = np.argmax(p, axis=1) if warm.size < len(p) else np.zeros(len(p), np.int64)  # greedy: the one-hot
    if warm.size:
        cdf = np.cumsum(p if warm.size == len(p) else p[warm], axis=1)  # (b, V)
        picked = np.sum(cdf <= (u * cdf[:, -1])[:, None], axis=1)  # the first id whose cdf exceeds u
        ids[warm] = np.minimum(picked, p.shape[1] - 1)
    chosen: IntArray = ids.astype(np.int64, copy=False)
    return chosen


def sample(
    scores: Array, sampling: Sampling | Sequence[Sampling], generators: Sequence[np.random.Generator | None]
) -> IntArray:
    """One token id per row of ``scores [B, V]``; each sampling row draws one uniform from its generator.

    Greedy rows draw nothing (their generator may be None).

    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> sample(np.zeros((1, 5)), Sampling(top_k=1), [rng]).tolist()  # all tie: top-1 keeps id 0
    [0]
    """
    rows = np.shape(scores)[0]
    if len(generators) != rows:
        raise InputError(f"sample got {rows} rows of scores but {len(generators)} generators; give one per row")
    rules = Rules.of(sampling, rows)
    p = probabilities(scores, rules)
    greedy = rules.T == 0
    warm = np.flatnonzero(~greedy).tolist()
    missing = [i for i in warm if generators[i] is None]
    if missing:
        raise InputError(f"row {missing[0]} samples (temperature {rules.T[missing[0]]}) "
                         "but has no generator; give each sampling row a numpy Generator")
    u = np.array([generators[i].random() for i in warm])  # type: ignore[union-attr]  # (b,)
    return draw(p, greedy, u)


def _scores(scores: Array) -> tuple[FloatArray, FloatArray]:
    """Scores as float64 ``[B, V]`` and each row's maximum; a row without a finite maximum (or with a NaN,
    which the maximum carries) cannot be sampled."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[1] < 1:
        raise InputError(f"scores must be [B, V] with V ≥ 1, got shape {s.shape}")
    top = s.max(axis=1)  # (B,)
    bad = np.flatnonzero(~np.isfinite(top))
    if bad.size:
        raise RnnstreamError(
            f"the model's scores for row {int(bad[0])} have no finite maximum or contain NaN "
            f"({s[bad[0]][:8].tolist()}...); a token cannot be sampled from them"
        )
    return s, top
