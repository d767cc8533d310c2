"""A real upstream MCP server, written with the official Python SDK, for integration tests.

Run it over stdio: ``python tests/servers/sdk_server.py [--name NAME]``, or over
Streamable HTTP with ``--http PORT`` (``--json-response``: JSON bodies, not SSE streams),
or the HTTP+SSE transport of 2024-11-05 with ``--sse PORT``.
``--name`` (default ``sdk``) becomes the server's name and the answer of ``whoami``, so
two instances can be told apart behind the gateway. If ``SDK_SERVER_TOOL_PREFIX`` is set
(say ``b_``), every tool name starts with it, so two instances can also expose
non-colliding tools.

Tools: ``echo``, ``add``, ``slow``, ``progress``, ``log``, ``crash`` (the process dies with
exit code 3), ``whoami``, ``sample`` (a server->client ``sampling/createMessage``), ``fail``
(an ``isError`` result), ``grow`` (adds a tool and sends ``tools/list_changed``).
Prompt ``greet``; resource ``test://static``; template
``test://item/{id}``; completion for ``greet``'s ``name``.

``MCPServer`` serves both protocol eras: a client that sends ``initialize`` gets a legacy
session, one that probes ``server/discover`` gets 2026-07-28.

SIGUSR1 cuts the server's side of every connection while it keeps running (a fault the
fault-injection tests make): over stdio its stdout is closed (pointed at /dev/null, so
that what it still writes goes nowhere), over HTTP every accepted connection is shut
down, streams in the middle of a response included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import warnings
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageResult,
    LoggingLevel,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    TextContent,
)

# Logging and sampling are deprecated by 2026-07-28 (SEP-2577) but are what these tests
# exercise on legacy sessions; the warnings would only clutter the server's stderr.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

GREET_NAMES = ("Alice", "Alfred", "Bob", "Carol")


def _ask_model(prompt: str) -> Sample:
    # A resolver rather than a direct ctx.session.create_message(): on a legacy session the
    # SDK sends a standalone sampling/createMessage mid-call, and on a 2026-07-28 one it
    # returns an input_required result, so the tool works in both eras.
    return Sample(
        [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=100,
    )


def build_server(name: str, prefix: str = "") -> MCPServer:
    server = MCPServer(name=name, version="1.0.0", log_level="WARNING")

    @server.tool(name=f"{prefix}echo", description="Return the text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(name=f"{prefix}add", description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(name=f"{prefix}slow", description="Sleep for the given seconds, then answer.")
    async def slow(seconds: float) -> str:
        await anyio.sleep(seconds)
        return f"done after {seconds}s"

    @server.tool(name=f"{prefix}progress", description="Report `steps` progress steps.")
    async def progress(steps: int, ctx: Context) -> str:
        for step in range(1, steps + 1):
            await anyio.sleep(0.05)
            await ctx.report_progress(step, steps, f"step {step}/{steps}")
        return f"completed {steps} steps"

    @server.tool(name=f"{prefix}log", description="Send a log notification to the client.")
    async def log(message: str, ctx: Context, level: LoggingLevel = "info") -> str:
        await ctx.log(level, message, logger_name=name)
        return "logged"

    @server.tool(name=f"{prefix}crash", description="Kill this server process (exit code 3).")
    def crash() -> str:
        os._exit(3)

    @server.tool(name=f"{prefix}whoami", description="Return this server's --name.")
    def whoami() -> str:
        return name

    @server.tool(name=f"{prefix}sample", description="Ask the client's model to answer a prompt.")
    async def sample(
        prompt: str, reply: Annotated[CreateMessageResult, Resolve(_ask_model)]
    ) -> str:
        content = reply.content
        return content.text if isinstance(content, TextContent) else str(content)

    @server.tool(name=f"{prefix}fail", description="Always fail with an isError result.")
    def fail() -> str:
        raise ToolError("this tool always fails")

    @server.tool(name=f"{prefix}grow", description="Add a tool named `tool_name` that echoes, "
                 "and announce the change with notifications/tools/list_changed.")
    async def grow(tool_name: str, ctx: Context) -> str:
        def grown(text: str) -> str:
            return f"{tool_name}: {text}"

        server.add_tool(grown, name=tool_name, description="Added at run time by grow.")
        # A legacy connection hears it as a notification; a modern one on its listen
        # streams (the SDK drops the former on modern connections).
        await ctx.session.send_tool_list_changed()
        await ctx.notify_tools_changed()
        return f"added {tool_name}"

    @server.prompt(description="Greet someone by name.")
    def greet(name: str) -> str:
        return f"Please greet {name} warmly."

    @server.resource("test://static", name="static", mime_type="text/plain")
    def static() -> str:
        return "static resource"

    @server.resource("test://item/{id}", name="item", mime_type="text/plain")
    def item(id: str) -> str:
        return f"item {id}"

    @server.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        if isinstance(ref, PromptReference) and ref.name == "greet" and argument.name == "name":
            values = [n for n in GREET_NAMES if n.lower().startswith(argument.value.lower())]
            return Completion(values=values, total=len(values), has_more=False)
        return None

    return server


def cut_connections(stdout: os.stat_result | None) -> None:
    """Close the server's side of every connection (SIGUSR1), and go on running: over
    stdio, every fd on what fd 1 was at the start (``stdout``: the SDK moves it to
    another fd) is pointed at /dev/null; over HTTP, every accepted socket is shut down."""
    for fd in map(int, os.listdir("/proc/self/fd")):
        with contextlib.suppress(OSError):  # closed since it was listed, or not a socket
            if stdout is not None:
                if os.path.samestat(os.fstat(fd), stdout):
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, fd)
                    os.close(devnull)
                continue
            copy = os.dup(fd)
            try:
                sock = socket.socket(fileno=copy)
            except OSError:
                os.close(copy)
                raise
            with sock:
                if sock.family in (socket.AF_INET, socket.AF_INET6) and \
                        not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    sock.shutdown(socket.SHUT_RDWR)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", default="sdk", help="server name, also returned by whoami")
    parser.add_argument("--http", type=int, metavar="PORT",
                        help="serve Streamable HTTP at http://127.0.0.1:PORT/mcp, not stdio")
    parser.add_argument("--sse", type=int, metavar="PORT",
                        help="serve the HTTP+SSE transport (2024-11-05) at "
                        "http://127.0.0.1:PORT/sse, not stdio")
    parser.add_argument("--json-response", action="store_true",
                        help="with --http: answer requests with JSON bodies, not SSE")
    args: Any = parser.parse_args(argv)
    server = build_server(args.name, os.environ.get("SDK_SERVER_TOOL_PREFIX", ""))
    stdout = None if args.sse or args.http else os.fstat(1)
    signal.signal(signal.SIGUSR1, lambda *_: cut_connections(stdout))
    if args.sse:
        server.run("sse", host="127.0.0.1", port=args.sse)
    elif args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http,
                   json_response=args.json_response)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
