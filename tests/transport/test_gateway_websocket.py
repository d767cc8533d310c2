"""End to end over WebSocket: the real gateway process, the `websockets` client, and the
official SDK server as the stdio upstream."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import websockets
from websockets.frames import Close

from mcpfast_ext import websocket_codec_py as codec

from ..conftest import GatewayProcess, run, ws_client


def text_of(response: dict[str, Any]) -> str:
    return response["result"]["content"][0]["text"]


def test_handshake_echoes_mcp_subprotocol(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with websockets.connect(gateway.ws_url, subprotocols=["mcp"]) as ws:
            assert ws.subprotocol == "mcp"
    run(body())


def test_initialize_list_and_call(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            init = await c.initialize(protocolVersion="2025-06-18")
            result = init["result"]
            assert result["protocolVersion"] == "2025-06-18"
            assert result["serverInfo"]["name"] == "mcpfast"
            assert "tools" in result["capabilities"] and "prompts" in result["capabilities"]
            assert (await c.request("ping"))["result"] == {}
            tools = {t["name"] for t in (await c.request("tools/list"))["result"]["tools"]}
            assert {"echo", "add", "slow", "progress", "crash", "whoami"} <= tools
            assert text_of(await c.call_tool("echo", {"text": "héllo"})) == "héllo"
            added = await c.call_tool("add", {"a": 2, "b": 40})
            assert "42" in text_of(added)
            failed = await c.call_tool("fail")
            assert failed["result"]["isError"] is True
    run(body())


def test_unknown_version_gets_latest(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            init = await c.initialize(protocolVersion="1999-01-01")
            assert init["result"]["protocolVersion"] == "2025-11-25"
    run(body())


def test_string_and_int_ids_keep_their_type(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            r1 = await c.request("tools/call", {"name": "echo", "arguments": {"text": "a"}},
                                 request_id="req-7")
            assert r1["id"] == "req-7" and type(r1["id"]) is str
            r2 = await c.request("tools/call", {"name": "echo", "arguments": {"text": "b"}},
                                 request_id=123456789012)
            assert r2["id"] == 123456789012 and type(r2["id"]) is int
            # Numeric strings stay strings (every type is covered in test_guard_ids.py).
            r3 = await c.request("tools/call", {"name": "echo", "arguments": {"text": "c"}},
                                 request_id="42")
            assert r3["id"] == "42" and type(r3["id"]) is str
    run(body())


def test_prompts_resources_completion(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            prompts = (await c.request("prompts/list"))["result"]["prompts"]
            assert [p["name"] for p in prompts] == ["greet"]
            got = await c.request("prompts/get", {"name": "greet", "arguments": {"name": "Ada"}})
            assert "Ada" in json.dumps(got["result"]["messages"])
            resources = (await c.request("resources/list"))["result"]["resources"]
            assert any(r["uri"] == "test://static" for r in resources)
            templates = (await c.request("resources/templates/list"))["result"]
            assert templates["resourceTemplates"][0]["uriTemplate"] == "test://item/{id}"
            read = await c.request("resources/read", {"uri": "test://static"})
            assert read["result"]["contents"][0]["text"] == "static resource"
            item = await c.request("resources/read", {"uri": "test://item/42"})
            assert "42" in item["result"]["contents"][0]["text"]
            done = await c.request("completion/complete", {
                "ref": {"type": "ref/prompt", "name": "greet"},
                "argument": {"name": "name", "value": "A"}})
            assert done["result"]["completion"]["values"]
    run(body())


def test_progress_tokens_are_mapped_per_client(gateway: GatewayProcess) -> None:
    """Two clients use the same progress token at once; each sees only its own."""
    async def one(token: Any, steps: int) -> list[dict[str, Any]]:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            response = await c.request("tools/call", {
                "name": "progress", "arguments": {"steps": steps},
                "_meta": {"progressToken": token}})
            assert text_of(response) == f"completed {steps} steps"
            return c.notifications

    async def body() -> None:
        a, b = await asyncio.gather(one("same", 3), one("same", 5))
        for notes, steps in ((a, 3), (b, 5)):
            progress = [n for n in notes if n["method"] == "notifications/progress"]
            assert len(progress) == steps
            assert all(n["params"]["progressToken"] == "same" for n in progress)
    run(body())


def test_cancellation_reaches_the_upstream(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 5}, 99)
            await asyncio.sleep(0.3)
            assert gateway.upstream("sdk")["in_flight"] == 1
            await c.notify("notifications/cancelled", {"requestId": 99, "reason": "test"})
            await asyncio.sleep(0.3)
            assert gateway.upstream("sdk")["in_flight"] == 0
            # The cancelled request is never answered; the session carries on.
            assert text_of(await c.call_tool("echo", {"text": "after"})) == "after"
            assert not c.responded(99)
    run(body())


def test_disconnect_cancels_in_flight_work(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 5}, 1)
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.3)
        assert gateway.upstream("sdk")["in_flight"] == 0
        assert gateway.status()["connections"]["open"] == 0
    run(body())


def test_logging_notifications_follow_the_level(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            assert (await c.request("logging/setLevel", {"level": "warning"}))["result"] == {}
            await c.call_tool("log", {"message": "quiet", "level": "info"})
            await c.call_tool("log", {"message": "loud", "level": "error"})
            await c.request("ping")
            messages = [n["params"] for n in c.notifications
                        if n["method"] == "notifications/message"]
            assert [m["level"] for m in messages] == ["error"]
            assert "loud" in json.dumps(messages[0]["data"])
    run(body())


def test_sampling_request_is_forwarded_to_the_calling_client(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize(capabilities={"sampling": {}})
            await c.start_call("sample", {"prompt": "hi?"}, "s1")
            request = await c.receive()
            assert request["method"] == "sampling/createMessage"
            await c.send({"jsonrpc": "2.0", "id": request["id"], "result": {
                "role": "assistant", "content": {"type": "text", "text": "sampled!"},
                "model": "test-model", "stopReason": "endTurn"}})
            response = await c.wait_for("s1")
            assert "sampled!" in text_of(response)
    run(body())


def test_sampling_without_client_capability_fails_cleanly(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            response = await c.call_tool("sample", {"prompt": "hi?"})
            # The upstream is modern (probed): it refuses, since the capabilities the
            # gateway passes on are the client's, which lack sampling.
            assert response["error"]["code"] == -32021, response
            assert "sampling" in response["error"]["data"]["requiredCapabilities"]
    run(body())


def test_errors_for_bad_messages_leave_the_connection_usable(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.send_raw("{not json")
            err = await c.receive()
            assert err["id"] is None and err["error"]["code"] == -32700
            await c.send_raw(json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]))
            err = await c.receive()
            assert err["error"]["code"] == -32600 and "batch" in err["error"]["message"]
            await c.send_raw(json.dumps({"jsonrpc": "1.0", "id": 5, "method": "ping"}))
            err = await c.receive()
            assert err["id"] == 5 and err["error"]["code"] == -32600
            await c.send_raw(json.dumps({"jsonrpc": "2.0", "id": None, "method": "ping"}))
            assert (await c.receive())["error"]["code"] == -32600
            await c.send_raw(json.dumps({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}))
            err = await c.receive()
            assert err["id"] == 6 and err["error"]["code"] == -32600  # before initialize
            # The notification that follows initialize's answer does not stand in for it.
            await c.send_raw(json.dumps({"jsonrpc": "2.0",
                                         "method": "notifications/initialized"}))
            for method in ("tools/list", "tools/call", "resources/read"):
                await c.send_raw(json.dumps({"jsonrpc": "2.0", "id": method, "method": method,
                                             "params": {"name": "echo", "uri": "x://y"}}))
                err = await c.receive()
                assert err["id"] == method and err["error"]["code"] == -32600, err
                assert "before initialize" in err["error"]["message"]
            await c.initialize()
            assert (await c.request("no/such/method"))["error"]["code"] == -32601
            unknown = await c.call_tool("nope")
            assert unknown["error"]["code"] == -32602 and "nope" in unknown["error"]["message"]
            bad = await c.request("tools/call", {"name": 5})
            assert bad["error"]["code"] == -32602
            missing = await c.request("resources/read", {})
            assert missing["error"]["code"] == -32602
            again = await c.request("initialize", {"protocolVersion": "2025-11-25"})
            assert again["error"]["code"] == -32600
            assert text_of(await c.call_tool("echo", {"text": "still fine"})) == "still fine"
    run(body())


def test_clients_are_isolated(gateway: GatewayProcess) -> None:
    """Many clients reuse the same ids concurrently; each gets exactly its own answers."""
    async def client(n: int) -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            for i in range(20):
                response = await c.request("tools/call", {
                    "name": "echo", "arguments": {"text": f"client {n} msg {i}"}}, request_id=i)
                assert text_of(response) == f"client {n} msg {i}"

    async def body() -> None:
        await asyncio.gather(*(client(n) for n in range(8)))
    run(body())


def test_pipelined_requests_all_answered(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            for i in range(200):
                await c.start_call("echo", {"text": str(i)}, i)
            for i in range(200):
                assert text_of(await c.wait_for(i)) == str(i)
    run(body())


# -- RFC 6455 at the gateway's edge -------------------------------------------------

def raw_socket(gateway: GatewayProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    return s


def upgrade(s: socket.socket, extra: str = "") -> bytes:
    s.sendall(("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n"
               f"{extra}\r\n").encode())
    return read_http(s)


def read_http(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_frames(s: socket.socket, until_close: bool = True) -> list[tuple[bool, int, bytes]]:
    parser = codec.FrameParser(expect_masked=False, max_payload=1 << 24)
    frames: list[tuple[bool, int, bytes]] = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return frames
        frames.extend(parser.feed(chunk))
        if frames and (not until_close or frames[-1][1] == codec.OP_CLOSE):
            return frames


def close_code(frame: tuple[bool, int, bytes]) -> int:
    assert frame[1] == codec.OP_CLOSE
    return int.from_bytes(frame[2][:2], "big")


def test_bad_handshakes_get_http_errors(gateway: GatewayProcess) -> None:
    cases = [
        ("GET /other HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
        # Without an upgrade, /mcp is the Streamable HTTP endpoint (test_http_*.py).
        ("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 406),
        ("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 406),
        ("PUT /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 405),
        # DNS rebinding: a loopback listener serves loopback names only; a foreign
        # Origin is refused, for the upgrade as for HTTP.
        ("GET /mcp HTTP/1.1\r\nHost: evil.example\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n", 421),
        ("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         403),
        ("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n", 400),
        ("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
        ("NONSENSE\r\n\r\n", 400),
    ]
    for request, status in cases:
        with raw_socket(gateway) as s:
            s.sendall(request.encode())
            head = read_http(s)
            assert head.startswith(f"HTTP/1.1 {status} ".encode()), (request, head)


def test_http_keep_alive_after_an_error(gateway: GatewayProcess) -> None:
    with raw_socket(gateway) as s:
        s.sendall(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_http(s).startswith(b"HTTP/1.1 404")
        head = upgrade(s)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head


UPGRADE = ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


@pytest.mark.parametrize("request_head,status", [
    (f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n{UPGRADE.replace(' 13', ' 8')}", 426),
    (f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n{UPGRADE}",
     403),
    (f"GET /other HTTP/1.1\r\nHost: 127.0.0.1\r\n{UPGRADE}", 404),
    (f"HEAD /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n{UPGRADE}", 405),
])
def test_a_refused_upgrade_closes_its_connection(gateway: GatewayProcess, request_head: str,
                                                 status: int) -> None:
    """What follows an upgrade request is read as the new protocol's: declined, the
    connection cannot go on as HTTP/1.1, so the refusal says Connection: close and
    closes it (RFC 9112 9.6), rather than leave the next request on it unanswered (an
    outside sweep found it so, the next request failing with an internal error)."""
    pipelined = "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    with raw_socket(gateway) as s:
        s.sendall(f"{request_head}\r\n{pipelined}".encode())
        head = read_http(s)
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
        fields = [line.lower() for line in head.split(b"\r\n")]
        assert sum(line.startswith(b"connection:") for line in fields) == 1, head
        assert any(line.startswith(b"connection:") and b"close" in line for line in fields)
        s.settimeout(10)
        rest = head
        while chunk := s.recv(65536):  # the close ends this; a kept connection would time out
            rest += chunk
        assert rest.count(b"HTTP/1.1 ") == 1, rest  # the pipelined request is not read
    assert "Traceback" not in gateway.log() and "Fatal error" not in gateway.log()


@pytest.mark.parametrize("payload,opcode,masked,code", [
    (b"\xff\xfe", codec.OP_TEXT, True, 1007),       # invalid UTF-8
    (b'{"jsonrpc":"2.0"}', codec.OP_TEXT, False, 1002),  # clients must mask
    (b"\x00\x01", codec.OP_BINARY, True, 1003),     # MCP is text
])
def test_protocol_violations_close_with_the_right_code(gateway: GatewayProcess, payload: bytes,
                                                       opcode: int, masked: bool,
                                                       code: int) -> None:
    with raw_socket(gateway) as s:
        assert upgrade(s).startswith(b"HTTP/1.1 101")
        s.sendall(codec.encode_frame(opcode, payload, mask=b"abcd" if masked else None))
        frames = read_frames(s)
        assert close_code(frames[-1]) == code


def test_oversized_message_closes_1009(gateway_factory: Any) -> None:
    gw = gateway_factory(listen={"max_message_bytes": 4096})
    with raw_socket(gw) as s:
        assert upgrade(s).startswith(b"HTTP/1.1 101")
        s.sendall(codec.encode_frame(codec.OP_TEXT, b" " * 5000, mask=b"abcd"))
        assert close_code(read_frames(s)[-1]) == 1009
    # Counted, as an oversized line of the unix socket is (found by an outside sweep).
    status, metrics = gw.admin_get("/metrics")
    assert status == 200 and b"\nmcpfast_oversized_messages_total 1.0\n" in metrics
    # Other clients are unaffected.
    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            assert text_of(await c.call_tool("echo", {"text": "ok"})) == "ok"
    run(body())


def test_fragmented_message_with_ping_between_fragments(gateway: GatewayProcess) -> None:
    message = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    with raw_socket(gateway) as s:
        assert upgrade(s).startswith(b"HTTP/1.1 101")
        s.sendall(codec.encode_frame(codec.OP_TEXT, message[:10], fin=False, mask=b"abcd")
                  + codec.encode_frame(codec.OP_PING, b"hb", mask=b"wxyz")
                  + codec.encode_frame(codec.OP_CONT, message[10:], mask=b"abcd"))
        frames = read_frames(s, until_close=False)
        while len(frames) < 2:
            frames += read_frames(s, until_close=False)
        assert frames[0] == (True, codec.OP_PONG, b"hb")
        assert json.loads(frames[1][2]) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        s.sendall(codec.encode_frame(codec.OP_CLOSE, (1000).to_bytes(2, "big"), mask=b"abcd"))
        assert close_code(read_frames(s)[-1]) == 1000


def test_client_close_handshake(gateway: GatewayProcess) -> None:
    async def body() -> None:
        ws = await websockets.connect(gateway.ws_url, subprotocols=["mcp"])
        await ws.close(code=1000, reason="bye")
        assert ws.close_code == 1000
    run(body())
    assert gateway.status()["connections"]["open"] == 0


def test_idle_timeout_closes_the_connection(gateway_factory: Any) -> None:
    gw = gateway_factory(listen={"idle_timeout": 1.0})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(c.ws.recv(), 5)
            assert closed.value.rcvd == Close(1001, "idle timeout")
    run(body())


def test_upstream_stderr_is_logged_with_its_name(gateway_factory: Any) -> None:
    gw = gateway_factory({"demo": {"command": ["python", "-m", "mcpfast.demo"]}})
    lines = [line for line in gw.log().splitlines() if "mcpfast.upstream.demo.stderr" in line]
    assert any("ready on stdio" in line for line in lines), gw.log()


def test_resource_subscriptions_are_shared_and_scoped(gateway_factory: Any) -> None:
    gw = gateway_factory({"demo": {"command": ["python", "-m", "mcpfast.demo"]}})
    clock = "mcpfast://demo/clock"

    def updates(c: Any) -> list[str]:
        return [n["params"]["uri"] for n in c.notifications
                if n["method"] == "notifications/resources/updated"]

    async def body() -> None:
        async with ws_client(gw.ws_url) as a, ws_client(gw.ws_url) as b, \
                ws_client(gw.ws_url) as bystander:
            for c in (a, b, bystander):
                init = await c.initialize()
            assert init["result"]["capabilities"]["resources"]["subscribe"] is True
            assert (await a.request("resources/subscribe", {"uri": clock}))["result"] == {}
            assert (await b.request("resources/subscribe", {"uri": clock}))["result"] == {}
            await asyncio.sleep(1.6)
            for c in (a, b, bystander):
                await c.request("ping")
            assert updates(a) and updates(b) and set(updates(a)) == {clock}
            assert updates(bystander) == []
            # a leaves; b's subscription keeps the upstream one alive.
            await a.request("resources/unsubscribe", {"uri": clock})
            a.notifications.clear()
            b.notifications.clear()
            await asyncio.sleep(1.6)
            await a.request("ping")
            await b.request("ping")
            assert updates(a) == [] and updates(b)
            about = "mcpfast://demo/about"
            bad = await a.request("resources/subscribe", {"uri": about})
            assert bad["error"]["code"] == -32602  # the upstream's own refusal, passed on
            # A refused subscription is not recorded: the next subscriber asks again.
            again = await b.request("resources/subscribe", {"uri": about})
            assert again["error"]["code"] == -32602
    run(body())


def test_hostile_shapes_never_break_the_session(gateway: GatewayProcess) -> None:
    """Valid JSON-RPC with odd params: each gets an answer (or, for notifications and
    stray responses, silence), and the connection keeps working."""
    requests = [
        {"method": "tools/call", "params": []},
        {"method": "tools/call", "params": "echo"},
        {"method": "tools/call", "params": {"name": {"x": 1}}},
        {"method": "tools/call", "params": {"name": "echo", "_meta": "nope"}},
        {"method": "tools/call", "params": {"name": "echo", "arguments": {"text": "t"},
                                            "_meta": {"progressToken": {"deep": 1}}}},
        {"method": "resources/read", "params": {"uri": 42}},
        {"method": "completion/complete", "params": {"ref": "x"}},
        {"method": "completion/complete", "params": {"ref": {"type": "ref/prompt"}}},
        {"method": "logging/setLevel", "params": {"level": "verbose"}},
        {"method": "logging/setLevel", "params": []},
        {"method": "prompts/get", "params": {"name": "greet", "_meta": None}},
        # Params that are not an object, for methods that route by none of them.
        {"method": "tools/list", "params": "x"},
        {"method": "tools/list", "params": 5},
        {"method": "prompts/list", "params": []},
        {"method": "resources/list", "params": True},
        {"method": "ping", "params": [1]},
    ]
    silent = [
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": []},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}},
        {"jsonrpc": "2.0", "method": "notifications/unknown"},
        {"jsonrpc": "2.0", "id": 424242, "result": {}},
        {"jsonrpc": "2.0", "id": "nobody", "error": {"code": 1, "message": "x"}},
    ]

    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            for message in silent:
                await c.send(message)
            for i, message in enumerate(requests):
                response = await c.request(message["method"], message["params"],
                                           request_id=f"h{i}")
                # Each is a request whose params routing cannot use.
                assert response["error"]["code"] == -32602, (message, response)
            # A null is taken for no params, as JSON-RPC clients write it.
            await c.send({"jsonrpc": "2.0", "id": "null", "method": "ping", "params": None})
            assert (await c.wait_for("null"))["result"] == {}
            assert c.errors == []
            assert text_of(await c.call_tool("echo", {"text": "alive"})) == "alive"
    run(body())
    assert "Traceback" not in gateway.log()


def test_a_websocket_client_that_stops_reading_is_paused(gateway: GatewayProcess) -> None:
    """As on the unix socket: once the answers fill the kernel's buffers, the gateway
    takes no more requests from a WebSocket client that does not read them."""
    import time

    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"text": "x" * 4000}}})
    frame = codec.encode_frame(codec.OP_TEXT, request.encode(), mask=b"abcd")
    init = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "f", "version": "1"}}}).encode()
    with raw_socket(gateway) as s:
        assert upgrade(s).startswith(b"HTTP/1.1 101")
        s.sendall(codec.encode_frame(codec.OP_TEXT, init, mask=b"abcd"))
        s.setblocking(False)
        windows: list[int] = []
        rest = memoryview(frame)  # a partial send must not start the next frame early
        # Until the kernel's buffers hold enough answers the gateway keeps reading; how
        # long that takes depends on the machine (an upstream slow to answer leaves the
        # small refusals of the in-flight cap to fill them). Then two quiet seconds in a
        # row, within a bound: a gateway that never pauses fails.
        while len(windows) < 60 and not (len(windows) >= 2 and
                                         max(windows[-2:]) < 64 * 1024):
            sent = 0
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
                try:
                    n = s.send(rest)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                sent += n
                rest = rest[n:] or memoryview(frame)
            windows.append(sent)
        assert max(windows[-2:]) < 64 * 1024, \
            f"the gateway kept reading a stalled client: {windows}"

    async def other() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            assert text_of(await c.call_tool("echo", {"text": "served"})) == "served"
    run(other())
