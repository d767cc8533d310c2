"""When a stdio upstream's connection ends (``stdio._PipeProtocol``), and why: once its process
has exited and its stdout has ended, and after a grace when only one of the two has
happened, sized by what the process is doing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from mcpfast.upstream import stdio
from mcpfast.upstream.stdio import _PipeProtocol

from ..conftest import run


class Process:
    """What the protocol asks of its process: whether it is on its way out (True, False,
    or None when that cannot be told) and whether it has been collected."""

    def __init__(self, exiting: bool | None) -> None:
        self.exiting_now = exiting
        self.exited = False

    def exiting(self) -> bool | None:
        return self.exiting_now


def protocol(exiting: bool | None) -> _PipeProtocol:
    upstream: Any = SimpleNamespace(config=SimpleNamespace(max_message_bytes=1 << 20))
    pipes = _PipeProtocol(upstream)
    pipes.process = Process(exiting)  # type: ignore[assignment]
    return pipes


async def ends_within(pipes: _PipeProtocol, seconds: float) -> None:
    await asyncio.wait_for(asyncio.shield(pipes.ended), seconds)


def test_stdout_ending_while_the_process_runs_on_ends_it_at_once() -> None:
    async def main() -> None:
        pipes = protocol(exiting=False)
        pipes.pipe_connection_lost(1, None)
        assert pipes.ended.done()
    run(main())


def test_stdout_ending_as_the_process_exits_waits_for_its_exit() -> None:
    # Its exit code is what the reason should name: the connection waits for it,
    # longer than any grace a running process gets, and ends as soon as it is seen.
    async def main() -> None:
        pipes = protocol(exiting=True)
        pipes.pipe_connection_lost(1, None)
        await asyncio.sleep(stdio.UNKNOWN_GRACE + stdio.EXIT_STDOUT_GRACE + 0.2)
        assert not pipes.ended.done()
        pipes.process.exited = True  # type: ignore[attr-defined]
        pipes.process_exited()
        assert pipes.ended.done() and pipes.exited.done()
    run(main())


@pytest.mark.parametrize("exiting", [True, None], ids=["exiting", "unreadable"])
def test_stdout_ending_while_the_exit_is_not_seen_ends_it_after_a_grace(
        monkeypatch: pytest.MonkeyPatch, exiting: bool | None) -> None:
    # An exit that is never seen (something else collected it), or a process whose
    # state cannot be read, does not hold the connection for ever.
    monkeypatch.setattr(stdio, "STDOUT_EXIT_GRACE", 0.3)

    async def main() -> None:
        pipes = protocol(exiting=exiting)
        pipes.pipe_connection_lost(1, None)
        assert not pipes.ended.done()
        await ends_within(pipes, 10)
    run(main())


def test_an_exit_with_stdout_still_open_ends_it_after_a_grace() -> None:
    # A child of the process may hold its stdout open: the process is gone all the
    # same, and nothing it wrote is still to come once the grace has passed.
    async def main() -> None:
        pipes = protocol(exiting=True)
        pipes.process_exited()
        assert pipes.exited.done() and not pipes.ended.done()
        await ends_within(pipes, 10)
    run(main())


def test_an_exit_then_the_end_of_stdout_ends_it_at_once() -> None:
    async def main() -> None:
        pipes = protocol(exiting=True)
        pipes.process.exited = True  # type: ignore[attr-defined]
        pipes.process_exited()
        pipes.pipe_connection_lost(1, None)
        assert pipes.ended.done()
    run(main())


def test_the_reason_names_the_last_process_started_even_once_let_go() -> None:
    # A stop lets the process go (``disconnect`` clears it first, so that a second
    # caller does nothing) before it has ended: the reason still reads its exit.
    process = Process(exiting=False)
    process.exited = True
    process.returncode = 3  # type: ignore[attr-defined]
    let_go: Any = SimpleNamespace(_started=process, _process=None, _protocol=None)
    assert stdio.StdioUpstream.ended_because(let_go) == "process exited with code 3"
    process.exited = False
    assert stdio.StdioUpstream.ended_because(let_go) == "the process closed its stdout"
    # Still held: which of its pipes it closed.
    let_go._protocol = SimpleNamespace(stdin_closed=True, stdout_closed=False)
    assert stdio.StdioUpstream.ended_because(let_go) == "the process closed its stdin"
    let_go._protocol.stdout_closed = True
    assert stdio.StdioUpstream.ended_because(let_go) == "the process closed its stdout"
