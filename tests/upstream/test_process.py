"""ChildProcess (mcpfast/upstream/process.py): a stdio upstream's process, its pipes and
its exit, owned by the gateway whatever the event loop."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine
from itertools import pairwise
from typing import Any

import pytest
import uvloop

from mcpfast.upstream.process import (
    PF_EXITING,
    STDIN_PIPE_SIZE,
    WATCHED,
    ChildProcess,
    PipeWriter,
    process_exiting,
    stat_says_exiting,
)

from ..conftest import run, wait_until


class Events:
    def __init__(self) -> None:
        self.data: dict[int, bytes] = {1: b"", 2: b""}
        self.lost: list[tuple[int, Exception | None]] = []
        self.exited = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.data[fd] += data

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.lost.append((fd, exc))

    def process_exited(self) -> None:
        self.exited.set()


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_run(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Runs a test's body on asyncio's loop and on uvloop's (the gateway's)."""
    def runner(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if request.param == "uvloop":
            uvloop.run(asyncio.wait_for(main(), 60))
        else:
            run(main())
    return runner


async def until(predicate: object, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def test_a_process_is_spoken_to_and_collected(loop_run: Any) -> None:
    script = ("import sys; line = sys.stdin.readline(); sys.stdout.write(line.upper()); "
              "sys.stderr.write('note'); sys.exit(7)")

    async def main() -> None:
        events = Events()
        child = ChildProcess([sys.executable, "-c", script], events, cwd=None,
                             env=dict(os.environ))
        assert child.pid in WATCHED
        child.connect()
        assert child.stdin is not None
        fds = [*child._reading.values(), child.stdin.fd]
        child.stdin.write(b"hello\n")
        await asyncio.wait_for(events.exited.wait(), 15)
        await until(lambda: {fd for fd, _ in events.lost} >= {1, 2})
        assert child.exited and child.returncode == 7 and child.pid not in WATCHED
        assert events.data == {1: b"HELLO\n", 2: b"note"}
        child.close()
        for fd in fds:  # every descriptor it held is closed, once
            try:
                os.fstat(fd)
            except OSError:
                continue
            raise AssertionError(f"fd {fd} is still open")
    loop_run(main)


@pytest.mark.parametrize("wide", [True, False])
def test_a_shared_servers_stdin_pipe_holds_what_a_loaded_turn_writes(
        loop_run: Any, wide: bool) -> None:
    """A shared server's stdin takes STDIN_PIPE_SIZE (256 KiB) before the gateway must
    buffer and watch it; a per_session server's keeps the default, and its share of
    the user's pipe pages. The server here reads nothing."""
    async def main() -> None:
        events = Events()
        child = ChildProcess([sys.executable, "-c", "import time; time.sleep(60)"], events,
                             cwd=None, env=dict(os.environ), wide_stdin=wide)
        child.connect()
        assert child.stdin is not None
        size = fcntl.fcntl(child.stdin.fd, fcntl.F_GETPIPE_SZ)
        assert size == (STDIN_PIPE_SIZE if wide else 65536)
        child.stdin.write(b"x" * 200_000)  # more than the default holds
        assert (child.stdin.get_write_buffer_size() == 0) == wide
        child.kill()
        await asyncio.wait_for(events.exited.wait(), 15)
        child.close()
    loop_run(main)


def test_a_killed_process_is_collected_with_its_signal(loop_run: Any) -> None:
    # What a start that fails after the process began does (StdioUpstream.connect).
    async def main() -> None:
        events = Events()
        child = ChildProcess([sys.executable, "-c", "import time; time.sleep(60)"], events,
                             cwd=None, env=dict(os.environ))
        child.connect()
        child.kill()
        await asyncio.wait_for(events.exited.wait(), 15)
        assert child.exited and child.returncode == -9
        child.kill()  # collected: nothing to signal, no error
        child.close()
    loop_run(main)


def test_the_stdin_writer_buffers_what_the_pipe_does_not_take(loop_run: Any) -> None:
    async def main() -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        events = Events()
        writer = PipeWriter(write_end, events, asyncio.get_running_loop())
        chunk = b"x" * 200_000  # more than a pipe holds (64 KiB)
        writer.write(chunk)
        writer.write(b"end")
        assert writer.get_write_buffer_size() > 0
        got = bytearray()
        os.set_blocking(read_end, False)
        while len(got) < len(chunk) + 3:
            try:
                got += os.read(read_end, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.001)
        assert bytes(got) == chunk + b"end" and writer.get_write_buffer_size() == 0
        # Drained, it no longer watches the pipe (a writer left registered would be
        # called on every turn of the loop while the pipe has room: a busy loop).
        assert not asyncio.get_running_loop().remove_writer(write_end)
        # The reader gone: the next write finds the pipe broken, and says so once.
        os.close(read_end)
        writer.write(b"more")
        assert writer.is_closing() and [fd for fd, _ in events.lost] == [0]
        assert isinstance(events.lost[0][1], BrokenPipeError)
        writer.write(b"ignored")
        writer.close()
        assert len(events.lost) == 1
    loop_run(main)


def test_a_process_that_cannot_start_raises_at_once() -> None:
    try:
        ChildProcess(["/nonexistent/server"], Events(), cwd=None, env={})
    except FileNotFoundError:
        return
    raise AssertionError("no error")


def test_a_process_on_its_way_out_is_told_from_one_that_runs() -> None:
    # Its stdout closes before its exit is seen: on its way out (PF_EXITING) the gateway
    # waits for the exit code; running on, the connection ends at once.
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    exited = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    try:
        assert process_exiting(running.pid) is False
        # On its way out: still in exit() (PF_EXITING is set as exit begins) or a zombie
        # not reaped; either way it ends with its code.
        wait_until(lambda: process_exiting(exited.pid) is True)
        assert exited.wait(10) == 3
    finally:
        running.kill()
        running.wait()
    line = b"42 (odd) name) R 1 42 42 0 -1 %d 0 0" % (0x400000 | PF_EXITING)
    assert stat_says_exiting(line) is True
    assert stat_says_exiting(line.replace(b"%d" % (0x400000 | PF_EXITING),
                                          b"%d" % 0x400000)) is False
    assert process_exiting(2 ** 22 + 1) is None  # past pid_max: no such process


def test_the_sweep_of_exited_orphans_leaves_a_watched_process_alone() -> None:
    # The gateway's sweep (server._collect_zombies) knows only the upstreams' own pids; a
    # per-session or replica process is known by WATCHED, or its exit code is lost.
    from mcpfast.upstream.stdio import _children, reap_exited_orphans

    async def main() -> None:
        events = Events()
        child = ChildProcess([sys.executable, "-c", "import sys; sys.exit(9)"], events,
                             cwd=None, env=dict(os.environ))
        child.connect()
        wait_until(lambda: process_exiting(child.pid) is True)  # a zombie, not collected
        # Only this test's child is offered: the suite's other children are not to be
        # collected here.
        others = [pid for pid in _children() if pid != child.pid]
        assert child.pid not in reap_exited_orphans(others)
        await asyncio.wait_for(events.exited.wait(), 15)
        assert child.returncode == 9
        child.close()
    run(main())


def test_an_exit_that_cannot_be_collected_yet_is_polled_not_spun(
        loop_run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pidfd says the process exited but ``waitpid`` cannot collect it yet (a tracer
    holds it): the pidfd, which would keep saying so, is let go and the exit is polled
    every EXIT_POLL until it is collected, with its code."""
    from mcpfast.upstream import process as module

    async def main() -> None:
        loop = asyncio.get_running_loop()
        events = Events()
        child = ChildProcess([sys.executable, "-c", "import sys; sys.exit(7)"], events,
                             cwd=None, env=dict(os.environ))
        child.connect()
        assert child._pidfd >= 0
        waited: list[float] = []
        held_until: list[float] = []
        real_waitpid = os.waitpid

        def held(pid: int, options: int) -> tuple[int, int]:
            if pid != child.pid:
                return real_waitpid(pid, options)
            waited.append(loop.time())
            if not held_until:
                held_until.append(loop.time() + 0.5)  # held from the first look on
            return (0, 0) if loop.time() < held_until[0] else real_waitpid(pid, options)

        monkeypatch.setattr(module.os, "waitpid", held)
        await asyncio.wait_for(events.exited.wait(), 15)
        assert child.exited and child.returncode == 7
        assert child._pidfd == -1 and child._poll is None
        # Looked at every EXIT_POLL (0.05 s) while held: about 11 times in 0.5 s, fewer
        # on a slow machine; spinning on the pidfd would be thousands.
        assert 3 <= len(waited) <= 15, len(waited)
        assert all(b - a >= module.EXIT_POLL * 0.9 for a, b in pairwise(waited))
        child.close()
    loop_run(main)
