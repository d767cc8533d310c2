"""A legacy MCP stdio server that gets MCP or JSON-RPC wrong in the ways ``--fault``
names, for the gateway to cope with without letting it reach other servers or clients.

Faults of its handshake and lists (each ``--fault`` once or more):
- ``capabilities``: ``capabilities.resources`` is ``true`` and ``logging`` a list;
- ``instructions``: ``instructions`` is a number;
- ``items``: ``tools/list`` has a string, a null, an unnamed tool and a tool listed twice
  among its good tools, and ``prompts/list`` a ``prompts`` that is an object;
- ``cursor-loop``: ``tools/list`` comes in two pages whose cursors name each other;
- ``early-question``: right after its handshake, before any client has called it, it asks
  for the client's roots (id ``"early"``); the tool ``early_reply`` answers with what it
  was told.

Its tools answer wrongly when called: ``error_string`` (``"error": "boom"``),
``error_no_code`` (an error without ``code``), ``result_with_method`` (a response that
also has a ``method``), ``close_stdin`` (closes its stdin and answers nothing more, still
running), ``huge`` (an answer of ``size`` bytes); ``echo`` answers as it should.
``odd_notes`` sends notifications whose params are an array before it answers.
``ask`` asks the client's model, always under the request id ``"q"`` with the progress
token ``"qp"``, and answers with the text of its reply (and the progress the client
reported on it); ``exit`` ends the process (code 3), so that the next process asks
under the same id.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

GOOD_TOOLS = [{"name": name, "inputSchema": {"type": "object"}} for name in (
    "echo", "error_string", "error_no_code", "result_with_method", "close_stdin", "huge",
    "ask", "exit", "odd_notes", "early_reply")]
ASKING: list[Any] = []
"""The id of the call that asked, while its question is open."""
REPLIES: dict[str, Any] = {}
"""The answers to its own requests other than ``ask``'s, by id."""
PROGRESS: list[Any] = []
"""The progress the client reported on the open question (token "qp")."""


def write(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(json.dumps(message).encode() + b"\n")
    sys.stdout.buffer.flush()


def tools_page(faults: set[str], cursor: Any) -> dict[str, Any]:
    if "cursor-loop" in faults:
        # Page "a" holds echo and points at "b", which holds the rest and points at "a".
        if cursor == "b":
            return {"tools": GOOD_TOOLS[1:], "nextCursor": "a"}
        return {"tools": GOOD_TOOLS[:1], "nextCursor": "b"}
    tools: list[Any] = list(GOOD_TOOLS)
    if "items" in faults:
        tools[1:1] = ["str", None, {"description": "no name"}, dict(GOOD_TOOLS[0])]
    return {"tools": tools}


def initialize_result(faults: set[str]) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"tools": {}, "prompts": {}}
    if "capabilities" in faults:
        capabilities.update(resources=True, logging=[])
    result: dict[str, Any] = {"protocolVersion": "2025-11-25", "capabilities": capabilities,
                              "serverInfo": {"name": "sloppy", "version": "0"}}
    if "instructions" in faults:
        result["instructions"] = 42
    return result


def call(request_id: Any, params: dict[str, Any]) -> None:
    name = params.get("name")
    arguments = params.get("arguments") or {}
    if name == "echo":
        write({"jsonrpc": "2.0", "id": request_id, "result": {
            "content": [{"type": "text", "text": str(arguments.get("text", ""))}]}})
    elif name == "error_string":
        write({"jsonrpc": "2.0", "id": request_id, "error": "boom"})
    elif name == "error_no_code":
        write({"jsonrpc": "2.0", "id": request_id, "error": {"message": "no code"}})
    elif name == "result_with_method":
        write({"jsonrpc": "2.0", "id": request_id, "method": "x", "result": {"content": []}})
    elif name == "close_stdin":
        os.close(0)
        while True:  # alive, its stdout open, reading nothing more
            time.sleep(60)
    elif name == "ask":
        ASKING[:] = [request_id]
        PROGRESS.clear()
        write({"jsonrpc": "2.0", "id": "q", "method": "sampling/createMessage", "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": "?"}}],
            "maxTokens": 5, "_meta": {"progressToken": "qp"}}})
    elif name == "exit":
        os._exit(3)
    elif name == "odd_notes":
        for method in ("notifications/progress", "notifications/message",
                       "notifications/resources/updated", "notifications/cancelled"):
            write({"jsonrpc": "2.0", "method": method, "params": [1, 2]})
        write({"jsonrpc": "2.0", "id": request_id, "result": {
            "content": [{"type": "text", "text": "noted"}]}})
    elif name == "early_reply":
        write({"jsonrpc": "2.0", "id": request_id, "result": {
            "content": [{"type": "text", "text": json.dumps(REPLIES.get("early"))}]}})
    elif name == "huge":
        write({"jsonrpc": "2.0", "id": request_id, "result": {
            "content": [{"type": "text", "text": "x" * int(arguments.get("size", 0))}]}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fault", action="append", default=[])
    faults = set(parser.parse_args().fault)
    for raw in sys.stdin.buffer:
        message = json.loads(raw)
        method, request_id = message.get("method"), message.get("id")
        if method is None and request_id == "q" and ASKING:
            reply = (message.get("result") or {}).get("content") or {}
            said = str(reply.get("text"))
            if PROGRESS:
                said += f" after progress {PROGRESS}"
            write({"jsonrpc": "2.0", "id": ASKING.pop(), "result": {
                "content": [{"type": "text", "text": said}]}})
            continue
        if method is None and isinstance(request_id, str):
            REPLIES[request_id] = message
            continue
        if method == "notifications/initialized" and "early-question" in faults:
            write({"jsonrpc": "2.0", "id": "early", "method": "roots/list"})
            continue
        if method == "notifications/progress":
            params = message.get("params") or {}
            if params.get("progressToken") == "qp":
                PROGRESS.append(params.get("progress"))
            continue
        if request_id is None or method is None:
            continue
        params = message.get("params") or {}
        if method == "initialize":
            write({"jsonrpc": "2.0", "id": request_id, "result": initialize_result(faults)})
        elif method == "tools/list":
            write({"jsonrpc": "2.0", "id": request_id,
                   "result": tools_page(faults, params.get("cursor"))})
        elif method == "prompts/list":
            prompts: Any = {"p": {}} if "items" in faults else []
            write({"jsonrpc": "2.0", "id": request_id, "result": {"prompts": prompts}})
        elif method == "tools/call":
            call(request_id, params)
        else:
            write({"jsonrpc": "2.0", "id": request_id, "result": {}})


if __name__ == "__main__":
    main()
