"""What an operator switches at run time through the admin API: upstreams drained (no
new requests go to them; those in flight finish) and tools disabled (hidden from lists
and answered as unknown). Run-time state, not config: it survives a reload and is gone
with a restart. Both are policies of the chain (chain.py), compiled in only while
something is switched, so a gateway nobody touched pays nothing for them."""

from __future__ import annotations

from ..protocol import jsonrpc
from .call import Request
from .chain import Check, View
from .refusal import Refusal
from .session import DownstreamSession


class OperatorControls:
    __slots__ = ("disabled_tools", "drained")

    def __init__(self) -> None:
        self.drained: set[str] = set()
        """Upstreams no new request goes to."""
        self.disabled_tools: set[str] = set()
        """Tools (as clients name them) hidden and refused."""

    def __bool__(self) -> bool:
        return bool(self.drained or self.disabled_tools)

    def describe(self) -> dict[str, list[str]]:
        return {"drained_upstreams": sorted(self.drained),
                "disabled_tools": sorted(self.disabled_tools)}

    def check(self) -> Check:
        drained, disabled = self.drained, self.disabled_tools

        def check(req: Request, upstream: str, now: float) -> Refusal | None:
            if req.method == "tools/call" and req.name in disabled:
                return Refusal(jsonrpc.INVALID_PARAMS, f"Unknown tool: {req.name}",
                               policy="operator")
            if upstream in drained:
                return Refusal(jsonrpc.UPSTREAM_UNAVAILABLE,
                               f"upstream {upstream!r} is drained by the operator: it takes "
                               "no new requests", {"retryAfterSeconds": 1}, "operator")
            return None
        return check

    def view(self) -> View:
        disabled = self.disabled_tools

        def view(session: DownstreamSession, upstream: str, listed: str, name: str) -> bool:
            return listed != "tools" or name not in disabled
        return view
