"""A policy's answer to a request it does not let through."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET


class Refusal(msgspec.Struct, frozen=True, gc=False):
    """A JSON-RPC error, sent instead of forwarding the request."""

    code: int
    message: str
    data: Any = UNSET
    """The error's ``data``; left out when UNSET."""
    policy: str = ""
    """Which policy refused (``rate_limit``, ``authorization``, ``operator``): the
    label under which the refusal is counted (mcpfast_upstream_refused_total)."""
