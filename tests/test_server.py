"""The gateway process's own settings (mcpfast/server.py)."""

from __future__ import annotations

import gc

from mcpfast.server import GC_YOUNG_THRESHOLD, tune_collector


def test_the_collector_runs_young_collections_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert GC_YOUNG_THRESHOLD > 700  # CPython's default, which cost 1.7 µs a call
    finally:
        gc.set_threshold(*before)
