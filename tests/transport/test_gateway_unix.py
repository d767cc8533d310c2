"""End to end over the unix-socket listener (newline-delimited JSON)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from typing import Any

from ..conftest import GatewayProcess, run, unix_client


def test_unix_socket_file_mode(gateway_factory: Any) -> None:
    gw = gateway_factory(listen={"unix_socket_mode": "0600"})
    mode = os.stat(gw.unix_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_unix_initialize_and_call(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(gateway.unix_path) as c:
            init = await c.initialize()
            assert init["result"]["serverInfo"]["name"] == "mcpfast"
            tools = (await c.request("tools/list"))["result"]["tools"]
            assert "echo" in {t["name"] for t in tools}
            response = await c.call_tool("echo", {"text": "über unix"})
            assert response["result"]["content"][0]["text"] == "über unix"
    run(body())


def test_initialize_params_of_the_wrong_type_are_invalid_params(gateway: GatewayProcess
                                                                  ) -> None:
    """InitializeRequestParams: before, each of these initialized a session, and
    ``{"sampling": 5}`` declared sampling (found by an outside sweep)."""
    base = {"protocolVersion": "2025-11-25", "clientInfo": {"name": "t", "version": "1"}}
    cases = [({**base, "capabilities": 5}, "params.capabilities must be an object"),
             ({**base, "capabilities": {"sampling": 5}},
              "params.capabilities.sampling must be an object"),
             ({**base, "capabilities": {"roots": True}},
              "params.capabilities.roots must be an object"),
             ({**base, "capabilities": {}, "clientInfo": "x"},
              "params.clientInfo must be an object")]

    async def body() -> None:
        async with unix_client(gateway.unix_path) as c:
            for params, problem in cases:
                answer = await c.request("initialize", params)
                assert answer["error"] == {"code": -32602,
                                           "message": f"Invalid params: {problem}"}, answer
            # None of them initialized the session: a well-typed initialize does.
            init = await c.request("initialize", {**base, "capabilities": {"sampling": {}}})
            assert init["result"]["serverInfo"]["name"] == "mcpfast"
    run(body())


def test_unix_bad_lines_get_errors_and_the_stream_goes_on(gateway_factory: Any) -> None:
    gw = gateway_factory(listen={"max_message_bytes": 2048})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.send_raw("this is not json")
            assert (await c.receive())["error"]["code"] == -32700
            await c.send_raw(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                         "params": {"name": "echo",
                                                    "arguments": {"text": "x" * 5000}}}))
            err = await c.receive()
            assert err["id"] is None and err["error"]["code"] == -32600
            assert "limit" in err["error"]["message"]
            await c.send_raw("[]")
            assert (await c.receive())["error"]["code"] == -32600
            # Several messages in one write, and one split across writes.
            c.writer.write(b'{"jsonrpc":"2.0","id":"a","method":"ping"}\n'
                           b'{"jsonrpc":"2.0","id":"b","method":"ping"}\n{"jsonrpc":"2.0",')
            await c.writer.drain()
            await asyncio.sleep(0.05)
            c.writer.write(b'"id":"c","method":"ping"}\n')
            await c.writer.drain()
            for rid in ("a", "b", "c"):
                assert (await c.wait_for(rid))["result"] == {}
            await c.initialize()
            echo = await c.call_tool("echo", {"text": "fine"})
            assert echo["result"]["content"][0]["text"] == "fine"
    run(body())


def test_unix_and_websocket_clients_side_by_side(gateway: GatewayProcess) -> None:
    from ..conftest import ws_client

    async def echo_many(connect: Any, tag: str) -> None:
        async with connect as c:
            await c.initialize()
            for i in range(30):
                r = await c.call_tool("echo", {"text": f"{tag}{i}"}, request_id=i)
                assert r["result"]["content"][0]["text"] == f"{tag}{i}"

    async def body() -> None:
        await asyncio.gather(echo_many(unix_client(gateway.unix_path), "u"),
                             echo_many(ws_client(gateway.ws_url), "w"))
    run(body())


def test_a_client_that_stops_reading_is_paused_not_buffered(gateway: GatewayProcess) -> None:
    """Flood requests without reading answers: the gateway stops reading from this
    client (its socket buffers fill up) instead of queueing without bound, and other
    clients are served meanwhile."""
    import socket

    from ..conftest import ws_client

    request = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
               b'"arguments":{"text":"' + b"x" * 4000 + b'"}}}\n')
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flood.connect(gateway.unix_path)
    flood.sendall(b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":'
                  b'"2025-11-25","capabilities":{},"clientInfo":{"name":"f","version":"1"}}}\n')
    flood.setblocking(False)
    sent = 0
    for _ in range(20000):
        try:
            sent += flood.send(request)
        except BlockingIOError:
            break
    else:
        raise AssertionError("the gateway never stopped reading from a client that never reads")
    # The first second still fills the kernel's buffers with answers; after that the
    # gateway takes no more of this client's requests.
    import time
    windows = []
    for _ in range(3):
        more = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                more += flood.send(request)
            except BlockingIOError:
                time.sleep(0.01)
        windows.append(more)
    assert max(windows[1:]) < 64 * 1024, f"the gateway kept reading a stalled client: {windows}"

    async def other() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            r = await c.call_tool("echo", {"text": "served"})
            assert r["result"]["content"][0]["text"] == "served"
    run(other())
    rss = [line for line in open(f"/proc/{gateway.pid}/status") if line.startswith("VmRSS")]
    assert int(rss[0].split()[1]) < 400_000, rss  # KiB; not gigabytes of queued answers
    flood.close()


def test_a_gateway_that_cannot_have_the_socket_path_leaves_the_file_there(
        gateway_factory: Any, tmp_path: Any) -> None:
    """A second gateway told to listen on a running one's socket, or on a file that is
    no socket, refuses to start, and removes neither on its way out."""
    first = gateway_factory()
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    for path, why in ((first.unix_path, "in use by another process"),
                      (str(plain), "exists and is not a socket")):
        second = gateway_factory(listen={"unix_socket": path}, start=False)
        second.start(wait_ready=False)
        assert second.proc is not None and second.proc.wait(timeout=30) != 0
        assert why in second.log(), second.log()
    assert plain.read_text() == "keep me"
    assert stat.S_ISSOCK(os.stat(first.unix_path).st_mode)

    async def body() -> None:
        async with unix_client(first.unix_path) as c:
            assert (await c.initialize())["result"]["serverInfo"]["name"] == "mcpfast"
    run(body())


def test_blank_lines_are_no_messages_and_a_last_unended_one_is_answered(
        gateway: GatewayProcess) -> None:
    """Lines of JSON whitespace only are skipped as empty ones are (no -32700); at the
    end of the input, a last message without its newline is still answered."""
    async def body() -> None:
        reader, writer = await asyncio.open_unix_connection(gateway.unix_path)
        writer.write(b"   \t \n\r\n\n" b' {"jsonrpc":"2.0","id":1,"method":"ping"} \r\n'
                     b'\t{"jsonrpc":"2.0","id":2,"method":"ping"}')
        await writer.drain()
        writer.write_eof()
        lines = [json.loads(line) for line in
                 (await asyncio.wait_for(reader.read(-1), 20)).splitlines()]
        assert lines == [{"jsonrpc": "2.0", "id": 1, "result": {}},
                         {"jsonrpc": "2.0", "id": 2, "result": {}}], lines
        writer.close()
    run(body())
