"""Where the benchmark's processes run: the proxy under test and its upstream on one half
of the CPUs, the load generator on the other, so that the proxy's own cost decides the
figures rather than how the scheduler shares the cores with its load. The echo server
counts as the proxy's upstream (and as the server itself for ``direct``); a process
started by a pinned one (mcpfast's stdio upstream, nginx's worker) inherits its CPUs.
With a single CPU there is nothing to split and nothing is pinned.

A proxy of several busy processes (mcpfast with ``workers`` > 1) is pinned to the proxy
half only when that half has a CPU for each (``proxy_cpus``): pinned to fewer, it could
show no more than those CPUs' worth. On 2 CPUs a 2-worker gateway therefore runs
unpinned and shares the load generator's CPU: the machine, not one half of it, is then
the ceiling, and the load generator's share of it counts against the gateway.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def _split() -> tuple[frozenset[int], frozenset[int]] | None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return frozenset(cpus[:half]), frozenset(cpus[half:])


SPLIT = _split()
PROXY_CPUS: frozenset[int] | None = SPLIT[0] if SPLIT else None
"""The proxy and its upstream (the first half of the CPUs this process may use)."""
LOADGEN_CPUS: frozenset[int] | None = SPLIT[1] if SPLIT else None
"""The load generator (the other half)."""


def proxy_cpus(processes: int = 1) -> frozenset[int] | None:
    """Where a proxy of ``processes`` busy processes runs: the proxy half when it has a
    CPU for each of them, else anywhere (None)."""
    if PROXY_CPUS is None or len(PROXY_CPUS) < processes:
        return None
    return PROXY_CPUS


def pinned_to(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that confines the child, and what it starts, to ``cpus``."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _cpu_list(cpus: frozenset[int]) -> str:
    return ", ".join(map(str, sorted(cpus)))


def describe() -> str:
    """One line for the report."""
    if PROXY_CPUS is None or LOADGEN_CPUS is None:
        return "none (a single CPU: the proxy, its upstream and the load generator share it)"
    return (f"proxy and its upstream on CPU {_cpu_list(PROXY_CPUS)}, load generator on CPU "
            f"{_cpu_list(LOADGEN_CPUS)}")
