"""A connection's transport that keeps what is written: for the micro benchmarks that
drive a connection without sockets, and for the tests that do (tests/conftest.py)."""

from __future__ import annotations

from typing import Any


class RecordingTransport:
    """What a connection writes to, kept in ``written``: the caller reads the responses
    back."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.write = self.written.append

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class DroppingWriter:
    """An upstream's writer that keeps nothing, never congested."""

    congested = False

    def write(self, data: bytes) -> None:
        pass


def gateway_in_process(tmp_path: Any, settings: str = "") -> tuple[Any, Any]:
    """A gateway in process with two upstreams that look ready (so that names are
    prefixed as in tools_call(), "docs__search"); what it writes to "docs" is dropped.
    ``settings``: more config (TOML) before the upstreams."""
    from mcpfast.config import load
    from mcpfast.gateway.gateway import Gateway

    config_path = tmp_path / "bench.toml"
    config_path.write_text(settings + '[upstreams.docs]\ncommand = ["python", "-c", "pass"]\n\n'
                           '[upstreams.other]\ncommand = ["python", "-c", "pass"]\n')
    gateway = Gateway(load(str(config_path)))
    upstream = gateway.upstreams["docs"]
    upstream.connection.writer = DroppingWriter()  # type: ignore[assignment]
    upstream.ready, upstream.state, upstream.era = True, "ready", "legacy"
    upstream.capabilities = {"tools": {}}
    upstream.catalog = {"tools": [{"name": "search", "inputSchema": {"type": "object"}}],
                        "prompts": [], "resources": [], "resourceTemplates": []}
    gateway.router.rebuild()
    return gateway, upstream


def initialized_session(gateway: Any, to_client: list[bytes]) -> Any:
    """A session of ``gateway`` (as from the unix socket) that has initialized; what the
    gateway sends it is appended to ``to_client``."""
    import json

    session = gateway.open_session("unix", "bench", to_client.append, lambda c, r: None)
    gateway.handle(session, json.dumps({
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"}}}).encode())
    return session
