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
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .nginx import ensure_nginx, nginx_version
from .scenarios import (SCENARIOS, IdleResult, LoadResult, Scenario, measure_idle,
                        measure_load, quick)
from .targets import TARGET_NAMES, TargetError, make_target


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


@dataclass
class SuiteResult:
    machine: Machine
    command: str
    warmup: float
    duration: float
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
    note = "" if soft >= 2 * 10_000 + 256 else (
        f"RLIMIT_NOFILE is {soft:,} (hard limit {hard:,}); raising the hard limit needs "
        f"privileges this run does not have")
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
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        nproc=len(os.sched_getaffinity(0)), cpu=_cpu_model(), kernel=platform.release(),
        python=platform.python_version(), versions=versions, nofile=nofile,
        nofile_note=nofile_note)


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
              duration: float, is_quick: bool, allow_install: bool, command: str,
              progress: Callable[[str], None] = print) -> SuiteResult:
    started = time.monotonic()
    nofile, nofile_note = raise_nofile_limit()
    workroot = Path(tempfile.mkdtemp(prefix="mcpfast-bench-"))
    nginx = (ensure_nginx(allow_install, workroot / "apt.log")
             if "nginx" in target_names else None)
    steps = plan(scenario_names, target_names, is_quick)
    suite = SuiteResult(describe_machine(nginx, nofile, nofile_note), command, warmup,
                        duration, is_quick, [s for s, _ in steps], list(target_names))
    for scenario, targets in steps:
        rows: list[LoadResult | IdleResult] = []
        for name in targets:
            workdir = workroot / f"{scenario.name}-{name}"
            workdir.mkdir()
            target = make_target(name, workdir, nginx, nofile)
            progress(f"{scenario.name:<10} {name:<13} {scenario.shape}")
            try:
                target.start(scenario.connections)
                suite.machine.versions.update(
                    {k: v for k, v in target.info.items() if k != "nginx"})
                if scenario.idle:
                    rows.append(measure_idle(target, scenario, nofile, workdir / "loadgen.log"))
                else:
                    rows.append(measure_load(target, scenario, warmup, duration,
                                             workdir / "loadgen.log"))
                progress("           " + summary(rows[-1]))
            except (TargetError, OSError) as exc:
                suite.failures.append(f"{scenario.name} / {name}: {exc} (logs in {workdir})")
                progress(f"           FAILED: {exc}")
            finally:
                target.stop()
        suite.results[scenario.name] = rows
    suite.seconds = time.monotonic() - started
    if not suite.failures:
        shutil.rmtree(workroot, ignore_errors=True)
    return suite


def summary(row: LoadResult | IdleResult) -> str:
    if isinstance(row, IdleResult):
        per = row.rss_per_session_bytes
        return (f"{row.sessions} sessions, {per / 1024:.1f} KiB/session" if per is not None
                else f"{row.sessions} sessions")
    p50 = row.latency_us.get("p50")
    p99 = row.latency_us.get("p99")
    return (f"{row.throughput:,.0f} calls/s, p50 {p50 or 0:,.0f} µs, p99 {p99 or 0:,.0f} µs, "
            f"errors {row.errors}")
