"""A stdio MCP server served over a socket, for the gateway's remote upstream kinds:
every connection gets its own server process, and its messages are carried both ways.

    python socket_server.py --unix PATH -- COMMAND...
    python socket_server.py --ws PORT [--cert FILE --key FILE] [--require NAME=VALUE]
                            [--subprotocol mcp|none|other] -- COMMAND...

``--unix``: newline-delimited JSON on a unix socket. ``--ws``: a WebSocket server, the
``websockets`` library's (an implementation independent of the gateway's), one JSON-RPC
message per text message; ``--require`` refuses (401) a handshake without that header;
``--subprotocol`` chooses what the server answers to the ``mcp`` the client offers.
Prints ``ready`` on stdout once it listens, and each handshake's headers (as a JSON
line ``{"headers": {...}}``) as it accepts one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


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


async def serve_unix(path: str, command: list[str]) -> None:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        process = await start_server(command)
        assert process.stdin is not None and process.stdout is not None
        stdin, stdout = process.stdin, process.stdout

        async def to_server() -> None:
            while data := await reader.read(65536):
                stdin.write(data)
                await stdin.drain()

        async def to_client() -> None:
            while data := await stdout.read(65536):
                writer.write(data)
                await writer.drain()
        tasks = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await stop_server(process)
        writer.close()

    server = await asyncio.start_unix_server(connection, path, limit=64 * 1024 * 1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def serve_ws(port: int, command: list[str], tls: ssl.SSLContext | None,
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
        process = await start_server(command)
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
        tasks = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await stop_server(process)
        await ws.close()

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
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    command = [sys.executable if args.command[0] == "python" else args.command[0],
               *args.command[1:]]
    if args.unix:
        asyncio.run(serve_unix(args.unix, command))
        return
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    require = tuple(args.require.split("=", 1)) if args.require else None
    asyncio.run(serve_ws(args.ws, command, tls, require, args.subprotocol))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
