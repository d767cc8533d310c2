"""``python -m bench run``: the end-to-end benchmarks, written to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from .nginx import NginxMissingError
from .scenarios import SCENARIOS
from .targets import TARGET_NAMES

DURATION = 6.0
WARMUP = 1.5
ROUNDS = 3
QUICK_WARMUP = 0.1
QUICK_DURATION = 0.4


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run scenarios against targets, write the report")
    run.add_argument("--scenario", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS),
                     metavar="NAME", help=f"default: all of {', '.join(SCENARIOS)}")
    run.add_argument("--targets", nargs="+", choices=TARGET_NAMES, default=list(TARGET_NAMES),
                     metavar="NAME", help=f"default: all of {', '.join(TARGET_NAMES)}")
    run.add_argument("--duration", type=float, default=None,
                     help=f"measured seconds per target and round (default {DURATION:g}; "
                     f"--quick: {QUICK_DURATION:g})")
    run.add_argument("--warmup", type=float, default=None,
                     help=f"unrecorded seconds before each window (default {WARMUP:g}; "
                     f"--quick: {QUICK_WARMUP:g})")
    run.add_argument("--rounds", type=int, default=None,
                     help=f"rounds per load scenario, targets interleaved; the median round "
                     f"is reported (default {ROUNDS}; --quick: 1)")
    run.add_argument("--quick", action="store_true",
                     help="tiny loads and ~1 s windows: checks the harness, not for reading")
    run.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"),
                     help="markdown report; the chart goes beside it as .png")
    run.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    run.add_argument("--no-chart", action="store_true", help="skip the PNG")
    run.add_argument("--no-install", action="store_true",
                     help="fail instead of apt-get installing nginx when it is missing")
    args = parser.parse_args(argv)

    duration = args.duration if args.duration is not None else (
        QUICK_DURATION if args.quick else DURATION)
    warmup = args.warmup if args.warmup is not None else (
        QUICK_WARMUP if args.quick else WARMUP)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else ROUNDS)
    if duration <= 0 or warmup < 0 or rounds < 1:
        parser.error("--duration and --rounds must be positive, --warmup not negative")

    from .report import write_report
    from .suite import run_suite

    command = shlex.join([_interpreter(), "-m", "bench", *argv])
    try:
        suite = run_suite(args.scenario, args.targets, warmup, duration, rounds, args.quick,
                          not args.no_install, command,
                          progress=lambda line: print(line, flush=True))
    except NginxMissingError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    chart = None
    if not args.no_chart:
        from .chart import write_chart
        chart = args.out.with_suffix(".png")
        write_chart(chart, suite)
    write_report(args.out, suite, chart)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dataclasses.asdict(suite), indent=1) + "\n")
    print(f"wrote {args.out}" + (f" and {chart}" if chart else "")
          + f" in {suite.seconds:.0f} s")
    for failure in suite.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if suite.failures else 0


def _interpreter() -> str:
    """The interpreter as a reader would type it: relative when it is the project's venv."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(Path.cwd()))
    except ValueError:
        return "python"


if __name__ == "__main__":
    sys.exit(main())
