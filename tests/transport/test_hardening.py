"""Defects found by trying the gateway the way an attacker or a careless client would
(issue 8): each test here failed before its fix."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from ..conftest import ROOT, GatewayProcess, run, sdk_upstream, wait_until, ws_client

BACKGROUND = ["python", str(ROOT / "tests" / "servers" / "background_server.py")]
JSON_AND_SSE = "application/json, text/event-stream"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}}


async def raw_post(port: int, body: dict[str, Any], session_id: str | None = None,
                   timeout: float = 20.0) -> bytes:
    """POST ``body`` to /mcp on a fresh connection and return every byte the gateway
    sent until it ended the response (``Connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps(body).encode()
    head = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Accept: {JSON_AND_SSE}",
            "Content-Type: application/json", f"Content-Length: {len(payload)}",
            "Connection: close"]
    if session_id is not None:
        head += [f"Mcp-Session-Id: {session_id}", "MCP-Protocol-Version: 2025-11-25"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    await writer.drain()
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        writer.close()


def header(response: bytes, name: str) -> str:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise AssertionError(f"no {name} header in {head!r}")


def test_a_legacy_call_longer_than_the_keepalive_is_answered_intact(
        gateway_factory: Any) -> None:
    """Defect 1: the keep-alive tick wrote ': ping' into a POST whose status line had
    not been sent. Now a call that outlasts the interval is answered as an event stream
    whose first bytes are the status line."""
    gw = gateway_factory({"sdk": sdk_upstream(era="legacy")},
                         listen={"http": {"sse_keepalive": 0.3}})

    async def main() -> None:
        init = await raw_post(gw.port, INIT)
        assert init.startswith(b"HTTP/1.1 200 "), init[:200]
        sid = header(init, "Mcp-Session-Id")
        done = await raw_post(gw.port, {"jsonrpc": "2.0", "method":
                                        "notifications/initialized"}, sid)
        assert done.startswith(b"HTTP/1.1 202 "), done[:200]
        answer = await raw_post(gw.port, {
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"seconds": 1.5}}}, sid)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert header(answer, "Content-Type") == "text/event-stream"
        body = answer.split(b"\r\n\r\n", 1)[1]
        assert b": ping" in body
        data = [json.loads(line[5:]) for line in body.split(b"\n")
                if line.startswith(b"data:") and line[5:].strip()]
        assert [(m["id"], m["result"]["content"][0]["text"]) for m in data] == \
            [(7, "done after 1.5s")]
    run(main())


def test_background_work_of_one_client_never_reaches_another(
        gateway_factory: Any) -> None:
    """Defect 3: client B starts background work; the server's later sampling request
    (carrying B's prompt) and log message went to client A, the only one with a call in
    flight. With two clients on the process, neither can be attributed: the request is
    refused upstream and the log dropped."""
    gw: GatewayProcess = gateway_factory({"bg": {"command": BACKGROUND, "era": "legacy"}})

    async def main() -> None:
        async with ws_client(gw.ws_url) as a, ws_client(gw.ws_url) as b:
            for client in (a, b):
                await client.initialize(capabilities={"sampling": {}})
                assert "error" not in await client.request("logging/setLevel",
                                                           {"level": "debug"})
            started = await b.call_tool("background", {"secret": "B-private", "delay": 0.5})
            assert started["result"]["content"][0]["text"] == "started"
            slow = await a.call_tool("slow", {"seconds": 2.5})
            assert slow["result"]["content"][0]["text"] == "slow done"
            leaked = [m for m in a.requests + a.notifications if "B-private" in json.dumps(m)]
            assert leaked == []
            replies = json.loads((await a.call_tool("replies"))["result"]["content"][0]
                                 ["text"])
            assert [(r["id"], r["error"]["code"]) for r in replies] == [("s1", -32603)]
        status = gw.upstream("bg")
        assert status["unattributed"] == 2  # the request and the log message
    run(main())


def test_a_sole_client_gets_its_own_background_requests(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory({"bg": {"command": BACKGROUND, "era": "legacy"}})

    async def main() -> None:
        async with ws_client(gw.ws_url) as a:
            await a.initialize(capabilities={"sampling": {}})
            await a.request("logging/setLevel", {"level": "debug"})
            await a.call_tool("background", {"secret": "mine", "delay": 0.2})
            request = await a.receive()
            while "id" not in request:
                a.notifications.append(request)
                request = await a.receive()
            assert request["method"] == "sampling/createMessage"
            assert request["params"]["messages"][0]["content"]["text"] == "mine"
            assert [n["params"]["data"] for n in a.notifications] == ["log of mine"]
            await a.send({"jsonrpc": "2.0", "id": request["id"], "result": {
                "role": "assistant", "model": "m", "content": {"type": "text", "text": "ok"}}})
            replies = json.loads((await a.call_tool("replies"))["result"]["content"][0]
                                 ["text"])
            assert [(r["id"], r["result"]["content"]["text"]) for r in replies] == \
                [("s1", "ok")]
    run(main())


# -- limits: what one client may make the gateway hold ---------------------------------
def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (RFC 6455 5.2), FIN set."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


def raw_ws(port: int) -> socket.socket:
    """A WebSocket connection opened by hand, so that the test decides when (if ever)
    to read from it."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n")
                 .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "connection closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def legacy_opening() -> list[bytes]:
    return [json.dumps(INIT).encode(),
            b'{"jsonrpc":"2.0","method":"notifications/initialized"}']


def big_calls(count: int, size: int) -> list[bytes]:
    return [json.dumps({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
                        "params": {"name": "big", "arguments": {"size": size}}}).encode()
            for i in range(count)]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples a process's RSS in a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> PeakRss:
        self.peak = rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    code, body = gw.admin_get("/metrics")
    assert code == 200, body
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
                     if labels else "")
    for line in body.decode().splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {wanted}")


def limit_hits(gw: GatewayProcess, limit: str) -> float:
    return metric(gw, "mcpfast_limit_enforced_total", limit=limit)


BG = {"bg": {"command": BACKGROUND, "era": "legacy"}}


def test_websocket_clients_that_never_read_are_closed_before_memory_grows(
        gateway_factory: Any) -> None:
    """Defect 2: four clients that never read, 100 answers of 1 MB each: the gateway
    held them all (RSS near 1 GB). Now each client is closed once 16 MiB wait for it."""
    gw: GatewayProcess = gateway_factory(BG)
    assert gw.proc is not None
    socks = [raw_ws(gw.port) for _ in range(4)]
    with PeakRss(gw.pid) as peak:
        base = peak.peak
        for sock in socks:
            sock.sendall(b"".join(ws_frame(m) for m in legacy_opening()
                                  + big_calls(100, 1_000_000)))
        wait_until(lambda: limit_hits(gw, "client_buffer_bytes") >= 4, timeout=90)
    for sock in socks:
        sock.close()
    growth = peak.peak - base
    assert growth < 160 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB"
    assert "Traceback" not in gw.log()
    # The gateway still serves everyone else.
    run(_echo_through(gw))


def test_unix_clients_that_never_read_are_closed_before_memory_grows(
        gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(BG)
    assert gw.proc is not None
    socks = []
    with PeakRss(gw.pid) as peak:
        base = peak.peak
        for _ in range(2):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(gw.unix_path)
            sock.sendall(b"".join(m + b"\n" for m in legacy_opening()
                                  + big_calls(150, 1_000_000)))
            socks.append(sock)
        wait_until(lambda: limit_hits(gw, "client_buffer_bytes") >= 2, timeout=90)
    for sock in socks:
        sock.close()
    growth = peak.peak - base
    assert growth < 120 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB"
    run(_echo_through(gw))


async def _echo_through(gw: GatewayProcess) -> None:
    async with ws_client(gw.ws_url) as c:
        await c.initialize()
        answer = await c.call_tool("big", {"size": 3})
        assert answer["result"]["content"][0]["text"] == "xxx"


def test_too_many_requests_in_flight_are_refused(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(BG, limits={"max_in_flight": 2})

    async def main() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            for i in (1, 2, 3):
                await c.start_call("slow", {"seconds": 1.0}, request_id=f"s{i}")
            third = await c.wait_for("s3")
            assert third["error"]["code"] == -32000
            assert "max_in_flight" in third["error"]["message"]
            for i in (1, 2):
                assert (await c.wait_for(f"s{i}"))["result"]["content"][0]["text"] == \
                    "slow done"
            # The refused call went no further: the upstream got the two others only.
            seen = await c.call_tool("count")
            assert json.loads(seen["result"]["content"][0]["text"]) == {"slow": 2, "count": 1}
            assert (await c.call_tool("slow", {"seconds": 0}))["result"]
    run(main())
    assert limit_hits(gw, "max_in_flight") == 1


def test_new_requests_are_refused_while_the_process_buffers_too_much(
        gateway_factory: Any) -> None:
    """Two clients that do not read hold 30-40 MB each, under their own limit; together
    they pass process_buffer_bytes: new requests get -32000 with a retry hint until
    the buffers drain, then they are served again."""
    gw: GatewayProcess = gateway_factory(BG, limits={
        "client_buffer_bytes": 64 * 2**20, "process_buffer_bytes": 64 * 2**20})
    socks = [raw_ws(gw.port) for _ in range(2)]
    for sock in socks:
        sock.sendall(b"".join(ws_frame(m) for m in legacy_opening()
                              + big_calls(45, 1_000_000)))
    wait_until(lambda: metric(gw, "mcpfast_overloaded") == 1, timeout=60)

    async def refused() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            answer = await c.call_tool("big", {"size": 3})
            assert answer["error"]["code"] == -32000
            assert answer["error"]["data"] == {"retryAfterSeconds": 1}
    run(refused())
    for sock in socks:
        sock.close()
    wait_until(lambda: metric(gw, "mcpfast_overloaded") == 0, timeout=30)
    run(_echo_through(gw))
    assert limit_hits(gw, "client_buffer_bytes") == 0


# -- limits: time ----------------------------------------------------------------------
def _closed_after(sock: socket.socket, trickle: bytes, every: float, limit: float
                  ) -> tuple[float, bytes]:
    """Send ``trickle`` one byte at a time every ``every`` seconds until the gateway
    closes; return the seconds that took and what the gateway sent."""
    start = time.monotonic()
    sock.setblocking(False)
    received = b""
    i = 0
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                return time.monotonic() - start, received
            received += chunk
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return time.monotonic() - start, received
        try:
            sock.send(trickle[i % len(trickle):i % len(trickle) + 1])
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start, received
        i += 1
        time.sleep(every)
    raise AssertionError(f"still open after {limit} s")


def test_a_request_head_sent_slowly_is_cut_off_at_header_timeout(
        gateway_factory: Any) -> None:
    """Defect 7: any byte reset the idle timer, so a header line every few seconds held
    a connection for ever. Activity no longer moves the deadline."""
    gw: GatewayProcess = gateway_factory(BG, limits={"header_timeout": 1.0})
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"POST /mcp HTTP/1.1\r\n")
    took, answer = _closed_after(sock, b"X-Slow: y\r\n", 0.1, 15)
    assert 0.9 <= took < 6, took
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


def test_a_request_body_sent_slowly_is_cut_off_at_body_timeout(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(BG, limits={"body_timeout": 1.0})
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 b"\r\nAccept: application/json, text/event-stream\r\n"
                 b"Content-Length: 100000\r\n\r\n")
    took, answer = _closed_after(sock, b" ", 0.1, 15)
    assert 0.9 <= took < 6, took
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


def test_a_websocket_message_sent_slowly_is_cut_off_at_body_timeout(
        gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(BG, limits={"body_timeout": 1.0})
    sock = raw_ws(gw.port)
    frame = ws_frame(b" " * 5000)
    sock.sendall(frame[:100])
    took, answer = _closed_after(sock, frame[100:], 0.1, 15)
    assert 0.9 <= took < 8, took
    # The close frame: opcode 8, status 1008.
    assert answer[:1] == b"\x88" and struct.unpack("!H", answer[2:4])[0] == 1008, answer


def test_connections_per_address_are_capped_and_the_admin_port_still_answers(
        gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(BG, limits={"max_connections_per_peer": 3})
    held = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(3)]
    wait_until(lambda: metric(gw, "mcpfast_open_client_connections") == 3)
    extra = socket.create_connection(("127.0.0.1", gw.port))
    extra.settimeout(10)
    answer = extra.recv(4096)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert gw.admin_get("/liveness")[0] == 200
    held.pop().close()
    wait_until(lambda: metric(gw, "mcpfast_open_client_connections") == 2)
    assert run(_echo_through(gw)) is None
    assert limit_hits(gw, "max_connections") == 1
    for sock in held:
        sock.close()


# -- legacy HTTP sessions --------------------------------------------------------------
async def _initialize(http: Any, url: str) -> tuple[int, str | None]:
    async with http.post(url, json=INIT, headers={
            "Accept": JSON_AND_SSE, "Content-Type": "application/json"}) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Mcp-Session-Id")


async def _ping(http: Any, url: str, sid: str) -> int:
    async with http.post(url, json={"jsonrpc": "2.0", "id": 9, "method": "ping"}, headers={
            "Accept": JSON_AND_SSE, "Content-Type": "application/json",
            "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}) as resp:
        await resp.read()
        return resp.status


def test_one_address_cannot_take_every_legacy_session(gateway_factory: Any) -> None:
    """Defect 9: one client opened 10,000 sessions and every other got 503 for 300 s."""
    gw: GatewayProcess = gateway_factory(BG, listen={"http": {"max_sessions_per_peer": 3}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            opened = [await _initialize(http, gw.http_url) for _ in range(3)]
            assert [status for status, _ in opened] == [200, 200, 200]
            status, sid = await _initialize(http, gw.http_url)
            assert (status, sid) == (429, None)
            assert limit_hits(gw, "max_sessions_per_peer") == 1
            first = opened[0][1]
            assert first is not None
            async with http.delete(gw.http_url, headers={
                    "Mcp-Session-Id": first, "MCP-Protocol-Version": "2025-11-25"}) as resp:
                assert resp.status == 200
            status, sid = await _initialize(http, gw.http_url)
            assert status == 200 and sid is not None
    run(main())


def test_a_legacy_session_ends_after_session_timeout_without_a_request(
        gateway_factory: Any) -> None:
    """``listen.http.session_timeout`` (found unread by an outside sweep): a session
    with no request for that long ends, and its id gets 404. ``listen.idle_timeout``,
    for connections, does not end it sooner. Margins of seconds for a busy machine
    (the sweeper runs every 0.5 s)."""
    gw: GatewayProcess = gateway_factory(BG, listen={"idle_timeout": 0.5,
                                                     "http": {"session_timeout": 3.0}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            status, sid = await _initialize(http, gw.http_url)
            assert status == 200 and sid is not None
            await asyncio.sleep(1.5)  # three idle_timeouts, half a session_timeout
            assert await _ping(http, gw.http_url, sid) == 200
            await asyncio.sleep(6.0)  # two session_timeouts
            assert await _ping(http, gw.http_url, sid) == 404
    run(main())


def test_a_session_id_expires_at_its_maximum_age(gateway_factory: Any) -> None:
    """Defect 8: issued_at was never checked, so an id lived as long as it was used."""
    gw: GatewayProcess = gateway_factory(BG, listen={"http": {"session_max_age": 2.0}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            status, sid = await _initialize(http, gw.http_url)
            assert status == 200 and sid is not None
            assert await _ping(http, gw.http_url, sid) == 200
            deadline = time.monotonic() + 15
            while await _ping(http, gw.http_url, sid) == 200:
                assert time.monotonic() < deadline, "the session outlived session_max_age"
                await asyncio.sleep(0.2)
            assert await _ping(http, gw.http_url, sid) == 404
    run(main())


def test_a_deleted_session_id_is_not_revived_by_a_restart(gateway_factory: Any) -> None:
    """Defect 8: the revocation list lived in memory only, so a deleted id worked again
    on a gateway restarted with the same secret. Ids issued before a process started
    are not adopted by it: their clients initialize again."""
    secret = {"http": {"session_secret": "a shared secret of some length"}}
    one: GatewayProcess = gateway_factory(BG, listen=secret)

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            _, sid = await _initialize(http, one.http_url)
            assert sid is not None
            async with http.delete(one.http_url, headers={
                    "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}) as resp:
                assert resp.status == 200
            assert await _ping(http, one.http_url, sid) == 404
            await asyncio.sleep(1.1)  # ids carry whole seconds
            restarted = gateway_factory(BG, listen=secret)
            assert await _ping(http, restarted.http_url, sid) == 404
            # An id issued after it started is served by it (replicas share sessions).
            _, fresh = await _initialize(http, one.http_url)
            assert fresh is not None
            assert await _ping(http, restarted.http_url, fresh) == 200
    run(main())


def test_a_gateway_bound_to_another_loopback_address_accepts_its_own_host(
        gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(BG, listen={"host": "127.0.0.2"})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.2:{gw.port}/mcp"
            status, sid = await _initialize(http, url)
            assert status == 200 and sid is not None
    run(main())


def test_a_tool_of_an_upstream_not_ready_yet_is_not_called_unknown(
        gateway_factory: Any) -> None:
    stuck = {"command": ["python", "-c", "import time; time.sleep(120)"],
             "init_timeout": 1.0}
    gw: GatewayProcess = gateway_factory({"bg": BG["bg"], "stuck": stuck}, start=False)
    gw.start(wait_ready=False)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", gw.port)).close()
            return True
        except OSError:
            return False
    wait_until(listening, timeout=30)
    wait_until(lambda: gw.upstream("bg")["ready"], timeout=30)

    async def main() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            answer = await c.call_tool("stuck__anything")
            assert answer["error"]["code"] == -32000
            assert "'stuck'" in answer["error"]["message"]
            assert (await c.call_tool("bg__big", {"size": 2}))["result"]["content"][0][
                "text"] == "xx"
    run(main())


def send_while_reading(sock: socket.socket, chunk: bytes, times: int, shut: bool = False
                       ) -> tuple[bytearray, OSError | None]:
    """Send ``chunk`` ``times`` times (then shut the write side, if ``shut``) while a
    thread reads what the gateway sends, until it closes: what was read (a read that
    failed ends it with ``<ErrorName>``), and the error that stopped the sending."""
    received = bytearray()

    def read() -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError as exc:
                received.extend(f"<{type(exc).__name__}>".encode())
                return
            if not data:
                return
            received.extend(data)
    reader = threading.Thread(target=read)
    reader.start()
    failed = None
    try:
        for _ in range(times):
            sock.sendall(chunk)
        if shut:
            sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        failed = exc
    reader.join(15)
    return received, failed


def test_an_oversized_body_gets_its_413_before_the_connection_closes(
        gateway_factory: Any) -> None:
    """A client still sending its body when the gateway refuses it must read the 413:
    closing with unread input sends an RST that destroys the answer (lingering close)."""
    gw: GatewayProcess = gateway_factory(BG, listen={"max_message_bytes": 65536})
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 b"\r\nAccept: application/json, text/event-stream\r\n"
                 b"Content-Length: 4000000\r\n\r\n")
    received, _ = send_while_reading(sock, b" " * 65536, 60)
    sock.close()
    assert bytes(received).startswith(b"HTTP/1.1 413 "), bytes(received[:200])
    assert b"<ConnectionResetError>" not in received


def test_a_request_then_malformed_bytes_get_their_answers_before_the_close(
        gateway_factory: Any) -> None:
    """A whole request and malformed bytes in one segment, then more bytes: the request
    is answered, then 400, and the client that goes on sending is read and dropped
    until it stops (a lingering close), not reset (found by review: reading stayed
    paused, and the unread input made the close an RST)."""
    gw: GatewayProcess = gateway_factory(BG)
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nBAD\x01 / HTTP/1.1\r\n\r\n")
    # 8 MiB, more than the socket buffers hold.
    received, failed = send_while_reading(sock, b"x" * 65536, 128, shut=True)
    sock.close()
    assert failed is None, failed
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", bytes(received))
    assert statuses == [b"404", b"400"], received
    assert b"<ConnectionResetError>" not in received


def test_a_client_expecting_100_continue_gets_it_then_its_answer(gateway_factory: Any) -> None:
    """RFC 9110 10.1.1: a client that sends ``Expect: 100-continue`` (curl does, for
    bodies over 1 MiB) waits for 100 (Continue) before its body: it comes at once, and a
    head refused for what it declares (a body over the limit, a transfer coding the
    gateway cannot read: 501) gets its final status instead, without waiting for a
    body."""
    gw: GatewayProcess = gateway_factory(BG, listen={"max_message_bytes": 65536})

    async def head_then_body(declared: str, body: bytes) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n"
                         f"Accept: {JSON_AND_SSE}\r\nContent-Type: application/json\r\n"
                         f"Expect: 100-continue\r\n{declared}\r\n\r\n".encode())
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            if not first.startswith(b"HTTP/1.1 100 "):
                return first, b""
            writer.write(body)
            return first, await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        finally:
            writer.close()

    async def main() -> None:
        payload = json.dumps(INIT).encode()
        interim, final = await head_then_body(f"Content-Length: {len(payload)}", payload)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert final.startswith(b"HTTP/1.1 200 "), final
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
        interim, final = await head_then_body("Transfer-Encoding: chunked", chunked)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert final.startswith(b"HTTP/1.1 200 "), final
        refused, _ = await head_then_body("Content-Length: 4000000", b"")
        assert refused.startswith(b"HTTP/1.1 413 "), refused
        refused, _ = await head_then_body("Transfer-Encoding: gzip, chunked", b"")
        assert refused.startswith(b"HTTP/1.1 501 "), refused
    run(main())


def test_a_request_without_one_host_or_in_another_version_is_refused(
        gateway_factory: Any) -> None:
    """RFC 9112 3.2: an HTTP/1.1 request without a Host, or with two, is 400 (not the
    421 of a Host not served); a version other than HTTP/1.0 and 1.1 is 505 (RFC 9110
    15.6.6), not answered as HTTP/1.1."""
    gw: GatewayProcess = gateway_factory(BG)

    async def status_of(head: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(head + b"\r\n")
            return (await asyncio.wait_for(reader.readuntil(b"\r\n"), 20))[:12]
        finally:
            writer.close()

    async def main() -> None:
        post = b"POST /mcp HTTP/1.1\r\nContent-Length: 0\r\n"
        assert await status_of(post) == b"HTTP/1.1 400"
        assert await status_of(post + b"Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n") \
            == b"HTTP/1.1 400"
        assert await status_of(b"GET /mcp HTTP/1.1\r\nUpgrade: websocket\r\n"
                               b"Connection: Upgrade\r\n") == b"HTTP/1.1 400"
        assert await status_of(b"POST /mcp HTTP/2.0\r\nHost: 127.0.0.1\r\n"
                               b"Content-Length: 0\r\n") == b"HTTP/1.1 505"
        # HTTP/1.0 needs no Host; a foreign one is still not served.
        assert await status_of(b"POST /mcp HTTP/1.0\r\nHost: evil.example\r\n"
                               b"Content-Length: 0\r\n") == b"HTTP/1.1 421"
    run(main())


def test_a_congested_upstream_stops_the_gateway_reading_its_clients(
        gateway_factory: Any) -> None:
    """The root cause behind clients that 'never read' yet made the gateway grow: their
    requests were read and queued toward an upstream slower than they. Past the
    upstream's high-water mark the gateway stops reading the clients that feed it, so
    requests wait in the clients' own sockets."""
    gw: GatewayProcess = gateway_factory(BG, limits={"max_in_flight": 1_000_000})
    assert gw.proc is not None
    sock = raw_ws(gw.port)
    padding = "p" * 4000
    sock.sendall(b"".join(ws_frame(m) for m in legacy_opening()) + ws_frame(json.dumps({
        "jsonrpc": "2.0", "id": "stall", "method": "tools/call",
        "params": {"name": "stall", "arguments": {"seconds": 6}}}).encode()))
    ids = itertools.count()

    def batch() -> memoryview:
        # Fresh ids every time: a repeated one is refused at once, not forwarded.
        return memoryview(b"".join(ws_frame(json.dumps({
            "jsonrpc": "2.0", "id": next(ids), "method": "tools/call",
            "params": {"name": "big", "arguments": {"size": 1, "pad": padding}}}).encode())
            for _ in range(100)))
    sock.setblocking(False)
    sent = 0
    rest = batch()
    with PeakRss(gw.pid) as peak:
        base = peak.peak
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                n = sock.send(rest)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            sent += n
            rest = rest[n:] or batch()
    sock.close()
    # The pipe, 1 MiB queued toward the upstream, and the sockets' buffers: not the
    # tens of megabytes the client tried to send.
    assert sent < 24 * 2**20, f"the gateway read {sent / 2**20:.1f} MiB from its client"
    assert peak.peak - base < 40 * 2**20, f"RSS grew by {(peak.peak - base) / 2**20:.0f} MiB"


def test_a_client_paused_for_a_congested_upstream_is_read_again_once_it_drains(
        gateway_factory: Any) -> None:
    """The other half: once the upstream has caught up, the clients it held back are
    read again, and every request they sent meanwhile is answered."""
    gw: GatewayProcess = gateway_factory(BG, limits={"max_in_flight": 1_000_000})
    padding = "p" * 4000
    count = 1200  # 4.8 MB: past the upstream's own read buffer, its pipe and high water

    async def main() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            stalled = await c.call_tool("stall", {"seconds": 3})
            assert stalled["result"]["content"][0]["text"] == "stalled"

            async def send_all() -> None:
                for i in range(count):
                    await c.start_call("big", {"size": 1, "pad": padding}, f"b{i}")
            sender = asyncio.create_task(send_all())
            for i in range(count):
                answer = await c.wait_for(f"b{i}", timeout=30)
                assert answer["result"]["content"][0]["text"] == "x", answer
            await sender
            after = await c.call_tool("big", {"size": 2})
            assert after["result"]["content"][0]["text"] == "xx"
    run(main())
    # The client was held back on the way (or this test would prove nothing).
    assert "congested: pausing the clients that feed it" in gw.log()


def test_a_client_streaming_large_messages_outlives_the_body_timeout(
        gateway_factory: Any) -> None:
    """The message deadline belongs to each message: a client that keeps sending large
    messages back to back for longer than body_timeout is not cut off, although its
    reads seldom end between two messages."""
    gw: GatewayProcess = gateway_factory(BG, limits={"body_timeout": 1.0})
    sock = raw_ws(gw.port)
    pad = "p" * 150_000
    stream = b"".join(ws_frame(m) for m in legacy_opening()) + b"".join(
        ws_frame(json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
            "name": "big", "arguments": {"size": 1, "pad": pad}}}).encode())
        for i in range(40))
    closed_early = threading.Event()
    stop = threading.Event()

    def drain() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                if not sock.recv(65536):
                    closed_early.set()
                    return
            except TimeoutError:
                continue
            except OSError:
                closed_early.set()
                return
    reader = threading.Thread(target=drain)
    reader.start()
    start = time.monotonic()
    for offset in range(0, len(stream), 100_003):  # reads end inside messages
        sock.sendall(stream[offset:offset + 100_003])
        time.sleep(0.05)
    assert time.monotonic() - start > 2.0
    time.sleep(0.5)
    stop.set()
    reader.join()
    sock.close()
    assert not closed_early.is_set(), "the gateway closed a client that kept sending"
    assert limit_hits(gw, "header_or_body_timeout") == 0


def test_by_default_one_address_may_hold_half_the_connections() -> None:
    """Many clients behind one proxy share an address, so the default per-address cap is
    half the total: no address can take every connection, and a busy one still fits."""
    from mcpfast.transport.admission import Admission

    admission = Admission(max_total=10, max_per_peer=0, reserved=0)
    assert [admission.admit("10.0.0.1") for _ in range(5)] == [None] * 5
    assert admission.admit("10.0.0.1") is not None
    assert admission.admit("10.0.0.2") is None
    admission.release("10.0.0.1")
    assert admission.admit("10.0.0.1") is None
    assert admission.refused == 1


def test_a_head_request_is_answered_without_content(gateway_factory: Any) -> None:
    """RFC 9110 9.3.2: a response to HEAD has no content, so a keep-alive client reads
    the next response right after its head (the MCP endpoint's, whose GET would open an
    event stream, is 405; another path's is GET's 404, its length declared). A modern
    request's (its version header) says POST only, as its GET's 405 does."""
    gw: GatewayProcess = gateway_factory(BG)

    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            host = f"Host: 127.0.0.1:{gw.port}\r\n"
            modern = "MCP-Protocol-Version: 2026-07-28\r\n"
            writer.write(f"HEAD /mcp HTTP/1.1\r\n{host}\r\nHEAD /mcp HTTP/1.1\r\n{host}{modern}"
                         f"\r\nGET /mcp HTTP/1.1\r\n{host}{modern}\r\n"
                         f"HEAD /nope HTTP/1.1\r\n{host}\r\n"
                         f"GET /nope HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode())
            received = await asyncio.wait_for(reader.read(-1), 20)
        finally:
            writer.close()
        first, modern_head, rest = received.split(b"\r\n\r\n", 2)
        assert first.startswith(b"HTTP/1.1 405 "), received
        assert "GET, POST, DELETE" in header(first + b"\r\n\r\n", "Allow")
        assert modern_head.startswith(b"HTTP/1.1 405 "), received
        assert header(modern_head + b"\r\n\r\n", "Allow") == "POST"
        modern_get, rest = rest.split(b"\r\n\r\n", 1)
        assert modern_get.startswith(b"HTTP/1.1 405 "), received
        assert header(modern_get + b"\r\n\r\n", "Allow") == "POST"
        rest = rest[int(header(modern_get + b"\r\n\r\n", "Content-Length")):]
        second, third = rest.split(b"\r\n\r\n", 1)
        assert second.startswith(b"HTTP/1.1 404 "), received
        head, body = third.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 404 ") and body.startswith(b"no MCP endpoint")
        declared = int(header(second + b"\r\n\r\n", "Content-Length"))
        assert declared == len(body) == int(header(head + b"\r\n\r\n", "Content-Length"))
    run(main())


def test_a_pipelined_request_the_gateway_does_not_read_yet_is_not_timed_out(
        gateway_factory: Any) -> None:
    """Found by an outside sweep: more than 16 pipelined requests stop the gateway
    reading; the next one's body, sent in time, waited unread while its body_timeout
    ran, and the connection was reset with every answer on it lost. And a request
    expecting 100 Continue behind a slow one waits for the gateway to send it: no
    deadline runs meanwhile either (RFC 9110 10.1.1)."""
    # 2 s: the body that follows 100 Continue has that long (a client on a busy machine
    # may wait a while to be scheduled); the slow call holds the rest for longer, 3 s.
    gw: GatewayProcess = gateway_factory(BG, limits={"body_timeout": 2.0,
                                                     "header_timeout": 2.0})

    def post(body: dict[str, Any], sid: str, *extra: str, length: int | None = None
             ) -> bytes:
        payload = json.dumps(body).encode()
        head = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{gw.port}",
                f"Accept: {JSON_AND_SSE}", "Content-Type: application/json",
                f"Content-Length: {len(payload) if length is None else length}",
                f"Mcp-Session-Id: {sid}", "MCP-Protocol-Version: 2025-11-25", *extra]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + (payload if length is None
                                                              else b"")

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            status, sid = await _initialize(http, gw.http_url)
        assert status == 200 and sid is not None
        slow = {"jsonrpc": "2.0", "id": "slow", "method": "tools/call",
                "params": {"name": "slow", "arguments": {"seconds": 3.0}}}
        last = json.dumps({"jsonrpc": "2.0", "id": "last", "method": "ping"}).encode()
        for expect in ((), ("Expect: 100-continue",)):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            try:
                pings = b"".join(post({"jsonrpc": "2.0", "id": i, "method": "ping"}, sid)
                                 for i in range(17 if not expect else 0))
                received = b""

                async def until(text: bytes, reader: asyncio.StreamReader = reader) -> None:
                    nonlocal received
                    async with asyncio.timeout(20):
                        while text not in received:
                            chunk = await reader.read(65536)
                            assert chunk, received  # not closed before every answer
                            received += chunk
                if not expect:
                    # The last body's start now, the rest while reading is paused.
                    writer.write(post(slow, sid) + pings
                                 + post({}, sid, length=len(last)) + last[:10])
                    await asyncio.sleep(0.3)
                    writer.write(last[10:])
                else:
                    # Its body once the gateway says 100 Continue: after the slow call.
                    writer.write(post(slow, sid) + post({}, sid, *expect, length=len(last)))
                    await until(b"HTTP/1.1 100 Continue\r\n\r\n")
                    writer.write(last)
                await until(b'"id":"last"')
            finally:
                writer.close()
            assert b'"id":"slow","result"' in received
            assert received.count(b'"result":{}') == (18 if not expect else 1)
    run(main())
