"""The compiled hot path, and the one place that picks its implementation.

Each module here exists twice: ``NAME.pyx`` compiled by Cython and ``NAME_py.py``, its
pure-Python twin with the same interface. ``MCPFAST_NO_EXTENSIONS=1`` forces the twins;
otherwise the compiled modules are used when they were built. Both stay importable by
name so the tests can run one body against each. ``PURE_REASON`` says why the twins run
(empty when the compiled modules do), for the startup log and ``mcpfast --version``.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING

NO_EXTENSIONS = os.environ.get("MCPFAST_NO_EXTENSIONS", "") not in ("", "0")
NOT_COMPILED = os.path.join(os.path.dirname(__file__), "not-compiled.txt")
"""Left by setup.py in a build whose extension fell back to pure Python, with why."""
PURE_REASON = ""

if TYPE_CHECKING or NO_EXTENSIONS:
    from . import http_reader_py as http_reader
    from . import message_scan_py as message_scan
    from . import routing_table_py as routing_table
    from . import token_bucket_py as token_bucket
    from . import websocket_codec_py as websocket_codec

    PURE_REASON = "MCPFAST_NO_EXTENSIONS is set"
else:
    try:
        from . import http_reader, message_scan, routing_table, token_bucket, websocket_codec
    except ImportError as exc:
        from . import http_reader_py as http_reader
        from . import message_scan_py as message_scan
        from . import routing_table_py as routing_table
        from . import token_bucket_py as token_bucket
        from . import websocket_codec_py as websocket_codec

        try:
            with open(NOT_COMPILED) as f:
                why = f.readline().strip()
            PURE_REASON = (f"mcpfast_ext could not be compiled when mcpfast was installed "
                           f"({why}); to get it, install a C compiler and the Python "
                           f"headers, then reinstall mcpfast with pip's --no-cache-dir "
                           f"(pip keeps the pure build in its cache)")
        except OSError:
            PURE_REASON = f"the compiled extension cannot be imported ({exc})"

IMPLEMENTATION = "pure" if websocket_codec.__name__.endswith("_py") else "compiled"


def compiled_modules() -> dict[str, ModuleType] | None:
    """The compiled modules by name, or None when they were not built."""
    try:
        from . import http_reader as hr
        from . import message_scan as ms
        from . import routing_table as rt
        from . import token_bucket as tb
        from . import websocket_codec as wc
    except ImportError:
        return None
    return {"http_reader": hr, "message_scan": ms, "routing_table": rt, "token_bucket": tb,
            "websocket_codec": wc}


__all__ = [
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "PURE_REASON",
    "compiled_modules",
    "http_reader",
    "message_scan",
    "routing_table",
    "token_bucket",
    "websocket_codec",
]
