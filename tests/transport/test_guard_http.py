"""Streamable HTTP settings the README promises, each against the setting it names:
``allowed_origins`` (anchored glob patterns, and the configured list actually used),
``allowed_hosts`` and the "any Host" rule off loopback, ``max_sessions``,
``replay_events`` with the gap check, ``replay_seconds``, ``sse_retry_ms``, and
``Mcp-Param-*`` validation on the real request path."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mcpfast.protocol.session_ids import SessionSigner

from ..conftest import (
    INIT_PARAMS,
    GatewayProcess,
    Record,
    http_headers,
    http_initialize,
    modern,
    modern_headers,
    read_events,
    recording_upstream,
    run,
)

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}


async def initialize_status(url: str, **extra: str) -> int:
    """The status of a legacy initialize POST with these extra headers."""
    async with aiohttp.ClientSession() as http, http.post(
            url, json=INIT, headers=http_headers(**extra)) as resp:
        await resp.read()
        return resp.status


async def upgrade_status(gw: GatewayProcess, **extra: str) -> int:
    """The status of a WebSocket upgrade with these extra headers (101 when it opens).
    Written by hand: client libraries set Host themselves."""
    headers = {"Host": f"127.0.0.1:{gw.port}", "Upgrade": "websocket",
               "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
               "Sec-WebSocket-Version": "13", "Sec-WebSocket-Protocol": "mcp", **extra}
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        head = "GET /mcp HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write((head + "\r\n").encode())
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(status_line.split()[1])


def statuses(gw: GatewayProcess, **extra: str) -> tuple[int, int]:
    async def both() -> tuple[int, int]:
        return (await initialize_status(gw.http_url, **extra),
                await upgrade_status(gw, **extra))
    result: tuple[int, int] = run(both())
    return result


# -- Origin ----------------------------------------------------------------------------------

def test_configured_origins_are_used_and_anchored(gateway_factory: Any, tmp_path: Path) -> None:
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "o.jsonl")}, listen={"http": {
        "allowed_origins": ["https://app.example.com", "http://localhost:*"]}})
    allowed = ["https://app.example.com", "http://localhost:5173", " https://app.example.com "]
    refused = [
        "https://app.example.com.evil.net",         # a pattern matches the whole value
        "http://evil.net/https://app.example.com",  # ...from its start
        "https://APP.example.com",                  # Origins compare exactly
        "http://127.0.0.1:8000",                    # the default list is replaced
        "null",
    ]
    for origin in allowed:
        assert statuses(gw, Origin=origin) == (200, 101), origin
    for origin in refused:
        assert statuses(gw, Origin=origin) == (403, 403), origin
    assert statuses(gw) == (200, 101)  # no Origin: not a browser


def test_default_origins_are_loopback_only(gateway_factory: Any, tmp_path: Path) -> None:
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "o.jsonl")})
    assert statuses(gw, Origin=f"http://127.0.0.1:{gw.port}") == (200, 101)
    assert statuses(gw, Origin="http://localhost:3000") == (200, 101)
    assert statuses(gw, Origin="http://127.0.0.1.evil.net:80") == (403, 403)
    assert statuses(gw, Origin="https://app.example.com") == (403, 403)


# -- Host ------------------------------------------------------------------------------------

def test_configured_allowed_hosts(gateway_factory: Any, tmp_path: Path) -> None:
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "h.jsonl")}, listen={"http": {
        "allowed_hosts": ["mcp.example.com", "mcp.example.com:*"]}})
    assert statuses(gw, Host="mcp.example.com") == (200, 101)
    assert statuses(gw, Host=f"MCP.example.com:{gw.port}") == (200, 101)  # case-insensitive
    for host in (f"127.0.0.1:{gw.port}", "mcp.example.com.evil.net", "evil.example"):
        assert statuses(gw, Host=host) == (421, 421), host


def test_an_absolute_target_names_the_host_checked(gateway_factory: Any,
                                                  tmp_path: Path) -> None:
    """With an absolute-form target, the target's authority is the host and Host is
    ignored (RFC 9112 3.2.2): it is what the Host allow-list checks."""
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "t.jsonl")})

    def status(target: str, host: str) -> bytes:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": INIT_PARAMS}).encode()
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall((f"POST {target} HTTP/1.1\r\nHost: {host}\r\nAccept: "
                          "application/json, text/event-stream\r\nContent-Type: "
                          f"application/json\r\nContent-Length: {len(body)}\r\n"
                          "Connection: close\r\n\r\n").encode() + body)
            return sock.recv(12)
    here = f"127.0.0.1:{gw.port}"
    assert status("http://evil.example/mcp", here) == b"HTTP/1.1 421"
    assert status(f"http://{here}/mcp", "evil.example") == b"HTTP/1.1 200"
    assert status("/mcp", here) == b"HTTP/1.1 200"


def test_any_host_unless_bound_to_loopback(gateway_factory: Any, tmp_path: Path) -> None:
    """Without allowed_hosts: a loopback listener serves loopback names only, one bound
    to every interface serves any Host."""
    loopback = gateway_factory({"rec": recording_upstream(tmp_path / "a.jsonl")})
    assert statuses(loopback, Host="anything.example") == (421, 421)
    assert statuses(loopback, Host=f"localhost:{loopback.port}") == (200, 101)
    everywhere = gateway_factory({"rec": recording_upstream(tmp_path / "b.jsonl")},
                                 listen={"host": "0.0.0.0"})
    assert statuses(everywhere, Host="anything.example") == (200, 101)
    assert statuses(everywhere, Host="10.1.2.3:8080") == (200, 101)


# -- sessions and streams ---------------------------------------------------------------------

def test_max_sessions(gateway_factory: Any, tmp_path: Path) -> None:
    # The per-address cap (half of max_sessions by default) is lifted to the global
    # one, which is what this test is about.
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "s.jsonl")},
                         listen={"http": {"max_sessions": 2, "max_sessions_per_peer": 2}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            first = await http_initialize(http, gw.http_url)
            await http_initialize(http, gw.http_url)
            async with http.post(gw.http_url, json=INIT, headers=http_headers()) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "1"
                assert "Mcp-Session-Id" not in resp.headers
                assert (await resp.json())["error"]["code"] == -32600
            async with http.delete(gw.http_url, headers=http_headers(first)) as resp:
                assert resp.status == 200
            await http_initialize(http, gw.http_url)  # a place is free again
    run(main())


def test_sse_retry_ms_is_the_priming_event_retry(gateway_factory: Any, tmp_path: Path) -> None:
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "r.jsonl")},
                         listen={"http": {"sse_retry_ms": 4321}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await http_initialize(http, gw.http_url)
            async with http.get(gw.http_url, headers=http_headers(
                    sid, Accept="text/event-stream")) as get:
                assert get.status == 200
                lines: list[str] = []
                async with asyncio.timeout(10):
                    while "" not in lines:  # the priming event, up to its blank line
                        lines.append((await get.content.readline()).decode().rstrip("\n"))
            assert "retry: 4321" in lines, lines
            assert any(line.startswith("id: ") for line in lines), lines
    run(main())


def progress_call(request_id: int, steps: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": steps, "interval": 0.02},
                       "_meta": {"progressToken": f"t{request_id}"}}}


async def start_and_drop(http: aiohttp.ClientSession, gw: GatewayProcess, sid: str,
                         request_id: int, steps: int) -> str:
    """POST a progress call, read its priming event and first progress event, drop the
    connection; the id of the last event read."""
    resp = await http.post(gw.http_url, json=progress_call(request_id, steps),
                           headers=http_headers(sid))
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    events = await read_events(resp, 2)
    resp.close()
    assert events[0][1] is None and events[1][1]["params"]["progress"] == 1
    last_id = events[1][0]
    assert last_id is not None
    return last_id


async def resume(http: aiohttp.ClientSession, gw: GatewayProcess, sid: str, last_id: str
                 ) -> tuple[int, list[Any]]:
    """Resume after ``last_id``: the status and every event until the stream ends."""
    async with http.get(gw.http_url, headers=http_headers(
            sid, Accept="text/event-stream", **{"Last-Event-ID": last_id})) as resp:
        if resp.status != 200:
            return resp.status, [await resp.json()]
        return resp.status, [e[1] for e in await read_events(resp, 1000)]


def test_replay_events_and_the_gap_check(gateway_factory: Any, tmp_path: Path) -> None:
    """With replay_events = 3, a stream keeps its last three events: resuming right
    before them replays exactly those (each once), resuming earlier is refused rather
    than silently skipping what was dropped."""
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "g.jsonl")},
                         listen={"http": {"replay_events": 3}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await http_initialize(http, gw.http_url)
            last_id = await start_and_drop(http, gw, sid, 5, steps=8)
            stream, seq = last_id.rsplit("_", 1)
            assert seq == "1"
            await asyncio.sleep(1.0)  # the call ends (8 x 20 ms) while nobody reads
            status, body = await resume(http, gw, sid, last_id)
            assert status == 400, body
            assert body[0]["error"]["code"] == -32600
            assert "dropped" in body[0]["error"]["message"]
            # Events 7 and 8 (progress) and 9 (the result) are what is kept.
            status, events = await resume(http, gw, sid, f"{stream}_6")
            assert status == 200, events
            assert [e.get("params", {}).get("progress") for e in events[:-1]] == [7, 8]
            assert events[-1]["id"] == 5 and events[-1]["result"]["content"][0]["text"] \
                == "8 steps"
            assert len(events) == 3
    run(main())


def test_replay_seconds(gateway_factory: Any, tmp_path: Path) -> None:
    """A dropped stream stays resumable for replay_seconds (1 s here), then is gone."""
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "t.jsonl")},
                         listen={"http": {"replay_seconds": 1.0}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await http_initialize(http, gw.http_url)
            early = await start_and_drop(http, gw, sid, 2, steps=2)
            late = await start_and_drop(http, gw, sid, 3, steps=2)
            dropped_at = time.monotonic()
            await asyncio.sleep(0.3)
            status, events = await resume(http, gw, sid, early)
            assert status == 200 and events[-1]["id"] == 2, events
            # Forgotten at the first sweep (each second) after a second has passed.
            await asyncio.sleep(max(0.0, 3.5 - (time.monotonic() - dropped_at)))
            status, body = await resume(http, gw, sid, late)
            assert status == 400, body
            assert "no stream has event" in body[0]["error"]["message"]
    run(main())


# -- Mcp-Param-* on the real request path ----------------------------------------------------

def test_mcp_param_headers_are_validated(gateway_factory: Any, tmp_path: Path) -> None:
    """The recording upstream's ``region`` tool marks its ``region`` argument
    ``x-mcp-header: Region``: a modern tools/call must carry a matching
    ``Mcp-Param-Region``, and one that does not never reaches the upstream."""
    record = Record(tmp_path / "p.jsonl")
    gw = gateway_factory({"rec": recording_upstream(record.path)})

    async def call(http: aiohttp.ClientSession, request_id: int, arguments: dict[str, Any],
                   **extra: str) -> tuple[int, Any]:
        body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                "params": modern({"name": "region", "arguments": arguments})}
        async with http.post(gw.http_url, json=body,
                             headers=modern_headers("tools/call", "region", **extra)) as resp:
            return resp.status, json.loads(await resp.read())

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            ok = await call(http, 1, {"region": "eu-west"}, **{"Mcp-Param-Region": "eu-west"})
            assert ok[0] == 200 and ok[1]["result"]["content"][0]["text"] == "eu-west", ok
            encoded = "=?base64?" + base64.b64encode(b"eu-west").decode() + "?="
            ok = await call(http, 2, {"region": "eu-west"}, **{"mcp-param-region": encoded})
            assert ok[0] == 200, ok
            refused = [
                await call(http, 3, {"region": "eu-west"}),                        # missing
                await call(http, 4, {"region": "eu-west"}, **{"Mcp-Param-Region": "us"}),
                await call(http, 5, {"text": "no region"}, **{"Mcp-Param-Region": "eu"}),
                await call(http, 6, {"region": "eu"}, **{"Mcp-Param-Region": "=?base64?*?="}),
            ]
            for n, (status, reply) in enumerate(refused, 3):
                code = reply.get("error", {}).get("code")
                assert (status, reply["id"], code) == (400, n, -32020), reply
            # An unannotated Mcp-Param-* header is forwarded, not judged.
            ok = await call(http, 7, {"region": "x"}, **{"Mcp-Param-Region": "x",
                                                          "Mcp-Param-Other": "y"})
            assert ok[0] == 200, ok
    run(main())
    regions = [m["params"]["arguments"] for m in record.received("tools/call")]
    assert regions == [{"region": "eu-west"}, {"region": "eu-west"}, {"region": "x"}]


@pytest.mark.parametrize("version", ["2026-07-28"])
def test_mcp_param_headers_need_a_known_tool_schema(gateway_factory: Any, tmp_path: Path,
                                                    version: str) -> None:
    """A tool without annotations takes any Mcp-Param-* header (they are forwarded)."""
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "q.jsonl")})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": modern({"name": "echo", "arguments": {"text": "t"}})}
            async with http.post(gw.http_url, json=body, headers=modern_headers(
                    "tools/call", "echo", **{"Mcp-Param-Text": "other"})) as resp:
                assert resp.status == 200
                assert (await resp.json())["result"]["content"][0]["text"] == "t"
    run(main())


# -- session ids --------------------------------------------------------------------------------

SECRET = "a shared secret of some length"


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25"])
def test_a_session_id_carries_what_was_negotiated(gateway_factory: Any, tmp_path: Path,
                                                  version: str) -> None:
    """Signed into the id: the negotiated version and the relayable capabilities, so
    that a replica adopting the session serves it the same way (a version before
    2025-11-25 gets no priming event on its streams there)."""
    upstreams = {"rec": recording_upstream(tmp_path / "v.jsonl")}
    one = gateway_factory(upstreams, listen={"http": {"session_secret": SECRET}})
    two = gateway_factory(upstreams, listen={"http": {"session_secret": SECRET}})
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        **INIT_PARAMS, "protocolVersion": version, "capabilities": {"elicitation": {}}}}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(one.http_url, json=init, headers=http_headers()) as resp:
                assert resp.status == 200
                sid = resp.headers["Mcp-Session-Id"]
            claims = SessionSigner(SECRET).verify(sid)
            assert claims is not None
            assert (claims.protocol_version, claims.capabilities) == (
                version, {"elicitation": {}})
            headers = {**http_headers(sid, Accept="text/event-stream"),
                       "MCP-Protocol-Version": version}
            async with http.get(two.http_url, headers=headers) as get:
                assert get.status == 200
                if version >= "2025-11-25":
                    (primed,) = await read_events(get, 1)
                    assert primed[1] is None and primed[0] is not None
                else:
                    with pytest.raises(TimeoutError):
                        await read_events(get, 1, timeout=1.5)
    run(main())


def test_a_failed_initialize_leaves_no_session(gateway_factory: Any, tmp_path: Path) -> None:
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "f.jsonl")})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            before = gw.status()["connections"]["open"]
            for params in ({}, {"protocolVersion": 7}, []):
                bad = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
                async with http.post(gw.http_url, json=bad, headers=http_headers()) as resp:
                    assert "Mcp-Session-Id" not in resp.headers
                    assert (await resp.json())["error"]["code"] == -32602
            assert gw.status()["connections"]["open"] == before
            (tcp,) = [lst for lst in gw.status()["listeners"] if "http" in lst]
            assert tcp["http"]["sessions"] == 0
    run(main())


def test_an_adopted_session_is_kept_and_initialize_is_not_repeated(
        gateway_factory: Any, tmp_path: Path) -> None:
    """A replica adopts a session signed by another once, and from then on serves it as
    its own (a second GET stream is a conflict there too); an initialize naming a live
    session is refused."""
    upstreams = {"rec": recording_upstream(tmp_path / "k.jsonl")}
    one = gateway_factory(upstreams, listen={"http": {"session_secret": SECRET}})
    two = gateway_factory(upstreams, listen={"http": {"session_secret": SECRET}})

    def sessions(gw: GatewayProcess) -> int:
        (tcp,) = [lst for lst in gw.status()["listeners"] if "http" in lst]
        return int(tcp["http"]["sessions"])

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await http_initialize(http, one.http_url)
            get = http_headers(sid, Accept="text/event-stream")
            async with http.get(two.http_url, headers=get) as first:
                assert first.status == 200
                async with http.get(two.http_url, headers=get) as second:
                    assert second.status == 409
            assert sessions(two) == 1
            again = {**INIT, "id": 9}
            async with http.post(one.http_url, json=again,
                                 headers=http_headers(sid)) as resp:
                assert resp.status == 400
                reply = await resp.json()
                assert (reply["id"], reply["error"]["code"]) == (9, -32600)
                assert "already initialized" in reply["error"]["message"]
            assert sessions(one) == 1
    run(main())


# -- the modern transport's own checks -----------------------------------------------------

def test_modern_notifications_and_json_only_clients(gateway_factory: Any,
                                                    tmp_path: Path) -> None:
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "n.jsonl")})
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 1}}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.http_url, json=note, headers=modern_headers(
                    "notifications/cancelled")) as resp:
                assert resp.status == 202 and await resp.read() == b""
            async with http.post(gw.http_url, json=note, headers=modern_headers(
                    "notifications/cancelled", **{"MCP-Protocol-Version": "2099-01-01"})
                    ) as resp:
                assert resp.status == 400
                reply = await resp.json()
            assert reply["error"]["code"] == -32022
            assert reply["error"]["data"] == {"supported": ["2026-07-28"],
                                              "requested": "2099-01-01"}
            # A modern client need not accept event streams.
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": modern({"name": "echo", "arguments": {"text": "json"}})}
            async with http.post(gw.http_url, json=call, headers=modern_headers(
                    "tools/call", "echo", Accept="application/json")) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "application/json"
                assert (await resp.json())["result"]["content"][0]["text"] == "json"
            # Nor is it sent one when notifications precede the response (its progress
            # is dropped: found by an outside sweep, which got an event stream).
            progress = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": modern({"name": "progress", "arguments": {"steps": 2}},
                                         progressToken="p")}
            async with http.post(gw.http_url, json=progress, headers=modern_headers(
                    "tools/call", "progress", Accept="application/json")) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "application/json"
                assert "result" in await resp.json()
    run(main())


def test_malformed_modern_bodies_get_errors_not_tracebacks(gateway_factory: Any,
                                                           tmp_path: Path) -> None:
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "m.jsonl")})
    cases: list[tuple[bytes, dict[str, str], int, int]] = [
        (b"{nope", {}, 400, -32700),
        (b"[]", {}, 400, -32600),
        (b'{"jsonrpc":"2.0","id":3,"result":{}}', {}, 400, -32600),
        (b'{"jsonrpc":"2.0","id":4,"method":"tools/list","params":[]}', {}, 400, -32602),
        # JSON (RFC 8259 section 6 sets no range) the gateway cannot encode again.
        (b'{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"n":1e400}}', {}, 400,
         -32602),
        (b"{}", {"Content-Type": "text/plain"}, 415, -32600),
        (b"{}", {"Accept": "text/html"}, 406, -32600),
        # A weight of 0 is "not acceptable" (RFC 9110 12.5.1), the most specific range
        # deciding.
        (b"{}", {"Accept": "application/json;q=0, text/event-stream"}, 406, -32600),
        (b"{}", {"Accept": "application/json; q=0.0, */*"}, 406, -32600),
        (b"{}", {"Accept": "application/*;q=0"}, 406, -32600),
    ]

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            for body, extra, status, code in cases:
                async with http.post(gw.http_url, data=body, headers=modern_headers(
                        "tools/list", **extra)) as resp:
                    assert resp.status == status, (body, await resp.text())
                    reply = await resp.json()
                    assert reply["error"]["code"] == code, body
                    if b'"params":[]' in body:
                        assert reply["error"]["message"] == "params must be an object"
                    if b"1e400" in body:
                        assert reply["error"]["message"].startswith(
                            "params cannot be read: Number out of range"), reply
            # A repeated routing header is the first thing refused (rung 8), before the
            # missing _meta (rung 9) would be.
            no_meta = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list",
                                  "params": {}}).encode()
            headers = [*modern_headers("tools/list").items(), ("Mcp-Method", "tools/list")]
            async with http.post(gw.http_url, data=no_meta, headers=headers) as resp:
                reply = await resp.json()
                assert (resp.status, reply["error"]["code"]) == (400, -32020), reply
                assert "repeated" in reply["error"]["message"]
            # subscriptions/listen answers only with an event stream.
            listen = {"jsonrpc": "2.0", "id": 6, "method": "subscriptions/listen",
                      "params": modern({"notifications": {"toolsListChanged": True}})}
            async with http.post(gw.http_url, json=listen, headers=modern_headers(
                    "subscriptions/listen", Accept="application/json")) as resp:
                reply = await resp.json()
                assert (resp.status, reply["id"], reply["error"]["code"]) == (406, 6, -32600)
    run(main())
    assert "Traceback" not in gw.log() and "internal error" not in gw.log()


def test_sse_keepalive_interval(gateway_factory: Any, tmp_path: Path) -> None:
    """sse_keepalive = 2: a ': ping' comment every 2 s on an open stream, the first one
    2 s after the session began (the sweeper ticks each second)."""
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "k.jsonl")},
                         listen={"http": {"sse_keepalive": 2.0}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            begun = time.monotonic()
            sid = await http_initialize(http, gw.http_url)
            pings: list[float] = []
            async with http.get(gw.http_url, headers=http_headers(
                    sid, Accept="text/event-stream")) as get:
                async with asyncio.timeout(15):
                    while len(pings) < 3:
                        if await get.content.readline() == b": ping\n":
                            pings.append(time.monotonic() - begun)
            assert 2.0 <= pings[0] < 3.5, pings
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert all(1.5 <= gap < 3.0 for gap in gaps), pings
    run(main())


def test_ipv6_loopback_names_are_loopback_names(gateway_factory: Any, tmp_path: Path) -> None:
    """The defaults list ``[::1]`` among the loopback Hosts and ``http://[::1]:*`` among
    the loopback Origins: an IPv6 loopback client is served, and nothing but the listed
    names is (brackets are literal, not a glob character class)."""
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "6.jsonl")})
    assert statuses(gw, Host=f"[::1]:{gw.port}") == (200, 101)
    assert statuses(gw, Host="[::1]") == (200, 101)
    assert statuses(gw, Origin="http://[::1]:3000") == (200, 101)
    for host in ("1", ":", "1:8080", "::1"):
        assert statuses(gw, Host=host) == (421, 421), host
    assert statuses(gw, Origin="http://1:3000") == (403, 403)


def test_a_host_spelled_as_the_bound_ipv6_address(gateway_factory: Any, tmp_path: Path) -> None:
    """Bound to an IPv6 loopback address written out in full, the gateway serves that
    address as a Host (bracketed, as Host headers write it)."""
    host = "0:0:0:0:0:0:0:1"
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "6.jsonl")},
                         listen={"host": host}, start=False)
    gw.start(wait_ready=False)

    async def main() -> None:
        url = f"http://[::1]:{gw.port}/mcp"
        async with aiohttp.ClientSession() as http:
            await asyncio.to_thread(gw.wait_ready)
            for header, status in ((f"[{host}]:{gw.port}", 200), (f"{host}:{gw.port}", 421),
                                   ("evil.example", 421)):
                async with http.post(url, json=INIT, headers=http_headers(Host=header)) as r:
                    assert r.status == status, (header, await r.text())
    run(main())
