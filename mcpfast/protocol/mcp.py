"""MCP protocol facts the gateway decides on: versions, methods, era.

Design note: mcpfast terminates the MCP handshake on both sides. Clients negotiate a
version with the gateway; the gateway negotiates its own with each upstream. The legacy
versions below are the ones whose message shapes the gateway forwards unchanged.
"""

from __future__ import annotations

LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_LEGACY = LEGACY_VERSIONS[0]

# Methods a client may send before the session is initialized (basic/lifecycle).
PRE_INIT_METHODS = frozenset({"initialize", "ping"})
