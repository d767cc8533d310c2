"""``python -S tests/servers/launch.py [--pid-file PATH] ZYGOTE SERVER [its arguments]``:
the SDK test server ``SERVER`` (``sdk_server`` or ``events_server``) or a gateway
(``mcpfast``: ``python -m mcpfast``), forked by the suite's zygote (``zygote.py``) in
milliseconds instead of started afresh, or, with no zygote listening at ``ZYGOTE`` (or
one that will not fork it), exec'd as usual. ``--pid-file`` names a file to write the
server's pid to, which is this process's when it is exec'd.

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


def afresh(server: str, argv: list[str], pid_file: str | None) -> None:
    if pid_file is not None:
        write_pid(pid_file, os.getpid())
    command = ["-m", "mcpfast"] if server == "mcpfast" else [os.path.join(HERE, server + ".py")]
    os.execv(sys.executable, [sys.executable, *command, *argv])


def write_pid(path: str, pid: int) -> None:
    """Whole or not there: a reader never sees half of it."""
    with open(path + ".part", "w") as out:
        out.write(f"{pid}\n")
    os.replace(path + ".part", path)


def main() -> None:
    args = sys.argv[1:]
    pid_file = None
    if args[0] == "--pid-file":
        pid_file, args = args[1], args[2:]
    zygote, server, argv = args[0], args[1], args[2:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(zygote)
    except OSError:
        afresh(server, argv, pid_file)
    # Signals that come before the server's pid are passed on once it is known.
    forked: list[int] = []
    early: list[int] = []

    def forward(number: int, _frame: object) -> None:
        if forked:
            os.kill(forked[0], number)
        else:
            early.append(number)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    request = json.dumps({"server": server, "argv": argv, "env": dict(os.environ),
                          "cwd": os.getcwd()}).encode()
    socket.send_fds(conn, [len(request).to_bytes(4, "big") + request], [0, 1, 2])
    (pid,) = struct.unpack(">q", read(conn, 8))
    if pid == 0:
        conn.close()
        for sig in FORWARDED:  # the exec'd server gets them as it would have
            signal.signal(sig, signal.SIG_DFL)
        for number in early:
            os.kill(os.getpid(), number)
        afresh(server, argv, pid_file)
    if pid_file is not None:
        write_pid(pid_file, pid)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    forked.append(pid)
    for number in early:
        os.kill(pid, number)
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
