"""The end-to-end benchmark harness (bench/) runs, briefly, and writes a well-formed report.

`python -m bench run --quick` goes through every scenario against every target it
measures (Streamable HTTP only in latency and throughput) with a tiny load. Only the
shape of the results is checked: numbers present, calls made, no errors, tables and
chart written, HTTP compared with HTTP. Never timings: benchmarks are not assertions.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import pinning, ports
from bench.nginx import find_nginx
from bench.report import END, START, load_tables, replace_block
from bench.scenarios import SCENARIOS, LoadResult
from bench.suite import median_round
from bench.targets import ECHO_SERVER, read_json_line

ROOT = Path(__file__).resolve().parent.parent
WEBSOCKET_AND_UNIX = {"direct", "nginx", "mcpfast-ws", "mcpfast-unix"}
STREAMABLE_HTTP = {"direct-http", "nginx-http", "mcpfast-http"}
REMOTE_UPSTREAMS = {"mcpfast-ws-to-ws", "mcpfast-ws-to-http"}
LOAD_SCENARIOS = {
    "latency": WEBSOCKET_AND_UNIX | STREAMABLE_HTTP | REMOTE_UPSTREAMS,
    "throughput": WEBSOCKET_AND_UNIX | STREAMABLE_HTTP | REMOTE_UPSTREAMS | {
        "mcpfast-ws-2w", "mcpfast-ws-limited", "mcpfast-ws-apikey", "mcpfast-ws-jwt",
        "mcpfast-http-apikey", "mcpfast-http-jwt"},
    "fan-in": WEBSOCKET_AND_UNIX,
}
PERCENTILES = ("p50", "p90", "p99", "p99.9")
Results = tuple[Path, dict[str, Any]]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Results:
    if os.environ.get("MCPFAST_REQUIRE_EXTENSION") == "1":
        # The harness drives a gateway process as a black box and asserts no timings:
        # one pass of make test covers it, and a second run would test nothing new. It
        # runs in the pure pass, the shorter of the two (they run side by side, so the
        # longer one decides how long make test takes).
        pytest.skip("the benchmark harness runs once, in the pure pass of make test")
    if find_nginx() is None:
        pytest.fail("nginx is not installed, and the benchmark harness measures it as the "
                    "proxy floor: run `make bench-deps` (apt-get install -y nginx-light)")
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    figures = out.with_name("results.json")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--quick", "--no-install",
         "--out", str(out), "--json", str(figures)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"bench run failed:\n{proc.stdout}\n{proc.stderr}"
    return out, json.loads(figures.read_text())


@pytest.mark.slow
def test_every_load_scenario_measures_every_target(quick_run: Results) -> None:
    _, suite = quick_run
    assert suite["failures"] == []
    for scenario, targets in LOAD_SCENARIOS.items():
        rows = {row["target"]: row for row in suite["results"][scenario]}
        assert set(rows) == targets, scenario
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
            if target.startswith("direct"):
                assert row["proxy_cpu_us_per_call"] is None, where
            else:
                assert row["proxy_cpu_us_per_call"] is not None, where
                assert row["proxy_rss_bytes"] > 0, where


@pytest.mark.slow
def test_idle_scenario_holds_sessions_on_both_proxies(quick_run: Results) -> None:
    """nginx and mcpfast over WebSocket, and mcpfast's legacy HTTP sessions held with
    their connections closed."""
    _, suite = quick_run
    rows = {row["target"]: row for row in suite["results"]["idle"]}
    assert set(rows) == {"nginx", "mcpfast-ws", "mcpfast-http"}
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
    assert f"| pinning (`sched_setaffinity`) | {pinning.describe()} |" in text
    for title in ("### Latency", "### Throughput", "### Fan-in", "### Idle capacity"):
        assert title in text
    for target in WEBSOCKET_AND_UNIX | STREAMABLE_HTTP:
        scenarios = sum(target in targets for targets in LOAD_SCENARIOS.values())
        assert text.count(f"| {target} |") >= scenarios, target
    assert text.count("ratio to the same transport, ÷nginx-http / ÷direct-http") == 2
    assert text.count("| mcpfast-http ÷ mcpfast-ws |") == 2
    assert text.count("Two active rate limits") == 1
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


def test_http_targets_are_divided_by_the_http_baselines() -> None:
    rows = [LoadResult("throughput", name, 64, 8, calls=1, throughput=float(throughput),
                       proxy_cpu_us_per_call=cpu)
            for name, throughput, cpu in (("direct", 400, None), ("nginx", 200, 10.0),
                                          ("mcpfast-ws", 100, 20.0),
                                          ("direct-http", 100, None),
                                          ("nginx-http", 50, 40.0),
                                          ("mcpfast-http", 25, 80.0))]
    lines = load_tables(SCENARIOS["throughput"], rows)

    def main_row(target: str) -> list[str]:
        line = next(line for line in lines if line.startswith(f"| {target} | "))
        return [cell.strip() for cell in line.strip("|").split("|")]

    # cells 6 and 7 are the ratios to nginx and direct, after the four percentiles
    assert main_row("mcpfast-http")[6:8] == ["0.50", "0.25"]
    assert main_row("mcpfast-ws")[6:8] == ["0.50", "0.25"]
    assert main_row("nginx-http")[6:8] == ["1.00", "0.50"]
    http_ratios = lines.index(next(line for line in lines if "÷nginx-http" in line))
    mcpfast_http = next(line for line in lines[http_ratios:]
                        if line.startswith("| mcpfast-http |"))
    assert "| 0.50 / 0.25 |" in mcpfast_http and "| 2.00 |" in mcpfast_http
    assert "| mcpfast-http ÷ mcpfast-ws | 0.25 |" in "\n".join(lines)


def test_the_cost_of_active_limits_is_the_difference_in_the_same_run() -> None:
    rows = [LoadResult("throughput", name, 64, 8, calls=1, throughput=float(throughput),
                       proxy_cpu_us_per_call=cpu)
            for name, throughput, cpu in (("nginx", 200, 10.0), ("mcpfast-ws", 100, 6.0),
                                          ("mcpfast-ws-limited", 90, 6.75))]
    text = "\n".join(load_tables(SCENARIOS["throughput"], rows))
    assert "`mcpfast-ws-limited` against `mcpfast-ws`: throughput 0.90, proxy CPU 0.75 µs " \
        "per call more." in text


def test_lines_written_together_are_each_read() -> None:
    """The load generator writes "connected" and "holding" back to back, then waits to
    be released: on a busy machine both are in the pipe before the harness reads. Both
    must be read; a reader that buffered the second while waiting on the pipe for it
    timed out (the idle scenario's "overran its time budget")."""
    writer = ("import sys, time; sys.stdout.write('{\"a\": 1}\\n{\"b\": 2}\\n'); "
              "sys.stdout.flush(); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE,
                            bufsize=0)
    try:
        assert proc.stdout is not None
        first = read_json_line(proc.stdout, 30)
        assert first == {"a": 1}
        assert read_json_line(proc.stdout, 5) == {"b": 2}
    finally:
        proc.kill()
        proc.wait()
    buffered = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE)
    try:
        with pytest.raises(TypeError, match="unbuffered"):
            read_json_line(buffered.stdout, 1)  # type: ignore[arg-type]
    finally:
        buffered.wait()


@pytest.fixture
def echo_http() -> Any:
    proc = subprocess.Popen([sys.executable, str(ECHO_SERVER), "--http", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    try:
        assert proc.stdout is not None
        ready = read_json_line(proc.stdout, 30)
        assert ready is not None and ready["ready"] == "http"
        yield int(ready["port"])
    finally:
        proc.terminate()
        proc.wait(10)


def test_echo_server_speaks_streamable_http_on_one_keep_alive_connection(
        echo_http: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo_http, timeout=10)
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}

    def post(message: dict[str, Any], path: str = "/mcp") -> http.client.HTTPResponse:
        conn.request("POST", path, json.dumps(message), headers)
        return conn.getresponse()

    reply = post({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {}}})
    assert reply.status == 200 and reply.getheader("Content-Type") == "application/json"
    assert json.loads(reply.read())["result"]["protocolVersion"] == "2025-06-18"
    sock = conn.sock
    reply = post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert (reply.status, reply.read()) == (202, b"")
    reply = post({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                  "params": {"name": "echo", "arguments": {"text": "hi"}}})
    body = reply.read()
    assert reply.status == 200 and int(reply.getheader("Content-Length") or 0) == len(body)
    answer = json.loads(body)
    assert answer["id"] == 7
    assert json.loads(answer["result"]["content"][0]["text"]) == {"text": "hi"}
    reply = post({"jsonrpc": "2.0", "id": 8, "method": "ping"}, path="/elsewhere")
    assert reply.status == 404
    reply.read()
    assert conn.sock is sock  # every exchange above on the one connection
    conn.close()


def test_the_proxy_side_and_the_load_generator_get_separate_cpus() -> None:
    """The proxy and its upstream on one half of the CPUs, the load generator on the
    other: a child started with ``pinned_to`` runs where it was put."""
    if pinning.SPLIT is None:
        pytest.skip("a single CPU: nothing to split")
    proxy, loadgen = pinning.SPLIT
    assert proxy and loadgen and not proxy & loadgen
    assert proxy | loadgen == os.sched_getaffinity(0)
    for cpus in (proxy, loadgen):
        out = subprocess.run([sys.executable, "-c",
                              "import os; print(sorted(os.sched_getaffinity(0)))"],
                             preexec_fn=pinning.pinned_to(cpus), capture_output=True,
                             text=True, check=True).stdout
        assert json.loads(out) == sorted(cpus)



def test_free_port_never_hands_out_a_port_twice_in_a_row(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A gateway's listener and admin ports, asked for in a row, are never the same
    one, though both are free (the bench once gave both the kernel's same pick)."""
    first, second = ports.free_port(), ports.free_port()  # free, as far as anyone knows
    monkeypatch.setattr(ports, "_GIVEN", collections.deque(maxlen=1000))  # none given yet
    picks = iter([first, first, second])
    monkeypatch.setattr(ports.random, "randrange", lambda *_: next(picks))
    assert [ports.free_port(), ports.free_port()] == [first, second]
