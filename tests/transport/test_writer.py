"""The coalescing writer: writes made in one turn of the event loop go out as one, on
the next turn; while an upstream's read is delivered (a batch), at its end instead."""

from __future__ import annotations

import asyncio

from mcpfast.transport.writer import CoalescingWriter, begin_batch, end_batch

from ..conftest import Socket


def two_writers() -> tuple[Socket, Socket, CoalescingWriter, CoalescingWriter]:
    """Two clients' sockets and their writers, on the running loop."""
    loop = asyncio.get_running_loop()
    one, two = Socket(), Socket()
    return (one, two, CoalescingWriter(one, loop),  # type: ignore[arg-type]
            CoalescingWriter(two, loop))  # type: ignore[arg-type]


def test_writes_of_one_turn_go_out_as_one_on_the_next() -> None:
    async def main() -> None:
        socket = Socket()
        writer = CoalescingWriter(socket, asyncio.get_running_loop())  # type: ignore[arg-type]
        writer.write(b"a")
        writer.write(b"b")
        assert socket.written == []
        await asyncio.sleep(0)
        assert socket.written == [b"ab"]
    asyncio.run(main())


def test_a_batch_writes_at_its_end_and_schedules_nothing() -> None:
    """Two clients answered in one upstream read: each gets its answers in one write
    when the read ends, before the loop turns, and nothing is left for a later turn."""
    async def main() -> None:
        one, two, first, second = two_writers()
        outer = begin_batch()
        first.write(b"1")
        second.write(b"2")
        first.write(b"3")
        assert one.written == two.written == []
        end_batch(outer)
        assert (one.written, two.written) == ([b"13"], [b"2"])
        first.write(b"4")  # no batch now: the next turn, as before
        assert one.written == [b"13"]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert (one.written, two.written) == ([b"13", b"4"], [b"2"])
    asyncio.run(main())


def test_a_batch_inside_another_restores_it() -> None:
    async def main() -> None:
        one, two, first, second = two_writers()
        outer = begin_batch()
        first.write(b"outer")
        inner = begin_batch()
        second.write(b"inner")
        end_batch(inner)
        assert (one.written, two.written) == ([], [b"inner"])
        first.write(b"+")
        end_batch(outer)
        assert one.written == [b"outer+"]
        await asyncio.sleep(0)
        assert one.written == [b"outer+"] and two.written == [b"inner"]
    asyncio.run(main())


def test_an_upstreams_read_reaches_the_clients_before_the_loop_turns() -> None:
    """The stdio, unix and WebSocket upstreams deliver each read in a batch: the answers
    it carries are written to their clients when the read ends."""
    from types import SimpleNamespace

    from mcpfast.upstream.stdio import _PipeProtocol
    from mcpfast.upstream.unix import _LineProtocol
    from mcpfast.upstream.websocket import _WebSocketProtocol

    async def main() -> None:
        loop = asyncio.get_running_loop()
        socket = Socket()
        client = CoalescingWriter(socket, loop)  # type: ignore[arg-type]
        upstream = SimpleNamespace(config=SimpleNamespace(max_message_bytes=1 << 20),
                                   on_message=client.write, log=None)
        _PipeProtocol(upstream).pipe_data_received(1, b"one\ntwo\n")  # type: ignore[arg-type]
        assert socket.written == [b"onetwo"]
        _LineProtocol(upstream).data_received(b"three\n")  # type: ignore[arg-type]
        assert socket.written == [b"onetwo", b"three"]
        ws = _WebSocketProtocol(upstream)  # type: ignore[arg-type]
        ws.handshaking = False  # two text frames from the server, unmasked, in one read
        ws.data_received(b"\x81\x04four\x81\x04five")
        assert socket.written == [b"onetwo", b"three", b"fourfive"]
    asyncio.run(main())


def test_a_writer_whose_flush_fails_does_not_strand_the_others() -> None:
    """A client's overflow callback that raises (closing it failed) is logged; the other
    writers of the batch are flushed all the same (found by review: they were left
    scheduled, their answers never written)."""
    class Full(Socket):
        def get_write_buffer_size(self) -> int:
            return 1 << 30

    def overflow(pending: int) -> None:
        raise RuntimeError("closing the client failed")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        full, fine = Full(), Socket()
        failing = CoalescingWriter(full, loop, limit=1024,  # type: ignore[arg-type]
                                   on_overflow=overflow)
        writer = CoalescingWriter(fine, loop)  # type: ignore[arg-type]
        outer = begin_batch()
        failing.write(b"lost")
        writer.write(b"B1")
        writer.write(b"B2")
        end_batch(outer)
        assert fine.written == [b"B1B2"] and full.written == []
        writer.write(b"B3")
        await asyncio.sleep(0)
        assert fine.written == [b"B1B2", b"B3"]
    asyncio.run(main())
