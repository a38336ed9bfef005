"""`llmux bench gateway`: every layout is really started and measured, the peer
router (sglang-router, installed by scripts/setup) included, and the rate ladder
stops at the first rate that misses its bound.

The figures themselves are not asserted (benchmarks print, tests check
behaviour): the bounds given here are loose or absurd on purpose, so what is
checked is the mechanism, on any machine."""

from __future__ import annotations

import json

from conftest import free_ports, run_llmux


def _rows(out: str) -> dict:
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {r["layout"]: r for r in rows}


def test_bench_gateway_measures_every_layout():
    r = run_llmux(["bench", "gateway", "--requests", "40", "--warmup", "5", "--rates", "100", "200",
                   "--rate-seconds", "1", "--p99-bound-ms", "2000", "--base-port", free_ports(8),
                   "--json"], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(r.stdout)
    assert set(rows) == {"inproc", "http", "two-process", "peer"}, r.stdout
    for name, row in rows.items():
        assert 0 < row["plain_p50_us"] <= row["plain_p99_us"], (name, row)
        assert 0 < row["ttft_p50_us"] <= row["stream_p50_us"] + 1e-9, (name, row)
    # In process there is no HTTP and no rate ladder.
    for mode in ("plain", "stream"):
        assert rows["inproc"][mode]["max_rate"] == 0 and rows["inproc"][mode]["first_failed_rate"] == 0
    # Through HTTP every rung of a loose ladder is sustained, in both modes.
    for name in ("http", "two-process", "peer"):
        for mode in ("plain", "stream"):
            lad = rows[name][mode]
            assert lad["max_rate"] == 200 and lad["first_failed_rate"] == 0, (name, mode, lad)
            assert 0 < lad["p99_at_max_ms"] < 2000
    assert "sglang-router" in rows["peer"]["path"]


def test_bench_gateway_ladder_stops_at_the_first_miss():
    # A bound no request can meet: the first rung fails, with the reason.
    r = run_llmux(["bench", "gateway", "--layouts", "http", "--requests", "10", "--warmup", "2",
                   "--rates", "100", "200", "--rate-seconds", "1", "--p99-bound-ms", "0.001",
                   "--base-port", free_ports(8), "--json"], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    row = _rows(r.stdout)["http"]
    for mode in ("plain", "stream"):
        assert row[mode]["max_rate"] == 0 and row[mode]["first_failed_rate"] == 100, row
        assert row[mode]["fail_reason"].startswith("p99"), row
    assert "rate    200" not in r.stdout, r.stdout


def test_bench_gateway_rejects_an_unknown_layout():
    r = run_llmux(["bench", "gateway", "--layouts", "nginx"], timeout=30)
    assert r.returncode == 2 and "unknown layout 'nginx'" in r.stderr, r.stderr
