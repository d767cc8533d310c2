"""docs/benchmarks.png: throughput and latency percentiles per target, at a glance.

One row per load scenario: throughput bars on the left, latency percentiles on the
right (lower is better). A last row shows proxy CPU per call and, when the
idle scenario ran, memory per idle session.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from .scenarios import IdleResult, LoadResult, Scenario
from .suite import SuiteResult
from .targets import baselines

# The Streamable HTTP targets take lighter shades of their WebSocket counterparts.
COLORS = {"direct": "#9e9e9e", "nginx": "#2e7d32", "mcpfast-ws": "#1565c0",
          "mcpfast-unix": "#ef6c00", "direct-http": "#cfcfcf", "nginx-http": "#81c784",
          "mcpfast-http": "#64b5f6", "mcpfast-ws-limited": "#0d47a1",
          "mcpfast-ws-apikey": "#5e35b1", "mcpfast-ws-jwt": "#8e24aa",
          "mcpfast-http-apikey": "#b39ddb", "mcpfast-http-jwt": "#ce93d8"}
PERCENTILES = ("p50", "p90", "p99", "p99.9")
TIMES = "\N{MULTIPLICATION SIGN}"


def write_chart(path: Path, suite: SuiteResult) -> None:
    load = [(s, [r for r in suite.results.get(s.name, []) if isinstance(r, LoadResult)])
            for s in suite.scenarios if not s.idle]
    load = [(s, rows) for s, rows in load if rows]
    idle = [r for s in suite.scenarios if s.idle
            for r in suite.results.get(s.name, []) if isinstance(r, IdleResult)]
    n_rows = len(load) + 1
    fig, axes = plt.subplots(n_rows, 2, figsize=(13, 3.6 * n_rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.5]})
    for (scenario, rows), (left, right) in zip(load, axes, strict=False):
        _throughput(left, rows, f"{scenario.title}: {scenario.shape}")
        _latency(right, rows, f"{scenario.title}: latency percentiles")
    _proxy_cpu(axes[-1][0], load)
    _idle_memory(axes[-1][1], idle)
    m = suite.machine
    fig.suptitle(f"mcpfast end-to-end benchmarks, {m.date}, {m.nproc} cores: "
                 f"{m.pinning or 'not pinned'}"
                 + (" (--quick: not for reading)" if suite.quick else ""), fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _throughput(ax: Axes, rows: list[LoadResult], title: str) -> None:
    names = [r.target for r in rows]
    values = [r.throughput for r in rows]
    low = [v - min(r.round_throughputs or [v]) for r, v in zip(rows, values, strict=True)]
    high = [max(r.round_throughputs or [v]) - v for r, v in zip(rows, values, strict=True)]
    bars = ax.barh(names, values, color=[COLORS.get(n, "#607d8b") for n in names],
                   xerr=[low, high], error_kw={"ecolor": "#424242", "capsize": 3, "lw": 1})
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel("calls per second (higher is better); whiskers: range over rounds")
    by_target = {r.target: r.throughput for r in rows}
    top = max(v + h for v, h in zip(values, high, strict=True)) if values else 0
    for bar, name, value, extra in zip(bars, names, values, high, strict=True):
        floor = baselines(name)[0]
        nginx = by_target.get(floor)
        label = f"{value:,.0f}" + (f"  ({value / nginx:.2f}{TIMES} {floor})" if nginx else "")
        ax.text(bar.get_width() + extra + top * 0.01, bar.get_y() + bar.get_height() / 2, label,
                va="center", fontsize=8)
    ax.set_xlim(0, top * 1.45 if top else 1)
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda x, _: f"{x / 1000:,.0f}k" if top >= 10_000 and x else f"{x:,.0f}"))
    ax.grid(axis="x", alpha=0.3)


def _latency(ax: Axes, rows: list[LoadResult], title: str) -> None:
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        values = [row.latency_us.get(p, 0.0) for p in PERCENTILES]
        xs = [x + (i - (len(rows) - 1) / 2) * width for x in range(len(PERCENTILES))]
        ax.bar(xs, values, width, label=row.target, color=COLORS.get(row.target, "#607d8b"))
    ax.set_xticks(range(len(PERCENTILES)), PERCENTILES)
    # Linear from zero, so that bar heights compare as the ratios in the tables do.
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}"))
    ax.set_ylabel("µs (lower is better)")
    tallest = max((row.latency_us.get(p, 0.0) for row in rows for p in PERCENTILES),
                  default=0.0)
    ax.set_ylim(0, tallest * 1.2 if tallest else 1)  # room for the legend above the bars
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8, ncols=min(len(rows), 4), loc="upper left")


def _proxy_cpu(ax: Axes, load: list[tuple[Scenario, list[LoadResult]]]) -> None:
    present = {r.target for _, rows in load for r in rows}
    proxies = [t for t in COLORS if not t.startswith("direct") and t in present]
    width = 0.8 / max(1, len(proxies))
    for i, target in enumerate(proxies):
        values = []
        for _, rows in load:
            row = next((r for r in rows if r.target == target), None)
            values.append((row.proxy_cpu_us_per_call or 0.0) if row else 0.0)
        xs = [x + (i - (len(proxies) - 1) / 2) * width for x in range(len(load))]
        ax.bar(xs, values, width, label=target, color=COLORS[target])
    ax.set_xticks(range(len(load)), [s.title for s, _ in load])
    ax.set_ylabel("µs per call (lower is better)")
    ax.set_title("Proxy CPU time per call (nginx worker / mcpfast gateway process)",
                 fontsize=10, loc="left")
    ax.grid(axis="y", alpha=0.3)
    if proxies:
        ax.legend(fontsize=8)


def _idle_memory(ax: Axes, rows: list[IdleResult]) -> None:
    ax.set_title("Idle capacity: proxy memory per open session", fontsize=10, loc="left")
    if not rows:
        ax.text(0.5, 0.5, "idle scenario not run", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    names = [r.target for r in rows]
    values = [(r.rss_per_session_bytes or 0.0) / 1024 for r in rows]
    bars = ax.barh(names, values, color=[COLORS.get(n, "#607d8b") for n in names])
    ax.invert_yaxis()
    top = max(values) if values else 0
    for bar, row, value in zip(bars, rows, values, strict=True):
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2,
                f"{value:,.1f} KiB {TIMES} {row.sessions:,} sessions", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.6 if top else 1)
    ax.set_xlabel("KiB of proxy RSS per idle session (lower is better)")
    ax.grid(axis="x", alpha=0.3)
