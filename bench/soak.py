"""``make soak``: minutes of mixed traffic through one gateway; zero errors, flat memory.

Traffic, all on loopback against the bundled demo upstream: WebSocket clients calling
``echo`` back to back; legacy Streamable HTTP sessions calling ``echo`` and, now and
then, ``countdown`` for longer than ``sse_keepalive`` (so that keep-alive comments fall
inside a POST that has not answered yet); modern 2026-07-28 stateless POSTs. Every
answer is checked (id, type and content). The gateway's RSS is sampled every few
seconds; the report compares the first and last minutes.

    .venv/bin/python -m bench.soak --seconds 600 --json .benchmarks/soak.json

Not a test: it runs for minutes, and its figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import websockets

from .ports import free_port

ROOT = Path(__file__).resolve().parent.parent
JSON_AND_SSE = "application/json, text/event-stream"
KEEPALIVE = 2.0
"""sse_keepalive for the soak: countdown calls of 3 s span at least one tick."""


@dataclass
class Tally:
    calls: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def ok(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1

    def fail(self, kind: str, what: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(f"{kind}: {what}")
        self.calls[f"{kind} errors"] = self.calls.get(f"{kind} errors", 0) + 1


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def websocket_client(url: str, until: float, tally: Tally) -> None:
    async with websockets.connect(url, subprotocols=["mcp"], max_size=None) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "soak", "version": "0"}}}))
        json.loads(await ws.recv())
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        for i in itertools.count(1):
            if time.monotonic() >= until:
                return
            request_id: int | str = i if i % 2 else f"s{i}"
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id,
                                      "method": "tools/call", "params": {
                                          "name": "echo", "arguments": {"text": str(i)}}}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if answer.get("id") != request_id or type(answer.get("id")) is not type(request_id) \
                    or answer.get("result", {}).get("content", [{}])[0].get("text") != str(i):
                tally.fail("websocket", json.dumps(answer)[:200])
            else:
                tally.ok("websocket")


def sse_messages(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in body.splitlines()
            if line.startswith("data:") and line[5:].strip()]


async def legacy_client(url: str, until: float, tally: Tally, long_every: int) -> None:
    headers = {"Accept": JSON_AND_SSE, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=headers, json={
                "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "soak", "version": "0"}}}) as resp:
            await resp.read()
            sid = resp.headers["Mcp-Session-Id"]
        headers = {**headers, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        async with http.post(url, headers=headers, json={
                "jsonrpc": "2.0", "method": "notifications/initialized"}) as resp:
            await resp.read()
        for i in itertools.count(1):
            if time.monotonic() >= until:
                break
            long = i % long_every == 0
            params = {"name": "countdown", "arguments": {"n": int(KEEPALIVE) + 1}} if long \
                else {"name": "echo", "arguments": {"text": str(i)}}
            kind = "legacy-http long" if long else "legacy-http"
            try:
                async with http.post(url, headers=headers, json={
                        "jsonrpc": "2.0", "id": i, "method": "tools/call",
                        "params": params}) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        tally.fail(kind, f"HTTP {resp.status}: {text[:200]}")
                        continue
                    messages = sse_messages(text) if resp.content_type == \
                        "text/event-stream" else [json.loads(text)]
            except (aiohttp.ClientError, ValueError) as exc:
                tally.fail(kind, repr(exc))
                continue
            answers = [m for m in messages if m.get("id") == i]
            want = "liftoff" if long else str(i)
            if len(answers) != 1 or want not in json.dumps(answers[0].get("result")):
                tally.fail(kind, json.dumps(messages)[:300])
            else:
                tally.ok(kind)
        async with http.delete(url, headers=headers) as resp:
            await resp.read()


async def modern_client(url: str, until: float, tally: Tally) -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "soak", "version": "0"}}
    headers = {"Accept": JSON_AND_SSE, "Content-Type": "application/json",
               "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
               "Mcp-Name": "echo"}
    async with aiohttp.ClientSession() as http:
        for i in itertools.count(1):
            if time.monotonic() >= until:
                return
            try:
                async with http.post(url, headers=headers, json={
                        "jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                            "name": "echo", "arguments": {"text": str(i)},
                            "_meta": meta}}) as resp:
                    answer = await resp.json(content_type=None)
            except (aiohttp.ClientError, ValueError) as exc:
                tally.fail("modern-http", repr(exc))
                continue
            if resp.status != 200 or answer.get("id") != i or \
                    answer["result"]["content"][0]["text"] != str(i):
                tally.fail("modern-http", json.dumps(answer)[:200])
            else:
                tally.ok("modern-http")


async def sample_rss(pid: int, until: float, samples: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while time.monotonic() < until:
        samples.append((round(time.monotonic() - start, 1), rss(pid)))
        await asyncio.sleep(5)


async def soak(port: int, pid: int, seconds: float, clients: int) -> dict[str, Any]:
    tally = Tally()
    until = time.monotonic() + seconds
    samples: list[tuple[float, int]] = []
    ws_url = f"ws://127.0.0.1:{port}/mcp"
    http_url = f"http://127.0.0.1:{port}/mcp"
    tasks = [sample_rss(pid, until, samples)]
    tasks += [websocket_client(ws_url, until, tally) for _ in range(clients)]
    tasks += [legacy_client(http_url, until, tally, 50) for _ in range(clients)]
    tasks += [modern_client(http_url, until, tally) for _ in range(clients)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            tally.fail("client", repr(result))
    minute = [r for t, r in samples if t <= 60] or [samples[0][1]]
    last = [r for t, r in samples if t >= seconds - 60] or [samples[-1][1]]
    return {"seconds": seconds, "clients_per_kind": clients, "calls": tally.calls,
            "errors": tally.errors, "rss_first_minute_mib": round(max(minute) / 2**20, 1),
            "rss_last_minute_mib": round(max(last) / 2**20, 1),
            "rss_samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--clients", type=int, default=4, help="clients of each kind")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="mcpfast-soak-") as tmp:
        config = Path(tmp) / "soak.toml"
        config.write_text(
            f'[listen]\nport = {port}\n[listen.http]\nsse_keepalive = {KEEPALIVE}\n'
            f'[admin]\nport = {admin}\n[logging]\nlevel = "warning"\n'
            '[upstreams.demo]\ncommand = ["python", "-m", "mcpfast.demo"]\n')
        log = open(Path(tmp) / "gateway.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "mcpfast", "serve", "--config",
                                 str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readiness",
                                                timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the gateway did not become ready") from None
                    time.sleep(0.1)
            report = asyncio.run(soak(port, proc.pid, args.seconds, args.clients))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()
        tracebacks = (Path(tmp) / "gateway.log").read_text(errors="replace").count("Traceback")
    report["gateway_tracebacks"] = tracebacks
    summary = {k: v for k, v in report.items() if k != "rss_samples"}
    print(json.dumps(summary, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    failed = report["errors"] or tracebacks
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
