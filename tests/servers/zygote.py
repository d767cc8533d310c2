"""Starts the suite's SDK servers (``sdk_server.py``, ``events_server.py``) and its
gateways (``mcpfast``) in a fraction of their cost.

Importing the official SDK takes some 1.6 s of CPU, and mcpfast with aiohttp and
prometheus-client some 0.8 s; a pass of the suite starts these servers and gateways
hundreds of times. This process imports them once and forks one for each ``launch.py``
that connects to it: ``python tests/servers/zygote.py SOCKET`` serves until its
standard input ends.

The server that runs is the module's ``main`` itself, with the launcher's arguments,
environment, working directory and standard streams (passed as file descriptors), so
that what the gateway sees is what a server it spawned would show: its output on the
gateway's pipe, its exit status (the launcher exits with it, or dies of its signal), and
the signals the gateway sends (the launcher forwards them). A launcher that dies without
a word (SIGKILL) takes its server with it.

Protocol, per connection: the launcher sends a 4-byte length and that much JSON
(``server``, ``argv``, ``env``, ``cwd``) with its fds 0, 1, 2; the zygote answers the server's pid
(8 bytes) and, when the server ends, its wait status (8 bytes, signed). A pid of 0 says
"not forked": the request's environment differs in what was read at import
(``IMPORT_TIME``), so the launcher runs the server afresh.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import selectors
import signal
import socket
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
# The point: imported once, before any fork.
import events_server
import sdk_server

import mcpfast.cli

PRELOADED = ("anyio._backends._asyncio", "anyio.streams.stapled", "anyio.streams.tls",
             "rich.logging", "uvloop", "encodings.idna", "concurrent.futures.thread")
"""What the servers import only as they start serving: the SDK anyio's backend and
rich's logging; mcpfast uvloop (and with its modules, all imported below, aiohttp and
prometheus-client, and what a config may ask for)."""
for _name in PRELOADED:
    importlib.import_module(_name)
for _module in pkgutil.walk_packages(mcpfast.__path__, "mcpfast."):
    if not _module.name.endswith("__main__"):
        importlib.import_module(_module.name)

SERVERS = {"sdk_server": sdk_server, "events_server": events_server, "mcpfast": mcpfast.cli}
IMPORT_TIME = ("MCPFAST_NO_EXTENSIONS",)
"""Variables mcpfast reads as it is imported (with every ``PYTHON*`` one): a gateway whose
environment sets any of them otherwise than this process's is not forked. (The SDK
servers read none; the gateway starts them without these.)"""


def same_imports(request: dict[str, object]) -> bool:
    if request["server"] != "mcpfast":
        return True
    env: dict[str, str] = request["env"]  # type: ignore[assignment]
    names = {n for n in (*env, *os.environ) if n.startswith("PYTHON") or n in IMPORT_TIME}
    return all(env.get(n) == os.environ.get(n) for n in names)


def receive(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        more = conn.recv(65536)
        if not more:
            raise ConnectionError("the launcher went before its request was whole")
        data += more
    size = int.from_bytes(data[:4], "big")
    return json.loads(data[4:4 + size]), fds


def serve_child(request: dict[str, object], fds: list[int]) -> None:
    """In the forked child: become the server the launcher asked for."""
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            if fd > 2:
                os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])  # type: ignore[arg-type]
        os.chdir(str(request["cwd"]))
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a new process
        server = SERVERS[str(request["server"])]
        # ``python -m mcpfast`` shows its package's __main__ as argv[0].
        main_file = Path(server.__file__).with_name("__main__.py") \
            if server is mcpfast.cli else server.__file__
        sys.argv = [str(main_file), *request["argv"]]  # type: ignore[misc]
        code = server.main(list(request["argv"])) or 0  # type: ignore[attr-defined]
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001  (the server's own failure, shown as it would be)
        import traceback

        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def main() -> None:
    path = sys.argv[1]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "reap")
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    children: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            what = key.data
            if what == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):  # the suite is over
                    for pid in children:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    return
            elif what == "accept":
                conn, _ = listener.accept()
                try:
                    request, fds = receive(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                if not same_imports(request):
                    for fd in fds:
                        os.close(fd)
                    with contextlib.suppress(OSError):
                        conn.sendall(struct.pack(">q", 0))
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:  # the server keeps none of the zygote's sockets
                    signal.set_wakeup_fd(-1)
                    for sock in (listener, wake_r, wake_w, conn, *children.values()):
                        sock.close()
                    selector.close()
                    serve_child(request, fds)
                for fd in fds:
                    os.close(fd)
                conn.sendall(struct.pack(">q", pid))
                children[pid] = conn
                selector.register(conn, selectors.EVENT_READ, pid)
            elif what == "reap":
                wake_r.recv(4096)
            else:  # the launcher's connection: it never sends more, so it went
                conn = key.fileobj  # type: ignore[assignment]
                with contextlib.suppress(OSError):
                    if conn.recv(1) == b"":
                        selector.unregister(conn)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(what, signal.SIGKILL)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(KeyError):
                    selector.unregister(conn)
                with contextlib.suppress(OSError):
                    conn.sendall(struct.pack(">q", status))
                conn.close()


if __name__ == "__main__":
    main()
