"""A legacy MCP server over stdio that records everything that happens to it, so that a
test can assert where the upstream is: what it received, when, with which ids and
progress tokens, its environment and working directory, stdin closing, and signals.

Run it over stdio: ``python tests/servers/recording_server.py --record PATH [options]``.
Each event is one JSON line appended to PATH: ``{"t": <time.monotonic()>, "pid": ...,
"event": ...}``. The monotonic clock is system-wide on Linux, so the test process can
compare these times with its own. Events: ``start`` (with ``env``, ``cwd``, ``argv``),
``recv`` (with ``message``, exactly as parsed, and ``raw``, the line), ``eof`` (stdin
closed), ``signal`` (with ``name``), ``tick`` (every 50 ms once SIGTERM was ignored, to
show the process still ran), ``exit``.

No SDK on purpose: the server starts fast, and it answers exactly what a test needs
(including a tool whose argument must be mirrored in an ``Mcp-Param-*`` header).

Tools: ``echo`` (``text``), ``slow`` (answers after ``seconds``; a
``notifications/cancelled`` for it stops it, so it is never answered), ``progress``
(``steps`` notifications carrying the request's progress token as received, ``interval``
seconds apart; with ``guess`` it makes a token up when there is none, with ``late`` it
sends one more after the answer), ``region`` (its ``region`` argument is annotated
``x-mcp-header``), ``big`` (a result of ``size`` bytes of text), ``whoami``, ``ask``
(sends the client a ``sampling/createMessage``, with ``extra`` merged into its params,
and answers with the reply's text, or the error's message), ``fail`` (a -32603 error),
``odd`` (the result ``42``, not an object).
Reading a URI containing ``missing`` is a -32002 error (``data``: with data, ``blank``:
with an empty message); reading one containing ``ask`` asks the client's model first, as
``ask`` does, and the reply's text is the resource's.
Resource ``rec://<name>/doc``, which can be subscribed to (a URI containing ``refuse``
cannot). ``--fail METHOD`` answers that method with an error; ``--modern`` makes it answer
``server/discover`` as a 2026-07-28 server (its answers are otherwise the same).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

TOOLS: list[dict[str, Any]] = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {
        "text": {"type": "string"}}}},
    {"name": "slow", "inputSchema": {"type": "object", "properties": {
        "seconds": {"type": "number"}}}},
    {"name": "progress", "inputSchema": {"type": "object", "properties": {
        "steps": {"type": "integer"}, "interval": {"type": "number"}}}},
    {"name": "region", "inputSchema": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "text": {"type": "string"}}}},
    {"name": "big", "inputSchema": {"type": "object", "properties": {
        "size": {"type": "integer"}}}},
    {"name": "whoami", "inputSchema": {"type": "object"}},
    {"name": "ask", "inputSchema": {"type": "object", "properties": {
        "prompt": {"type": "string"}}}},
    {"name": "fail", "inputSchema": {"type": "object"}},
    {"name": "odd", "inputSchema": {"type": "object"}},
]


class Recorder:
    def __init__(self, path: str) -> None:
        # O_APPEND: each event is one write, so restarts of this server (and the
        # signal handler, which may run between two lines of the main loop) never
        # interleave half lines.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._pid = os.getpid()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": time.monotonic(), "pid": self._pid, "event": event, **fields})
        os.write(self._fd, line.encode() + b"\n")


class Server:
    def __init__(self, args: Any, record: Recorder) -> None:
        self.name: str = args.name
        self.silent_discover: bool = args.silent_discover
        self.modern: bool = args.modern
        self.batch_answers: bool = args.batch_answers
        self.fail: set[str] = set(args.fail)
        self.record = record
        self._out = threading.Lock()
        self._timers: dict[Any, threading.Timer] = {}
        self._timers_lock = threading.Lock()
        self._asks: dict[str, tuple[Any, str | None]] = {}
        """Our sampling requests' ids -> the request waiting for the answer (and the URI
        when it is a resources/read)."""

    def write(self, message: dict[str, Any]) -> None:
        if self.batch_answers and "method" not in message:
            # A 2025-03-26 server may batch what it sends: each answer, with a log
            # message before it, as one JSON-RPC batch.
            data = json.dumps([{"jsonrpc": "2.0", "method": "notifications/message", "params": {
                "level": "info", "logger": self.name, "data": "batched"}}, message]) + "\n"
        else:
            data = json.dumps(message) + "\n"
        with self._out:
            sys.stdout.write(data)
            sys.stdout.flush()

    def result(self, request_id: Any, result: dict[str, Any]) -> None:
        self.write({"jsonrpc": "2.0", "id": request_id, "result": result})

    def error(self, request_id: Any, code: int, message: str) -> None:
        self.write({"jsonrpc": "2.0", "id": request_id,
                    "error": {"code": code, "message": message}})

    def text(self, request_id: Any, text: str) -> None:
        self.result(request_id, {"content": [{"type": "text", "text": text}]})

    def handle(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:  # an answer to one of our requests
            asked = self._asks.pop(message.get("id"), None)
            if asked is not None:
                call_id, uri = asked
                if "error" in message:
                    said = f"error: {message['error'].get('message')}"
                else:
                    said = str(message["result"]["content"]["text"])
                if uri is None:
                    self.text(call_id, said)
                else:
                    self.result(call_id, {"contents": [{"uri": uri, "text": said}]})
            return
        if "id" not in message:
            if method == "notifications/cancelled":
                request_id = (message.get("params") or {}).get("requestId")
                with self._timers_lock:
                    timer = self._timers.pop(request_id, None)
                if timer is not None:
                    timer.cancel()
            return
        request_id = message["id"]
        params = message.get("params") or {}
        if method in self.fail or (method == "resources/subscribe"
                                   and "refuse" in str(params.get("uri"))):
            self.error(request_id, -32603, f"{method} refused by the test")
        elif method == "initialize":
            self.result(request_id, {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}, "resources": {"subscribe": True},
                                 "logging": {}},
                "serverInfo": {"name": self.name, "version": "1"}})
        elif method == "server/discover":
            if self.modern:
                self.result(request_id, {
                    "resultType": "complete", "supportedVersions": ["2026-07-28"],
                    "capabilities": {"tools": {}, "resources": {}},
                    "_meta": {"io.modelcontextprotocol/serverInfo": {
                        "name": self.name, "version": "1"}}})
            elif not self.silent_discover:
                self.error(request_id, -32601, "Method not found: server/discover")
        elif method == "tools/list":
            self.result(request_id, {"tools": TOOLS})
        elif method == "resources/list":
            self.result(request_id, {"resources": [
                {"uri": f"rec://{self.name}/doc", "name": "doc"}]})
        elif method == "resources/templates/list":
            self.result(request_id, {"resourceTemplates": []})
        elif method == "resources/read":
            uri = str(params.get("uri"))
            if "missing" in uri:
                # The legacy SDKs' not-found: -32002; variants with data and without a
                # message, for what the gateway makes of it for a modern client.
                error: dict[str, Any] = {"code": -32002, "message": "" if "blank" in uri
                                         else f"no such resource: {uri}"}
                if "data" in uri:
                    error["data"] = {"hint": "ask again"}
                self.write({"jsonrpc": "2.0", "id": request_id, "error": error})
            elif "ask" in uri:
                self.ask(request_id, f"what is in {uri}?", uri)
            else:
                self.result(request_id, {"contents": [
                    {"uri": uri, "text": f"{self.name} {uri}"}]})
        elif method in ("ping", "logging/setLevel", "resources/subscribe",
                        "resources/unsubscribe"):
            self.result(request_id, {})
        elif method == "tools/call":
            self.call(request_id, params)
        else:
            self.error(request_id, -32601, f"Method not found: {method}")

    def ask(self, request_id: Any, prompt: str, uri: str | None = None,
            extra: dict[str, Any] | None = None) -> None:
        """Ask the client's model ``prompt`` (with ``extra`` params, as ``tools``); its
        reply answers ``request_id``."""
        ask_id = f"ask-{request_id}"
        self._asks[ask_id] = (request_id, uri)
        self.write({"jsonrpc": "2.0", "id": ask_id, "method": "sampling/createMessage",
                    "params": {"messages": [{"role": "user", "content": {
                        "type": "text", "text": prompt}}], "maxTokens": 10, **(extra or {})}})

    def call(self, request_id: Any, params: dict[str, Any]) -> None:
        name = params.get("name")
        arguments = params.get("arguments") or {}
        if name == "echo":
            self.text(request_id, str(arguments.get("text", "")))
        elif name == "whoami":
            self.text(request_id, self.name)
        elif name == "region":
            self.text(request_id, str(arguments.get("region")))
        elif name == "ask":
            self.ask(request_id, str(arguments.get("prompt")), extra=arguments.get("extra"))
        elif name == "fail":
            self.error(request_id, -32603, "failed on purpose")
        elif name == "odd":
            self.write({"jsonrpc": "2.0", "id": request_id, "result": 42})
        elif name == "big":
            self.text(request_id, "x" * int(arguments.get("size", 0)))
        elif name == "slow":
            def answer() -> None:
                with self._timers_lock:
                    if self._timers.pop(request_id, None) is None:
                        return  # cancelled meanwhile
                self.text(request_id, "slow done")
            timer = threading.Timer(float(arguments.get("seconds", 1.0)), answer)
            with self._timers_lock:
                self._timers[request_id] = timer
            timer.start()
        elif name == "progress":
            token = (params.get("_meta") or {}).get("progressToken")
            if token is None and arguments.get("guess"):
                # A misbehaving server: progress the client never asked for, under a
                # token it guessed (the request's own id).
                token = request_id
            steps = int(arguments.get("steps", 1))
            interval = float(arguments.get("interval", 0.01))

            def progress(step: int) -> None:
                self.write({"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": token, "progress": step,
                                       "total": steps}})

            def report() -> None:
                for step in range(1, steps + 1):
                    time.sleep(interval)
                    if token is not None:
                        progress(step)
                self.text(request_id, f"{steps} steps")
                if token is not None and arguments.get("late"):
                    progress(steps + 1)  # after the answer: for nobody any more
            threading.Thread(target=report, daemon=True).start()
        else:
            self.error(request_id, -32602, f"Unknown tool: {name}")


def spawned_at() -> float | None:
    """When this process was created, on the clock of the events' ``t``: the kernel's
    start time of the process (/proc/self/stat, in clock ticks since boot) carried over
    from CLOCK_BOOTTIME to time.monotonic(). A parent that writes to the process's stdin
    does so after this moment, whenever the process gets to read it."""
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    return time.monotonic() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--record", required=True, help="the file events are appended to")
    parser.add_argument("--name", default="rec")
    parser.add_argument("--ignore-eof", action="store_true",
                        help="keep running after stdin closes")
    parser.add_argument("--on-sigterm", choices=("exit", "ignore"), default="exit",
                        help="record SIGTERM, then exit (code 0) or carry on")
    parser.add_argument("--exit-at-start", type=int, default=None,
                        help="record the start, then exit at once with this code")
    parser.add_argument("--fail", action="append", default=[], metavar="METHOD",
                        help="answer METHOD with an error (-32603)")
    parser.add_argument("--modern", action="store_true",
                        help="answer server/discover as a 2026-07-28 server (then run "
                             "the upstream with era = \"modern\" or \"auto\")")
    parser.add_argument("--silent-discover", action="store_true",
                        help="never answer server/discover (a legacy server that ignores "
                             "what it does not know)")
    parser.add_argument("--batch-answers", action="store_true",
                        help="send each answer in a JSON-RPC batch, after a log message")
    args = parser.parse_args(argv)
    record = Recorder(args.record)
    record("start", env=dict(os.environ), cwd=os.getcwd(), argv=sys.argv,
           spawned=spawned_at())
    if args.exit_at_start is not None:
        record("exit", code=args.exit_at_start)
        os._exit(args.exit_at_start)
    terminated = threading.Event()

    def on_sigterm(signum: int, frame: Any) -> None:
        record("signal", name="SIGTERM")
        if args.on_sigterm == "exit":
            record("exit", code=0)
            os._exit(0)
        terminated.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    server = Server(args, record)
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        message = json.loads(line)
        record("recv", message=message, raw=line.decode().rstrip("\n"))
        server.handle(message)
    record("eof")
    if not args.ignore_eof:
        record("exit", code=0)
        sys.exit(0)
    while True:  # stdin is closed: wait for a signal, and show that we still run
        time.sleep(0.05)
        if terminated.is_set():
            record("tick")


if __name__ == "__main__":
    main()
