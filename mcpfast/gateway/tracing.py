"""Tracing: one OpenTelemetry span per client request that ended (forwarded to an
upstream, or refused by a policy), exported over OTLP/HTTP, with the trace context
carried from the client to the upstream. Off by default (``[tracing]``); off, nothing
here is imported by the data path but this module's name, and OpenTelemetry is never
imported at all.

One span, kind SERVER, named as the MCP semantic conventions say (``tools/call
echo``): the gateway serves the client's request, and the upstream's own server span is
its child. A CLIENT child for the hop to the upstream would double the cost and say
nothing the SERVER span does not: the gateway does no work of its own between
forwarding and the answer.

The context, read once as the request is forwarded (``carry``), in this order:

1. ``params._meta.traceparent`` (and ``tracestate``), the MCP convention (SEP-414): it
   belongs to the message, whatever carried it;
2. the ``traceparent`` (and ``tracestate``) header of the Streamable HTTP POST that
   carried the request, when ``_meta`` has none: a transport-level context, which an
   HTTP proxy between the client and the gateway may have set;
3. none: the gateway starts a trace.

The upstream gets, in ``params._meta.traceparent``, the same trace id with the gateway's
span as its parent (and the client's ``tracestate``). The span id is chosen then, but
the span is made only when the request ends, from the request's record (``record``):
its start is ``Request.started``, so nothing of the SDK runs at forward time, and a
request not sampled never reaches the SDK at all. Sampling is parent-based: the
client's sampled flag when it sent a context, else ``sample_ratio`` of the trace ids
(the SDK's ``TraceIdRatioBased`` rule, so that both agree). Spans are exported in
batches on the SDK's own thread, never on the event loop.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import msgspec

from ..config import ConfigError, TracingConfig
from .call import (
    ANSWERED,
    CANCELLED,
    ERRORED,
    OUTCOMES,
    REFUSED,
    Request,
    Upstream,
)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# W3C Trace Context 3.2: version 00 is exactly this; a later version may append fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_LOW_64 = (1 << 64) - 1
_NAMED = {"tools/call": "gen_ai.tool.name", "prompts/get": "gen_ai.prompt.name"}


class _Error(msgspec.Struct, gc=False):
    message: str = ""


_error = msgspec.json.Decoder(_Error)


class TraceContext:
    """A request's place in a trace: the trace, the gateway's span, and the client's
    span (``parent_id``, 0 when the gateway started the trace). ``error`` is what the
    request's end knows of its JSON-RPC error: the upstream's error object (raw), or
    the code and message a policy refused with."""

    __slots__ = ("error", "flags", "parent_id", "span_id", "trace_id", "tracestate")

    def __init__(self, trace_id: int, span_id: int, parent_id: int, flags: int,
                 tracestate: str | None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.flags = flags
        self.tracestate = tracestate
        self.error: Any = None

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)

    def traceparent(self) -> str:
        """The context the upstream gets: this trace, the gateway's span its parent."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"


def parse_traceparent(value: object) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a W3C ``traceparent``; None when it is not
    one that may be continued (Trace Context 3.2.2: version ff, zero ids, or a version
    00 with more fields are invalid)."""
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace, parent, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    trace_id, parent_id = int(trace, 16), int(parent, 16)
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, int(flags, 16)


class Tracing:
    """The tracer of one gateway process: builds each request's context as it is
    forwarded (``carry``, ``refused``), makes and exports its span when it ends
    (``record``, an observer of ``Gateway.ended``), and flushes at shutdown."""

    def __init__(self, config: TracingConfig) -> None:
        try:
            from opentelemetry.context import Context
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.id_generator import IdGenerator
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace import (
                NonRecordingSpan,
                SpanContext,
                SpanKind,
                Status,
                StatusCode,
                TraceFlags,
                TraceState,
                set_span_in_context,
            )
        except ImportError as exc:
            raise ConfigError(
                "tracing.enabled: tracing needs the OpenTelemetry SDK and its OTLP "
                f"exporter, which are not installed ({exc}): pip install 'mcpfast[tracing]'"
            ) from None

        class ChosenIds(IdGenerator):
            """The ids ``record`` chose as the request was forwarded (and told the
            upstream), handed to the SDK as it makes the span. Only the event loop's
            thread makes spans, one at a time."""

            trace_id = 0
            span_id = 0

            def generate_span_id(self) -> int:
                return self.span_id

            def generate_trace_id(self) -> int:
                return self.trace_id

        self._ids = ChosenIds()
        self._bound = TraceIdRatioBased.get_bound_for_rate(config.sample_ratio)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            id_generator=self._ids)
        exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers),
                                    timeout=config.export_timeout)
        self.provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=config.max_queue,
            schedule_delay_millis=config.schedule_delay * 1000,
            max_export_batch_size=config.max_batch,
            export_timeout_millis=config.export_timeout * 1000))
        from .. import __version__
        self._tracer = self.provider.get_tracer("mcpfast", __version__)
        self._offset = time.time_ns() - time.monotonic_ns()
        """Monotonic nanoseconds to epoch nanoseconds: the requests' start times are
        monotonic, OTLP's are epoch."""
        self._kind = SpanKind.SERVER
        self._error = StatusCode.ERROR
        self._status = Status
        self._root = Context()
        self._remote = SpanContext
        self._flags = TraceFlags
        self._state = TraceState.from_header
        self._parent = NonRecordingSpan
        self._in_context = set_span_in_context

    # -- as a request is forwarded ------------------------------------------------------
    def context(self, meta: Any, request: Request) -> TraceContext:
        """``request``'s context, from the client's ``_meta`` (a dict, or anything else
        when it sent none) or else the Streamable HTTP headers its session holds while
        the request is dispatched."""
        traceparent = tracestate = None
        if isinstance(meta, dict):
            traceparent = meta.get(TRACEPARENT)
            tracestate = meta.get(TRACESTATE)
        if traceparent is None and request.session.trace_headers is not None:
            traceparent, tracestate = request.session.trace_headers
        span_id = random.getrandbits(64) or 1
        parent = parse_traceparent(traceparent)
        if parent is None:
            trace_id = random.getrandbits(128) or 1
            return TraceContext(trace_id, span_id, 0,
                                1 if trace_id & _LOW_64 < self._bound else 0, None)
        trace_id, parent_id, flags = parent
        return TraceContext(trace_id, span_id, parent_id, flags,
                            tracestate if isinstance(tracestate, str) and tracestate
                            else None)

    def carry(self, request: Request, meta: dict[str, Any]) -> None:
        """Put the gateway's span in ``meta``, the ``_meta`` about to go upstream (the
        caller's own copy, with the client's keys in it): the upstream's spans nest
        under the gateway's."""
        trace = request.trace
        if trace is None:
            trace = request.trace = self.context(meta, request)
        meta[TRACEPARENT] = trace.traceparent()
        if trace.tracestate is not None:
            meta[TRACESTATE] = trace.tracestate
        else:
            meta.pop(TRACESTATE, None)

    def refused(self, request: Request, meta: Any, code: int, message: str) -> None:
        """A policy refused ``request``: its span records the client's context and the
        error it was answered with."""
        if request.trace is None:
            request.trace = self.context(meta, request)
        request.trace.error = (code, message)

    # -- as it ends ------------------------------------------------------------------------
    def record(self, upstream: Upstream, request: Request, outcome: int) -> None:
        trace = request.trace
        if trace is None or not trace.flags & 1:
            return
        method = request.method
        name = request.name
        attributes: dict[str, Any] = {
            "mcp.method.name": method,
            "jsonrpc.request.id": str(request.id),
            "mcpfast.upstream": upstream.name,
            "mcpfast.identity": request.session.identity.key,
            "mcpfast.outcome": OUTCOMES[outcome],
        }
        named = _NAMED.get(method)
        if named is not None and name is not None:
            attributes[named] = name
            span_name = f"{method} {name}"
            if method == "tools/call":
                attributes["gen_ai.operation.name"] = "execute_tool"
        else:
            span_name = method
        if request.uri is not None:
            attributes["mcp.resource.uri"] = request.uri
        description = None
        if outcome != ANSWERED:
            code, description = self._error_of(trace, request, outcome)
            if code is not None:
                attributes["rpc.response.status_code"] = str(code)
            attributes["error.type"] = str(code) if code is not None else OUTCOMES[outcome]
        ids = self._ids
        ids.trace_id, ids.span_id = trace.trace_id, trace.span_id
        if trace.parent_id:
            context = self._in_context(self._parent(self._remote(
                trace.trace_id, trace.parent_id, True, self._flags(trace.flags),
                self._state([trace.tracestate]) if trace.tracestate else None)))
        else:
            context = self._root
        started = request.started
        end = time.time_ns()
        span = self._tracer.start_span(
            span_name, context, self._kind, attributes,
            start_time=int(started * 1e9) + self._offset if started else end)
        if description is not None:
            span.set_status(self._status(self._error, description))
        span.end(end)

    @staticmethod
    def _error_of(trace: TraceContext, request: Request, outcome: int
                  ) -> tuple[int | None, str]:
        """The JSON-RPC error code of a request that did not end answered, if it had
        one (``Request.error_code``, set by every end that answers with an error), and
        the span status description (the error's message when there is one)."""
        code = request.error_code or None
        if outcome == ERRORED and trace.error is not None:
            try:
                return code, _error.decode(trace.error).message
            except msgspec.DecodeError:
                return code, "the upstream answered with a malformed error"
        if outcome == REFUSED and isinstance(trace.error, tuple):
            return code, trace.error[1]
        if outcome == CANCELLED:
            return None, "cancelled"
        return code, OUTCOMES[outcome].replace("_", " ")

    def shutdown(self) -> None:
        """Export the spans still queued (waiting up to ``export_timeout``) and stop.
        Blocking: run it off the event loop."""
        self.provider.shutdown()
