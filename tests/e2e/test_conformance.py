"""The official MCP conformance suite, run against the gateway over Streamable HTTP.

The gateway fronts ``tests/servers/conformance_server.py`` (written with the official
SDK), alone and next to a second upstream so that aggregation is exercised (prefix mode
``conditional``: the fixture's names stay unprefixed because the second upstream shares
none of them), and served over Streamable HTTP as a remote upstream. ``make test``
installs Node 22 and the suite into ``.tools/`` first (``scripts/node-tools.sh``); a
missing install fails here rather than skipping.

An expected-failures file may list only failures that are the suite's own fault, each
with its reason; the suite itself fails a run whose listed failure passes (stale).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT, free_port, sdk_upstream

TOOLS = ROOT / ".tools"
NODE_BIN = TOOLS / "node22" / "node_modules" / ".bin"
CONFORMANCE = TOOLS / "conformance" / "node_modules" / ".bin" / "conformance"
FIXTURE = str(ROOT / "tests" / "servers" / "conformance_server.py")
SOCKET_SERVER = str(ROOT / "tests" / "servers" / "socket_server.py")
EXPECTED = ROOT / "tests" / "conformance"


def conformance_upstream(era: str) -> dict[str, Any]:
    # The suite runs each scenario in a session of its own against one shared fixture
    # process; the fixture asks for sampling, elicitation and logs only while handling
    # the call that caused them, which is what attribution "in_flight" vouches for.
    return {"command": ["python", FIXTURE], "init_timeout": 20.0, "era": era,
            "attribution": "in_flight"}


# The fixture answers server/discover, so with era "auto" the gateway speaks to it in the
# modern era: the 2026-07-28 leg is then modern end to end, and the 2025-11-25 leg goes
# through the gateway's translation (input_required relayed as server-to-client
# requests). With era "both", a legacy client's calls go to a legacy twin of the fixture
# (gateway/legacy_twin.py), so the 2025-11-25 leg is legacy end to end, as it is with the
# fixture pinned "legacy". (As a Streamable HTTP upstream, "auto" makes the twin too.)
LEGS = [("2025-11-25", "legacy"), ("2025-11-25", "auto"), ("2025-11-25", "both"),
        ("2026-07-28", "auto")]


REMOTE_LEGS = [("2025-11-25", "legacy"), ("2026-07-28", "auto")]
"""The legs over the WebSocket, unix-socket and HTTP+SSE upstream kinds: the fixture's
legacy era end to end, and the modern era where the kind carries it (SSE is legacy)."""


@pytest.fixture
def http_fixture() -> Iterator[str]:
    """The fixture served over Streamable HTTP (with its replay buffer), for the legs
    where it is a remote upstream; its URL."""
    yield from _served_fixture("--http", "/mcp")


def _served_fixture(flag: str, path: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, FIXTURE, flag, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the conformance fixture exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the conformance fixture never listened"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        # uvicorn's graceful stop waits for open streams, which the gateway (stopped
        # after this fixture) still holds: a second, then the hard way.
        proc.terminate()
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(20)


@pytest.mark.parametrize(("spec_version", "era"), LEGS)
@pytest.mark.parametrize("upstreams", ["one", "two", "http"])
def test_conformance_suite(gateway_factory: Any, tmp_path: Path, request: Any,
                           spec_version: str, era: str, upstreams: str) -> None:
    if upstreams != "one" and os.environ.get("MCPFAST_NO_EXTENSIONS") == "1":
        # The pure pass runs each leg once; aggregation and the remote upstream are the
        # same code in both passes.
        pytest.skip("the two-upstream and remote legs run in the compiled pass")
    assert CONFORMANCE.exists(), "run scripts/node-tools.sh (make test does) first"
    config: dict[str, dict[str, Any]] = {"everything": conformance_upstream(era)}
    if upstreams == "http":
        # The fixture as a Streamable HTTP upstream: a call's server-to-client requests
        # come on its own stream, so they are attributed without "in_flight".
        config["everything"] = {"url": request.getfixturevalue("http_fixture"),
                                "init_timeout": 20.0, "era": era}
    if upstreams == "two":
        config["other"] = sdk_upstream("other", prefix="other_")
    gw = gateway_factory(config, routing={"prefix": "conditional"})
    run_suite(gw, tmp_path, spec_version,
              f"upstreams: {upstreams}, fixture era {era}")


@pytest.mark.parametrize(("spec_version", "era"), REMOTE_LEGS)
@pytest.mark.parametrize("kind", ["websocket", "unix", "sse"])
def test_conformance_suite_over_remote_kinds(gateway_factory: Any, tmp_path: Path,
                                              spec_version: str, era: str, kind: str) -> None:
    """The fixture behind each remaining upstream kind: carried over a WebSocket or a
    unix socket by tests/servers/socket_server.py (a process per connection), or served
    by the SDK's own HTTP+SSE transport."""
    if os.environ.get("MCPFAST_NO_EXTENSIONS") == "1":
        pytest.skip("the remote-kind legs run in the compiled pass")
    if kind == "sse" and era != "legacy":
        pytest.skip("the HTTP+SSE transport (2024-11-05) has no modern era")
    with contextlib.ExitStack() as stack:
        if kind == "sse":
            url = stack.enter_context(contextlib.contextmanager(_served_fixture)(
                "--sse", "/sse"))
            where: dict[str, Any] = {"transport": "sse", "url": url}
        else:
            socket_path = str(tmp_path / "fixture.sock")
            port = free_port()
            args = ["--unix", socket_path] if kind == "unix" else ["--ws", str(port)]
            server = subprocess.Popen(
                [sys.executable, SOCKET_SERVER, *args, "--", sys.executable, FIXTURE],
                stdout=subprocess.PIPE, text=True)
            stack.callback(_stop, server)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            where = {"socket": socket_path} if kind == "unix" else \
                {"url": f"ws://127.0.0.1:{port}/"}
        # Server-to-client requests arrive on the one connection, not on a stream of the
        # call's own: "in_flight" attributes them, as for stdio.
        config = {"everything": {**where, "init_timeout": 20.0, "era": era,
                                 "attribution": "in_flight"}}
        gw = gateway_factory(config, routing={"prefix": "conditional"})
        run_suite(gw, tmp_path, spec_version, f"upstream kind {kind}, fixture era {era}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(20)


def run_suite(gw: Any, tmp_path: Path, spec_version: str, leg: str) -> None:
    """Run the whole suite against ``gw``; fail with its output and the gateway's log."""
    command = [str(CONFORMANCE), "server", "--url", gw.http_url, "--suite", "all",
               "--spec-version", spec_version, "-o", str(tmp_path / "results")]
    expected = EXPECTED / f"expected-failures.{spec_version}.yml"
    if expected.exists():
        command += ["--expected-failures", str(expected)]
    env = {**os.environ, "PATH": f"{NODE_BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    sys.stdout.write(proc.stdout[-20000:])
    assert proc.returncode == 0, (
        f"conformance {spec_version} ({leg}) failed:\n"
        f"{proc.stdout[-15000:]}\n{proc.stderr[-3000:]}\n--- gateway log ---\n"
        f"{gw.log()[-5000:]}")
