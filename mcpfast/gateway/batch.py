"""JSON-RPC batches (JSON-RPC 2.0 section 6): an array of requests and notifications
taken as its messages one by one, its requests' answers sent back as one array once
the last has come. MCP had them in 2025-03-26 only (a receiver MUST take them there;
2024-11-05 said JSON-RPC 2.0, which has them), and removed them in 2025-06-18: a
session at a later version, or a modern request, is refused as before.

The items are dispatched as single messages are, so each is checked, routed, limited
and answered exactly as it would be alone; only where its answer goes differs. While a
session has a batch running, its ``answer`` is a ``Batches``, which takes the answers
that belong to one and passes every other on as before. An item answered while it is
dispatched (an error, or the gateway's own result) is the batch's whatever its id
says; one forwarded is awaited by its id. No per-message cost falls on a session
without a batch: it is not asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET

from ..transport.ports import Answer

BATCH_VERSIONS = frozenset(("2024-11-05", "2025-03-26"))
"""The protocol versions whose sessions may send batches."""

Deliver = Callable[[bytes | None], None]
"""Where a batch's answer goes: the array, or None when it had no request to answer
(JSON-RPC: then nothing is returned)."""


class _Item(msgspec.Struct, gc=False):
    id: Any = UNSET
    method: Any = UNSET


_item = msgspec.json.Decoder(_Item)


def read_item(item: bytes) -> tuple[Any, bool]:
    """An item's id as its answer would carry it (None when it has none that can be
    read), and whether a forwarded answer is to be awaited for it: a request's (a valid
    id and a method), not a notification's, a response's or what is no message's."""
    try:
        head = _item.decode(item)
    except msgspec.DecodeError:
        return None, False
    request_id = head.id
    if type(request_id) not in (int, str):
        return None, False
    return request_id, type(head.method) is str


class Batch:
    """One batch while its answers are collected, in the order of its items."""

    __slots__ = ("answers", "deliver", "sealed", "waiting")

    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver
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
        self.current: tuple[Batch, int, Any] | None = None
        """While an item is dispatched: its batch, its place and its id. An answer
        with that id (or with none, for what could not be read) is its answer."""

    def __call__(self, request_id: Any, data: bytes, error: bool | None) -> None:
        current = self.current
        if current is not None and (request_id is None or request_id == current[2]):
            current[0].answers[current[1]] = data
            return
        for batch in self.running:
            places = batch.waiting.get(request_id)
            if places:
                batch.answers[places.pop(0)] = data
                if not places:
                    del batch.waiting[request_id]
                self.settle(batch)
                return
        if self.prior is not None:
            self.prior(request_id, data, error)
        else:
            self.session.send(data)

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

    def settle(self, batch: Batch) -> None:
        """Deliver ``batch`` if nothing of it is awaited; the session's ``answer`` is
        its own again once no batch runs."""
        if batch.waiting or not batch.sealed or batch not in self.running:
            return
        self.running.remove(batch)
        if not self.running and self.session.answer is self:
            self.session.answer = self.prior
        batch.deliver(batch.array())


def run_batch(session: Any, items: list[bytes], deliver: Deliver,
              dispatch: Callable[[bytes], None]) -> None:
    """Dispatch ``items`` on ``session`` (``dispatch`` takes one message), collecting
    their answers for ``deliver``."""
    batches = session.answer
    if type(batches) is not Batches:
        batches = session.answer = Batches(session)
    batch = Batch(deliver)
    batches.running.append(batch)
    try:
        for place, item in enumerate(items):
            request_id, awaited = read_item(item)
            batch.answers.append(None)
            batches.current = (batch, place, request_id)
            try:
                dispatch(item)
            finally:
                batches.current = None
            if awaited and batch.answers[place] is None and not session.closed:
                batch.waiting.setdefault(request_id, []).append(place)
    finally:
        batch.sealed = True
        batches.settle(batch)
