"""The demo MCP server bundled with mcpfast.

mcpfast's default configuration fronts this server, so the gateway has something to
serve the moment it is installed. It is also a complete legacy-era MCP server small
enough to read in one sitting:

- transport: stdio, newline-delimited JSON-RPC 2.0 on stdin/stdout, logs on stderr;
- protocol versions 2024-11-05, 2025-03-26, 2025-06-18 and 2025-11-25;
- tools ``echo``, ``add``, ``utc_now``, ``word_count`` and ``countdown`` (progress each
  second, stopped by ``notifications/cancelled``);
- the prompt ``summarize``; the resource ``mcpfast://demo/about`` and the resource
  template ``mcpfast://demo/greeting/{name}``;
- argument completion, ``ping`` and ``logging/setLevel``.

Run it with ``python -m mcpfast.demo``. It needs asyncio and msgspec only, because the
``mcp`` SDK is a test dependency of mcpfast, not a runtime one.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeGuard
from urllib.parse import unquote

import msgspec

from mcpfast import __version__

log = logging.getLogger("mcpfast.demo")

SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
RESOURCE_NOT_FOUND = -32002  # legacy-era code; 2026-07-28 folds it into -32602

# RFC 5424 severities, least to most severe: logging/setLevel admits a level and above.
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

MAX_LINE_BYTES = 16 * 1024 * 1024
# After stdin closes, requests already in flight get this long to answer before they
# are cancelled: `echo '…' | python -m mcpfast.demo` still prints its answers, while a
# client that closes stdin to shut us down sees an exit well inside its 2 s grace.
SHUTDOWN_GRACE_SECONDS = 1.0

ABOUT_URI = "mcpfast://demo/about"
GREETING_TEMPLATE = "mcpfast://demo/greeting/{name}"
GREETING_PREFIX = "mcpfast://demo/greeting/"
GREETING_NAMES = ("Ada", "Alan", "Barbara", "Edsger", "Grace", "Ken", "Linus", "Margaret")
SUMMARY_STYLES = ("brief", "detailed")

ABOUT_TEXT = """\
# mcpfast

mcpfast is a high-performance gateway for the Model Context Protocol. It fronts one or
more MCP servers (stdio subprocesses or remote endpoints) and serves them to clients over
Streamable HTTP, WebSocket or a Unix socket, speaking both the legacy (initialize-based)
and the modern (stateless) protocol eras.

You are reading a resource of the demo server that mcpfast's default configuration runs,
so a fresh install has something to talk to. Replace it with your own upstreams in the
config file.
"""


def _tool(
    name: str, title: str, description: str, inputs: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    schema = {"type": "object", "properties": inputs, "required": list(inputs)}
    return {
        "name": name,
        "title": title,
        "description": description,
        "inputSchema": schema,
        **extra,
    }


def _output(**properties: str) -> dict[str, Any]:
    types = {name: {"type": kind} for name, kind in properties.items()}
    return {"type": "object", "properties": types, "required": list(properties)}


TOOLS: list[dict[str, Any]] = [
    _tool(
        "echo",
        "Echo",
        "Return the given text unchanged.",
        {"text": {"type": "string", "description": "The text to send back."}},
    ),
    _tool(
        "add",
        "Add two numbers",
        "Add a and b and return their sum.",
        {"a": {"type": "number"}, "b": {"type": "number"}},
        outputSchema=_output(sum="number"),
    ),
    _tool(
        "utc_now",
        "Current UTC time",
        "Return the current time in UTC as an ISO-8601 timestamp.",
        {},
    ),
    _tool(
        "word_count",
        "Count words",
        "Count the words, lines and characters of a text.",
        {"text": {"type": "string", "description": "The text to count."}},
        outputSchema=_output(words="integer", lines="integer", characters="integer"),
    ),
    _tool(
        "countdown",
        "Countdown",
        "Count down n seconds, reporting progress each second when the request carries a "
        "progress token, then return 'liftoff'. Cancellable.",
        {"n": {"type": "integer", "minimum": 1, "maximum": 30, "description": "Seconds, 1 to 30."}},
    ),
]

PROMPTS: list[dict[str, Any]] = [
    {
        "name": "summarize",
        "title": "Summarize text",
        "description": "Ask the model to summarize a text, briefly or in detail.",
        "arguments": [
            {"name": "text", "description": "The text to summarize.", "required": True},
            {"name": "style", "description": '"brief" (default) or "detailed".', "required": False},
        ],
    },
]

RESOURCES: list[dict[str, Any]] = [
    {
        "uri": ABOUT_URI,
        "name": "about",
        "title": "About mcpfast",
        "description": "What mcpfast is and why this demo server exists.",
        "mimeType": "text/markdown",
    },
]

CLOCK_URI = "mcpfast://demo/clock"
CLOCK_RESOURCE = {
    "uri": CLOCK_URI,
    "name": "clock",
    "title": "Clock",
    "description": "The current UTC time; subscribe to be told each second that it changed.",
    "mimeType": "text/plain",
}
RESOURCES.append(CLOCK_RESOURCE)
CLOCK_INTERVAL = 1.0

RESOURCE_TEMPLATES: list[dict[str, Any]] = [
    {
        "uriTemplate": GREETING_TEMPLATE,
        "name": "greeting",
        "title": "Greeting",
        "description": "A greeting for the given name.",
        "mimeType": "text/plain",
    },
]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_UNREADABLE = object()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_leniently(line: bytes) -> Any:
    """A message msgspec refuses although it is JSON: a number beyond a double's range
    (1e400), which RFC 8259 section 6 allows and a client may send. Read as Python's
    own reader does (an infinite float) rather than answered as unreadable, which would
    leave the caller's request without an answer it can match. NaN and Infinity, which
    JSON has not, stay unreadable."""
    try:
        return json.loads(line, parse_constant=_refuse_constant)
    except ValueError:  # (json.JSONDecodeError and UnicodeDecodeError are ValueErrors)
        return _UNREADABLE


class RpcError(Exception):
    """A failure that becomes a JSON-RPC error response."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ToolArgumentError(Exception):
    """Bad tool arguments. The spec reports these as a result with ``isError`` rather than a
    protocol error, so that the model sees the message and can correct its call."""


@dataclass(frozen=True, slots=True)
class Request:
    id: int | str
    progress_token: int | str | None


Handler = Callable[[dict[str, Any], Request], Awaitable[dict[str, Any]]]
Send = Callable[[bytes], Awaitable[None]]


def _is_id(value: object) -> TypeGuard[int | str]:
    # MCP narrows JSON-RPC ids to strings and integers; null is not allowed.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _string(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise ToolArgumentError(f"argument '{key}' must be a string")
    return value


def _number(args: dict[str, Any], key: str) -> int | float:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolArgumentError(f"argument '{key}' must be a number")
    return value


def _integer(args: dict[str, Any], key: str, low: int, high: int) -> int:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ToolArgumentError(f"argument '{key}' must be an integer from {low} to {high}")
    return value


class DemoServer:
    """One MCP session over a pair of byte streams; each request runs as its own task."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._log_level = "info"
        self._inflight: dict[int | str, asyncio.Task[None]] = {}
        self._clock: asyncio.Task[None] | None = None
        self._methods: dict[str, Handler] = {
            "initialize": self._initialize,
            "ping": self._ping,
            "logging/setLevel": self._set_level,
            "tools/list": self._list_tools,
            "tools/call": self._call_tool,
            "prompts/list": self._list_prompts,
            "prompts/get": self._get_prompt,
            "resources/list": self._list_resources,
            "resources/templates/list": self._list_templates,
            "resources/read": self._read_resource,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "completion/complete": self._complete,
        }
        self._tools: dict[str, Handler] = {
            "echo": self._echo,
            "add": self._add,
            "utc_now": self._utc_now,
            "word_count": self._word_count,
            "countdown": self._countdown,
        }

    async def serve(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than MAX_LINE_BYTES; the reader has dropped it
                await self._reply_error(None, RpcError(PARSE_ERROR, "Parse error: line too long"))
                continue
            if not line:
                break
            await self.receive(line)
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=SHUTDOWN_GRACE_SECONDS)
        tasks = list(self._inflight.values())
        if self._clock is not None:
            tasks.append(self._clock)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def receive(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            message = _read_leniently(line) if "out of range" in str(exc) else _UNREADABLE
            if message is _UNREADABLE:
                await self._reply_error(None, RpcError(PARSE_ERROR, "Parse error: invalid JSON"))
                return
        if not isinstance(message, dict):
            # Batches (JSON arrays) existed only in 2025-03-26; this server takes single messages.
            await self._reply_error(
                None, RpcError(INVALID_REQUEST, "Invalid request: not an object")
            )
            return
        msg_id = message.get("id")
        method = message.get("method")
        params = message.get("params", {})
        if method is None and ("result" in message or "error" in message):
            return  # a response, but this server never sends requests
        if message.get("jsonrpc") != "2.0" or not isinstance(method, str):
            await self._reply_error(
                msg_id if _is_id(msg_id) else None, RpcError(INVALID_REQUEST, "Invalid request")
            )
            return
        if "id" not in message:
            if isinstance(params, dict):
                self._on_notification(method, params)
            return
        if not _is_id(msg_id):
            await self._reply_error(
                None,
                RpcError(INVALID_REQUEST, "Invalid request: id must be a string or an integer"),
            )
            return
        if not isinstance(params, dict):
            await self._reply_error(
                msg_id, RpcError(INVALID_REQUEST, "Invalid request: params must be an object")
            )
            return
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        request = Request(msg_id, token if _is_id(token) else None)
        self._inflight[msg_id] = asyncio.create_task(self._answer(request, method, params))

    def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/cancelled":
            request_id = params.get("requestId")
            task = self._inflight.get(request_id) if _is_id(request_id) else None
            if task is not None:
                log.info("request %r cancelled by the client", request_id)
                task.cancel()
        # notifications/initialized, progress and roots/list_changed need no action here.

    async def _answer(self, request: Request, method: str, params: dict[str, Any]) -> None:
        try:
            handler = self._methods.get(method)
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
            result = await handler(params, request)
        except asyncio.CancelledError:
            # A cancelled request gets no response at all (spec: utilities/cancellation).
            raise
        except RpcError as exc:
            await self._reply_error(request.id, exc)
        except Exception:
            log.exception("%s failed", method)
            await self._reply_error(request.id, RpcError(INTERNAL_ERROR, "Internal error"))
        else:
            await self._write({"jsonrpc": "2.0", "id": request.id, "result": result})
        finally:
            self._inflight.pop(request.id, None)

    async def _write(self, message: dict[str, Any]) -> None:
        try:
            await self._send(_encoder.encode(message) + b"\n")
        except ConnectionError:
            log.info("stdout closed; dropping %s", message.get("method") or "a response")

    async def _reply_error(self, msg_id: int | str | None, error: RpcError) -> None:
        await self._write({"jsonrpc": "2.0", "id": msg_id, "error": error.to_json()})

    async def _notify(self, method: str, params: dict[str, Any]) -> None:
        await self._write({"jsonrpc": "2.0", "method": method, "params": params})

    async def _log(self, level: str, logger: str, data: Any) -> None:
        if LOG_LEVELS.index(level) >= LOG_LEVELS.index(self._log_level):
            await self._notify(
                "notifications/message", {"level": level, "logger": logger, "data": data}
            )

    # Lifecycle and utilities

    async def _initialize(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        requested = params.get("protocolVersion")
        version = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
        return {
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": False},
                "prompts": {"listChanged": False},
                "resources": {"subscribe": True, "listChanged": False},
                "logging": {},
                "completions": {},
            },
            "serverInfo": {
                "name": "mcpfast-demo",
                "title": "mcpfast demo server",
                "version": __version__,
            },
            "instructions": "A demo server bundled with mcpfast. Try the countdown tool with "
            "a progress token, or read mcpfast://demo/about.",
        }

    async def _ping(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        return {}

    async def _set_level(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        level = params.get("level")
        if level not in LOG_LEVELS:
            raise RpcError(INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}")
        self._log_level = level
        return {}

    # Tools

    async def _list_tools(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        return {"tools": TOOLS}

    async def _call_tool(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        name = params.get("name")
        tool = self._tools.get(name) if isinstance(name, str) else None
        if tool is None:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        elif not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "arguments must be an object")
        try:
            return await tool(arguments, request)
        except ToolArgumentError as exc:
            return {"content": [_text(str(exc))], "isError": True}

    async def _echo(self, args: dict[str, Any], request: Request) -> dict[str, Any]:
        return {"content": [_text(_string(args, "text"))]}

    async def _add(self, args: dict[str, Any], request: Request) -> dict[str, Any]:
        total = _number(args, "a") + _number(args, "b")
        return {"content": [_text(str(total))], "structuredContent": {"sum": total}}

    async def _utc_now(self, args: dict[str, Any], request: Request) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return {"content": [_text(now)]}

    async def _word_count(self, args: dict[str, Any], request: Request) -> dict[str, Any]:
        text = _string(args, "text")
        counts = {
            "words": len(text.split()),
            "lines": len(text.splitlines()),
            "characters": len(text),
        }
        summary = f"{counts['words']} words, {counts['lines']} lines, {counts['characters']} chars"
        return {"content": [_text(summary)], "structuredContent": counts}

    async def _countdown(self, args: dict[str, Any], request: Request) -> dict[str, Any]:
        n = _integer(args, "n", 1, 30)
        await self._log("info", "countdown", "countdown started")
        for elapsed in range(1, n + 1):
            await asyncio.sleep(1)
            if request.progress_token is not None:
                await self._notify(
                    "notifications/progress",
                    {
                        "progressToken": request.progress_token,
                        "progress": elapsed,
                        "total": n,
                        "message": f"T-{n - elapsed}",
                    },
                )
        return {"content": [_text("liftoff")]}

    # Prompts

    async def _list_prompts(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        return {"prompts": PROMPTS}

    async def _get_prompt(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        name = params.get("name")
        if name != "summarize":
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name}")
        arguments = params.get("arguments") or {}
        text = arguments.get("text") if isinstance(arguments, dict) else None
        if not isinstance(text, str) or not text:
            raise RpcError(INVALID_PARAMS, "Missing required argument: text")
        style = arguments.get("style") or "brief"
        if style not in SUMMARY_STYLES:
            raise RpcError(INVALID_PARAMS, 'style must be "brief" or "detailed"')
        instruction = (
            "Summarize the following text in one or two sentences."
            if style == "brief"
            else "Summarize the following text in detail: list its key points, then give a "
            "one-paragraph overview."
        )
        return {
            "description": f"A {style} summary",
            "messages": [{"role": "user", "content": _text(f"{instruction}\n\n{text}")}],
        }

    # Resources

    async def _list_resources(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        return {"resources": RESOURCES}

    async def _list_templates(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        return {"resourceTemplates": RESOURCE_TEMPLATES}

    async def _read_resource(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise RpcError(INVALID_PARAMS, "uri must be a string")
        if uri == ABOUT_URI:
            return {"contents": [{"uri": uri, "mimeType": "text/markdown", "text": ABOUT_TEXT}]}
        if uri == CLOCK_URI:
            now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": now}]}
        segment = uri.removeprefix(GREETING_PREFIX)
        if uri.startswith(GREETING_PREFIX) and segment and "/" not in segment:
            greeting = f"Hello, {unquote(segment)}! Greetings from the mcpfast demo server."
            return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": greeting}]}
        raise RpcError(RESOURCE_NOT_FOUND, "Resource not found", {"uri": uri})

    async def _subscribe(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        if params.get("uri") != CLOCK_URI:
            raise RpcError(INVALID_PARAMS, f"only {CLOCK_URI} can be subscribed to")
        if self._clock is None:
            self._clock = asyncio.ensure_future(self._tick())
        return {}

    async def _unsubscribe(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        if params.get("uri") == CLOCK_URI and self._clock is not None:
            self._clock.cancel()
            self._clock = None
        return {}

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_INTERVAL)
            await self._notify("notifications/resources/updated", {"uri": CLOCK_URI})

    # Completion

    async def _complete(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        ref, argument = params.get("ref"), params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict):
            raise RpcError(INVALID_PARAMS, "ref and argument must be objects")
        value = argument.get("value")
        prefix = value.lower() if isinstance(value, str) else ""
        candidates: tuple[str, ...]
        if ref.get("type") == "ref/prompt" and ref.get("name") == "summarize":
            candidates = SUMMARY_STYLES if argument.get("name") == "style" else ()
        elif ref.get("type") == "ref/resource" and ref.get("uri") == GREETING_TEMPLATE:
            candidates = GREETING_NAMES if argument.get("name") == "name" else ()
        else:
            raise RpcError(INVALID_PARAMS, "Unknown prompt or resource template")
        values = [c for c in candidates if c.lower().startswith(prefix)]
        return {"completion": {"values": values, "total": len(values), "hasMore": False}}


def _is_streaming(stream: TextIO) -> bool:
    # The event loop can watch pipes, sockets and terminals; regular files and /dev/null
    # cannot be polled (epoll refuses them), so those take plain blocking I/O instead.
    mode = os.fstat(stream.fileno()).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stream.isatty()


async def _connect_stdio() -> tuple[asyncio.StreamReader, Send]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    if _is_streaming(sys.stdin):
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    else:  # `< requests.jsonl` is finite: read it whole
        reader.feed_data(sys.stdin.buffer.read())
        reader.feed_eof()
    if not _is_streaming(sys.stdout):

        async def send_to_file(data: bytes) -> None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

        return reader, send_to_file
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    return reader, send


async def serve_stdio() -> None:
    """Serve one MCP session on stdin/stdout until stdin closes."""
    reader, send = await _connect_stdio()
    log.info("mcpfast demo server %s ready on stdio", __version__)
    await DemoServer(send).serve(reader)
    log.info("stdin closed; exiting")


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s mcpfast.demo %(levelname)s %(message)s",
    )
    try:
        asyncio.run(serve_stdio())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
