"""The unix-socket listener's connections: newline-delimited JSON (the stdio framing)."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import struct
import time

from ..protocol import jsonrpc
from ..protocol.ndjson import OVERSIZED, LineFramer
from .ports import ClientSession, ConnectionOwner, Dispatcher, Identity
from .writer import ClientProtocol, CoalescingWriter

log = logging.getLogger("mcpfast.transport")


REFUSED_LINGER = 2.0
"""Seconds a refused peer has to read why before its connection is closed."""
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (socket(7), SO_PEERCRED)


def _peer_credentials(transport: asyncio.BaseTransport) -> tuple[Identity, str]:
    """The connecting process's credentials, as the kernel vouches for them: the
    identity (keyed by user) and a description for /api/v1/connections."""
    sock = transport.get_extra_info("socket")
    try:
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      _UCRED.size))
    except (AttributeError, OSError, struct.error):
        return Identity("unix:unknown"), "unix peer (no credentials)"
    return Identity(f"uid:{uid}", uid=uid, gid=gid, pid=pid), f"pid {pid}, uid {uid}, gid {gid}"


class UnixConnection(ClientProtocol):
    """One client's unix-socket connection. Limits as on TCP (``[limits]``): what waits
    to be sent to it is bounded, and a message begun must end within body_timeout."""

    __slots__ = (
        "_loop",
        "_timer",
        "admitted",
        "core",
        "eof",
        "framer",
        "limits",
        "listener",
        "session",
        "transport",
        "writer",
    )

    def __init__(self, core: Dispatcher, listener: ConnectionOwner) -> None:
        self.core = core
        self.listener = listener
        self.limits = core.config.limits
        self.framer = LineFramer(core.config.listen.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.writer: CoalescingWriter | None = None
        self.session: ClientSession | None = None
        self.eof = False
        self.paused = 0
        self.admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self._backlog: list[bytes | None] | None = None
        """Lines of a read beyond ``MESSAGES_PER_TURN``, handled on the next turns."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        # Kept: on Python 3.11 asyncio.get_running_loop() makes a getpid system call.
        self._loop = asyncio.get_running_loop()
        refused = self.core.admission.admit(None)
        if refused is not None:
            log.warning("refused a unix-socket connection: %s", refused)
            transport.close()
            return
        self.admitted = True
        self.writer = CoalescingWriter(self.transport, self._loop,  # type: ignore[arg-type]
                                       self.limits.client_buffer_bytes, self._overflow)
        self.listener.connections.add(self)
        identity, peer = _peer_credentials(transport)
        refused = self.core.authenticator.admit_unix(identity.uid, identity.gid)
        if refused is not None:
            # Said once, as a JSON-RPC error the client can show, then the write side
            # is shut and what the client sends is dropped until it closes or
            # REFUSED_LINGER passes: closing with its input unread would reset the
            # connection and could destroy the error before it is read.
            self.writer.write(jsonrpc.error_response(None, jsonrpc.INVALID_REQUEST,
                                                     f"Forbidden: {refused}") + b"\n")
            self.writer.flush()
            self.transport.write_eof()  # type: ignore[union-attr]
            self._timer = self._loop.call_later(
                REFUSED_LINGER, self.transport.close)  # type: ignore[union-attr]
            return
        self.session = self.core.open_session("unix", peer, self.send, self.close, self,
                                              identity)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.core.admission.release(None)
        self.listener.connections.discard(self)
        self._backlog = None  # what waited for its turn is the closed session's
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.session is not None:
            self.core.close_session(self.session)

    def buffered(self) -> int:
        return (self.writer.buffered() if self.writer is not None else 0) + \
            self.framer.buffered

    def watch_partial(self, completed: bool) -> None:
        """After each read: a line begun must end within body_timeout of its first
        byte, however slowly its bytes trickle in (``completed``: a line ended in this
        read, so what is buffered began in it)."""
        if self.framer.buffered:
            if self._timer is not None and completed:
                self._timer.cancel()
                self._timer = None
            if self._timer is None:
                self._time_partial()
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _time_partial(self) -> None:
        """The line begun must end within body_timeout from now."""
        self._timer = self._loop.call_later(self.limits.body_timeout, self._partial_timeout)

    def released(self) -> None:
        if self._timer is not None and self.framer.buffered:
            self._timer.cancel()  # the line begun gets its whole time, from now
            self._time_partial()

    def _partial_timeout(self) -> None:
        self._timer = None
        if self.paused & self.held_by_gateway:
            # The gateway is not reading (an upstream the client feeds is congested,
            # or other clients have their turn): the line's time does not run.
            self._time_partial()
            return
        self.core.counters.timeouts += 1
        log.info("closing a unix-socket client: a message was not complete within %g s",
                 self.limits.body_timeout)
        if self.transport is not None:
            self.transport.abort()

    def _overflow(self, pending: int) -> None:
        self.core.counters.client_overflows += 1
        log.warning("closing a unix-socket client: %d bytes wait to be sent "
                    "(limits.client_buffer_bytes is %d): it is not reading", pending,
                    self.limits.client_buffer_bytes)
        if self.session is not None:
            self.core.close_session(self.session)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return  # refused at admission
        lines = self.this_turn(self.framer.feed(data))
        if lines:
            self._handle_lines(session, lines)
        elif not self.framer.buffered:
            # Blank lines only: a client keeping its session while it has nothing to say
            # (``mcpfast connect`` does, for a quiet stdio client), not idle.
            session.last_activity = time.monotonic()
        if self.framer.buffered or self._timer is not None:
            self.watch_partial(bool(lines))

    def _next_turn(self) -> None:
        session = self.session
        lines = self.next_share(session is not None and not session.closed and
                                self.transport is not None and
                                not self.transport.is_closing())
        if lines is None or session is None:
            return
        self._handle_lines(session, lines)
        if self._backlog is None and self.eof and not session.owes_answers:
            self.close(1000, "end of input")

    def _handle_lines(self, session: ClientSession, lines: list[bytes | None]) -> None:
        handle = self.core.handle
        for line in lines:
            if line is OVERSIZED:
                self.core.counters.oversized += 1
                self.core.send_error(
                    session, None, jsonrpc.INVALID_REQUEST,
                    f"message exceeds the {self.framer.limit}-byte limit and was dropped")
            else:
                handle(session, line)

    def eof_received(self) -> bool:
        """The client half-closed: answer what it already asked (a last message it did
        not end with a newline too), then close."""
        self.eof = True
        if self._timer is not None:  # the partial line's deadline: it ends here
            self._timer.cancel()
            self._timer = None
        last = self.framer.rest()
        if self._backlog is not None:
            # Lines of earlier reads wait for their turn: the last goes after them,
            # and the close once they are handled (``_next_turn``).
            if last:
                self._backlog.append(last)
            return True
        if last and self.session is not None:
            self.core.handle(self.session, last)
        if self.session is None or not self.session.owes_answers:
            self.close(1000, "end of input")
        elif self._peer_closed():
            # Not a half-close: nobody reads the answers. Closed now, its requests are
            # cancelled upstream at once, not at their time-out.
            log.debug("a unix-socket client closed its socket with answers owed")
            self.close(1000, "client closed")
        return True

    def _peer_closed(self) -> bool:
        """Whether the client closed its socket whole rather than its sending side only
        (``shutdown(SHUT_WR)``): a unix stream socket whose peer is gone polls POLLHUP,
        one whose peer only stopped sending does not."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLHUP)
        return any(events & select.POLLHUP for _, events in poller.poll(0))

    def send(self, data: bytes) -> None:
        writer = self.writer
        if writer is not None:
            writer.write(data)
            writer.write(b"\n")
            if self.eof and self.session is not None and not self.session.owes_answers:
                self.close(1000, "end of input")

    def close(self, code: int, reason: str) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
