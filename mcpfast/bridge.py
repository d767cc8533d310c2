"""``mcpfast connect``: a stdio bridge for clients that can only start a subprocess.

An MCP client configured with ``command = mcpfast connect --unix PATH`` talks stdio to
this process, which relays each line to the gateway's unix-socket listener and each line
back. Both sides use the same newline-delimited framing, so bytes are relayed as they
come; the bridge exits when either side closes: with status 0 once the client's input ended
and every answer came back, 1 when the gateway hung up first or relaying failed.

A stdio client may say nothing for hours, while its server (this bridge) must stay: after
``keepalive`` seconds without a byte from the client, the bridge sends the gateway a blank
line between messages, which keeps the session from being closed as idle
(``listen.idle_timeout``) and reaches no server.
"""

from __future__ import annotations

import asyncio
import os
import sys

KEEPALIVE = 60.0
"""Seconds of silence from the client after which the bridge sends a blank line: well
within the default ``listen.idle_timeout`` (300 s)."""


class _Silence:
    """When the client last sent a byte, and whether its last line is complete (a
    blank line may be sent only between lines)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.since = loop.time()
        self.between_lines = True

    def heard(self, chunk: bytes) -> None:
        self.since = self.loop.time()
        self.between_lines = chunk.endswith(b"\n")


async def _keep_alive(writer: asyncio.StreamWriter, silence: _Silence, interval: float
                      ) -> None:
    """A blank line to the gateway after each ``interval`` of the client's silence."""
    while True:
        await asyncio.sleep(max(0.0, silence.since + interval - silence.loop.time()))
        if silence.loop.time() - silence.since >= interval and silence.between_lines:
            writer.write(b"\n")
            await writer.drain()
            silence.since = silence.loop.time()


async def _pump(reader: asyncio.StreamReader, write: asyncio.StreamWriter | int,
                silence: _Silence | None = None) -> None:
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        if silence is not None:
            silence.heard(chunk)
        if isinstance(write, int):
            view = memoryview(chunk)
            while view:
                written = os.write(write, view)
                view = view[written:]
        else:
            write.write(chunk)
            await write.drain()


async def bridge_unix(path: str, keepalive: float = KEEPALIVE) -> int:
    try:
        sock_reader, sock_writer = await asyncio.open_unix_connection(path)
    except OSError as exc:
        print(f"mcpfast connect: cannot connect to {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    silence = _Silence(loop)
    upward = asyncio.ensure_future(_pump(stdin, sock_writer, silence))
    downward = asyncio.ensure_future(_pump(sock_reader, sys.stdout.fileno()))
    keeping = asyncio.ensure_future(_keep_alive(sock_writer, silence, keepalive)) \
        if keepalive > 0 else None
    done, pending = await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
    if keeping is not None:
        # The client's input ended or the gateway hung up: nothing more to keep.
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
    failed: list[BaseException | str] = [
        task.exception() for task in done if task.exception() is not None]  # type: ignore[misc]
    if upward in done and not failed:
        # stdin closed: the gateway answers what is in flight, however long that takes
        # (each call ends by its request_timeout at most), then hangs up.
        if sock_writer.can_write_eof():
            sock_writer.write_eof()
        try:
            await downward
        except OSError as exc:
            failed.append(exc)
        pending.discard(downward)
    elif not failed:
        # The gateway hung up while the client still talks (it shut down, or closed
        # this session): the client has lost its server.
        failed.append("the gateway closed the connection")
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    sock_writer.close()
    if failed:
        # The client stopped reading its stdout (a broken pipe), or the socket failed:
        # said in a line, not a traceback, and by the exit status.
        error = failed[0]
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        print(f"mcpfast connect: relaying stopped: {reason}", file=sys.stderr)
        return 1
    return 0
