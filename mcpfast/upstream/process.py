"""ChildProcess: a started upstream process, its pipes, and its exit, watched through a
pidfd.

Not the event loop's ``subprocess_exec``: uvloop's gives the child its ends of the pipes
twice, as 0-2 and again as inheritable descriptors past 2. The child then never closes
its stdout for good, so a server that closes it and runs on is never seen to, and every
server starts with descriptors it did not ask for. ``subprocess.Popen`` closes every
descriptor past 2 (``close_fds``) and reports a failed ``exec`` at once.

Its pipes are read and written here (``loop.add_reader``, ``add_writer``), so that this
class alone owns and closes their descriptors, whatever the loop. The events reach a
``PipeEvents`` in the order the loop sees them; a process's exit and the end of its
stdout come in either order.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

PF_EXITING = 0x4  # <linux/sched.h>, in /proc/PID/stat's flags
EXIT_POLL = 0.05
"""Seconds between checks for the exit where there is no pidfd (not Linux, before Linux
5.3), or where the pidfd says it has exited but it cannot be collected yet (a tracer
holds it)."""
READ_SIZE = 256 * 1024
"""Bytes read from a pipe at once (the kernel's pipe buffer is 64 KiB by default)."""
WATCHED: set[int] = set()
"""The pids whose exit a ChildProcess collects: the gateway's sweep of exited orphans
leaves them alone (``stdio.reap_exited_orphans``)."""


def process_exiting(pid: int) -> bool | None:
    """Whether the process has exited or is on its way out (Linux: a zombie, or
    PF_EXITING in its flags); None where that cannot be told."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat_says_exiting(stat.read())
    except (OSError, ValueError, IndexError):
        return None


def stat_says_exiting(stat: bytes) -> bool:
    """``process_exiting`` for one /proc/PID/stat line."""
    fields = stat.rsplit(b")", 1)[1].split()
    return fields[0] in (b"Z", b"X", b"x") or bool(int(fields[6]) & PF_EXITING)


class PipeEvents(Protocol):
    def pipe_data_received(self, fd: int, data: bytes) -> None: ...
    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None: ...
    def process_exited(self) -> None: ...


STDIN_PIPE_SIZE = 256 * 1024
"""What the server's stdin pipe holds (Linux's default is 64 KiB). Under load the
gateway writes more than 64 KiB of requests in a turn of its loop while the server,
sharing the CPU, has not read yet: each overflow then cost a writer registered and
removed again, eight system calls a turn. 256 KiB holds 512 requests of 300 bytes in
flight. Only a shared server's pipe is widened: it takes 64 pages of the user's
``pipe-user-pages-soft`` (16384 by default, past which Linux gives new pipes one page),
which hundreds of ``per_session`` processes would use up. Where the kernel refuses the
size, the pipe keeps its default and works as before."""


def _widen(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, STDIN_PIPE_SIZE)
    except (AttributeError, OSError):
        pass  # not Linux, or over the user's pipe limit: the default size serves


class PipeWriter:
    """The process's stdin, as much of a write transport as ``CoalescingWriter`` uses:
    written at once while the pipe takes it, the rest buffered and written as it drains."""

    def __init__(self, fd: int, events: PipeEvents, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = fd
        self.events = events
        self.loop = loop
        self.buffer = bytearray()
        self.closing = False
        # The write end of a pipe polls as an error once its read end is closed: a
        # server that closes its stdin and runs on is seen at once, not at the next
        # write (asyncio's pipe transport watches its pipes the same way).
        loop.add_reader(fd, self._reader_gone)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def write(self, data: bytes) -> None:
        if self.closing or not data:
            return
        if self.buffer:
            self.buffer += data
            return
        try:
            sent = os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(exc)
            return
        if sent < len(data):
            self.buffer += data[sent:]
            self.loop.add_writer(self.fd, self._drain)

    def _drain(self) -> None:
        try:
            sent = os.write(self.fd, self.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self.buffer[:sent]
        if not self.buffer:
            self.loop.remove_writer(self.fd)

    def _reader_gone(self) -> None:
        self._lost(BrokenPipeError(errno.EPIPE, "the server closed its stdin"))

    def _lost(self, exc: Exception | None) -> None:
        self.close()
        self.events.pipe_connection_lost(0, exc)

    def close(self) -> None:
        """Close the pipe now; what is still buffered is dropped (the server is being
        stopped, or has stopped reading for good)."""
        if self.closing:
            return
        self.closing = True
        self.buffer.clear()
        self.loop.remove_writer(self.fd)
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


class ChildProcess:
    """Started by its constructor (``subprocess.Popen``: raises OSError when it cannot
    be), in a new session (its own process group) with its stdin, stdout and stderr
    piped; ``connect`` then hands the pipes to the event loop."""

    def __init__(self, argv: Sequence[str], events: PipeEvents, *, cwd: str | None,
                 env: Mapping[str, str], wide_stdin: bool = False) -> None:
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=env, start_new_session=True, close_fds=True, bufsize=0)
        self.pid = self.popen.pid
        WATCHED.add(self.pid)
        self.events = events
        self.returncode: int | None = None
        self.exited = False
        """True once the process has exited and been collected (its code may be
        unknown: None, if something else collected it)."""
        self.stdin: PipeWriter | None = None
        self._reading: dict[int, int] = {}
        """Pipe number (1, 2) → descriptor, while it is read."""
        self._pidfd = -1
        self._poll: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._wide_stdin = wide_stdin
        """Give the stdin pipe ``STDIN_PIPE_SIZE`` (a shared server's, fed by every
        client; not each session's own, whose many pipes would count against the
        user's limit)."""

    def connect(self) -> None:
        """Watch for the exit, read the stdout and stderr, and make the stdin's writer.
        The descriptors are this object's own, not file objects' or a loop transport's
        (uvloop closes a pipe transport's descriptor, then has its file object close it
        again), and closed by ``close``."""
        popen = self.popen
        assert popen.stdin is not None and popen.stdout is not None
        assert popen.stderr is not None
        self._watch_exit()
        for number, pipe in ((1, popen.stdout), (2, popen.stderr)):
            fd = self._take(pipe)
            self._reading[number] = fd
            self._loop.add_reader(fd, self._read, number)
        stdin = self._take(popen.stdin)
        if self._wide_stdin:
            _widen(stdin)
        self.stdin = PipeWriter(stdin, self.events, self._loop)

    @staticmethod
    def _take(pipe: Any) -> int:
        """The pipe's descriptor, owned by this object from now on, non-blocking."""
        fd = os.dup(pipe.fileno())
        pipe.close()
        os.set_blocking(fd, False)
        return fd

    def exiting(self) -> bool | None:
        """Whether it has exited or is on its way out; None where that cannot be told."""
        return True if self.exited else process_exiting(self.pid)

    def _read(self, number: int) -> None:
        fd = self._reading.get(number)
        if fd is None:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._stop_reading(number)
            self.events.pipe_connection_lost(number, exc)
            return
        if data:
            self.events.pipe_data_received(number, data)
        else:
            self._stop_reading(number)
            self.events.pipe_connection_lost(number, None)

    def _stop_reading(self, number: int) -> None:
        fd = self._reading.pop(number, None)
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._poll = self._loop.call_later(EXIT_POLL, self._check_exit)
            return
        self._loop.add_reader(self._pidfd, self._check_exit)

    def _check_exit(self) -> None:
        self._poll = None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, -1
        if pid == 0:
            # Not collectable yet: with no pidfd, look again soon; with one, it said the
            # process had exited (a tracer holds it), and would say so in a busy loop.
            self._stop_watching()
            self._poll = self._loop.call_later(EXIT_POLL, self._check_exit)
            return
        self._stop_watching()
        WATCHED.discard(self.pid)
        self.exited = True
        self.returncode = os.waitstatus_to_exitcode(status) if status >= 0 else None
        # Popen must not try to collect it again.
        self.popen.returncode = self.returncode if self.returncode is not None else -1
        self.events.process_exited()

    def _stop_watching(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    def kill(self) -> None:
        if self.exited:
            return
        try:
            if self._pidfd >= 0:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Close the pipes. A process that has not exited yet (the caller has signalled
        it) is still watched, so that its exit is collected when it comes."""
        if self.stdin is not None:
            self.stdin.close()
        for number in list(self._reading):
            self._stop_reading(number)
