"""The end-to-end benchmark harness (bench/) runs, briefly, and writes a well-formed report.

`python -m bench run --quick` goes through every scenario against every target with a
tiny load. Only the shape of the results is checked: numbers present, calls made, no
errors, tables and chart written. Never timings: benchmarks are not assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.nginx import find_nginx
from bench.report import END, START, replace_block
from bench.scenarios import LoadResult
from bench.suite import median_round

ROOT = Path(__file__).resolve().parent.parent
LOAD_SCENARIOS = ("latency", "throughput", "fan-in")
ALL_TARGETS = {"direct", "nginx", "mcpfast-ws", "mcpfast-unix"}
PERCENTILES = ("p50", "p90", "p99", "p99.9")
Results = tuple[Path, dict[str, Any]]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Results:
    if find_nginx() is None:
        pytest.fail("nginx is not installed, and the benchmark harness measures it as the "
                    "proxy floor: run `make bench-deps` (apt-get install -y nginx-light)")
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    figures = out.with_name("results.json")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--quick", "--no-install",
         "--out", str(out), "--json", str(figures)],
        cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, f"bench run failed:\n{proc.stdout}\n{proc.stderr}"
    return out, json.loads(figures.read_text())


@pytest.mark.slow
def test_every_load_scenario_measures_every_target(quick_run: Results) -> None:
    _, suite = quick_run
    assert suite["failures"] == []
    for scenario in LOAD_SCENARIOS:
        rows = {row["target"]: row for row in suite["results"][scenario]}
        assert set(rows) == ALL_TARGETS, scenario
        for target, row in rows.items():
            where = f"{scenario}/{target}"
            assert row["calls"] > 0, where
            assert row["errors"] == 0, (where, row["notes"])
            assert row["throughput"] > 0, where
            latencies = [row["latency_us"][p] for p in PERCENTILES]
            assert all(value > 0 for value in latencies), where
            assert latencies == sorted(latencies), where
            assert row["loadgen_cpu_us_per_call"] is not None, where
            assert row["echo_cpu_us_per_call"] is not None, where
            if target == "direct":
                assert row["proxy_cpu_us_per_call"] is None, where
            else:
                assert row["proxy_cpu_us_per_call"] is not None, where
                assert row["proxy_rss_bytes"] > 0, where


@pytest.mark.slow
def test_idle_scenario_holds_sessions_on_both_proxies(quick_run: Results) -> None:
    _, suite = quick_run
    rows = {row["target"]: row for row in suite["results"]["idle"]}
    assert set(rows) == {"nginx", "mcpfast-ws"}
    for target, row in rows.items():
        assert row["sessions"] == row["requested"] > 0, target
        assert row["errors"] == 0, (target, row["notes"])
        assert row["rss_before_bytes"] > 0 and row["rss_with_sessions_bytes"] > 0, target
        assert row["rss_per_session_bytes"] is not None, target


@pytest.mark.slow
def test_report_has_a_table_per_scenario_and_a_chart(quick_run: Results) -> None:
    out, suite = quick_run
    text = out.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    assert "## Analysis" in text
    assert "python -m bench run --quick" in text
    assert f"| cores (`nproc`) | {suite['machine']['nproc']} |" in text
    for title in ("### Latency", "### Throughput", "### Fan-in", "### Idle capacity"):
        assert title in text
    for target in ALL_TARGETS:
        assert text.count(f"| {target} |") >= len(LOAD_SCENARIOS), target
    chart = out.with_suffix(".png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({chart.name})" in text


def test_rerun_replaces_only_the_generated_block() -> None:
    prose = (f"# Benchmarks\n\nHand-written intro.\n\n{START}\nold tables\n{END}\n\n"
             "## Analysis\n\nKept.\n")
    updated = replace_block(prose, "new tables")
    assert "new tables" in updated and "old tables" not in updated
    assert updated.startswith("# Benchmarks\n\nHand-written intro.")
    assert updated.endswith("## Analysis\n\nKept.\n")
    assert replace_block(updated, "newer") == updated.replace("new tables", "newer")


def test_a_file_without_markers_gets_the_block_appended() -> None:
    updated = replace_block("# Notes\n", "tables")
    assert updated == f"# Notes\n\n{START}\ntables\n{END}\n"


def test_the_median_round_is_reported_whole_with_every_rounds_throughput() -> None:
    rounds = [LoadResult("throughput", "nginx", 64, 8, calls=n, throughput=float(n))
              for n in (300, 100, 200)]
    chosen = median_round(list(rounds))
    assert isinstance(chosen, LoadResult)
    assert chosen.calls == 200
    assert sorted(chosen.round_throughputs) == [100.0, 200.0, 300.0]
