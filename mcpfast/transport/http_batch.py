"""JSON-RPC batches POSTed to a legacy Streamable HTTP session (MCP 2025-03-26): the
core takes the items (gateway/batch.py); this is the POST's side of it."""

from __future__ import annotations

from typing import Any

import msgspec

from ..protocol import jsonrpc
from ..protocol.http import format_response
from .exchange import Exchange
from .http_checks import an_id
from .http_sessions import HttpSession

_any = msgspec.json.Decoder()


def post_batch(session: HttpSession, exchange: Exchange) -> None:
    """A JSON-RPC batch POSTed (MCP 2025-03-26 basic/transports "Sending Messages
    to the Server"): answered as plain JSON with the array of its answers once the
    last has come, 202 when nothing in it is answered, and 400 when it is empty,
    too long or the session's version has no batches. What the server says
    meanwhile goes to the GET stream, as for a request answered as plain JSON. A
    client that leaves cancels the batch's requests, as it would a single POST's;
    the session's end answers the POST with 404."""
    body = exchange.request.body
    cancelled = [stream for request_id in _cancelled_ids(body)
                 if (stream := session.stream_in_flight(request_id)) is not None]
    taken: Any = None
    pending = session.batches
    if pending is None:
        pending = session.batches = set()

    def deliver(answer: bytes | None) -> None:
        pending.discard(exchange)
        if answer is None:
            exchange.respond(format_response(202, session.headers(),
                                             keep_alive=exchange.keep_alive))
        elif answer.startswith(b"["):
            exchange.ok(answer, session.head())
        else:  # the batch itself was refused (empty, or too long)
            exchange.json(400, answer, session.headers())

    def lost() -> None:
        pending.discard(exchange)
        # The batch's own requests still in flight, and no other POST's.
        for request_id in list(getattr(taken, "waiting", ())):
            session.cancel(request_id, "the HTTP client disconnected")

    pending.add(exchange)
    exchange.watch(lost)
    taken = session.endpoint.core.batch(session.ds, body, deliver)
    if not taken:
        pending.discard(exchange)
        exchange.error(400, None, jsonrpc.INVALID_REQUEST, jsonrpc.BATCH_REFUSED,
                       session.headers())
    for stream in cancelled:
        if stream.request_id not in session.ds.inflight:
            stream.withdraw()  # the cancel took: that request's POST ends


def _cancelled_ids(body: bytes) -> list[Any]:
    """The ids a batch's ``notifications/cancelled`` name (a bool is no id)."""
    if b"notifications/cancelled" not in body:
        return []
    try:
        items = _any.decode(body)
    except msgspec.DecodeError:
        return []
    cancels = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("method") == "notifications/cancelled" \
                and "id" not in item:
            params = item.get("params")
            cancelled = an_id(params.get("requestId")) if isinstance(params, dict) else None
            if cancelled is not None:
                cancels.append(cancelled)
    return cancels
