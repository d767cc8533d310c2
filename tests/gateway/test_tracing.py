"""Tracing (gateway/tracing.py), end to end: a real gateway with ``[tracing]`` on exports
its spans with the OpenTelemetry SDK's OTLP/HTTP exporter to a receiver this module
runs on loopback, which decodes them as a collector would (``ExportTraceServiceRequest``
from opentelemetry-proto). Each span is checked against what the client sent and what
the upstream (a recording server) received: the trace continues the client's, and the
upstream's parent is the gateway's span. Off, the client's ``_meta`` reaches the upstream
byte for byte, and OpenTelemetry is not even imported."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ..conftest import (
    ROOT,
    GatewayProcess,
    Record,
    http_headers,
    http_initialize,
    modern,
    modern_headers,
    recording_upstream,
    run,
    running_gateway,
    start_era,
    unix_client,
    ws_client,
)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
DENIED = "slow"
"""The tool an authorization rule denies: its calls are refused by a policy."""


class Receiver:
    """An OTLP/HTTP traces endpoint on loopback: the spans posted to ``/v1/traces``,
    decoded, with their resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.posts = 0
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.take(ExportTraceServiceRequest.FromString(body), dict(self.headers))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def take(self, request: ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append({
                        "name": span.name, "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(), "kind": span.kind,
                        "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                        "attributes": {a.key: value(a.value) for a in span.attributes},
                        "status": span.status.code, "message": span.status.message,
                        "resource": resource, "scope": scope_spans.scope.name})
        with self._lock:
            self.spans.extend(found)
            self.posts += 1
            self.headers.append({k.lower(): v for k, v in headers.items()})

    def span(self, span_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The span with ``span_id``, once it came (the exporter sends in batches)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for span in self.spans:
                    if span["span_id"] == span_id:
                        return span
            time.sleep(0.02)
        with self._lock:
            names = [(s["name"], s["span_id"]) for s in self.spans]
        raise AssertionError(f"no span {span_id} within {timeout:g} s; came: {names}")

    def where(self, **attributes: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.spans
                    if all(s["attributes"].get(k) == v for k, v in attributes.items())]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind is not None else None


def traceparent(trace_id: str, span_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


def upstream_traceparent(message: dict[str, Any]) -> tuple[str, str, str]:
    """(trace id, parent span id, flags) of the traceparent the upstream received."""
    version, trace_id, span_id, flags = message["params"]["_meta"]["traceparent"].split("-")
    assert version == "00"
    return trace_id, span_id, flags


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
           ) -> Iterator[tuple[GatewayProcess, Record]]:
    workdir = tmp_path_factory.mktemp("traced")
    record = workdir / "record.jsonl"
    with running_gateway(
            workdir, {"rec": recording_upstream(record)},
            tracing={"enabled": True, "endpoint": receiver.url,
                     "service_name": "mcpfast-under-test", "schedule_delay": 0.05,
                     "headers": {"x-collector-key": "k1"}},
            authorization={"rules": [{"deny_tools": [DENIED]}]}) as gw:
        yield gw, Record(record)


def test_a_span_per_call_continues_the_clients_trace_and_parents_the_upstream(
        traced: tuple[GatewayProcess, Record], receiver: Receiver) -> None:
    gw, record = traced
    started = time.time_ns()

    async def main() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            reply = await c.request("tools/call", {
                    "name": "echo", "arguments": {"text": "with-parent"},
                    "_meta": {"traceparent": traceparent(CLIENT_TRACE, CLIENT_SPAN),
                              "tracestate": "vendor=opaque"}}, request_id=7)
            assert reply["result"]["content"][0]["text"] == "with-parent"
    run(main())
    finished = time.time_ns()

    sent = record.wait(lambda r: r.call("echo", text="with-parent"), what="the call")
    trace_id, parent_id, flags = upstream_traceparent(sent)
    assert (trace_id, flags) == (CLIENT_TRACE, "01")
    assert parent_id != CLIENT_SPAN
    assert sent["params"]["_meta"]["tracestate"] == "vendor=opaque"
    span = receiver.span(parent_id)
    assert span["trace_id"] == CLIENT_TRACE
    assert span["parent_span_id"] == CLIENT_SPAN
    assert span["name"] == "tools/call echo"
    assert span["kind"] == Span.SPAN_KIND_SERVER
    assert span["status"] == Status.STATUS_CODE_UNSET
    assert span["attributes"] == {
        "mcp.method.name": "tools/call", "gen_ai.tool.name": "echo",
        "gen_ai.operation.name": "execute_tool", "jsonrpc.request.id": "7",
        "mcpfast.upstream": "rec", "mcpfast.identity": "ip:127.0.0.1",
        "mcpfast.outcome": "answered"}
    assert started <= span["start"] <= span["end"] <= finished
    assert span["resource"]["service.name"] == "mcpfast-under-test"
    assert span["scope"] == "mcpfast"
    assert all(h.get("x-collector-key") == "k1" for h in receiver.headers)
    assert all(h.get("content-type") == "application/x-protobuf" for h in receiver.headers)


def test_without_a_client_context_the_gateway_starts_a_trace(
        traced: tuple[GatewayProcess, Record], receiver: Receiver) -> None:
    gw, record = traced

    async def main() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            # A malformed traceparent is no context: a trace starts, as with none.
            for text, meta in (("no-parent", None),
                               ("bad-parent", {"traceparent": "00-zz-nothex-01"})):
                params: dict[str, Any] = {"name": "echo", "arguments": {"text": text}}
                if meta is not None:
                    params["_meta"] = meta
                assert "result" in await c.request("tools/call", params)
    run(main())

    seen = set()
    for text in ("no-parent", "bad-parent"):
        sent = record.wait(lambda r, text=text: r.call("echo", text=text), what=text)
        trace_id, span_id, flags = upstream_traceparent(sent)
        assert flags == "01" and trace_id != CLIENT_TRACE
        span = receiver.span(span_id)
        assert span["trace_id"] == trace_id
        assert span["parent_span_id"] == ""
        assert "tracestate" not in sent["params"]["_meta"]
        seen.add(trace_id)
    assert len(seen) == 2


def test_an_erroring_and_a_refused_call_end_their_spans_in_error(
        traced: tuple[GatewayProcess, Record], receiver: Receiver) -> None:
    gw, record = traced
    refused_trace = "0af7651916cd43dd8448eb211c80319c"

    async def main() -> dict[str, Any]:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            failed = await c.request("tools/call", {"name": "fail", "arguments": {}},
                                     request_id="fail-1")
            assert failed["error"]["code"] == -32603
            denied = await c.request("tools/call", {
                "name": DENIED, "arguments": {"seconds": 0},
                "_meta": {"traceparent": traceparent(refused_trace, "b7ad6b7169203331")}})
            assert "error" in denied
            return denied["error"]
    refusal = run(main())

    sent = record.wait(lambda r: r.call("fail"), what="the failing call")
    _, span_id, _ = upstream_traceparent(sent)
    span = receiver.span(span_id)
    assert span["status"] == Status.STATUS_CODE_ERROR
    assert span["attributes"]["mcpfast.outcome"] == "errored"
    assert span["attributes"]["rpc.response.status_code"] == "-32603"
    assert span["attributes"]["error.type"] == "-32603"
    assert span["attributes"]["jsonrpc.request.id"] == "fail-1"

    deadline = time.monotonic() + 15
    while not (refused := receiver.where(**{"mcpfast.outcome": "refused"})):
        assert time.monotonic() < deadline, "no span for the refused call"
        time.sleep(0.02)
    (span,) = refused
    assert span["name"] == f"tools/call {DENIED}"
    assert span["trace_id"] == refused_trace and span["parent_span_id"] == "b7ad6b7169203331"
    assert span["status"] == Status.STATUS_CODE_ERROR
    assert span["message"] == refusal["message"]
    assert span["attributes"]["rpc.response.status_code"] == str(refusal["code"])
    # A refused call never reaches the upstream.
    assert record.call(DENIED) is None


def test_streamable_http_takes_the_traceparent_header_and_meta_wins_over_it(
        traced: tuple[GatewayProcess, Record], receiver: Receiver) -> None:
    gw, record = traced
    header_trace, header_span = "11112222333344445555666677778888", "1234567890abcdef"
    header = {"traceparent": traceparent(header_trace, header_span),
              "tracestate": "proxy=1"}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            session_id = await http_initialize(http, gw.http_url)
            for request_id, text, meta in (
                    (2, "http-header", None),
                    (3, "http-both", {"traceparent": traceparent(CLIENT_TRACE, CLIENT_SPAN)})):
                params: dict[str, Any] = {"name": "echo", "arguments": {"text": text}}
                if meta is not None:
                    params["_meta"] = meta
                call = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                        "params": params}
                async with http.post(gw.http_url, json=call,
                                     headers=http_headers(session_id, **header)) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()
            # A modern (2026-07-28) request, one session of its own, to the legacy
            # upstream: the header counts there too.
            call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                    "params": modern({"name": "echo", "arguments": {"text": "http-modern"}})}
            async with http.post(gw.http_url, json=call,
                                 headers=modern_headers("tools/call", "echo", **header)) as resp:
                assert resp.status == 200, await resp.text()
                assert json.loads(await resp.read())["result"]["content"][0]["text"] \
                    == "http-modern"
    run(main())

    for text in ("http-header", "http-modern"):
        sent = record.wait(lambda r, text=text: r.call("echo", text=text), what=text)
        trace_id, span_id, _ = upstream_traceparent(sent)
        assert trace_id == header_trace
        assert sent["params"]["_meta"]["tracestate"] == "proxy=1"
        span = receiver.span(span_id)
        assert (span["trace_id"], span["parent_span_id"]) == (header_trace, header_span)
    sent = record.wait(lambda r: r.call("echo", text="http-both"), what="http-both")
    trace_id, span_id, _ = upstream_traceparent(sent)
    assert trace_id == CLIENT_TRACE
    # The header's tracestate belongs to the header's context, not to _meta's.
    assert "tracestate" not in sent["params"]["_meta"]
    assert receiver.span(span_id)["parent_span_id"] == CLIENT_SPAN


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_a_modern_upstream_gets_the_gateways_span_too(
        gateway_factory: Any, tmp_path: Path, receiver: Receiver, era: str) -> None:
    """Requests reshaped for a modern upstream (the recording server in its modern
    guise), from a client of each era, carry the context the same way."""
    record = Record(tmp_path / "m.jsonl")
    gw: GatewayProcess = gateway_factory(
        {"rec": recording_upstream(record.path, "rec", "--modern", era="modern")},
        tracing={"enabled": True, "endpoint": receiver.url, "schedule_delay": 0.05})
    client_trace = f"{era.encode().hex():0>32}"

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            params = await start_era(c, era)
            reply = await c.request("tools/call", params({
                "name": "echo", "arguments": {"text": f"to-modern-{era}"},
                "_meta": {"traceparent": traceparent(client_trace, CLIENT_SPAN),
                          "tracestate": "era=" + era}}))
            assert reply["result"]["content"][0]["text"] == f"to-modern-{era}"
    run(body())

    sent = record.wait(lambda r: r.call("echo", text=f"to-modern-{era}"), what="the call")
    trace_id, span_id, _ = upstream_traceparent(sent)
    assert trace_id == client_trace and span_id != CLIENT_SPAN
    assert sent["params"]["_meta"]["tracestate"] == "era=" + era
    # What the modern upstream needs of _meta is there beside it.
    assert sent["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
    span = receiver.span(span_id)
    assert (span["trace_id"], span["parent_span_id"]) == (client_trace, CLIENT_SPAN)
    assert span["attributes"]["mcpfast.identity"].startswith("uid:")


def test_unsampled_clients_are_followed_and_not_recorded(
        traced: tuple[GatewayProcess, Record], receiver: Receiver) -> None:
    gw, record = traced
    unsampled = "99998888777766665555444433332222"

    async def main() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            for text, flags in (("unsampled", "00"), ("sampled-after", "01")):
                assert "result" in await c.request("tools/call", {
                    "name": "echo", "arguments": {"text": text},
                    "_meta": {"traceparent": traceparent(unsampled, CLIENT_SPAN, flags)}})
    run(main())

    sent = record.wait(lambda r: r.call("echo", text="unsampled"), what="the call")
    trace_id, span_id, flags = upstream_traceparent(sent)
    assert (trace_id, flags) == (unsampled, "00") and span_id != CLIENT_SPAN
    # The next call's span came, so the one before it would have come first.
    later = record.wait(lambda r: r.call("echo", text="sampled-after"), what="the next call")
    receiver.span(upstream_traceparent(later)[1])
    assert not [s for s in receiver.where() if s["span_id"] == span_id]


def test_spans_still_queued_are_exported_at_shutdown(tmp_path: Path,
                                                     receiver: Receiver) -> None:
    """With exports a minute apart, the span of the one call goes out as the gateway
    stops (SIGTERM), before it exits."""
    record = tmp_path / "record.jsonl"
    gw = GatewayProcess(tmp_path / "gw", {"rec": recording_upstream(record)},
                        {"tracing": {"enabled": True, "endpoint": receiver.url,
                                     "schedule_delay": 60.0}})
    try:
        gw.start()

        async def main() -> None:
            async with ws_client(gw.ws_url) as c:
                await c.initialize()
                assert "result" in await c.call_tool("echo", {"text": "at-shutdown"})
        run(main())
        sent = Record(record).wait(lambda r: r.call("echo", text="at-shutdown"),
                                   what="the call")
        span_id = upstream_traceparent(sent)[1]
        assert not [s for s in receiver.where() if s["span_id"] == span_id]
        assert gw.terminate(signal.SIGTERM) == 0
        assert receiver.span(span_id, timeout=0.5)["name"] == "tools/call echo"
    finally:
        gw.cleanup()


def test_off_the_clients_meta_reaches_the_upstream_byte_for_byte(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    params = ('{"name":"echo",  "arguments":{"text":"untouched"},"_meta":{"traceparent":'
              f'"{traceparent(CLIENT_TRACE, CLIENT_SPAN)}", "tracestate":"a=1,b=2",'
              '"x.example/k":[1, 2.50]}}')
    with running_gateway(tmp_path, {"rec": recording_upstream(record)}) as gw:
        async def main() -> None:
            async with ws_client(gw.ws_url) as c:
                await c.initialize()
                await c.send_raw('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
                                 + params + "}")
                assert "result" in await c.wait_for(1)
        run(main())
    (line,) = [e["raw"] for e in Record(record).events("recv")
               if e["message"].get("method") == "tools/call"]
    assert f'"params":{params}' in line


def test_off_opentelemetry_is_not_imported() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, mcpfast.server, mcpfast.cli; "
         "print([m for m in sys.modules if m.startswith('opentelemetry')])"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_on_without_opentelemetry_the_gateway_says_what_to_install(tmp_path: Path) -> None:
    # A package of that name first on the path, which fails to import as a missing
    # one would.
    blocker = tmp_path / "blocker" / "opentelemetry"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'opentelemetry'\")\n")
    path = os.pathsep.join(filter(None, [str(blocker.parent), os.environ.get("PYTHONPATH")]))
    gw = GatewayProcess(tmp_path / "gw", {"rec": recording_upstream(tmp_path / "r.jsonl")},
                        {"tracing": {"enabled": True}}, env={"PYTHONPATH": path})
    try:
        gw.start(wait_ready=False)
        assert gw.proc is not None
        assert gw.proc.wait(30) == 2
        assert "config error: tracing.enabled:" in gw.log()
        assert "pip install 'mcpfast[tracing]'" in gw.log()
    finally:
        gw.cleanup()
