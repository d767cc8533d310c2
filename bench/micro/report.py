"""Print pytest-benchmark's JSON as a Markdown table, pure and compiled side by side.

    python -m bench.micro.report /tmp/micro.json

One row per benchmark group. A group with a single implementation (msgspec, or pure
Python with no compiled twin) shows it in the pure column, named in the first column.
The speed-up is the pure time divided by the compiled time: how many times faster the
compiled module is. Times are per call, also where a timed round was a batch of calls.
Ratios measured in one run are what to compare across machines; the absolute numbers
move with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

PAIR = ("pure", "compiled")


def per_call_ns(data: dict[str, Any], stat: str = "mean") -> dict[str, dict[str, float]]:
    """Nanoseconds per call, by group and then by implementation, in run order."""
    groups: dict[str, dict[str, float]] = {}
    for bench in data["benchmarks"]:
        group = bench.get("group") or bench["name"]
        implementation = bench.get("param") or "pure"
        # A round may time a batch of calls (bench/micro/test_micro.py); report one call.
        calls = bench.get("extra_info", {}).get("calls", 1)
        groups.setdefault(group, {})[implementation] = bench["stats"][stat] / calls * 1e9
    return groups


def table(groups: dict[str, dict[str, float]], stat: str = "mean") -> list[str]:
    lines = [
        f"| benchmark | pure {stat} (ns) | compiled {stat} (ns) | speed-up (pure / compiled) |",
        "|---|---:|---:|---:|",
    ]
    for group, means in groups.items():
        others = sorted(set(means) - set(PAIR))
        name = f"{group} ({', '.join(others)})" if others else group
        pure = means.get("pure", means[others[0]] if others else None)
        compiled = means.get("compiled")
        ratio = f"{pure / compiled:.1f}x" if pure is not None and compiled else "n/a"
        lines.append(f"| {name} | {_ns(pure)} | {_ns(compiled)} | {ratio} |")
    return lines


def machine(data: dict[str, Any]) -> str:
    info = data.get("machine_info", {})
    cpu = info.get("cpu", {})
    return (
        f"{cpu.get('brand_raw', info.get('processor', 'unknown CPU'))}, "
        f"{cpu.get('count', '?')} CPUs; {info.get('python_implementation', 'Python')} "
        f"{info.get('python_version', '?')}; {data.get('datetime', '')}"
    )


def _ns(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="the file written by --benchmark-json")
    parser.add_argument("--stat", choices=["mean", "median", "min"], default="mean",
                        help="the statistic to compare (default: mean)")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    print("\n".join(table(per_call_ns(data, args.stat), args.stat)))
    print()
    print(f"Machine: {machine(data)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
