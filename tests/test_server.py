"""The gateway process's own settings (mcpfast/server.py) and its log (mcpfast/logs.py)."""

from __future__ import annotations

import gc
import logging
from typing import Any

from mcpfast.logs import configure
from mcpfast.server import GC_YOUNG_THRESHOLD, tune_collector

from .conftest import GatewayProcess


def test_the_collector_runs_young_collections_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert GC_YOUNG_THRESHOLD > 700  # CPython's default, which cost 1.7 µs a call
    finally:
        gc.set_threshold(*before)


def test_a_serving_gateway_has_tuned_its_collector(gateway: GatewayProcess) -> None:
    default = gc.get_threshold()
    assert f"collector thresholds: ({GC_YOUNG_THRESHOLD}, {default[1]}, {default[2]})" \
        in gateway.log()


def test_a_text_log_line_cannot_be_forged_by_what_a_client_sends(capsys: Any) -> None:
    """A client-chosen value (a resource URI) with a line break and a forged audit line
    in it stays on its own line, its control characters escaped (CWE-117; an outside
    sweep wrote a false mcpfast.audit line through the access log)."""
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        configure("info", "text")
        forged = "file:///x\n2026-12-04 04:00:00,000 WARNING mcpfast.audit: forged\x1b[0m"
        logging.getLogger("mcpfast.access").info("resources/read %s done", forged)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("mcpfast").exception("failed on %s", "a\rb")
    finally:
        root.handlers[:], _ = kept
        root.setLevel(kept[1])
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("resources/read file:///x\\n2026-12-04 04:00:00,000 WARNING "
                             "mcpfast.audit: forged\\x1b[0m done"), lines
    assert lines[1].endswith("failed on a\\rb") and lines[2] == "Traceback (most recent call last):"
    assert not any(line.startswith("2026-12-04 04:00:00") for line in lines)
