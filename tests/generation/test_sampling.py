"""Sampling: greedy, temperature, top-k, top-p against a plain-Python reference; statistics; seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnstream.errors import InputError, RnnstreamError
from rnnstream.generation.sampling import Sampling, probabilities, sample


def reference(row: list[float], temperature: float, top_k: int | None, top_p: float | None) -> list[float]:
    """The distribution one row is sampled from, written out the slow, obvious way."""
    V = len(row)
    if temperature == 0:
        best = max(range(V), key=lambda i: (row[i], -i))
        return [1.0 if i == best else 0.0 for i in range(V)]
    top = max(row)
    q = [math.exp((s - top) / temperature) for s in row]
    total = sum(q)
    q = [x / total for x in q]
    order = sorted(range(V), key=lambda i: (-row[i], i))
    kept = order[: top_k or V]
    mass = sum(q[i] for i in kept)
    if top_p is not None:
        prefix, acc = [], 0.0
        for i in kept:
            prefix.append(i)
            acc += q[i] / mass
            if acc >= top_p:
                break
        kept = prefix
    mass = sum(q[i] for i in kept)
    return [q[i] / mass if i in kept else 0.0 for i in range(V)]


RULES = [
    Sampling(0.0),
    Sampling(1.0),
    Sampling(0.5),
    Sampling(2.0, top_k=3),
    Sampling(1.0, top_k=1),
    Sampling(0.8, top_p=0.5),
    Sampling(1.3, top_k=5, top_p=0.9),
    Sampling(1.0, top_p=1.0),
    Sampling(0.7, top_k=50),
]


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_probabilities_match_the_reference(rule: Sampling, rng: np.random.Generator) -> None:
    scores = rng.normal(0, 2, (40, 9))
    scores[0, [2, 5]] = scores[0].max() + 1  # a tie for the top
    got = probabilities(scores, rule)
    want = np.array([reference(row.tolist(), rule.temperature, rule.top_k, rule.top_p) for row in scores])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_rows_can_each_have_their_own_rule(rng: np.random.Generator) -> None:
    scores = rng.normal(0, 1, (len(RULES), 7))
    together = probabilities(scores, RULES)
    for i, rule in enumerate(RULES):
        np.testing.assert_allclose(together[i], probabilities(scores[i : i + 1], rule)[0], rtol=1e-12)


def test_temperature_zero_is_greedy_with_ties_to_the_lowest_id(rng: np.random.Generator) -> None:
    scores = rng.normal(0, 1, (200, 11))
    scores[:50, 7] = scores[:50, 3] = scores[:50].max(axis=1) + 0.5  # ties between ids 3 and 7
    ids = sample(scores, Sampling(temperature=0.0), [None] * 200)
    assert ids.tolist() == np.argmax(scores, axis=1).tolist()
    assert set(ids[:50].tolist()) == {3}


def test_top_k_never_emits_outside_the_top_k(rng: np.random.Generator) -> None:
    scores = rng.normal(0, 1, (3, 20))
    top3 = [set(np.argsort(-row, kind="stable")[:3].tolist()) for row in scores]
    g = np.random.default_rng(0)
    ids = sample(np.repeat(scores, 2_000, axis=0), Sampling(temperature=5.0, top_k=3), [g] * 6_000)  # hot
    for row, allowed in enumerate(top3):
        assert set(ids[row * 2_000 : (row + 1) * 2_000].tolist()) == allowed  # all three, and only them


def test_top_k_ties_at_the_boundary_keep_the_lowest_ids() -> None:
    scores = np.array([[0.0, 1.0, 1.0, 1.0, -1.0]])
    assert probabilities(scores, Sampling(top_k=2)).tolist() == [[0.0, 0.5, 0.5, 0.0, 0.0]]


def test_top_p_keeps_the_smallest_prefix_reaching_p() -> None:
    p = np.array([[0.5, 0.3, 0.15, 0.05]])
    kept = probabilities(np.log(p), Sampling(top_p=0.79)) > 0
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 ≥ 0.79
    assert (probabilities(np.log(p), Sampling(top_p=0.81)) > 0).sum() == 3
    assert (probabilities(np.log(p), Sampling(top_p=0.01)) > 0).sum() == 1


def test_draws_follow_the_tempered_distribution() -> None:
    p = np.array([0.4, 0.3, 0.2, 0.1])
    scores = np.log(p)[None]
    rng = np.random.default_rng(7)
    n = 40_000
    counts = np.bincount(sample(np.repeat(scores, n, axis=0), Sampling(0.5), [rng] * n), minlength=4)
    want = p**2 / np.sum(p**2)  # softmax(log p / 0.5)
    sigma = np.sqrt(want * (1 - want) / n)
    assert np.all(np.abs(counts / n - want) < 5 * sigma), (counts / n, want)


def test_softmax_outputs_at_temperature_one_are_sampled_as_they_are(rng: np.random.Generator) -> None:
    p = rng.dirichlet(np.ones(6), size=5)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(probabilities(np.log(p), Sampling(1.0)), p, rtol=1e-12)


def test_a_seed_reproduces_and_rows_do_not_share_draws(rng: np.random.Generator) -> None:
    scores = rng.normal(0, 1, (4, 30))

    def draws(seeds: list[int], rows: list[int]) -> list[list[int]]:
        generators = [np.random.default_rng(s) for s in seeds]
        return [sample(scores[rows], Sampling(1.0), generators).tolist() for _ in range(50)]

    together = draws([1, 2, 3, 4], [0, 1, 2, 3])
    assert together == draws([1, 2, 3, 4], [0, 1, 2, 3])
    alone = draws([3], [2])
    assert [t[2] for t in together] == [a[0] for a in alone]  # row 2 draws the same with or without the others
    assert together != draws([5, 6, 7, 8], [0, 1, 2, 3])


def test_greedy_rows_draw_nothing_from_their_generator(rng: np.random.Generator) -> None:
    scores = rng.normal(0, 1, (2, 5))
    g = np.random.default_rng(0)
    sample(scores, [Sampling(0.0), Sampling(1.0)], [g, np.random.default_rng(1)])
    assert g.random() == np.random.default_rng(0).random()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.2}, "top_p"),
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Sampling(**kwargs)  # type: ignore[arg-type]


def test_scores_without_a_finite_maximum_are_refused() -> None:
    with pytest.raises(RnnstreamError, match="NaN"):
        sample(np.array([[0.0, np.nan]]), Sampling(1.0), [np.random.default_rng(0)])
    with pytest.raises(RnnstreamError, match="no finite maximum"):
        sample(np.array([[-np.inf, -np.inf]]), Sampling(0.0), [None])


def test_a_sampling_row_needs_a_generator() -> None:
    with pytest.raises(InputError, match="no generator"):
        sample(np.zeros((1, 3)), Sampling(1.0), [None])
    with pytest.raises(InputError, match="one per row"):
        sample(np.zeros((2, 3)), Sampling(1.0), [None])
