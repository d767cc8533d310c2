"""A fast upstream MCP server for the benchmarks: its tool ``echo`` returns its arguments.

One sans-I/O core (``EchoCore``: bytes of one message in, bytes of the reply out) behind
four transports, so every target measures the same server:

  --stdio            newline-delimited JSON on stdin/stdout (mcpfast's upstream)
  --unix PATH        newline-delimited JSON on a unix socket
  --ws HOST:PORT     WebSocket via picows, subprotocol ``mcp`` (``direct`` and ``nginx``)
  --http HOST:PORT   Streamable HTTP, POST /mcp answered as JSON (``direct-http`` and
                     ``nginx-http``); stateless: it issues no ``Mcp-Session-Id``

The socket modes print one JSON line ``{"ready": ..., "port": ...}`` once listening. The
file runs as a script (the gateway starts it by path), so it imports nothing from bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import stat
import sys
from typing import Any

import httptools
import msgspec
import uvloop
from msgspec import UNSET, Raw, UnsetType

SERVER_INFO = {"name": "mcpfast-bench-echo", "version": "1"}
TOOLS_RESULT = msgspec.json.encode({"tools": [{
    "name": "echo",
    "description": "Returns its arguments, as JSON text.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
}]})
DEFAULT_PROTOCOL_VERSION = "2025-06-18"


class Message(msgspec.Struct, gc=False):
    id: Raw | UnsetType = UNSET
    method: str | UnsetType = UNSET
    params: Raw | UnsetType = UNSET


class CallParams(msgspec.Struct, gc=False):
    name: str = ""
    arguments: Raw | UnsetType = UNSET


class InitParams(msgspec.Struct, gc=False):
    protocolVersion: str = DEFAULT_PROTOCOL_VERSION  # noqa: N815 - the wire name


_message = msgspec.json.Decoder(Message)
_call_params = msgspec.json.Decoder(CallParams)
_init_params = msgspec.json.Decoder(InitParams)
_encode = msgspec.json.Encoder().encode

# The hot path splices raw bytes into these instead of building and encoding a dict.
_RESULT_HEAD = b'{"jsonrpc":"2.0","id":'
_CALL_MIDDLE = b',"result":{"content":[{"type":"text","text":'
_CALL_TAIL = b'}]}}'


class EchoCore:
    """One JSON-RPC message in, the reply out (``None`` for notifications and responses)."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def handle(self, data: bytes | memoryview) -> bytes | None:
        try:
            msg = _message.decode(data)
        except msgspec.DecodeError:
            return b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}'
        request_id = msg.id
        if request_id is UNSET or msg.method is UNSET:
            return None
        method = msg.method
        if method == "tools/call":
            self.calls += 1
            params = _call_params.decode(msg.params) if msg.params is not UNSET else CallParams()
            if params.name != "echo":
                return self._error(request_id, -32602, f"unknown tool {params.name!r}")
            arguments = bytes(params.arguments) if params.arguments is not UNSET else b"{}"
            return b"".join((_RESULT_HEAD, bytes(request_id), _CALL_MIDDLE,
                             _encode(arguments.decode()), _CALL_TAIL))
        if method == "initialize":
            version = (_init_params.decode(msg.params).protocolVersion
                       if msg.params is not UNSET else DEFAULT_PROTOCOL_VERSION)
            return self._result(request_id, _encode({
                "protocolVersion": version, "capabilities": {"tools": {}},
                "serverInfo": SERVER_INFO}))
        if method == "tools/list":
            return self._result(request_id, TOOLS_RESULT)
        if method == "ping":
            return self._result(request_id, b"{}")
        return self._error(request_id, -32601, f"method not found: {method}")

    @staticmethod
    def _result(request_id: Raw, result: bytes) -> bytes:
        return b"".join((_RESULT_HEAD, bytes(request_id), b',"result":', result, b"}"))

    @staticmethod
    def _error(request_id: Raw, code: int, message: str) -> bytes:
        error = _encode({"code": code, "message": message})
        return b"".join((_RESULT_HEAD, bytes(request_id), b',"error":', error, b"}"))


class NdjsonServerProtocol(asyncio.Protocol):
    """Newline-delimited JSON; all replies to one read go out in one write."""

    def __init__(self, core: EchoCore, on_lost: asyncio.Future[None] | None = None,
                 writer: Any = None) -> None:
        self.core = core
        self.on_lost = on_lost
        self.writer = writer
        self.tail = b""

    def connection_made(self, transport: Any) -> None:
        if self.writer is None:  # on stdio the read and write pipes are two transports
            self.writer = transport

    def data_received(self, data: bytes) -> None:
        if self.tail:
            data = self.tail + data
        lines = data.split(b"\n")
        self.tail = lines.pop()
        handle = self.core.handle
        replies = [reply for line in lines if line and (reply := handle(line)) is not None]
        if replies:
            replies.append(b"")
            self.writer.write(b"\n".join(replies))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_lost is not None and not self.on_lost.done():
            self.on_lost.set_result(None)


class _StdoutProtocol(asyncio.Protocol):
    def connection_lost(self, exc: Exception | None) -> None:
        os._exit(0)


async def serve_stdio(core: EchoCore) -> None:
    loop = asyncio.get_running_loop()
    # The pipe transports do not own these file objects; were they collected, their
    # finalizers would close fds 0 and 1 under the loop.
    stdin, stdout = os.fdopen(0, "rb", buffering=0), os.fdopen(1, "wb", buffering=0)
    writer: Any = stdout  # a regular file (a shell redirect) takes blocking writes
    mode = os.fstat(1).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode):
        writer, _ = await loop.connect_write_pipe(_StdoutProtocol, stdout)
    done: asyncio.Future[None] = loop.create_future()
    protocol = NdjsonServerProtocol(core, done, writer)
    await loop.connect_read_pipe(lambda: protocol, stdin)
    await done
    del stdin, stdout


async def serve_unix(core: EchoCore, path: str) -> None:
    loop = asyncio.get_running_loop()
    if os.path.exists(path):
        os.unlink(path)
    server = await loop.create_unix_server(lambda: NdjsonServerProtocol(core), path,
                                           backlog=4096)
    _announce({"ready": "unix", "path": path})
    await _until_signalled()
    server.close()
    os.unlink(path)


async def serve_websocket(core: EchoCore, host: str, port: int) -> None:
    from picows import (
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        WSUpgradeResponse,
        WSUpgradeResponseWithListener,
        ws_create_server,
    )

    text = WSMsgType.TEXT
    close = WSMsgType.CLOSE
    handle = core.handle

    class EchoListener(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is text:
                reply = handle(frame.get_payload_as_memoryview())
                if reply is not None:
                    transport.send(text, reply)
            elif kind is close:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    def accept(request: WSUpgradeRequest) -> Any:
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        if "mcp" in (token.strip() for token in offered.split(",")):
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(
                extra_headers={"Sec-WebSocket-Protocol": "mcp"}), EchoListener())
        return EchoListener()

    server = await ws_create_server(accept, host, port, backlog=4096,
                                    read_buffer_init_size=4096,
                                    websocket_handshake_timeout=30)
    bound = server.sockets[0].getsockname()[1]
    _announce({"ready": "ws", "host": host, "port": bound})
    await _until_signalled()
    server.close()


_HTTP_JSON = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%b")
_HTTP_ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
_HTTP_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_HTTP_BAD_METHOD = b"HTTP/1.1 405 Method Not Allowed\r\nAllow: POST\r\nContent-Length: 0\r\n\r\n"
_HTTP_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class HttpServerProtocol(asyncio.Protocol):
    """Streamable HTTP reduced to what the benchmark sends: one JSON-RPC message per POST,
    the reply as ``application/json`` with Content-Length, 202 for notifications,
    keep-alive. httptools (llhttp) parses; only the callbacks defined here are called, so
    a request costs three Python calls besides the core's."""

    def __init__(self, core: EchoCore) -> None:
        self.core = core
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.keep_alive = True
        self.url = b""
        self.body = b""
        self.replies: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.replies.append(_HTTP_BAD_REQUEST)
            self.keep_alive = False
        replies = self.replies
        if replies:
            self.transport.write(replies[0] if len(replies) == 1 else b"".join(replies))
            replies.clear()
        if not self.keep_alive:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body = body if not self.body else self.body + body

    def on_message_complete(self) -> None:
        url, body = self.url, self.body
        self.url = self.body = b""
        if not self.parser.should_keep_alive():
            self.keep_alive = False
        if url != b"/mcp" and not url.startswith(b"/mcp?"):
            self.replies.append(_HTTP_NOT_FOUND)
        elif self.parser.get_method() != b"POST":
            self.replies.append(_HTTP_BAD_METHOD)
        else:
            reply = self.core.handle(body)
            self.replies.append(_HTTP_ACCEPTED if reply is None
                                else _HTTP_JSON % (len(reply), reply))


async def serve_http(core: EchoCore, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpServerProtocol(core), host, port,
                                      backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    _announce({"ready": "http", "host": host, "port": bound})
    await _until_signalled()
    server.close()


def _announce(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stdio", action="store_true")
    mode.add_argument("--unix", metavar="PATH")
    mode.add_argument("--ws", metavar="HOST:PORT")
    mode.add_argument("--http", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    core = EchoCore()
    if args.stdio:
        uvloop.run(serve_stdio(core))
    elif args.unix:
        uvloop.run(serve_unix(core, args.unix))
    else:
        host, _, port = (args.ws or args.http).rpartition(":")
        serve = serve_websocket if args.ws else serve_http
        uvloop.run(serve(core, host or "127.0.0.1", int(port)))


if __name__ == "__main__":
    main()
