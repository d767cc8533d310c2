"""ChildProcess: a started upstream process, its three pipes as event-loop transports,
and its exit, watched through a pidfd.

Not the event loop's ``subprocess_exec``: uvloop's gives the child its ends of the pipes
twice, as 0-2 and again as inheritable descriptors past 2. The child then never closes
its stdout for good, so a server that closes it and runs on is never seen to, and every
server starts with descriptors it did not ask for. ``subprocess.Popen`` closes every
descriptor past 2 (``close_fds``) and reports a failed ``exec`` at once.

The events reach a ``PipeEvents`` in the order the loop sees them; a process's exit and
the end of its stdout come in either order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Protocol

PF_EXITING = 0x4  # <linux/sched.h>, in /proc/PID/stat's flags
EXIT_POLL = 0.05
"""Seconds between checks for the exit where there is no pidfd (not Linux, or before
Linux 5.3)."""


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


class _Pipe(asyncio.Protocol):
    """One pipe's transport events, passed on with the pipe's descriptor number."""

    def __init__(self, events: PipeEvents, fd: int) -> None:
        self.events = events
        self.fd = fd

    def data_received(self, data: bytes) -> None:
        self.events.pipe_data_received(self.fd, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.pipe_connection_lost(self.fd, exc)


class ChildProcess:
    """Started by its constructor (``subprocess.Popen``: raises OSError when it cannot
    be), in a new session (its own process group) with its stdin, stdout and stderr
    piped; ``connect`` then hands the pipes to the event loop."""

    def __init__(self, argv: Sequence[str], events: PipeEvents, *, cwd: str | None,
                 env: Mapping[str, str]) -> None:
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=env, start_new_session=True, close_fds=True, bufsize=0)
        self.pid = self.popen.pid
        self.events = events
        self.returncode: int | None = None
        self.exited = False
        """True once the process has exited and been collected (its code may be
        unknown: None, if something else collected it)."""
        self.stdin: asyncio.WriteTransport | None = None
        self._pipes: list[asyncio.BaseTransport] = []
        self._pidfd = -1
        self._poll: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        """Watch for the exit and read the pipes; if that fails, the process is killed."""
        try:
            await self._connect()
        except BaseException:
            self.kill()
            self.close()
            raise

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        popen = self.popen
        assert popen.stdin is not None and popen.stdout is not None
        assert popen.stderr is not None
        self._watch_exit(loop)
        stdin, _ = await loop.connect_write_pipe(lambda: _Pipe(self.events, 0), popen.stdin)
        self._pipes.append(stdin)
        self.stdin = stdin  # type: ignore[assignment]
        for fd, pipe in ((1, popen.stdout), (2, popen.stderr)):
            transport, _ = await loop.connect_read_pipe(
                lambda fd=fd: _Pipe(self.events, fd), pipe)  # type: ignore[misc]
            self._pipes.append(transport)

    def exiting(self) -> bool | None:
        """Whether it has exited or is on its way out; None where that cannot be told."""
        return True if self.exited else process_exiting(self.pid)

    def _watch_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._poll = loop.call_later(EXIT_POLL, self._check_exit)
            return
        loop.add_reader(self._pidfd, self._check_exit)

    def _check_exit(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, -1
        if pid == 0:
            if self._pidfd < 0:
                self._poll = asyncio.get_running_loop().call_later(
                    EXIT_POLL, self._check_exit)
            return
        self._stop_watching()
        self.exited = True
        self.returncode = os.waitstatus_to_exitcode(status) if status >= 0 else None
        # Popen must not try to collect it again.
        self.popen.returncode = self.returncode if self.returncode is not None else -1
        self.events.process_exited()

    def _stop_watching(self) -> None:
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    def kill(self) -> None:
        if not self.exited:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        """Close the pipes. A process that has not exited yet (the caller has signalled
        it) is still watched, so that its exit is collected when it comes."""
        for pipe in self._pipes:
            pipe.close()
        self._pipes.clear()
