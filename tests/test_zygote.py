"""The suite's forked SDK servers (``servers/zygote.py``, ``servers/launch.py``) stand
for servers started afresh: a signal sent to the launcher reaches the server, and the
launcher ends as the server does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from .conftest import forked

INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {},
    "clientInfo": {"name": "t", "version": "0"}}}).encode() + b"\n"


def launch() -> subprocess.Popen[bytes]:
    command = forked("sdk_server", "--name", "z")
    proc = subprocess.Popen([sys.executable, *command[1:]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(INITIALIZE)
    proc.stdin.flush()
    assert b'"name":"z"' in proc.stdout.readline()
    return proc


def test_a_signal_to_the_launcher_reaches_the_server_and_its_end_is_the_launchers() -> None:
    proc = launch()
    assert proc.stdout is not None
    # SIGUSR1 makes the server close its stdout and keep running (sdk_server.py): the
    # launcher, had it kept the pipe or died of the signal, would show otherwise.
    proc.send_signal(signal.SIGUSR1)
    assert proc.stdout.read() == b""
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == -signal.SIGTERM


def test_the_launcher_exits_with_the_servers_status() -> None:
    proc = launch()
    assert proc.stdin is not None
    proc.stdin.close()  # stdio servers end at the end of their input, with status 0
    assert proc.wait(15) == 0
