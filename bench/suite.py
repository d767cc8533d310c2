"""A whole run: every chosen scenario against every chosen target, one at a time.

Each (scenario, target) pair gets fresh processes, so one measurement's leftovers
(connections in TIME_WAIT aside) never reach the next one's memory or CPU figures.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from . import pinning
from .nginx import ensure_nginx, nginx_version
from .scenarios import (
    SCENARIOS,
    IdleResult,
    LoadResult,
    Scenario,
    measure_idle,
    measure_load,
    quick,
)
from .targets import NGINX_TARGETS, TARGET_NAMES, TargetError, make_target


@dataclass
class Machine:
    date: str
    nproc: int
    cpu: str
    kernel: str
    python: str
    versions: dict[str, str]
    nofile: int
    nofile_note: str
    pinning: str = ""
    """Which CPUs the proxy side and the load generator ran on (``pinning.describe``)."""


@dataclass
class SuiteResult:
    machine: Machine
    command: str
    warmup: float
    duration: float
    rounds: int
    quick: bool
    scenarios: list[Scenario]
    targets: list[str]
    results: dict[str, list[LoadResult | IdleResult]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def raise_nofile_limit() -> tuple[int, str]:
    """Lift this process's soft open-files limit to the hard one. Every process the
    suite starts (load generator, gateway, nginx, echo server) inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    note = "" if soft >= 2 * 10_000 + 2048 else (
        f"RLIMIT_NOFILE is {soft:,} (hard limit {hard:,}) and raising the hard limit needs "
        "privileges this run does not have, so nginx, which holds two descriptors per "
        "session, is measured with fewer idle sessions (see Idle capacity)")
    return soft, note


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_machine(nginx: str | None, nofile: int, nofile_note: str) -> Machine:
    versions = {name: _version(name) for name in ("uvloop", "picows", "msgspec", "mcpfast")}
    if nginx:
        versions["nginx"] = nginx_version(nginx)
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        nproc=len(os.sched_getaffinity(0)), cpu=_cpu_model(), kernel=platform.release(),
        python=platform.python_version(), versions=versions, nofile=nofile,
        nofile_note=nofile_note, pinning=pinning.describe())


def plan(scenario_names: list[str], target_names: list[str],
         is_quick: bool) -> list[tuple[Scenario, list[str]]]:
    steps = []
    for name in scenario_names:
        scenario = quick(SCENARIOS[name]) if is_quick else SCENARIOS[name]
        chosen = [t for t in TARGET_NAMES if t in target_names and t in scenario.targets]
        if chosen:
            steps.append((scenario, chosen))
    return steps


def run_suite(scenario_names: list[str], target_names: list[str], warmup: float,
              duration: float, rounds: int, is_quick: bool, allow_install: bool,
              command: str, progress: Callable[[str], None] = print) -> SuiteResult:
    started = time.monotonic()
    nofile, nofile_note = raise_nofile_limit()
    workroot = Path(tempfile.mkdtemp(prefix="mcpfast-bench-"))
    nginx = (ensure_nginx(allow_install, workroot / "apt.log")
             if any(name in NGINX_TARGETS for name in target_names) else None)
    steps = plan(scenario_names, target_names, is_quick)
    suite = SuiteResult(describe_machine(nginx, nofile, nofile_note), command, warmup,
                        duration, rounds, is_quick, [s for s, _ in steps], list(target_names))
    for scenario, targets in steps:
        measured: dict[str, list[LoadResult | IdleResult]] = {name: [] for name in targets}
        for round_index in range(1 if scenario.idle else rounds):
            # Alternate the order so that drift in the machine's speed during a round
            # does not always favour the same target.
            for name in targets if round_index % 2 == 0 else targets[::-1]:
                row = measure_once(suite, scenario, name, round_index, workroot, nginx,
                                   nofile, warmup, duration, progress)
                if row is not None:
                    measured[name].append(row)
        suite.results[scenario.name] = [median_round(measured[name]) for name in targets
                                        if measured[name]]
    suite.seconds = time.monotonic() - started
    if not suite.failures:
        shutil.rmtree(workroot, ignore_errors=True)
    return suite


def measure_once(suite: SuiteResult, scenario: Scenario, name: str, round_index: int,
                 workroot: Path, nginx: str | None, nofile: int, warmup: float,
                 duration: float,
                 progress: Callable[[str], None]) -> LoadResult | IdleResult | None:
    """Start ``name`` fresh, measure ``scenario`` once, stop it; None if it failed."""
    workdir = workroot / f"{scenario.name}-{name}-{round_index + 1}"
    workdir.mkdir()
    target = make_target(name, workdir, nginx, nofile)
    progress(f"{scenario.name:<10} {name:<13} round {round_index + 1}: {scenario.shape}")
    try:
        target.start(scenario.sockets(name))
        suite.machine.versions.update({k: v for k, v in target.info.items() if k != "nginx"})
        row: LoadResult | IdleResult
        if scenario.idle:
            row = measure_idle(target, scenario, nofile, workdir / "loadgen.log")
        else:
            row = measure_load(target, scenario, warmup, duration, workdir / "loadgen.log")
        progress("           " + summary(row))
        return row
    except (TargetError, OSError) as exc:
        suite.failures.append(f"{scenario.name} / {name} round {round_index + 1}: {exc} "
                              f"(logs in {workdir})")
        progress(f"           FAILED: {exc}")
        return None
    finally:
        target.stop()


def median_round(rows: list[LoadResult | IdleResult]) -> LoadResult | IdleResult:
    """The round with the median throughput, whole (its figures belong together),
    carrying every round's throughput so that the report can show the spread."""
    loads = [r for r in rows if isinstance(r, LoadResult)]
    if not loads:
        return rows[0]
    chosen = sorted(loads, key=lambda r: r.throughput)[(len(loads) - 1) // 2]
    chosen.round_throughputs = [r.throughput for r in loads]
    return chosen


def summary(row: LoadResult | IdleResult) -> str:
    if isinstance(row, IdleResult):
        per = row.rss_per_session_bytes
        return (f"{row.sessions} sessions, {per / 1024:.1f} KiB/session" if per is not None
                else f"{row.sessions} sessions")
    p50 = row.latency_us.get("p50")
    p99 = row.latency_us.get("p99")
    return (f"{row.throughput:,.0f} calls/s, p50 {p50 or 0:,.0f} µs, p99 {p99 or 0:,.0f} µs, "
            f"errors {row.errors}")
