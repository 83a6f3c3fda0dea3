"""The time-to-first-token benchmark: SSE clients against a real server, and its report."""

from __future__ import annotations

from rnnstream.bench.ttft import ClientTiming, RoundResult, report, run


def test_the_benchmark_runs_clients_against_a_real_server() -> None:
    text = run(clients=(1, 3), tokens=12, threads=1)
    lines = text.splitlines()
    assert lines[0].startswith("12 tokens per client") and "1 engine thread(s)" in lines[0]
    rows = {int(line.split()[0]): line.split() for line in lines[3:5]}
    assert sorted(rows) == [1, 3]
    assert float(rows[1][1]) > 0 and float(rows[3][-1]) > 1.0  # first token in ms; 3 clients share steps


def test_the_report_gives_percentiles_rates_and_batching() -> None:
    timings = [ClientTiming(0.010, [0.001, 0.003], 3), ClientTiming(0.020, [0.002, 0.002], 3)]
    text = report([RoundResult(2, timings, 0.5, 1.8)], tokens=3)
    row = text.splitlines()[3].split()
    assert row[0] == "2" and row[1] == "15.0" and row[3] == "19.9"  # p50 and p99 of 10 and 20 ms
    assert row[5] == "2.00" and row[9] == "12" and row[10] == "1.8"  # gaps median; 6 tokens / 0.5 s; batching
