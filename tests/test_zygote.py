"""The suite's forked SDK servers and gateways (``servers/zygote.py``,
``servers/launch.py``) stand for ones started afresh: a signal sent to the launcher
reaches the server, and the launcher ends as the server does; a gateway that would
import mcpfast otherwise than the zygote did is started afresh."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from .conftest import ROOT, forked

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


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def test_a_gateway_is_forked_and_ends_as_a_started_one(gateway_factory: Any) -> None:
    gw = gateway_factory()
    assert gw.proc is not None and gw.pid != gw.proc.pid
    assert parent(gw.pid) != os.getpid()  # the zygote's child, not the launcher
    assert "mcpfast: ready" in gw.log()  # its output is the launcher's
    assert gw.terminate(signal.SIGTERM) == 0  # drained and stopped, as a started one is
    assert "mcpfast: stopped" in gw.log()


def test_a_gateway_imported_otherwise_is_started_afresh(gateway_factory: Any) -> None:
    """The zygote imported mcpfast as this pass does: a gateway asking for the other
    implementation is exec'd, and runs it."""
    other = "0" if os.environ.get("MCPFAST_NO_EXTENSIONS") == "1" else "1"
    gw = gateway_factory(env={"MCPFAST_NO_EXTENSIONS": other})
    assert gw.proc is not None and gw.pid == gw.proc.pid
    assert parent(gw.pid) == os.getpid()
    implementation = "pure" if other == "1" else "compiled"
    assert f"({implementation} hot path)" in gw.log(), gw.log()[:600]


def test_a_signal_before_the_servers_pid_is_known_reaches_the_server(tmp_path: Any) -> None:
    """The launcher takes signals from its start: one that comes while it still waits
    for the zygote's answer is passed on once the pid is known, not its own death. A
    stand-in zygote holds the answer until the signal has been sent."""
    path = str(tmp_path / "z.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    # The "server": ends with 7 on SIGUSR1 (its default would end it by the signal).
    server = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                               "signal.signal(signal.SIGUSR1, lambda *_: sys.exit(7))\n"
                               "print('ready', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE)
    assert server.stdout is not None and server.stdout.readline() == b"ready\n"
    launch = str(ROOT / "tests" / "servers" / "launch.py")
    launcher = subprocess.Popen([sys.executable, "-S", launch, path, "sdk_server"],
                                stdin=subprocess.DEVNULL)
    try:
        conn, _ = listener.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 65536, 3)  # the request: handlers are set
            for fd in fds:
                os.close(fd)
            launcher.send_signal(signal.SIGUSR1)
            time.sleep(0.2)  # let it arrive; the launcher must not die of it
            conn.sendall(struct.pack(">q", server.pid))
            assert server.wait(15) == 7
            conn.sendall(struct.pack(">q", 7 << 8))  # the wait status of exit(7)
            assert launcher.wait(15) == 7
    finally:
        for proc in (server, launcher):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        listener.close()
