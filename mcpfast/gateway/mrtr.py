"""Multi round-trip requests across eras (basic/patterns/mrtr; streamable-http-notes §3).

A 2026-07-28 server that needs input from the client answers ``resultType:
"input_required"`` with ``inputRequests`` and reads the answers from the client's retry;
a legacy server sends ``sampling/createMessage``, ``elicitation/create`` or ``roots/list``
to the client in the middle of the call. When the client and the upstream are of
different eras the gateway plays the missing side:

- ``InputRelay``: a legacy client's call to a modern upstream. Each of the upstream's
  input requests goes to the client as a server-to-client request; once all are answered
  the gateway retries upstream (a new id, the same params plus ``inputResponses`` and
  the echoed ``requestState``), for at most MAX_INPUT_ROUNDS rounds.
- ``ParkedCall``: a modern client's call to a legacy upstream. The upstream's request
  stays unanswered and its call waits, owned by no session (NOBODY), while the client
  gets an ``input_required`` result whose ``requestState`` names the parked call
  (``RequestStateSigner``). The retry's ``inputResponses`` answer the upstream's request
  and the retry takes the call over, whatever connection it comes on. A parked call ends
  with a retry, with its expiry (REQUEST_STATE_TTL) or with the upstream; the session
  that asked may close meanwhile (on HTTP it does at once).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import logging
import time
from typing import Any, Protocol

import msgspec
from msgspec import UNSET, Raw, UnsetType

from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..protocol.mcp import (
    CLIENT_CAPABILITY_FOR,
    INPUT_REQUIRED_METHODS,
    input_response_problem,
    required_capability,
)
from ..protocol.modern import (
    META_SERVER_INFO,
    MISSING_CLIENT_CAPABILITY,
    ModernMeta,
)
from .call import (
    NO_ENVELOPE,
    SHAPE_LEGACY_FROM_MODERN,
    SHAPE_MODERN_FROM_LEGACY,
    ParkedCall,
    Request,
    Upstream,
)
from .session import LOG_LEVELS, DownstreamSession, InputRelay

log = logging.getLogger("mcpfast.mrtr")


class Core(Protocol):
    """What the bridge needs of the gateway core (which holds the bridge)."""

    sessions: dict[str, DownstreamSession]

    def send(self, session: DownstreamSession, data: bytes) -> None: ...

    def answer(self, session: DownstreamSession, request_id: Any, data: bytes,
               error: bool | None) -> None: ...

    def respond(self, session: DownstreamSession, request_id: Any, result: Any) -> None: ...

    def send_error(self, session: DownstreamSession, request_id: Any, code: int,
                   message: str, data: Any = UNSET) -> None: ...

    def forward(self, upstream: Upstream, pending: Request, params: Raw | bytes | UnsetType,
                upstream_id: int | None = None) -> None: ...

    def reshape_response(self, upstream: Upstream, pending: Request, env: Envelope
                         ) -> bytes | None: ...

    def hold_log_level(self, upstream: Upstream, level: int) -> None: ...

    def release_log_level(self, upstream: Upstream, level: int) -> None: ...

REQUEST_STATE_TTL = 300.0
"""Seconds a modern client has to retry before its parked call is failed upstream."""
MAX_INPUT_ROUNDS = 16
"""input_required rounds one legacy client's request may go through."""
NO_UPSTREAM_REQUEST = 0
"""The upstream id in ``session.inflight`` while a relay waits for the client's answers:
``allocate_id`` never hands it out, so cancelling it upstream is a no-op."""
STATE_VERSION = 2
"""2: the payload binds the request's arguments too."""

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_canonical = msgspec.json.Encoder(order="sorted")

NOBODY = DownstreamSession("parked", "none", "-", lambda data: None,
                           lambda code, reason: None)
"""The session of a parked call: closed, so nothing reaches a client, and never in a
request's way (attribution looks only at open sessions)."""
NOBODY.closed = True


# -- requestState ------------------------------------------------------------------------
class RequestStateError(ValueError):
    """A retry's ``requestState`` is not one this gateway issued for this request."""


class RequestStateSigner:
    """``requestState`` values for parked calls: ``<payload>.<mac>``, both base64url,
    the payload ``[version, parked id, method, name digest, arguments digest, expiry]``
    and the MAC an HMAC-SHA256 of it. mrtr "Server Requirements": the state is
    attacker-controlled, so its integrity is checked, and it carries a short expiry and
    a digest of the originating request's salient parameters, its method, name and
    arguments: a retry that changed any of them (a tool called on other arguments than
    the server asked its question about) is refused. Sans-I/O: callers pass the time."""

    def __init__(self, secret: bytes) -> None:
        # A key of its own, so a state never verifies as anything else signed with secret.
        self._key = hmac.new(secret, b"mcpfast requestState", hashlib.sha256).digest()

    def issue(self, parked_id: str, method: str, name: str, expires: float,
              arguments: object = None) -> str:
        payload = _b64encode(_encoder.encode(
            [STATE_VERSION, parked_id, method, _digest(name), _arguments_digest(arguments),
             int(expires)]))
        return f"{payload}.{_b64encode(self._mac(payload))}"

    def verify(self, state: object, method: str, name: object, now: float,
               arguments: object = None) -> str:
        """The parked id ``state`` names; raises RequestStateError."""
        if not isinstance(state, str):
            raise RequestStateError("must be a string")
        payload, _, mac = state.partition(".")
        try:
            signature = _b64decode(mac)
        except ValueError:
            signature = b""
        if not hmac.compare_digest(self._mac(payload), signature):
            raise RequestStateError("failed verification: this gateway did not issue it, "
                                    "or it was altered")
        try:
            version, parked_id, signed_method, digest, arguments_digest, expires = \
                _decoder.decode(_b64decode(payload))
        except (ValueError, TypeError, msgspec.DecodeError):
            raise RequestStateError("is malformed") from None
        if version != STATE_VERSION or not isinstance(parked_id, str):
            raise RequestStateError("is malformed")
        if not isinstance(expires, int) or expires <= now:
            raise RequestStateError("has expired")
        if signed_method != method or digest != _digest(name if isinstance(name, str) else ""):
            raise RequestStateError("was issued for another request")
        if arguments_digest != _arguments_digest(arguments):
            raise RequestStateError("was issued for the same request with other arguments")
        return parked_id

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, payload.encode("ascii", "replace"), hashlib.sha256).digest()


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def _arguments_digest(arguments: object) -> str:
    """Of the arguments as read (JSON values), their members in sorted order: the same
    arguments written in another order or spacing give the same digest."""
    return hashlib.sha256(_canonical.encode(arguments)).hexdigest()[:32]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(str(exc)) from None


def input_requests_problem(requests: object, state: object) -> str | None:
    """Why an ``input_required`` result is unusable (schema InputRequiredResult), or
    None. Only the methods MRTR allows are accepted: anything else has no
    server-to-client request to become."""
    if state is not None and not isinstance(state, str):
        return "requestState must be a string"
    if not isinstance(requests, dict):
        return "inputRequests must be an object"
    if not requests and state is None:
        return "it has neither inputRequests nor requestState"
    for key, request in requests.items():
        if not isinstance(request, dict) or request.get("method") not in CLIENT_CAPABILITY_FOR:
            return (f"inputRequests[{key!r}] must be a sampling/createMessage, "
                    "elicitation/create or roots/list request")
        if not isinstance(request.get("params", {}), dict):
            return f"inputRequests[{key!r}].params must be an object"
    return None


# -- the two bridges ---------------------------------------------------------------------
class InputBridge:
    """Both conversions, called by the gateway at the points where input is asked for,
    answered, cancelled or abandoned."""

    def __init__(self, gateway: Core, secret: bytes, server_info: dict[str, Any]) -> None:
        self.gateway = gateway
        self.signer = RequestStateSigner(secret)
        self.server_info = server_info
        self.parked: dict[str, ParkedCall] = {}
        self._ids = itertools.count(1)

    # -- a legacy client, a modern upstream ----------------------------------------------
    def input_required(self, upstream: Upstream, pending: Request,
                       result: dict[str, Any]) -> bytes | None:
        """The upstream answered a legacy client's request with ``input_required``:
        ask the client, and return None; or the error that answers the client."""
        session = pending.session
        client_id = pending.id
        where = f"upstream {upstream.name!r}"
        if pending.forwarded is None or pending.method not in INPUT_REQUIRED_METHODS:
            return jsonrpc.error_response(
                client_id, jsonrpc.INTERNAL_ERROR,
                f"{where} answered {pending.method} with input_required, which only "
                "tools/call, prompts/get and resources/read may get")
        relay = pending.relay
        if relay is None:
            relay = InputRelay(upstream, client_id, pending.method, pending.forwarded,
                               pending.progress_token, pending.trace)
        relay.rounds += 1
        if relay.rounds > MAX_INPUT_ROUNDS:
            return jsonrpc.error_response(
                client_id, jsonrpc.INTERNAL_ERROR,
                f"{where} still asked for input after {MAX_INPUT_ROUNDS} rounds; "
                "mcpfast gave up on the request")
        requests = result.get("inputRequests", {})
        state = result.get("requestState")
        problem = input_requests_problem(requests, state)
        if problem is not None:
            return jsonrpc.error_response(client_id, jsonrpc.INTERNAL_ERROR,
                                          f"{where} sent an invalid input_required: {problem}")
        for request in requests.values():
            missing = required_capability(request["method"], request.get("params"),
                                          session.client_capabilities)
            if missing is not None:
                return jsonrpc.error_response(
                    client_id, MISSING_CLIENT_CAPABILITY,
                    f"{where} needs {request['method']} from the client, which needs the "
                    f"{next(iter(missing))} capability; this session's initialize did not "
                    "declare it", {"requiredCapabilities": missing})
        relay.state = state
        relay.answers = {}
        if not requests:
            # Only requestState (mrtr "Client Requirements" 1): retry at once.
            self._retry(session, relay)
            return None
        session.table("relays")[client_id] = relay
        # Held through the client's rounds so that a cancel, a half-closed unix socket or
        # an HTTP stream sees the request as in flight.
        session.inflight[client_id] = (upstream, NO_UPSTREAM_REQUEST)
        relay.deadline = upstream.deadline()
        for key, request in requests.items():
            out_id = session.next_out_id()
            relay.waiting[out_id] = key
            session.table("relayed")[out_id] = relay
            self.gateway.send(session, jsonrpc.request(out_id, request["method"],
                                                       request.get("params", UNSET)))
        return None

    def client_answer(self, session: DownstreamSession, env: Envelope) -> bool:
        """The client answered a request relayed by ``input_required``; False when
        ``env`` answers no such request."""
        out_id = env.id
        relay = session.relayed.pop(out_id, None) if type(out_id) is int else None
        if relay is None:
            return False
        key = relay.waiting.pop(out_id)  # type: ignore[arg-type]
        if env.error is not UNSET:
            error = _decoder.decode(env.error)  # type: ignore[arg-type]
            said = error.get("message") if isinstance(error, dict) else None
            self._end_relay(session, relay, "another input request of the call failed")
            self.gateway.send_error(
                session, relay.client_id, jsonrpc.INTERNAL_ERROR,
                f"the client answered the upstream's {key!r} input request with an error"
                f"{f': {said}' if said else ''}", {"inputRequest": key, "error": error})
            return True
        relay.answers[key] = _decoder.decode(env.result) if env.result is not UNSET else {}  # type: ignore[arg-type]
        if not relay.waiting:
            self._retry(session, relay)
        return True

    def _retry(self, session: DownstreamSession, relay: InputRelay) -> None:
        """mrtr "Basic Workflow": the original request again, under a new id, with the
        answers and the echoed state."""
        self._end_relay(session, relay)
        upstream = relay.upstream
        params = dict(relay.params)
        upstream_id = upstream.allocate_id()
        if relay.progress_token is not None:
            # Each round is a new upstream request, so it gets its own upstream token; the
            # client still sees its own.
            params["_meta"] = {**params["_meta"], "progressToken": upstream_id}
        if relay.answers:
            params["inputResponses"] = relay.answers
        if relay.state is not None:
            params["requestState"] = relay.state
        self.gateway.forward(upstream, Request(
            session, NO_ENVELOPE, relay.client_id, relay.method, None, None,
            progress_token=relay.progress_token, shape=SHAPE_LEGACY_FROM_MODERN,
            forwarded=relay.params, relay=relay, trace=relay.trace), jsonrpc.encode(params),
            upstream_id)

    def _end_relay(self, session: DownstreamSession, relay: InputRelay,
                   cancel_reason: str | None = None) -> None:
        """Forget the client's round; with ``cancel_reason``, withdraw the requests it
        has not answered (basic/utilities/cancellation)."""
        if session.relays.get(relay.client_id) is relay:
            del session.relays[relay.client_id]
            if session.inflight.get(relay.client_id) == (relay.upstream, NO_UPSTREAM_REQUEST):
                del session.inflight[relay.client_id]
        for out_id in relay.waiting:
            session.relayed.pop(out_id, None)
            if cancel_reason is not None and not session.closed:
                self.gateway.send(session, jsonrpc.notification(
                    "notifications/cancelled", {"requestId": out_id, "reason": cancel_reason}))
        relay.waiting.clear()

    def client_cancelled(self, session: DownstreamSession, request_id: int | str) -> None:
        relay = session.relays.get(request_id)
        if relay is not None:
            self._end_relay(session, relay, "the request was cancelled")

    def session_closed(self, session: DownstreamSession) -> None:
        session.relays.clear()
        session.relayed.clear()

    # -- a modern client, a legacy upstream ----------------------------------------------
    def ask_modern_client(self, upstream: Upstream, session: DownstreamSession,
                          method: str, request_id: int | str, raw_params: Any) -> None:
        """A legacy upstream sent ``method`` while ``session``, a modern client, had a
        request in flight on it."""
        mine = [(uid, p) for uid, p in upstream.pending.items() if p.session is session]
        if len(mine) != 1 or mine[0][1].shape != SHAPE_MODERN_FROM_LEGACY:
            upstream.respond_error(request_id, jsonrpc.INTERNAL_ERROR,
                                   f"mcpfast cannot tell which of the client's requests "
                                   f"{method} belongs to, so cannot ask the client")
            return
        upstream_id, pending = mine[0]
        try:
            params = _decoder.decode(raw_params) if raw_params is not UNSET else {}
        except msgspec.DecodeError:
            params = None
        if not isinstance(params, dict) or method not in CLIENT_CAPABILITY_FOR or \
                pending.method not in INPUT_REQUIRED_METHODS:
            message = (f"upstream {upstream.name!r} sent {method} during {pending.method}, "
                       "which mcpfast cannot put to a 2026-07-28 client")
            self._fail_call(upstream, upstream_id, pending, request_id, jsonrpc.INTERNAL_ERROR,
                            message)
            return
        missing = required_capability(method, params, pending.client_capabilities or {})
        if missing is not None:
            capability = next(iter(missing))
            self._fail_call(upstream, upstream_id, pending, request_id,
                            MISSING_CLIENT_CAPABILITY,
                            f"upstream {upstream.name!r} needs {method} from the client, "
                            f"which needs the {capability} capability; the request's "
                            "clientCapabilities do not declare it",
                            {"requiredCapabilities": missing})
            return
        self._park(upstream, session, upstream_id, pending, method, request_id, params)

    def _fail_call(self, upstream: Upstream, upstream_id: int, pending: Request,
                   request_id: int | str, code: int, message: str, data: Any = UNSET) -> None:
        upstream.respond_error(request_id, jsonrpc.METHOD_NOT_FOUND
                               if code == MISSING_CLIENT_CAPABILITY else code, message)
        upstream.cancel(upstream_id, message)
        self.gateway.send_error(pending.session, pending.id, code, message, data)

    def _park(self, upstream: Upstream, session: DownstreamSession, upstream_id: int,
              pending: Request, method: str, request_id: int | str,
              params: dict[str, Any]) -> None:
        # 2026-07-28 dropped URL elicitation's elicitationId (changelog).
        params.pop("elicitationId", None)
        key = CLIENT_CAPABILITY_FOR[method]
        parked_id = f"{next(self._ids)}"
        result = {"resultType": "input_required",
                  "inputRequests": {key: {"method": method, "params": params}},
                  "requestState": self.signer.issue(
                      parked_id, pending.method, pending.name or "",
                      time.time() + REQUEST_STATE_TTL,
                      pending.arguments),
                  "_meta": {META_SERVER_INFO: self.server_info}}
        parked = ParkedCall(parked_id, upstream, upstream_id, pending, request_id, method, key,
                            result, time.monotonic() + REQUEST_STATE_TTL,
                            session.identity.key if session.identity.authenticated else "")
        self.parked[parked_id] = parked
        client_id = pending.id
        # Out of the session before its answer goes: on HTTP that answer closes it, and
        # closing must not cancel the call.
        if session.inflight.get(client_id) == (upstream, upstream_id):
            del session.inflight[client_id]
        if pending.log_level is not None:
            self.gateway.release_log_level(upstream, pending.log_level)
            pending.log_level = None
        pending.session = NOBODY
        pending.parked = parked
        pending.deadline = float("inf")
        self.gateway.respond(session, client_id, result)

    def resume(self, session: DownstreamSession, env: Envelope, params: dict[str, Any],
               meta: ModernMeta, upstream: Upstream) -> None:
        """A modern client's retry with a ``requestState`` for a legacy upstream."""
        client_id = env.id
        method = env.method
        assert isinstance(client_id, int | str) and isinstance(method, str)
        name = params.get("uri" if method == "resources/read" else "name")
        try:
            parked_id = self.signer.verify(params.get("requestState"), method, name,
                                           time.time(), params.get("arguments"))
        except RequestStateError as exc:
            self.gateway.send_error(session, client_id, jsonrpc.INVALID_PARAMS,
                                    f"Invalid params: requestState {exc}")
            return
        parked = self.parked.get(parked_id)
        # The upstream by name: the call may wait on one of its endpoints, or on the
        # session's own upstream (per_session), not on the one routed to.
        if parked is None or parked.upstream.name != upstream.name or \
                (parked.owner and parked.owner != session.identity.key):  # another's: none
            self.gateway.send_error(session, client_id, jsonrpc.INVALID_PARAMS,
                                    "Invalid params: requestState names no waiting request "
                                    "(it was used already, or has expired)")
            return
        responses = params.get("inputResponses", {})
        if not isinstance(responses, dict):
            self.gateway.send_error(session, client_id, jsonrpc.INVALID_PARAMS,
                                    "Invalid params: inputResponses must be an object")
            return
        answer = responses.get(parked.key)
        waiting = parked.outcome is None and not parked.request_cancelled
        if waiting:
            if answer is None:
                # mrtr "Error Handling": ask again rather than fail.
                self.gateway.respond(session, client_id, parked.result)
                return
            problem = input_response_problem(parked.method, answer)
            if problem is not None:
                self.gateway.send_error(session, client_id, jsonrpc.INVALID_PARAMS,
                                        f"Invalid params: inputResponses[{parked.key!r}] "
                                        f"{problem}")
                return
        del self.parked[parked_id]
        pending = parked.pending
        pending.parked = None
        pending.session = session
        pending.id = client_id
        pending.progress_token = meta.progress_token
        pending.client_capabilities = meta.client_capabilities
        pending.deadline = upstream.deadline()
        if parked.outcome is not None:
            self.gateway.answer(session, client_id, self.gateway.reshape_response(  # type: ignore[arg-type]
                upstream, pending, parked.outcome), None)
            return
        if upstream.pending.get(parked.upstream_id) is not pending:
            self.gateway.send_error(session, client_id, jsonrpc.UPSTREAM_UNAVAILABLE,
                                    f"upstream {upstream.name!r} ended the request while it "
                                    "waited for the client (it restarted or stopped)")
            return
        session.inflight[client_id] = (upstream, parked.upstream_id)
        if meta.log_level is not None:
            pending.log_level = LOG_LEVELS[meta.log_level]
            self.gateway.hold_log_level(upstream, pending.log_level)
        if waiting:
            upstream.respond(parked.request_id, answer)

    def settled_while_parked(self, parked: ParkedCall, env: Envelope) -> None:
        """The upstream answered a parked call: the retry gets the answer."""
        parked.outcome = env

    def upstream_cancelled(self, upstream: Upstream, request_id: Any) -> None:
        for parked in self.parked.values():
            if parked.upstream is upstream and parked.request_id == request_id:
                parked.request_cancelled = True

    def parked_on(self, upstream: Upstream) -> int:
        return sum(1 for p in upstream.pending.values() if p.parked is not None)

    # -- expiry --------------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        for parked in [p for p in self.parked.values() if p.expires <= now]:
            del self.parked[parked.id]
            # The request record is not tracked by the collector: the link back from it
            # goes with the parked call, so that neither outlives the other.
            parked.pending.parked = None
            upstream = parked.upstream
            if parked.outcome is not None or \
                    upstream.pending.get(parked.upstream_id) is not parked.pending:
                continue
            reason = f"the client did not retry within {REQUEST_STATE_TTL:g} s"
            log.info("parked %s on %r expired: %s", parked.pending.method, upstream.name,
                     reason)
            if upstream.ready and not parked.request_cancelled:
                upstream.respond_error(parked.request_id, jsonrpc.INTERNAL_ERROR, reason)
            upstream.cancel(parked.upstream_id, reason)
        for session in list(self.gateway.sessions.values()):
            if not session.relays:
                continue
            for relay in [r for r in session.relays.values() if r.deadline <= now]:
                self._end_relay(session, relay, "the client did not answer in time")
                self.gateway.send_error(
                    session, relay.client_id, jsonrpc.REQUEST_TIMEOUT,
                    f"the client did not answer upstream {relay.upstream.name!r}'s input "
                    f"requests within {relay.upstream.config.request_timeout:g} s")

