"""bench engine's rows: ratios taken round by round, the arithmetic limit beside them, the report."""

from __future__ import annotations

import pytest

from rnnstream.bench.engine_results import Row, paired_ratio, report
from rnnstream.bench.limit import PRODUCT_FLOPS, seconds


def test_a_ratio_pairs_the_rounds_so_the_machines_drift_cancels() -> None:
    """Round 2 ran while the machine was slow (both engines 10x): per round, a takes half b's time in 2 of 3
    rounds, so the ratio is 0.5, where the medians' ratio (3 / 2) would say a is the slower."""
    row = Row("seed", 256, {"a": 3.0, "b": 2.0}, rounds={"a": [1.0, 10.0, 3.0], "b": [2.0, 20.0, 2.0]})
    assert row.ratio("a", "b") == 0.5
    assert row.ratio("b", "a") == 2.0
    assert paired_ratio([1.0, 2.0], [1.0]) == 0.0  # rounds that do not pair up
    assert paired_ratio([], []) == 0.0


def test_without_rounds_the_ratio_is_the_medians() -> None:
    """A row read back from an older JSON (no rounds), or an engine whose rounds are missing."""
    row = Row("seed", 1, {"a": 3.0, "b": 2.0})
    assert row.ratio("a", "b") == 1.5
    row.rounds = {"a": [3.0, 3.0]}
    assert row.ratio("a", "b") == 1.5


def test_the_limit_ratio_pairs_each_round_with_the_products_round() -> None:
    """The product ran at 200 GFLOP/s in rounds 1 and 3 and at half that in round 2, while the engine slowed
    alike: 0.8 of the limit's speed in every round."""
    at = [PRODUCT_FLOPS / 200e9, PRODUCT_FLOPS / 100e9, PRODUCT_FLOPS / 200e9]
    limit_rounds = [seconds(563600, 256, s) for s in at]
    engine = [t / 0.8 for t in limit_rounds]
    row = Row("seed", 256, {"rnnstream": 999.0}, limit=limit_rounds[0], rounds={"rnnstream": engine},
              limit_rounds=limit_rounds)  # fmt: skip
    assert row.limit_ratio("rnnstream") == pytest.approx(0.8)
    assert limit_rounds[0] == pytest.approx(256 * 563600 / 200e9)
    assert "(    0.80×)" in report([row])
    assert Row("seed", 1, {"e": 2.0}, limit=1.0).limit_ratio("e") == 0.5  # no rounds: the medians


def test_beside_a_neighbour_the_ratio_is_to_the_engines_own_steps() -> None:
    """The process beside a neighbour happened to sit slower than rnnstream's own (its own steps: 1.5x rnnstream's
    in every round); the neighbour added 10%. The report says 1.10x (the neighbour's cost), not 1.65x."""
    row = Row("seed", 256, {"rnnstream": 1.0, "beside": 1.65},
              rounds={"rnnstream": [1.0, 2.0, 1.0], "beside": [1.65, 3.3, 1.65]},
              own_rounds={"beside": [1.5, 3.0, 1.5]})  # fmt: skip
    assert row.beside_ratio("beside") == pytest.approx(1.1)
    assert row.ratio("beside", "rnnstream") == pytest.approx(1.65)
    assert "(    1.10×)" in report([row])
    assert Row("seed", 1, {"e": 1.0}).beside_ratio("e") == 0.0  # no own steps timed
