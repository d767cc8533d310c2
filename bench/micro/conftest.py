"""The ``hot_path`` fixture: the mcpfast_ext modules of one implementation.

A benchmark taking it runs twice, with ids ``pure`` and ``compiled`` (the ``param``
that ``bench.micro.report`` reads back from the JSON). The compiled run is skipped
under MCPFAST_NO_EXTENSIONS=1 and fails when the extension was not built, so a missing
build never shows up as a pure-against-pure comparison.
"""

from __future__ import annotations

from types import ModuleType

import pytest

import mcpfast_ext
from mcpfast_ext import (
    http_reader_py,
    message_scan_py,
    routing_table_py,
    token_bucket_py,
    websocket_codec_py,
)

PURE_MODULES = {
    "http_reader": http_reader_py,
    "message_scan": message_scan_py,
    "routing_table": routing_table_py,
    "token_bucket": token_bucket_py,
    "websocket_codec": websocket_codec_py,
}


@pytest.fixture(params=["pure", "compiled"])
def hot_path(request: pytest.FixtureRequest) -> dict[str, ModuleType]:
    if request.param == "pure":
        return PURE_MODULES
    if mcpfast_ext.NO_EXTENSIONS:
        pytest.skip("MCPFAST_NO_EXTENSIONS is set")
    modules = mcpfast_ext.compiled_modules()
    if modules is None:
        pytest.fail(
            "mcpfast_ext is not compiled; build it with MCPFAST_BUILD_EXTENSION=yes "
            "python setup.py build_ext --inplace, or set MCPFAST_NO_EXTENSIONS=1"
        )
    return modules
