"""The suite itself: test modules share helpers through conftest.py only (DESIGN.md:
"test modules never import each other"), the helpers clean up after themselves, and
they say what went wrong rather than time out."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, GatewayProcess, McpClient, recording_upstream

TESTS = ROOT / "tests"


def imported_test_modules(path: Path) -> list[str]:
    """The test modules ``path`` imports (``from .test_x import``, ``from . import
    test_x``, ``import tests.test_x``)."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parts = [*(node.module or "").split("."), *(alias.name for alias in node.names)]
            found += [part for part in parts if part.startswith("test_")]
        elif isinstance(node, ast.Import):
            found += [part for alias in node.names for part in alias.name.split(".")
                      if part.startswith("test_")]
    return found


TEST_MODULES = sorted(TESTS.rglob("test_*.py"))
# tests/ mirrors the package: a folder per part, the rest (the suite, the build, the
# package as a whole) at the top.
PARTS = {"protocol", "ext", "auth", "transport", "upstream", "gateway", "admin", "e2e"}


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda p: str(p.relative_to(TESTS)))
def test_test_modules_do_not_import_each_other(path: Path) -> None:
    others = imported_test_modules(path)
    assert others == [], f"{path.name} imports {others}: move shared helpers to conftest.py"


def test_test_modules_sit_in_the_folder_of_their_part() -> None:
    folders = {path.parent.name for path in TEST_MODULES if path.parent != TESTS}
    assert folders == PARTS
    for part in PARTS:
        assert (TESTS / part / "__init__.py").is_file(), part


def test_a_gateway_leaves_no_temporary_folder(tmp_path: Path) -> None:
    """The unix socket's folder in /tmp goes when the gateway is cleaned up, whether it
    stopped by itself or is killed."""
    for stop in ("terminate", "kill"):
        gw = GatewayProcess(tmp_path / stop, {"rec": recording_upstream(
            tmp_path / f"{stop}.jsonl")}, {})
        try:
            gw.start()
            assert gw.unix_dir.is_dir() and gw.unix_dir.parent == Path("/tmp")
            if stop == "terminate":
                assert gw.terminate(signal.SIGTERM) == 0
        finally:
            gw.cleanup()
        assert not gw.unix_dir.exists()
        assert gw.proc is not None and gw.proc.poll() is not None


def test_admin_probes_report_connection_errors(tmp_path: Path) -> None:
    """Only a probe made while the gateway starts may take "nothing listens" for an
    answer; any other raises, so a dead admin port is not read as a status."""
    gw = GatewayProcess(tmp_path, {"rec": recording_upstream(tmp_path / "r.jsonl")}, {})
    try:
        assert gw.admin_get("/liveness", starting=True) == (0, b"")
        with pytest.raises(OSError):
            gw.admin_get("/liveness")
    finally:
        gw.cleanup()
    assert not os.path.exists(gw.unix_dir)


class ScriptedClient(McpClient):
    """An McpClient fed a fixed list of incoming messages; then silence."""

    def __init__(self, incoming: list[dict[str, Any]]) -> None:
        super().__init__()
        self.incoming = [json.dumps(m) for m in incoming]
        self.outgoing: list[str | bytes] = []

    async def send_raw(self, data: str | bytes) -> None:
        self.outgoing.append(data)

    async def receive_raw(self) -> str | bytes:
        if self.incoming:
            return self.incoming.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def failure(client: ScriptedClient, request_id: Any, timeout: float = 0.2) -> str:
    async def wait() -> None:
        await client.wait_for(request_id, timeout)
    with pytest.raises(AssertionError) as raised:
        asyncio.run(wait())
    return str(raised.value)


@pytest.mark.parametrize("sent,answered", [(7, 7.0), (7, "7"), ("7", 7), (1, True)])
def test_wait_for_reports_an_id_of_the_wrong_type_at_once(sent: Any, answered: Any) -> None:
    client = ScriptedClient([{"jsonrpc": "2.0", "id": answered, "result": {}}])
    started = time.monotonic()
    message = failure(client, sent, timeout=30)
    assert time.monotonic() - started < 5, "reported as a time-out, not at once"
    assert f"came back with id {answered!r} ({type(answered).__name__})" in message


def test_wait_for_lists_what_came_instead_on_a_time_out() -> None:
    client = ScriptedClient([
        {"jsonrpc": "2.0", "id": 99, "result": {"other": True}},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
        {"jsonrpc": "2.0", "id": 5, "method": "roots/list"},
    ])
    message = failure(client, 1)
    assert "no response to id 1 (int)" in message
    assert "99 (int) NEVER SENT" in message and '"other": true' in message
    assert "Parse error" in message
    assert "notifications/progress" in message and "roots/list" in message


def test_wait_for_keeps_answers_to_other_requests() -> None:
    client = ScriptedClient([{"jsonrpc": "2.0", "id": "7", "result": {"n": "str"}},
                             {"jsonrpc": "2.0", "id": 7, "result": {"n": "int"}}])

    async def body() -> None:
        await client.send({"jsonrpc": "2.0", "id": "7", "method": "ping"})
        await client.send({"jsonrpc": "2.0", "id": 7, "method": "ping"})
        assert (await client.wait_for(7))["result"] == {"n": "int"}
        assert client.responded("7") and not client.responded(7)
        assert (await client.wait_for("7"))["result"] == {"n": "str"}
    asyncio.run(body())


def test_a_gateway_whose_port_was_taken_meanwhile_starts_on_another(tmp_path: Path) -> None:
    """Another process may take a port between ``free_port`` and the gateway's bind (the
    two passes of make test run side by side): the helper starts it again elsewhere,
    and a URL of the gateway in its config (the OAuth resource) follows it there."""
    gw = GatewayProcess(tmp_path, {"rec": recording_upstream(tmp_path / "r.jsonl")}, {})
    gw.config_path.write_text(gw.config_path.read_text()
                              + f'[auth]\nresource = "{gw.http_url}"\n')
    taken = socket.socket()
    taken.bind(("127.0.0.1", gw.port))
    taken.listen()
    first = gw.port
    try:
        gw.start()
        assert gw.port != first
        assert gw.status()["ready"] is True
        kinds = {lst["kind"]: lst for lst in gw.status()["listeners"]}
        assert kinds["websocket"]["address"] == f"127.0.0.1:{gw.port}"
        assert f'resource = "{gw.http_url}"' in gw.config_path.read_text()
    finally:
        taken.close()
        gw.cleanup()
