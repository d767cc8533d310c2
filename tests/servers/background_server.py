"""A legacy stdio MCP server whose tools keep working after they answer.

``background`` answers at once, then ``delay`` seconds later sends a log message and a
``sampling/createMessage`` carrying ``secret`` (work started by one client that names no
client request). ``slow`` answers after ``seconds``; ``big`` returns ``size`` bytes of
text; ``stall`` stops reading stdin for ``seconds``; ``count`` returns how many calls of
each tool arrived; ``fail`` answers with a JSON-RPC error. ``replies`` returns what the
server got back for its own requests, so a test can assert what the gateway answered for
it. Raw JSON-RPC over stdio, no SDK, so that nothing hides what is sent.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

TOOLS = [
    {"name": "background", "inputSchema": {"type": "object"}},
    {"name": "slow", "inputSchema": {"type": "object"}},
    {"name": "replies", "inputSchema": {"type": "object"}},
    {"name": "big", "inputSchema": {"type": "object"}},
    {"name": "stall", "inputSchema": {"type": "object"}},
    {"name": "count", "inputSchema": {"type": "object"}},
    {"name": "fail", "inputSchema": {"type": "object"}},
]


class Server:
    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.next_id = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.stalled_until = 0.0
        self.calls: dict[str, int] = {}

    def write(self, message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def answer(self, request_id: Any, result: Any) -> None:
        self.write({"jsonrpc": "2.0", "id": request_id, "result": result})

    async def later(self, delay: float, secret: str) -> None:
        await asyncio.sleep(delay)
        self.write({"jsonrpc": "2.0", "method": "notifications/message",
                    "params": {"level": "error", "data": f"log of {secret}"}})
        self.next_id += 1
        self.write({"jsonrpc": "2.0", "id": f"s{self.next_id}",
                    "method": "sampling/createMessage",
                    "params": {"messages": [{"role": "user", "content": {
                        "type": "text", "text": secret}}], "maxTokens": 10}})

    async def slow(self, request_id: Any, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.answer(request_id, {"content": [{"type": "text", "text": "slow done"}]})

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def handle(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        request_id = message.get("id")
        if method is None:
            self.replies.append(message)
            return
        if request_id is None:
            return
        if method == "initialize":
            self.answer(request_id, {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}, "logging": {}},
                "serverInfo": {"name": "background", "version": "0"}})
        elif method == "tools/list":
            self.answer(request_id, {"tools": TOOLS})
        elif method == "logging/setLevel" or method == "ping":
            self.answer(request_id, {})
        elif method == "tools/call":
            name = message["params"]["name"]
            args = message["params"].get("arguments") or {}
            self.calls[name] = self.calls.get(name, 0) + 1
            if name == "background":
                self.spawn(self.later(float(args.get("delay", 0.5)), str(args["secret"])))
                self.answer(request_id, {"content": [{"type": "text", "text": "started"}]})
            elif name == "slow":
                self.spawn(self.slow(request_id, float(args.get("seconds", 1.0))))
            elif name == "big":
                self.answer(request_id, {"content": [{"type": "text",
                                                      "text": "x" * int(args["size"])}]})
            elif name == "stall":
                # Stop reading stdin for a while, as a server busy elsewhere would.
                self.stalled_until = time.monotonic() + float(args["seconds"])
                self.answer(request_id, {"content": [{"type": "text", "text": "stalled"}]})
            elif name == "count":
                self.answer(request_id, {"content": [{"type": "text",
                                                      "text": json.dumps(self.calls)}]})
            elif name == "fail":
                self.write({"jsonrpc": "2.0", "id": request_id,
                            "error": {"code": -32603, "message": "fail fails"}})
            elif name == "replies":
                self.answer(request_id, {"content": [{"type": "text",
                                                      "text": json.dumps(self.replies)}]})
        else:
            self.write({"jsonrpc": "2.0", "id": request_id,
                        "error": {"code": -32601, "message": f"no {method}"}})


async def main() -> None:
    server = Server()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip():
            server.handle(json.loads(line))
        if server.stalled_until > time.monotonic():
            await asyncio.sleep(server.stalled_until - time.monotonic())


if __name__ == "__main__":
    asyncio.run(main())
