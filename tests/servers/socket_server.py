"""A stdio MCP server served over a socket, for the gateway's remote upstream kinds:
every connection gets its own server process (or shares one: ``--persistent``), and
its messages are carried both ways.

    python socket_server.py --unix PATH [--persistent] -- COMMAND...
    python socket_server.py --ws PORT [--cert FILE --key FILE] [--require NAME=VALUE]
                            [--subprotocol mcp|none|other] [--persistent] -- COMMAND...

``--unix``: newline-delimited JSON on a unix socket. ``--ws``: a WebSocket server, the
``websockets`` library's (an implementation independent of the gateway's), one JSON-RPC
message per text message; ``--require`` refuses (401) a handshake without that header;
``--subprotocol`` chooses what the server answers to the ``mcp`` the client offers.
Prints ``ready`` on stdout once it listens, and each handshake's headers (as a JSON
line ``{"headers": {...}}``) as it accepts one.

``--persistent`` serves every connection with the same server process (started, and
answering a ping, before it listens), one connection at a time, as a server that runs
all the time would: a reconnection is then timed without a server's start-up (the
process answers the next connection what the last one asked, which that client
ignores). SIGUSR1 closes every connection (the server's side, without a closing
handshake) while calls are in flight, and the server goes on listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


class Servers:
    """Where each connection gets its server process: one of its own, started as it
    comes and stopped as it goes, or (``persistent``) the same one for every
    connection, one connection at a time."""

    def __init__(self, command: list[str], persistent: bool) -> None:
        self.command = command
        self.persistent = persistent
        self.process: asyncio.subprocess.Process | None = None
        self.turn = asyncio.Lock()
        self.connections: set[asyncio.WriteTransport] = set()
        """Open connections' transports (what SIGUSR1 closes)."""

    async def prepare(self) -> None:
        """Before it listens: the persistent process answering, SIGUSR1 handled."""
        if self.persistent:
            self.process = await start_server(self.command)
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(b'{"jsonrpc":"2.0","id":"started","method":"ping"}\n')
            await self.process.stdout.readline()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.cut)

    @contextlib.asynccontextmanager
    async def serving(self, transport: asyncio.WriteTransport
                      ) -> AsyncIterator[asyncio.subprocess.Process]:
        """The server process of the connection on ``transport``, while it lasts."""
        self.connections.add(transport)
        try:
            if not self.persistent:
                process = await start_server(self.command)
                try:
                    yield process
                finally:
                    await stop_server(process)
                return
            async with self.turn:
                if self.process is None or self.process.returncode is not None:
                    self.process = await start_server(self.command)
                yield self.process
        finally:
            self.connections.discard(transport)

    def cut(self) -> None:
        for transport in list(self.connections):
            transport.abort()


async def start_server(command: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024)


async def stop_server(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


async def pump(*directions: Awaitable[None]) -> None:
    """Carry messages both ways until one way ends; then stop the other."""
    tasks = [asyncio.ensure_future(direction) for direction in directions]
    with contextlib.suppress(Exception):
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def serve_unix(path: str, servers: Servers) -> None:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with servers.serving(writer.transport) as process:
            assert process.stdin is not None and process.stdout is not None
            stdin, stdout = process.stdin, process.stdout

            # Line by line: a persistent server's next connection starts on a message.
            async def to_server() -> None:
                while line := await reader.readline():
                    stdin.write(line)
                    await stdin.drain()

            async def to_client() -> None:
                while line := await stdout.readline():
                    writer.write(line)
                    await writer.drain()
            await pump(to_server(), to_client())
        writer.close()

    await servers.prepare()
    server = await asyncio.start_unix_server(connection, path, limit=64 * 1024 * 1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def serve_ws(port: int, servers: Servers, tls: ssl.SSLContext | None,
                   require: tuple[str, str] | None, subprotocol: str) -> None:
    def check(connection: ServerConnection, request: Request) -> Response | None:
        print(json.dumps({"headers": dict(request.headers.raw_items())}), flush=True)
        if require is not None and request.headers.get(require[0]) != require[1]:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "who are you?\n")
        return None

    def choose(connection: ServerConnection, offered: list[Any]) -> Any:
        if subprotocol == "none":
            return None
        return subprotocol if subprotocol != "mcp" or "mcp" in offered else None

    async def connection(ws: ServerConnection) -> None:
        async with servers.serving(ws.transport) as process:
            assert process.stdin is not None and process.stdout is not None
            stdin, stdout = process.stdin, process.stdout

            async def to_server() -> None:
                async for message in ws:
                    stdin.write((message if isinstance(message, bytes) else message.encode())
                                + b"\n")
                    await stdin.drain()

            async def to_client() -> None:
                while line := await stdout.readline():
                    if line.strip():
                        await ws.send(line.rstrip(b"\r\n").decode())
            await pump(to_server(), to_client())
        await ws.close()

    await servers.prepare()
    async with serve(connection, "127.0.0.1", port, ssl=tls, process_request=check,
                     select_subprotocol=choose, max_size=64 * 1024 * 1024,
                     ping_interval=None) as server:
        print("ready", flush=True)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unix")
    parser.add_argument("--ws", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--require")
    parser.add_argument("--subprotocol", default="mcp")
    parser.add_argument("--persistent", action="store_true")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    command = [sys.executable if args.command[0] == "python" else args.command[0],
               *args.command[1:]]
    if args.unix:
        asyncio.run(serve_unix(args.unix, Servers(command, args.persistent)))
        return
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    require = tuple(args.require.split("=", 1)) if args.require else None
    asyncio.run(serve_ws(args.ws, Servers(command, args.persistent), tls, require,  # type: ignore[arg-type]
                         args.subprotocol))


if __name__ == "__main__":
    main()
