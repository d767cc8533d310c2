"""``python -S tests/servers/launch.py ZYGOTE SERVER [its arguments]``: the SDK test
server ``SERVER`` (``sdk_server`` or ``events_server``), forked by the suite's zygote
(``zygote.py``) in milliseconds instead of started afresh, or, with no zygote listening
at ``ZYGOTE``, exec'd as usual.

This process stands for the server: it forwards the signals it gets to it and ends as
the server ends, with its exit status or of its signal. It keeps none of the standard
streams, so that the server closing one is seen at once."""

import json
import os
import signal
import socket
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


def read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the zygote went")
        data += chunk
    return data


def main() -> None:
    zygote, server, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(zygote)
    except OSError:
        path = os.path.join(HERE, server + ".py")
        os.execv(sys.executable, [sys.executable, path, *argv])
    request = json.dumps({"server": server, "argv": argv, "env": dict(os.environ),
                          "cwd": os.getcwd()}).encode()
    socket.send_fds(conn, [len(request).to_bytes(4, "big") + request], [0, 1, 2])
    (pid,) = struct.unpack(">q", read(conn, 8))
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for sig in FORWARDED:
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    try:
        (status,) = struct.unpack(">q", read(conn, 8))
    except ConnectionError:
        sys.exit(1)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main()
