"""The gateway process's own settings (mcpfast/server.py)."""

from __future__ import annotations

import gc

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
