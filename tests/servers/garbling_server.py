"""A legacy MCP stdio server that writes unreadable lines among good ones, in one write.

Tools: ``hold`` answers nothing until ``release`` is called. ``release`` then answers every
held call and itself in a single write to stdout, in this order: the first held call gets
a result nested 1,000 levels deep, the second a result with invalid UTF-8 in it, then comes
a notification with invalid UTF-8, a line nested 100,000 levels deep that names no request,
and then good results for the other held calls and for ``release``. A gateway must read
the good lines although the bad ones come first in the same read, and should answer the
first two calls with an error rather than let them time out.
"""

from __future__ import annotations

import json
import sys
from typing import Any

DEEP = 1000
HOPELESS = 100_000
TOOLS = [{"name": name, "description": f"{name} (garbling test server)",
          "inputSchema": {"type": "object"}} for name in ("hold", "release")]


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def result(request_id: Any, text: str) -> bytes:
    return line({"jsonrpc": "2.0", "id": request_id,
                 "result": {"content": [{"type": "text", "text": text}]}})


def release(held: list[Any], request_id: Any) -> bytes:
    out = []
    if held:
        # jsonrpc and id first, as most encoders write them: the gateway can still tell
        # which request this answered.
        out.append(b'{"jsonrpc":"2.0","id":' + json.dumps(held[0]).encode()
                   + b',"result":{"content":[],"deep":' + b"[" * DEEP + b"]" * DEEP + b"}}\n")
    if len(held) > 1:
        out.append(b'{"jsonrpc":"2.0","id":' + json.dumps(held[1]).encode()
                   + b',"result":{"content":[{"type":"text","text":"bad \xff\xfe"}]}}\n')
    out.append(b'{"jsonrpc":"2.0","method":"notifications/message","params":'
               b'{"level":"info","data":"\xc3\x28"}}\n')
    out.append(b"[" * HOPELESS + b"\n")
    out += [result(i, f"held call {i} released") for i in held[2:]]
    out.append(result(request_id, f"released {len(held)}"))
    return b"".join(out)


def main() -> None:
    held: list[Any] = []
    for raw in sys.stdin.buffer:
        message = json.loads(raw)
        method = message.get("method")
        if "id" not in message or method is None:
            continue
        request_id = message["id"]
        params = message.get("params") or {}
        if method == "initialize":
            out = line({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "garbling", "version": "1"}}})
        elif method == "tools/list":
            out = line({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
        elif method == "tools/call" and params.get("name") == "hold":
            held.append(request_id)
            continue
        elif method == "tools/call" and params.get("name") == "release":
            out = release(held, request_id)
            held = []
        elif method == "ping":
            out = line({"jsonrpc": "2.0", "id": request_id, "result": {}})
        else:
            out = line({"jsonrpc": "2.0", "id": request_id,
                        "error": {"code": -32601, "message": f"unknown: {method}"}})
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
