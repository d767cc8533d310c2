"""JSON-RPC batches (JSON-RPC 2.0 section 6): an array of requests and notifications
taken as its messages one by one, its requests' answers sent back as one array once
the last has come. MCP had them in 2025-03-26 only (a receiver MUST take them there;
2024-11-05 said JSON-RPC 2.0, which has them), and removed them in 2025-06-18: a
session at a later version, or a modern request, is refused as before.

The items are dispatched as single messages are, so each is checked, routed, limited
and answered exactly as it would be alone; only where its answer goes differs. While a
session has a batch running, its ``answer`` is a ``Batches``, which takes the answers
that belong to one and passes every other on as before. A request item answered while
it is dispatched (an error, or the gateway's own result) is answered there, under its
id; one forwarded is awaited by its id; an item that is no request owes no answer (but
an error with no id, for what is no message). A 2026-07-28 request is refused in a
batch. No per-message cost falls on a session without a batch: it is not asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET

from ..protocol import jsonrpc
from ..protocol.modern import META_PROTOCOL_VERSION
from ..transport.ports import Answer

BATCH_VERSIONS = frozenset(("2024-11-05", "2025-03-26"))
"""The protocol versions whose sessions may send batches."""

Deliver = Callable[[bytes | None], None]
"""Where a batch's answer goes: the array, or None when it had no request to answer
(JSON-RPC: then nothing is returned)."""


class _Item(msgspec.Struct, gc=False):
    jsonrpc: Any = UNSET
    id: Any = UNSET
    method: Any = UNSET
    params: Any = UNSET
    result: Any = UNSET
    error: Any = UNSET


# Numbers beyond a float's range are JSON too: read as nothing here, where no value is.
_item = msgspec.json.Decoder(_Item, float_hook=lambda text: None)
NOT_A_REQUEST = object()
"""The id of a valid response or notification: no answer is its own but one with no id."""
MODERN_REFUSED = ("Invalid Request: a 2026-07-28 request is not part of a JSON-RPC batch "
                  "(that version has none); send it alone")


def read_item(item: bytes) -> tuple[Any, bool, bool]:
    """The id an item's answer would carry, whether a forwarded answer is awaited for
    it (a request's), and whether it is a modern request (refused in a batch).

    A request's id is its own (int or str), and so is that of what is no valid message
    but names one (the gateway answers it with that id at once); a valid response's or
    notification's is ``NOT_A_REQUEST``, so that an answer the gateway gives while it
    takes the item (to an earlier request, say, that the client's response to an input
    request settles) is not taken for the item's. What is no object is answered with
    no id."""
    try:
        head = _item.decode(item)
    except msgspec.DecodeError:
        return NOT_A_REQUEST, False, False
    request_id = head.id
    named = type(request_id) in (int, str)
    if type(head.method) is str:
        if not named:
            return NOT_A_REQUEST, False, False
        params = head.params
        meta = params.get("_meta") if type(params) is dict else None
        return request_id, True, type(meta) is dict and META_PROTOCOL_VERSION in meta
    if named and head.jsonrpc == "2.0" and head.method is UNSET \
            and (head.result is UNSET) != (head.error is UNSET):
        return NOT_A_REQUEST, False, False  # a response: it owes no answer
    return (request_id if named else NOT_A_REQUEST), False, False


class Batch:
    """One batch while its answers are collected, in the order of its items."""

    __slots__ = ("answers", "deliver", "held", "limit", "overflowed", "sealed", "waiting")

    def __init__(self, deliver: Deliver, limit: int) -> None:
        self.deliver = deliver
        self.limit = limit
        """Bytes of answers it may hold (``limits.client_buffer_bytes``)."""
        self.held = 0
        self.overflowed = False
        """Its answers passed ``limit``: they are dropped, what comes for it now too,
        and it is answered with an error once nothing of it is awaited."""
        self.sealed = False
        """Every item has been dispatched: what is awaited now is all there will be."""
        self.answers: list[bytes | None] = []
        """One place for each item, filled as its answer comes (None: none yet)."""
        self.waiting: dict[Any, list[int]] = {}
        """The places of the items forwarded and not yet answered, by request id."""

    def array(self) -> bytes | None:
        answers = [answer for answer in self.answers if answer is not None]
        return b"[" + b",".join(answers) + b"]" if answers else None


class Batches:
    """A session's running batches, installed as its ``answer`` while there are any;
    ``prior`` is what it replaced (None: answers go to the session's ``send``)."""

    __slots__ = ("current", "prior", "running", "session")

    def __init__(self, session: Any) -> None:
        self.session = session
        self.prior: Answer | None = session.answer
        self.running: list[Batch] = []
        self.current: tuple[Batch | None, int, Any] | None = None
        """While an item is dispatched: its batch, its place and its id. An answer
        with that id (or with none, for what could not be read) is its answer. With no
        batch (``aside``): the answer to a message outside every batch."""

    def held(self) -> int:
        """Bytes of answers the session's batches hold (``limits.process_buffer_bytes``
        counts them with the connections' buffers)."""
        return sum(batch.held for batch in self.running if not batch.overflowed)

    def __call__(self, request_id: Any, data: bytes, error: bool | None) -> None:
        current = self.current
        if current is not None and (request_id is None or request_id == current[2]):
            batch = current[0]
            if batch is not None:
                self._take(batch, current[1], data)
                return
        else:
            for batch in self.running:
                places = batch.waiting.get(request_id)
                if places:
                    self._take(batch, places.pop(0), data)
                    if not places:
                        del batch.waiting[request_id]
                    self.settle(batch)
                    return
        if self.prior is not None:
            self.prior(request_id, data, error)
        else:
            self.session.send(data)

    def _take(self, batch: Batch, place: int, data: bytes) -> None:
        """Hold ``data`` for ``batch``: what waits for a client counts against
        ``limits.client_buffer_bytes`` here as in its connection's buffer, and a batch
        whose answers pass it drops them all and gets one error instead of the array,
        when its last request is answered (so that none of its ids is still in flight
        when the client reads it)."""
        if batch.overflowed:
            return
        batch.held += len(data)
        if batch.held <= batch.limit:
            batch.answers[place] = data
            return
        batch.overflowed = True
        batch.answers = []

    def forget(self, request_id: Any) -> None:
        """The client cancelled ``request_id``: a cancelled request is not answered
        (basic/utilities/cancellation), so no batch waits for it any more."""
        for batch in self.running:
            places = batch.waiting.get(request_id)
            if places:
                places.pop(0)
                if not places:
                    del batch.waiting[request_id]
                self.settle(batch)
                return

    def aside(self, request_id: Any, answer: Callable[..., None], *args: Any) -> None:
        """Call ``answer(*args)``, which answers ``request_id`` now, for a message
        outside every batch (a request that reuses an id a batch waits for is refused
        as its own)."""
        outer, self.current = self.current, (None, -1, request_id)
        try:
            answer(*args)
        finally:
            self.current = outer

    def settle(self, batch: Batch) -> None:
        """Deliver ``batch`` if nothing of it is awaited; the session's ``answer`` is
        its own again once no batch runs."""
        if batch.waiting or not batch.sealed or batch not in self.running:
            return
        self.running.remove(batch)
        if not self.running and self.session.answer is self:
            self.session.answer = self.prior
        if batch.overflowed:
            batch.deliver(jsonrpc.error_response(None, jsonrpc.UPSTREAM_UNAVAILABLE, (
                f"the batch's answers passed limits.client_buffer_bytes ({batch.limit} "
                "bytes) and were dropped; send fewer or smaller requests at a time")))
        else:
            batch.deliver(batch.array())


def run_batch(session: Any, items: list[bytes], deliver: Deliver,
              dispatch: Callable[[bytes], None], limit: int) -> Batch:
    """Dispatch ``items`` on ``session`` (``dispatch`` takes one message), collecting
    their answers for ``deliver``; the batch, whose ``waiting`` are its requests still
    in flight."""
    batches = session.answer
    if type(batches) is not Batches:
        batches = session.answer = Batches(session)
    batch = Batch(deliver, limit)
    batches.running.append(batch)
    try:
        for place, item in enumerate(items):
            if batch.overflowed:
                break  # answered already: the rest is not taken
            request_id, awaited, modern = read_item(item)
            if modern:
                batch.answers.append(jsonrpc.error_response(
                    request_id, jsonrpc.INVALID_REQUEST, MODERN_REFUSED))
                continue
            batch.answers.append(None)
            batches.current = (batch, place, request_id)
            try:
                dispatch(item)
            finally:
                batches.current = None
            if awaited and not batch.overflowed and batch.answers[place] is None \
                    and not session.closed:
                batch.waiting.setdefault(request_id, []).append(place)
    finally:
        batch.sealed = True
        batches.settle(batch)
    return batch


def outside_batches(session: Any, request_id: Any, answer: Callable[..., None],
                    *args: Any) -> None:
    """Call ``answer(*args)``, which answers a message that is no batch's (a request
    that reuses an id a batch waits for is refused as itself, not in the batch's
    place)."""
    batches = session.answer
    if type(batches) is Batches and batches.current is None:
        batches.aside(request_id, answer, *args)
    else:
        answer(*args)
