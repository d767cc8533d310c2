"""The scenarios, and one measurement of one scenario against one running target.

A load scenario runs the load generator in its own process and meters the proxy and the
echo server from /proc over exactly the window the load generator records (it prints
``measure_start`` and ``measure_end``). The idle scenario holds sessions open and
compares the proxy's resident memory with and without them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import procfs
from .pinning import LOADGEN_CPUS, pinned_to
from .targets import TARGET_TRANSPORTS, Target, TargetError, log_tail, read_json_line

LOADGEN = Path(__file__).resolve().with_name("loadgen.py")
SATURATED = 0.85
"""Above this share of a core the load generator may be what limits throughput."""


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    connections: int
    inflight: int = 1
    idle: bool = False
    targets: tuple[str, ...] = ("direct", "nginx", "mcpfast-ws", "mcpfast-unix")

    def sockets(self, target: str) -> int:
        """Client connections open at once against ``target``: over Streamable HTTP each
        call in flight needs a connection of its own (HTTP/1.1 has no multiplexing)."""
        if TARGET_TRANSPORTS.get(target) == "http":
            return self.connections * self.inflight
        return self.connections

    @property
    def shape(self) -> str:
        if self.idle:
            return f"{self.connections:,} sessions held idle"
        plural = "s" if self.connections != 1 else ""
        return (f"{self.connections:,} connection{plural} \N{MULTIPLICATION SIGN} "
                f"{self.inflight} in flight")


WEBSOCKET_AND_UNIX = ("direct", "nginx", "mcpfast-ws", "mcpfast-unix")
STREAMABLE_HTTP = ("direct-http", "nginx-http", "mcpfast-http")
AUTHENTICATED_WS = ("mcpfast-ws-apikey", "mcpfast-ws-jwt")
AUTHENTICATED_HTTP = ("mcpfast-http-apikey", "mcpfast-http-jwt")
REMOTE_UPSTREAMS = ("mcpfast-ws-to-ws", "mcpfast-ws-to-http")

# Fan-in and idle capacity measure what many open client connections cost a proxy. A
# Streamable HTTP session holds no connection while it is idle (it is an id: clients
# connect when they call, usually from a pool), so thousands of held HTTP connections
# would model no real client: fan-in runs over WebSocket only, and the idle scenario
# holds mcpfast-http's legacy sessions with their connections closed.
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("latency", "Latency", 1, 1,
             targets=WEBSOCKET_AND_UNIX + REMOTE_UPSTREAMS + STREAMABLE_HTTP),
    Scenario("throughput", "Throughput", 64, 8,
             targets=(*WEBSOCKET_AND_UNIX, "mcpfast-ws-2w", "mcpfast-ws-limited",
                      *AUTHENTICATED_WS,
                      *REMOTE_UPSTREAMS,
                      *STREAMABLE_HTTP, *AUTHENTICATED_HTTP)),
    Scenario("fan-in", "Fan-in", 1000, 1),
    Scenario("idle", "Idle capacity", 10_000, idle=True,
             targets=("nginx", "mcpfast-ws", "mcpfast-http")),
)}

# --quick: the same code path with a tiny load, for the harness test.
QUICK_SHAPES = {"latency": (1, 1), "throughput": (4, 4), "fan-in": (16, 1), "idle": (50, 1)}


def quick(scenario: Scenario) -> Scenario:
    connections, inflight = QUICK_SHAPES[scenario.name]
    return replace(scenario, connections=connections, inflight=inflight)


@dataclass
class LoadResult:
    scenario: str
    target: str
    connections: int
    inflight: int
    calls: int = 0
    throughput: float = 0.0
    latency_us: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    window_seconds: float = 0.0
    proxy_cpu_us_per_call: float | None = None
    proxy_rss_bytes: int | None = None
    echo_cpu_us_per_call: float | None = None
    loadgen_cpu_us_per_call: float | None = None
    loadgen_cpu_utilization: float | None = None
    round_throughputs: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class IdleResult:
    scenario: str
    target: str
    requested: int
    sessions: int = 0
    errors: int = 0
    rss_before_bytes: int = 0
    rss_with_sessions_bytes: int = 0
    rss_per_session_bytes: float | None = None
    connect_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class LoadgenProcess:
    """``bench/loadgen.py`` in a subprocess, read one JSON event at a time."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, str(LOADGEN), *args], bufsize=0,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, start_new_session=True,
                                         preexec_fn=pinned_to(LOADGEN_CPUS))

    def next_event(self, deadline: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TargetError("the load generator overran its time budget")
        try:
            event = read_json_line(self.proc.stdout, remaining)
        except TimeoutError as exc:
            raise TargetError("the load generator overran its time budget") from exc
        if event is None:
            raise TargetError(f"the load generator exited early: {log_tail(self.log)}")
        return event

    def release(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"release\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def close(self) -> None:
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def connect_budget(connections: int) -> float:
    """Seconds allowed to open ``connections`` sessions: generous, but bounded."""
    return 30.0 + connections / 100


def measure_load(target: Target, scenario: Scenario, warmup: float, duration: float,
                 log: Path) -> LoadResult:
    result = LoadResult(scenario.name, target.name, scenario.connections, scenario.inflight)
    loadgen = LoadgenProcess([
        target.address, "--connections", str(scenario.connections),
        "--inflight", str(scenario.inflight), "--warmup", str(warmup),
        "--duration", str(duration), "--connect-concurrency", "100",
        *target.loadgen_args,
    ], log)
    deadline = time.monotonic() + connect_budget(scenario.connections) + warmup + duration + 30
    proxy, echo = target.proxy_pids(), target.echo_pids()
    meter = proxy + echo
    before: dict[int, float] = {}
    after: dict[int, float] = {}
    try:
        while True:
            event = loadgen.next_event(deadline)
            kind = event.get("event")
            if kind == "measure_start":
                before = {pid: procfs.cpu_seconds(pid) for pid in meter}
            elif kind == "measure_end":
                after = {pid: procfs.cpu_seconds(pid) for pid in meter}
                if proxy:
                    result.proxy_rss_bytes = sum(procfs.rss_bytes(pid) for pid in proxy)
            elif kind == "result":
                break
    finally:
        loadgen.close()

    result.calls = int(event.get("calls") or 0)
    result.throughput = float(event.get("throughput") or 0.0)
    result.latency_us = dict(event.get("latency_us") or {})
    result.window_seconds = float(event.get("window_seconds") or 0.0)
    result.errors = sum(int(event.get(key) or 0) for key in (
        "errors", "connect_errors", "lost_in_flight", "unanswered_after_drain"))
    result.loadgen_cpu_us_per_call = event.get("loadgen_cpu_us_per_call")
    result.loadgen_cpu_utilization = event.get("loadgen_cpu_utilization")
    if result.calls and before and after:
        cpu = {pid: (after[pid] - before[pid]) / result.calls * 1e6 for pid in meter}
        # With workers, every process of the proxy (and every echo server) counts.
        result.proxy_cpu_us_per_call = sum(cpu[pid] for pid in proxy) if proxy else None
        result.echo_cpu_us_per_call = sum(cpu[pid] for pid in echo) if echo else None
    result.notes.extend(target.notes)
    for key, label in (("connect_errors", "connections that failed"),
                       ("disconnects", "connections dropped during the run"),
                       ("unanswered_after_drain", "calls unanswered after the drain")):
        if event.get(key):
            result.notes.append(f"{event[key]} {label}")
    if event.get("first_error"):
        result.notes.append(f"first error: {event['first_error']}")
    if event.get("connect_error"):
        result.notes.append(f"first connect error: {event['connect_error']}")
    if event.get("nofile_note"):
        result.notes.append(f"loadgen: {event['nofile_note']}")
    if (result.loadgen_cpu_utilization or 0) > SATURATED:
        result.notes.append(
            f"the load generator used {result.loadgen_cpu_utilization:.0%} of a core: "
            "it may have been the limit, so read this throughput as a lower bound")
    return result


def sessions_that_fit(target: Target, wanted: int, nofile: int) -> tuple[int, str]:
    """How many sessions ``target`` can hold within the open-files limit.

    nginx holds two descriptors per proxied session (client and upstream side). Measured
    here, its single worker with worker_connections at the limit (19,968) tops out near
    9,360 sessions ("worker_connections are not enough") and holds 9,000 cleanly, hence
    the headroom."""
    per_session = 2 if target.name == "nginx" else 1
    fit = (nofile - 2048) // per_session
    if fit >= wanted:
        return wanted, ""
    needs = "two descriptors per session" if per_session == 2 else "a descriptor per session"
    return fit, (f"opened {fit:,} sessions, not {wanted:,}: RLIMIT_NOFILE is {nofile:,} (the "
                 f"hard limit, which this run cannot raise) and {target.name} needs {needs}")


def measure_idle(target: Target, scenario: Scenario, nofile: int, log: Path) -> IdleResult:
    assert target.proxy_pid is not None
    sessions, note = sessions_that_fit(target, scenario.connections, nofile)
    result = IdleResult(scenario.name, target.name, scenario.connections)
    if note:
        result.notes.append(note)
    time.sleep(0.5)
    result.rss_before_bytes = procfs.rss_bytes(target.proxy_pid)
    http = target.address.startswith("http://")
    loadgen = LoadgenProcess([target.address, "--hold", "--connections", str(sessions),
                              "--connect-concurrency", "200", "--hold-timeout", "120",
                              *(["--drop-connections"] if http else [])], log)
    deadline = time.monotonic() + connect_budget(sessions) + 60
    try:
        while (event := loadgen.next_event(deadline)).get("event") != "holding":
            pass
        result.sessions = int(event["sessions"])
        time.sleep(1.0)  # let the proxy finish any work the last handshakes caused
        result.rss_with_sessions_bytes = procfs.rss_bytes(target.proxy_pid)
        counted = target.open_sessions()
        if counted is not None and counted != result.sessions:
            result.notes.append(f"{target.name} counted {counted:,} open sessions, "
                                f"the load generator {result.sessions:,}")
        loadgen.release()
        while (event := loadgen.next_event(deadline)).get("event") != "result":
            pass
    finally:
        loadgen.close()
    result.connect_seconds = float(event.get("connect_seconds") or 0.0)
    result.errors = int(event.get("connect_errors", 0)) + int(event.get("errors", 0))
    if event.get("disconnects_while_held"):
        result.errors += int(event["disconnects_while_held"])
        result.notes.append(f"{event['disconnects_while_held']} sessions dropped while held")
    if event.get("connect_error"):
        result.notes.append(f"first connect error: {event['connect_error']}")
    if event.get("nofile_note"):
        result.notes.append(f"loadgen: {event['nofile_note']}")
    if result.sessions:
        result.rss_per_session_bytes = (
            (result.rss_with_sessions_bytes - result.rss_before_bytes) / result.sessions)
    return result
