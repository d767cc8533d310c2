"""The gateway's configuration: TOML decoded into msgspec Structs and validated.

Every error names the key path and the reason (``upstreams.demo.command: expected a
non-empty list``), so an operator can fix a file without reading this module. String
values may use ``${NAME}`` to take a secret from the environment (``$${`` for a literal
``${``); an unset variable is an error, never an empty string. What interpolation took is
recorded (``Config.interpolated``): those values may be secrets, so /status and the logs
show the string as written instead, and upstreams never inherit those variables.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import msgspec

KEY = dict(forbid_unknown_fields=True, kw_only=True)
UPSTREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LOG_LEVELS = ("debug", "info", "warning", "error")
_KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
"""How the config stores a secret: its SHA-256 (``mcpfast hash-key``)."""


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key path."""


LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*",
                    "https://127.0.0.1:*", "https://localhost:*", "https://[::1]:*"]


class HttpConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """Streamable HTTP on the main listener (the same port as the WebSocket upgrade)."""

    allowed_origins: list[str] = msgspec.field(default_factory=lambda: list(LOOPBACK_ORIGINS))
    """``Origin`` values a browser may send (``*`` matches any port or the whole value).
    A request whose Origin is present and not listed gets 403."""
    allowed_hosts: list[str] | None = None
    """``Host`` values accepted, against DNS rebinding. Unset: loopback names when the
    listener is bound to loopback, anything otherwise."""
    session_secret: str = ""
    """The key that signs session ids. Replicas behind one load balancer share it (use
    ``${ENV}``) so that any of them can serve any session; empty = random per process."""
    session_timeout: float = 1800.0
    """Seconds a legacy session lives without a request (or a stream or subscription
    open): then it ends, and its id gets 404. ``listen.idle_timeout`` is for
    connections (WebSocket, the unix socket)."""
    max_sessions: int = 10000
    max_sessions_per_peer: int = 0
    """Legacy sessions open at once from one IP address: one client cannot take them
    all and lock the others out. 0: half of max_sessions (clients behind one proxy or
    NAT share an address)."""
    session_max_age: float = 86400.0
    """Seconds a legacy session id stays valid after it was issued, however active."""
    sse_keepalive: float = 15.0
    replay_events: int = 256
    """Events kept per SSE stream for resumption with ``Last-Event-ID``."""
    replay_seconds: float = 60.0
    """How long a finished or disconnected stream stays resumable."""
    sse_retry_ms: int = 1000

    def __post_init__(self) -> None:
        for key in ("session_timeout", "sse_keepalive", "replay_seconds"):
            _check(getattr(self, key) > 0, key, "must be positive")
        _check(self.max_sessions > 0, "max_sessions", "must be positive")
        _check(self.max_sessions_per_peer >= 0, "max_sessions_per_peer",
               "must not be negative")
        _check(self.session_max_age > 0, "session_max_age", "must be positive")
        _check(self.replay_events >= 0, "replay_events", "must not be negative")
        _check(self.sse_retry_ms >= 0, "sse_retry_ms", "must not be negative")
        _check(not self.session_secret or len(self.session_secret) >= 16, "session_secret",
               "must be at least 16 characters (or empty for a random per-process key)")


ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
"""What a JWT may be signed with. ``none`` and the HMAC algorithms are refused: with
HMAC, a public key given as the verification key would let anyone sign."""


class ApiKeyConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """One ``[[auth.api_keys]]`` table: a client's key, stored only as its hash
    (``mcpfast hash-key`` prints it)."""

    name: str  # type: ignore[misc]  # kw_only: required after defaults is fine
    hash: str  # type: ignore[misc]
    """``sha256:`` and the key's SHA-256 in lower-case hex."""
    groups: list[str] = []
    scopes: list[str] = []

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "name", "must not be empty")
        _check(_KEY_HASH.match(self.hash) is not None, "hash",
               "must be sha256: and 64 lower-case hex digits (mcpfast hash-key prints it); "
               "the config never holds a key itself")


class JwtConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """``[auth.jwt]``: bearer tokens signed by an issuer the gateway trusts."""

    issuer: str  # type: ignore[misc]  # kw_only: required after defaults is fine
    audience: list[str] = []
    """Accepted ``aud`` values; default: ``auth.resource``, the gateway's own URI."""
    jwks_url: str | None = None
    """Where the issuer publishes its keys; fetched in the background, refreshed every
    ``jwks_refresh`` seconds, and again (at most every ``jwks_min_interval`` seconds)
    when a token names a key id not seen yet."""
    keys: list[str] = []
    """Static keys: PEM public keys, or JWK / JWKS documents as JSON."""
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    leeway: float = 30.0
    """Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    required_scopes: list[str] = []
    typ: str | None = None
    """The ``typ`` header a token must have: ``"at+jwt"`` for an issuer of RFC 9068
    access tokens, so that no other JWT it signs (an ID token) passes as one. Unset:
    not checked (many issuers send ``JWT``)."""
    name_claim: str = "sub"
    groups_claim: str = "groups"
    jwks_refresh: float = 300.0
    jwks_min_interval: float = 30.0
    jwks_timeout: float = 10.0

    def __post_init__(self) -> None:
        _check(bool(self.issuer), "issuer", "must not be empty")
        for algorithm in self.algorithms:
            _check(algorithm in ASYMMETRIC_ALGORITHMS, "algorithms",
                   f"{algorithm!r} is not accepted: use asymmetric algorithms "
                   f"({', '.join(ASYMMETRIC_ALGORITHMS)}); none and HMAC are refused")
        _check(bool(self.algorithms), "algorithms", "must not be empty")
        _check(self.jwks_url is not None or bool(self.keys), "jwks_url",
               "set jwks_url, or give static keys")
        _check(self.jwks_url is None or self.jwks_url.startswith(("https://", "http://")),
               "jwks_url", "must be an http(s) URL")
        _check(self.leeway >= 0, "leeway", "must not be negative")
        for key in ("jwks_refresh", "jwks_min_interval", "jwks_timeout"):
            _check(getattr(self, key) > 0, key, "must be positive")


class AuthConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """``[auth]``: the credentials clients may present. Which methods a listener
    requires is set on the listener (``listen.auth``)."""

    api_keys: list[ApiKeyConfig] = []
    api_key_header: str = "X-API-Key"
    """A header that carries an API key besides ``Authorization: Bearer``."""
    jwt: JwtConfig | None = None
    resource: str = ""
    """The gateway's own resource URI (``https://mcp.example.com/mcp``): tokens must be
    issued for it (the JWT audience by default), and the OAuth protected-resource
    metadata names it."""
    authorization_servers: list[str] = []
    """Issuers a client may get a token from, for the protected-resource metadata."""
    scopes_supported: list[str] = []
    cache_size: int = 10000
    """Verified credentials remembered (each until it expires), so a token is checked
    once, not on every request."""

    def __post_init__(self) -> None:
        names = [key.name for key in self.api_keys]
        for i, name in enumerate(names):
            _check(name not in names[:i], "api_keys",
                   f"the name {name!r} is given to two keys")
        hashes = [key.hash for key in self.api_keys]
        for i, key_hash in enumerate(hashes):
            # One key, two identities: which one it proves would be a matter of order.
            _check(key_hash not in hashes[:i], "api_keys",
                   f"keys {hashes.index(key_hash)} and {i} have the same hash: one key "
                   "cannot be two clients")
        _check(self.cache_size > 0, "cache_size", "must be positive")
        _check(not self.resource or self.resource.startswith(("https://", "http://")),
               "resource", "must be an http(s) URL")


class AccessRuleConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """One ``[[authorization.rules]]`` table: which identities it applies to (every
    selector given must match; none given: everyone) and what they may and may not use.
    Names and URIs are shell patterns over what clients see (``docs__search*``,
    ``file:///public/*``), optionally only on one ``upstream``."""

    name: str = ""
    names: list[str] = []
    """Identity names: ``METHOD:NAME`` (``api_key:ci-bot``, ``jwt:alice``,
    ``mtls:alice``), or a bare NAME (any method's, allowed only while listen.auth has
    one method); ``*``: anyone authenticated."""
    groups: list[str] = []
    """Any one of them."""
    scopes: list[str] = []
    """All of them."""
    claims: dict[str, str | list[str]] = {}
    """JWT claims: each must equal the value (or one of the values)."""
    upstream: str | None = None
    allow_tools: list[str] = []
    deny_tools: list[str] = []
    allow_prompts: list[str] = []
    deny_prompts: list[str] = []
    allow_resources: list[str] = []
    deny_resources: list[str] = []


class AuthorizationConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """``[authorization]``: a deny rule that applies wins over an allow; what no rule
    decides gets ``default``."""

    default: Literal["allow", "deny"] = "allow"
    rules: list[AccessRuleConfig] = []

    @property
    def active(self) -> bool:
        return bool(self.rules) or self.default == "deny"


class TlsConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """``[listen.tls]``: HTTPS and WSS on the main listener."""

    cert_file: str  # type: ignore[misc]  # kw_only: required after defaults is fine
    key_file: str  # type: ignore[misc]
    client_ca_file: str | None = None
    """CA certificates that sign client certificates (mutual TLS)."""
    client_cert: Literal["none", "optional", "required"] | None = None
    """Whether a client must present a certificate; default: required when
    client_ca_file is set. Its subject's CN is the identity where listen.auth lists
    "mtls"."""
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    reload_interval: float = 60.0
    """Seconds between checks of the files: renewed ones are loaded for new
    connections, without a restart."""

    def __post_init__(self) -> None:
        for key in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, key)
            _check(path is None or os.path.isfile(path), key, f"{path!r} is not a file")
        _check(self.client_cert in (None, "none") or self.client_ca_file is not None,
               "client_cert", "needs client_ca_file (the CAs client certificates come from)")
        _check(self.reload_interval > 0, "reload_interval", "must be positive")

    @property
    def verify_clients(self) -> str:
        if self.client_cert is not None:
            return self.client_cert
        return "required" if self.client_ca_file else "none"


MIN_MESSAGE_BYTES = 1024
MAX_MESSAGE_BYTES = 1 << 30
"""A message the gateway holds whole: at most 1 GiB (readers size their buffers with
it; beyond a machine word it would fail every connection, not the config)."""
MESSAGE_BYTES_RANGE = f"must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES} (1 GiB)"


AuthMethod = Literal["api_key", "jwt", "mtls"]
"""How a client may prove who it is (``listen.auth``; ``METHOD:NAME`` in rules)."""


class ListenConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/mcp"
    unix_socket: str | None = None
    unix_socket_mode: str = "0660"
    max_message_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 64
    """Nesting levels a client message may have, its envelope object the first (a
    ``tools/call``'s arguments are the third). A deeper one is answered -32700 unread,
    and never reaches an upstream, whose parser may recurse too."""
    idle_timeout: float = 300.0
    backlog: int = 1024
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    tls: TlsConfig | None = None
    auth: list[AuthMethod] = []
    """Authentication on this listener (WebSocket and Streamable HTTP): the methods a
    client may use, any one of them admitting it (``[auth]`` configures them). Empty:
    none, and a client is known by its address."""
    unix_allow_uids: list[int] | None = None
    unix_allow_gids: list[int] | None = None
    """On the unix socket: the users and groups whose processes may connect (either
    list admitting). Unset: anyone the socket's file mode lets in."""

    def __post_init__(self) -> None:
        _check(host_problem(self.host) is None, "host", str(host_problem(self.host)))
        _check(0 <= self.port <= 65535, "port", "must be between 0 and 65535")
        _check(self.path.startswith("/"), "path", "must start with '/'")
        # A request's path is its target up to "?" (a fragment is never sent, and a
        # space ends the target): a path with one of them, or a control character,
        # could never be asked for.
        _check(_UNREACHABLE_PATH.search(self.path) is None, "path",
               f"{self.path!r} cannot be requested: a path has no '?', '#', space or "
               "control character (write one as %XX)")
        _check(MIN_MESSAGE_BYTES <= self.max_message_bytes <= MAX_MESSAGE_BYTES,
               "max_message_bytes", MESSAGE_BYTES_RANGE)
        # The gateway's own decoders recurse once per level, within Python's recursion
        # limit (1000 frames, some of them in use when a message is decoded).
        _check(3 <= self.max_json_depth <= 512, "max_json_depth",
               "must be between 3 (a tools/call's arguments) and 512")
        _check(self.idle_timeout > 0, "idle_timeout", "must be positive")
        _check(self.backlog > 0, "backlog", "must be positive")
        try:
            mode = int(self.unix_socket_mode, 8)
        except ValueError:
            mode = -1
        _check(0 <= mode <= 0o777, "unix_socket_mode",
               f"must be an octal file mode such as \"0660\", not {self.unix_socket_mode!r}")

    @property
    def unix_mode(self) -> int:
        return int(self.unix_socket_mode, 8)


class AdminConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9090
    token: str | None = None
    """When set, every admin endpoint but the health probes needs
    ``Authorization: Bearer <token>``. Required (or ``token_hashes``) when ``host`` is
    not a loopback address: /status, /metrics and the admin API would otherwise be open
    to the network."""
    token_hashes: list[str] = []
    """Admin tokens stored as hashes (``mcpfast hash-key``), as ``token`` but never in
    the config itself; each admits to everything ``token`` does."""
    metrics_token_hashes: list[str] = []
    """Tokens that may read /metrics and nothing else (for a scraper)."""
    public_metrics: bool = False
    """/metrics without any token (for a scraper on a trusted network)."""
    allowed_hosts: list[str] | None = None
    """``Host`` values the admin port serves, against DNS rebinding (421 otherwise; the
    health probes answer whatever the Host). Unset: loopback names when ``host`` is a
    loopback address, anything otherwise (a token is required then)."""

    def __post_init__(self) -> None:
        _check(host_problem(self.host) is None, "host", str(host_problem(self.host)))
        _check(0 <= self.port <= 65535, "port", "must be between 0 and 65535")
        # Set but empty (a ${VAR} set to ""): the token asked for is missing, and the
        # admin port stays closed rather than open without one.
        _check(self.token is None or len(self.token) >= 16, "token",
               "must be at least 16 characters" + (
                   " (it is empty: is the variable it names set to nothing?)"
                   if self.token == "" else ""))
        for key in ("token_hashes", "metrics_token_hashes"):
            for value in getattr(self, key):
                _check(_KEY_HASH.match(value) is not None, key,
                       f"{value!r} is not sha256: and 64 lower-case hex digits "
                       "(mcpfast hash-key prints one)")
        _check(self.guarded or not self.enabled or is_loopback(self.host), "token",
               f"is required when admin.host ({self.host!r}) is not a loopback address, "
               "or /status, /metrics and the admin API are open to anyone who can reach "
               "the port; set token = \"${MCPFAST_ADMIN_TOKEN}\" (and that variable), or "
               "bind admin.host to 127.0.0.1")

    @property
    def guarded(self) -> bool:
        """Whether admin tokens are set (the admin API then needs one)."""
        return bool(self.token or self.token_hashes)


_UNREACHABLE_PATH = re.compile(r"[?#\s\x00-\x1f\x7f]")
_HOST_NAME = re.compile(r"(?!.{254})[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be a listening address (None: it can): an IP address, a
    host name (RFC 1123 labels), or empty for every interface."""
    if not host or _HOST_NAME.fullmatch(host):
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"{host!r} is neither an IP address nor a host name"
    return None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a port on this machine. A name other than
    localhost counts as not loopback: what it resolves to may change."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoggingConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    access_log: bool = False
    """One line per request that ended, on the ``mcpfast.access`` logger (info)."""
    access_sample: float = 1.0
    """The share of requests the access log writes (0 < share <= 1)."""

    def __post_init__(self) -> None:
        _check(0 < self.access_sample <= 1, "access_sample", "must be above 0, at most 1")


MIB = 1024 * 1024


class LimitsConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """What one client, one peer, or all of them together may make the gateway hold
    (nginx's client_*_timeout and send_timeout, Envoy's per-connection buffer limit,
    overload manager and max_connections). Each is counted in /metrics."""

    client_buffer_bytes: int = 16 * MIB
    """Bytes waiting to be sent to one client. A client that lets more pile up is not
    reading: it is closed (WebSocket 1008, HTTP connection closed) and its calls are
    cancelled upstream. One message is always sent whole, whatever its size."""
    process_buffer_bytes: int = 512 * MIB
    """Bytes waiting to be sent to all clients and upstreams together. Past it, new
    requests are refused (-32000, HTTP 503) until the buffers drain below half."""
    max_in_flight: int = 256
    """Requests one session may have in flight; more are refused with -32000."""
    max_batch: int = 256
    """Messages one JSON-RPC batch may carry (sessions at 2025-03-26 and 2024-11-05); a
    longer batch is refused whole with -32600."""
    max_subscriptions: int = 1000
    """Resources one session may be subscribed to at once: by ``resources/subscribe``
    and by the URIs of its ``subscriptions/listen`` streams together. Each is a
    subscription the gateway holds upstream, so a client cannot make one request fan
    out into unbounded upstream calls; past it, -32602."""
    max_connections: int = 0
    """Client connections open at once (WebSocket, HTTP and unix together); more are
    closed at once (HTTP 503). 0: the descriptor limit less ``reserved_descriptors``."""
    max_connections_per_peer: int = 0
    """Client connections open at once from one IP address. 0: half of max_connections,
    so that no one address can take them all, while many clients behind one proxy or
    NAT (one address) still fit."""
    reserved_descriptors: int = 128
    """Kept free for upstreams, the admin port and logs when max_connections is 0."""
    header_timeout: float = 10.0
    """Seconds from a request's first byte to the end of its head. Activity does not
    extend it: a client that trickles a header line every few seconds is closed."""
    body_timeout: float = 60.0
    """Seconds from the end of a request's head to the end of its body, and from the
    first byte of a WebSocket or unix-socket message to its last."""
    keepalive_timeout: float = 60.0
    """Seconds an HTTP/1.1 connection may wait for its next request."""

    def __post_init__(self) -> None:
        _check(self.client_buffer_bytes >= 65536, "client_buffer_bytes",
               "must be at least 65536")
        _check(self.process_buffer_bytes >= self.client_buffer_bytes, "process_buffer_bytes",
               "must be at least client_buffer_bytes")
        _check(self.max_in_flight > 0, "max_in_flight", "must be positive")
        _check(self.max_batch > 0, "max_batch", "must be positive")
        _check(self.max_subscriptions > 0, "max_subscriptions", "must be positive")
        for key in ("max_connections", "max_connections_per_peer", "reserved_descriptors"):
            _check(getattr(self, key) >= 0, key, "must not be negative")
        for key in ("header_timeout", "body_timeout", "keepalive_timeout"):
            _check(getattr(self, key) > 0, key, "must be positive")


class MetricsConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    per_tool: bool = True
    """Requests (by outcome) and a latency histogram per upstream and tool."""
    max_tools: int = 1000
    """Distinct tool names labelled at most; more count under "(other)"."""

    def __post_init__(self) -> None:
        _check(self.max_tools >= 1, "max_tools", "must be at least 1")


class TracingConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """``[tracing]``: one OpenTelemetry span per client request, exported over OTLP/HTTP
    (gateway/tracing.py). Off by default; it needs ``pip install 'mcpfast[tracing]'``."""

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    """The OTLP/HTTP traces URL of a collector (protobuf is posted to it as it is)."""
    service_name: str = "mcpfast"
    """The ``service.name`` resource attribute of every span."""
    sample_ratio: float = 1.0
    """The share of new traces recorded (by trace id); a request whose client sent a
    trace context follows the client's sampled flag instead (parent-based)."""
    headers: dict[str, str] = {}
    """Sent with every export, e.g. an ``authorization`` header (use ``${ENV}``)."""
    export_timeout: float = 10.0
    """Seconds one export may take, and what a graceful shutdown waits at most for the
    last spans."""
    schedule_delay: float = 5.0
    """Seconds between exports of the spans that ended meanwhile."""
    max_batch: int = 512
    """Spans in one export at most."""
    max_queue: int = 2048
    """Spans waiting for export at most; past it new spans are dropped (and counted by
    the SDK's log), never the data path slowed down."""

    def __post_init__(self) -> None:
        _check(re.match(r"https?://[^/\s]+", self.endpoint) is not None, "endpoint",
               "must be an http:// or https:// URL")
        _check(bool(self.service_name.strip()), "service_name", "must not be empty")
        _check(0 <= self.sample_ratio <= 1, "sample_ratio", "must be from 0 to 1")
        for key in ("export_timeout", "schedule_delay"):
            _check(getattr(self, key) > 0, key, "must be positive")
        _check(self.max_batch >= 1, "max_batch", "must be at least 1")
        _check(self.max_queue >= self.max_batch, "max_queue", "must be at least max_batch")
        for name in self.headers:
            _check(re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) is not None,
                   "headers", f"{name!r} is not a valid HTTP header name")


class ShutdownConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        _check(self.drain_timeout >= 0, "drain_timeout", "must not be negative")


class RoutingConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    prefix: Literal["always", "conditional", "never"] = "always"
    separator: str = "__"
    page_size: int = 0
    """Items per page of an aggregated list (tools/list and the rest), with a
    ``nextCursor`` to the next; 0: each list in one page."""

    def __post_init__(self) -> None:
        _check(self.page_size >= 0, "page_size", "must be 0 (one page) or more")
        _check(bool(re.fullmatch(r"[A-Za-z0-9_.-]{1,8}", self.separator)), "separator",
               "must be 1 to 8 of the characters allowed in tool names (A-Z a-z 0-9 _ . -)")


class HealthCheckConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """Active health checks of an upstream's endpoints, with Envoy's names: a ``ping``
    (``server/discover`` in the modern era) every ``interval`` seconds, unhealthy after
    ``unhealthy_threshold`` failures in a row (no answer within ``timeout``, or an
    error), healthy again after ``healthy_threshold`` successes."""

    interval: float = 10.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3

    def __post_init__(self) -> None:
        for key in ("interval", "timeout"):
            _check(getattr(self, key) > 0, key, "must be positive")
        for key in ("healthy_threshold", "unhealthy_threshold"):
            _check(getattr(self, key) >= 1, key, "must be at least 1")


class OutlierDetectionConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """Passive outlier detection (Envoy's): an endpoint whose requests end
    ``consecutive_errors`` times in a row failed (its connection lost, a time-out, or
    -32603/-32000 from it) is ejected for ``base_ejection_time`` seconds times the
    number of its ejections, at most ``max_ejection_time``, while at most
    ``max_ejection_percent`` of the endpoints are out."""

    consecutive_errors: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 50

    def __post_init__(self) -> None:
        _check(self.consecutive_errors >= 1, "consecutive_errors", "must be at least 1")
        _check(self.base_ejection_time > 0, "base_ejection_time", "must be positive")
        _check(self.max_ejection_time >= self.base_ejection_time, "max_ejection_time",
               "must be at least base_ejection_time")
        _check(0 <= self.max_ejection_percent <= 100, "max_ejection_percent",
               "must be between 0 and 100")


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP field name (RFC 9110 5.1)."""



class UpstreamConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """One ``[upstreams.NAME]`` table: a server the gateway starts (``command``) or
    connects to (``url``: ``http://``/``https://`` for Streamable HTTP, ``ws://``/``wss://``
    for WebSocket; ``socket``: a unix socket path)."""

    transport: Literal["", "stdio", "streamable_http", "sse", "websocket", "unix"] = ""
    """What kind of upstream this is; by default, told by which of ``command``, ``url``
    and ``socket`` is set. ``sse``, the HTTP+SSE transport of 2024-11-05, is never
    assumed: its ``url`` is the SSE endpoint."""
    command: list[str] | None = None
    """The program to start and its arguments (a stdio upstream)."""
    url: str = ""
    """A Streamable HTTP endpoint (``https://host/mcp``) or a WebSocket server's URL
    (``ws://host:port/path``, ``wss://`` for TLS)."""
    socket: str = ""
    """The path of a unix socket where a server speaks newline-delimited JSON."""
    headers: dict[str, str] = {}
    """Sent with every HTTP request to a Streamable HTTP upstream, and with a WebSocket
    upstream's opening handshake (credentials: write them as ``${VARIABLE}``, taken from
    the environment)."""
    max_connections: int = 100
    """Keep-alive connections to a Streamable HTTP upstream, at most (each request in
    flight holds one while its answer streams)."""
    connect_timeout: float = 10.0
    """Seconds to open a remote upstream's connection (and its TLS and WebSocket
    handshakes)."""
    ca_file: str = ""
    """PEM certificates to verify an ``https://`` or ``wss://`` server with, instead of
    the system's."""
    balance: Literal["round_robin", "least_pending", "session"] = "round_robin"
    """How requests are spread over ``endpoints``: in turn, to the one with the fewest
    requests in flight, or by a consistent hash of the client session (each session
    stays on one endpoint while it is up)."""
    health_check: HealthCheckConfig | None = None
    outlier_detection: OutlierDetectionConfig | None = None
    max_pending_requests: int = 0
    """Circuit breaking: requests in flight to one endpoint at most (0: no bound); past
    it on every endpoint, a request is refused at once with -32000."""
    mode: Literal["shared", "per_session"] = "shared"
    """``shared``: one upstream multiplexed over every client; ``per_session``: an
    upstream of its own for each client session (gateway/per_session.py)."""
    max_sessions: int = 100
    """With per_session: upstreams started for sessions, at most."""
    spares: int = 0
    """With per_session: upstreams kept started for the next sessions."""
    session_idle_timeout: float = 0.0
    """With per_session: stop a session's upstream after this many seconds with nothing
    in flight (0: only when the client leaves)."""
    replicas: list[UpstreamConfig] = []
    """The endpoints after the first, each the upstream's table with the endpoint's own
    keys over it (``parse`` makes them from ``endpoints``; not a key of the file)."""
    era: Literal["auto", "both", "legacy", "modern"] = "auto"
    """The protocol era to speak: ``auto`` probes with ``server/discover`` and falls back
    to the legacy ``initialize`` handshake (stdio "Backward Compatibility"). Clients of
    either era are served whatever the verdict; client input crosses eras as
    gateway/mrtr.py describes. ``both`` probes as ``auto`` and, if modern, serves
    legacy clients through a legacy connection of their own (gateway/legacy_twin.py),
    which ``auto`` does too for a remote upstream."""
    attribution: Literal["exclusive", "in_flight"] = "exclusive"
    """Whose are the upstream's messages that name no client request (sampling,
    elicitation and roots requests, log messages)? ``exclusive``: delivered only while a
    single client session has used this upstream process since it started; otherwise
    refused (requests) or dropped (notifications). ``in_flight``: the operator vouches
    that the server sends them only while handling the request that caused them, so they
    go to the one session with requests in flight, when exactly one has."""
    env: dict[str, str] = {}
    """Set in the upstream's environment, whatever ``inherit_env`` says."""
    inherit_env: bool | Literal["allowlist"] = "allowlist"
    """What the upstream inherits from the gateway's environment: ``"allowlist"`` the
    variables gateway/stdio.py lists (PATH, HOME, LANG, LC_* and the like) and those
    ``env_allow`` matches; ``true`` all; ``false`` none. Never ``MCPFAST_*`` nor a variable
    the config interpolates (the gateway's own secrets) unless ``env`` sets it."""
    env_allow: list[str] = []
    """More names (shell patterns such as ``AWS_*``) to inherit with ``"allowlist"``."""
    cwd: str | None = None
    init_timeout: float = 15.0
    request_timeout: float = 60.0
    restart_backoff: float = 0.5
    restart_backoff_max: float = 30.0
    stop_timeout: float = 3.0
    max_message_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        _check(MIN_MESSAGE_BYTES <= self.max_message_bytes <= MAX_MESSAGE_BYTES,
               "max_message_bytes", MESSAGE_BYTES_RANGE)
        given = [key for key, unset in (("command", None), ("url", ""), ("socket", ""))
                 if getattr(self, key) != unset]
        _check(len(given) <= 1, given[-1] if given else "", "set one of command, url and "
               f"socket, not {' and '.join(given)}")
        if not self.transport:
            self.transport = ("websocket" if self.url.startswith(("ws://", "wss://")) else
                              "streamable_http" if self.url else
                              "unix" if self.socket else "stdio")
        if self.transport == "stdio":
            _check(bool(given), "command", "is required: the program to start and its "
                   "arguments (or url or socket, for a server the gateway connects to)")
            _check(bool(self.command) and bool(self.command[0]),  # type: ignore[index]
                   "command", "must be a non-empty list: the program and its arguments")
        elif self.transport in ("websocket", "streamable_http", "sse"):
            schemes = ("ws://", "wss://") if self.transport == "websocket" else \
                ("http://", "https://")
            _check(self.url.startswith(schemes), "url",
                   "must be a ws:// or wss:// URL for a WebSocket upstream"
                   if self.transport == "websocket" and self.url else
                   "must be the http(s):// URL of the SSE endpoint" if self.transport == "sse"
                   else "must be an http(s):// URL (Streamable HTTP) or a ws(s):// URL "
                   "(WebSocket)")
            if self.transport == "sse":
                _check(self.era != "modern", "era", "the sse transport (2024-11-05) is "
                       "legacy only")
                self.era = "legacy"
            try:
                split = urlsplit(self.url)
            except ValueError as exc:  # an unclosed "[" of an IPv6 address
                raise _KeyError("url", f"is not a valid URL ({exc})") from None
            _check(bool(split.hostname), "url", "names no host")
            try:
                split.port  # noqa: B018 - raises on a port out of range
            except ValueError:
                _check(False, "url", "has an invalid port")
        else:
            _check(bool(self.socket), "socket", "must be the path of the unix socket")
        _check(not self.ca_file or self.url.startswith(("wss://", "https://")), "ca_file",
               "applies only to an https:// or wss:// url")
        _check(not self.ca_file or os.path.isfile(self.ca_file), "ca_file",
               f"{self.ca_file!r} is not a file")
        _check(self.max_connections >= 1, "max_connections", "must be at least 1")
        # The server's own event stream (the legacy GET stream, the SSE transport's
        # stream) holds a connection for as long as it is open: with one, every
        # message posted would wait behind it for ever.
        _check(self.max_connections >= 2 or self.transport not in ("streamable_http", "sse"),
               "max_connections", "must be at least 2 for an HTTP upstream (its event "
               "stream holds one connection)")
        _check(self.max_pending_requests >= 0, "max_pending_requests",
               "must be 0 (no bound) or more")
        _check(self.max_sessions >= 1, "max_sessions", "must be at least 1")
        _check(0 <= self.spares <= self.max_sessions, "spares",
               "must be between 0 and max_sessions")
        _check(self.session_idle_timeout >= 0, "session_idle_timeout",
               "must be 0 (until the client leaves) or more")
        if self.mode == "per_session":
            _check(not self.max_pending_requests and self.health_check is None and
                   self.outlier_detection is None, "mode",
                   "per_session does not combine with circuit breaking, health checks or "
                   "outlier detection yet (its endpoints serve whole sessions)")
        for name, value in self.headers.items():
            _check(_TOKEN.fullmatch(name) is not None, f"headers.{name}",
                   "is not a valid HTTP header name")
            _check("\r" not in value and "\n" not in value, f"headers.{name}",
                   "must not contain a line break")
        _check(self.connect_timeout > 0, "connect_timeout", "must be positive")
        for key in ("init_timeout", "request_timeout", "restart_backoff", "stop_timeout"):
            _check(getattr(self, key) > 0, key, "must be positive")
        _check(self.restart_backoff_max >= self.restart_backoff, "restart_backoff_max",
               "must be at least restart_backoff")
        _check(not self.env_allow or self.inherit_env == "allowlist", "env_allow",
               'applies only with inherit_env = "allowlist"')


class RateLimitConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """One ``[[rate_limits]]`` table: a token bucket of ``burst`` tokens refilled at
    ``rate`` a second, per client identity or one for everyone (``per``), over the
    requests forwarded to ``upstream`` (any when unset) and, when ``tool`` is set, only
    the ``tools/call`` requests whose tool name matches it (a shell pattern, as clients
    name it)."""

    rate: float  # type: ignore[misc]  # kw_only: required after defaults is fine
    burst: float | None = None
    """Default: the rate, and at least 1."""
    per: Literal["identity", "global"] = "identity"
    upstream: str | None = None
    tool: str | None = None
    name: str = ""
    """The limit's name in metrics and errors; default ``per:upstream:tool``."""

    def __post_init__(self) -> None:
        _check(0 < self.rate < float("inf"), "rate", "must be a positive number")
        _check(self.burst is None or 1 <= self.burst < float("inf"), "burst",
               "must be a number of at least 1")
        if not self.name:
            self.name = f"{self.per}:{self.upstream or '*'}:{self.tool or '*'}"


MAX_WORKERS = 256
WORKER_SECRET_VARIABLE = "MCPFAST_WORKER_SESSION_SECRET"
"""The environment variable a supervisor gives its workers their shared Streamable HTTP
session secret in, when the config sets none (never argv, which any user can read in
/proc). A worker takes it out of its environment first thing, so that no upstream
inherits it."""


class Config(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    workers: int = 1
    """Gateway processes sharing the listeners (supervisor.py); 1: one process, no
    supervisor."""
    listen: ListenConfig = msgspec.field(default_factory=ListenConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    rate_limits: list[RateLimitConfig] = []
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    authorization: AuthorizationConfig = msgspec.field(default_factory=AuthorizationConfig)
    upstreams: dict[str, UpstreamConfig] = {}
    source: str = ""
    interpolated: Interpolated = msgspec.field(default_factory=lambda: Interpolated())

    def __post_init__(self) -> None:
        _check(1 <= self.workers <= MAX_WORKERS, "workers",
               f"must be between 1 and {MAX_WORKERS}")
        # Each worker binds listen.port itself (SO_REUSEPORT): "any free port" would give
        # each a port of its own.
        _check(self.workers == 1 or self.listen.port != 0, "listen.port",
               "must be a port number, not 0 (any free port), when workers > 1")
        admin, listen = self.admin, self.listen
        wildcard = ("0.0.0.0", "::", "")
        _check(not admin.enabled or admin.port == 0 or admin.port != listen.port
               or (admin.host != listen.host and admin.host not in wildcard
                   and listen.host not in wildcard), "admin.port",
               f"is listen.port too ({listen.port}, on an address both bind); the admin "
               "API needs a port of its own")


def cannot_listen(key: str, where: str, reason: object) -> ConfigError:
    """An address ``serve`` cannot take, named by the key that chose it."""
    return ConfigError(f"{key}: cannot listen on {where}: {reason}")


class _KeyError(ValueError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise _KeyError(key, reason)


_AT = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]*)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")


def _convert(value: Any, type_: Any, path: str) -> Any:
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(str(exc), path)) from None


def _describe(message: str, base: str) -> str:
    m = _AT.match(message)
    reason, sub = (m["reason"], m["path"]) if m else (message, "")
    path = base + sub.replace("[...]", "")
    if (u := _UNKNOWN.search(reason)) is not None:
        path = f"{path}.{u['field']}" if path else u["field"]
        reason = "unknown key"
    elif (e := _EXPECTED.search(reason)) is not None:
        reason = f"expected {e['want']}, got {e['got']}"
    elif (k := re.match(r"^(\w+(?:\.[^:\n]+)?): (.*)$", reason, re.S)) is not None:
        # A key path of _check's (``headers.NAME`` names a key of a table).
        path = f"{path}.{k[1]}" if path else k[1]
        reason = k[2]
    elif reason.startswith("Object missing required field"):
        field = reason.split("`")[1]
        path = f"{path}.{field}" if path else field
        reason = "is required"
    return f"{path.lstrip('.') or '(top level)'}: {reason}"


_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{([^}]*)\}?")
# Fields of Config that parse() sets; a config file may not.
_RESERVED = ("source", "interpolated")


class Interpolated(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    """What ``${NAME}`` interpolation took from the environment. Any of it may be a
    secret, so it is shown as written and never inherited by an upstream."""

    names: set[str] = msgspec.field(default_factory=set)
    """Every variable the config interpolated."""
    written: dict[str, str] = {}
    """Key path (``upstreams.demo.command[1]``) → the string as written, for each
    string that took a value from the environment."""

    def shown(self, path: str, value: str) -> str:
        """``value`` as /status and the logs may show it: as written when it took a
        value from the environment (``--token=${TOKEN}``), else itself."""
        return self.written.get(path, value)


def interpolate(value: Any, path: str = "", environ: Mapping[str, str] | None = None,
                record: Interpolated | None = None) -> Any:
    """Replace ``${NAME}`` in every string of a decoded TOML document, noting in
    ``record`` what was replaced."""
    env = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else k, env, record)
                for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", env, record) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    taken: list[str] = []

    def substitute(m: re.Match[str]) -> str:
        if m[0] == "$${":
            return "${"
        if m[1] is None:
            raise ConfigError(f"{path}: malformed variable reference {m[0]!r}; "
                              "write ${NAME}, or $${ for a literal ${")
        if m[1] not in env:
            raise ConfigError(f"{path}: environment variable {m[1]} is not set")
        taken.append(m[1])
        return env[m[1]]

    result = _ENV.sub(substitute, value)
    if taken and record is not None:
        record.names.update(taken)
        record.written[path] = value
    return result


_ENDPOINT_KEYS = ("transport", "command", "url", "socket")
"""What says where an endpoint is: an upstream with ``endpoints`` has none of these
itself."""


def _upstream(name: str, table: dict[str, Any]) -> UpstreamConfig:
    """An ``[upstreams.NAME]`` table; with ``endpoints``, the first endpoint's config
    with the others as its ``replicas`` (each endpoint's keys over the upstream's)."""
    if "replicas" in table:
        raise ConfigError(f"upstreams.{name}.replicas: unknown key (list them in endpoints)")
    endpoints = table.get("endpoints")
    if endpoints is None:
        return _convert(table, UpstreamConfig, f".upstreams.{name}")
    if not isinstance(endpoints, list) or not endpoints or \
            not all(isinstance(e, dict) for e in endpoints):
        raise ConfigError(f"upstreams.{name}.endpoints: expected a non-empty list of tables "
                          "(each with command, url or socket)")
    for key in _ENDPOINT_KEYS:
        if key in table:
            raise ConfigError(f"upstreams.{name}.{key}: set it in each of endpoints, not "
                              "beside them")
    shared = {k: v for k, v in table.items() if k != "endpoints"}
    configs = []
    for i, endpoint in enumerate(endpoints):
        for key in ("endpoints", "balance", "health_check", "outlier_detection"):
            if key in endpoint:
                raise ConfigError(f"upstreams.{name}.endpoints[{i}].{key}: applies to the "
                                  "upstream, not to one endpoint")
        configs.append(_convert({**shared, **endpoint}, UpstreamConfig,
                                f".upstreams.{name}.endpoints[{i}]"))
    first = configs[0]
    first.replicas = configs[1:]
    return first


def parse(text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
          ) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for key in _RESERVED:
        if key in document:
            raise ConfigError(f"{key}: unknown key")
    interpolated = Interpolated()
    document = interpolate(document, environ=environ, record=interpolated)
    upstreams = document.pop("upstreams", {})
    if not isinstance(upstreams, dict):
        raise ConfigError("upstreams: expected a table of named upstreams")
    config: Config = _convert(document, Config, "")
    converted: dict[str, UpstreamConfig] = {}
    for name, table in upstreams.items():
        if not UPSTREAM_NAME.match(name):
            raise ConfigError(f"upstreams.{name}: an upstream name must be 1 to 64 letters, "
                              "digits, '_' or '-', starting with a letter or digit")
        if config.routing.separator in name:
            raise ConfigError(f"upstreams.{name}: the name contains the routing separator "
                              f"{config.routing.separator!r}")
        if not isinstance(table, dict):
            raise ConfigError(f"upstreams.{name}: expected a table")
        converted[name] = _upstream(name, table)
    if not converted:
        raise ConfigError("upstreams: at least one upstream is required")
    config.upstreams = converted
    names: set[str] = set()
    for i, limit in enumerate(config.rate_limits):
        if limit.upstream is not None and limit.upstream not in converted:
            raise ConfigError(f"rate_limits[{i}].upstream: no upstream is named "
                              f"{limit.upstream!r}")
        if limit.name in names:
            raise ConfigError(f"rate_limits[{i}].name: {limit.name!r} names another limit "
                              "too; give each a name of its own")
        names.add(limit.name)
    _check_auth(config)
    config.source = source
    config.interpolated = interpolated
    if config.listen.unix_socket == "auto":
        config.listen.unix_socket = user_socket_path(environ)
    return config


def _check_auth(config: Config) -> None:
    """What only the whole config can tell about authentication and authorization."""
    auth = config.auth
    for method in config.listen.auth:
        if method == "api_key" and not auth.api_keys:
            raise ConfigError("listen.auth: api_key is listed, but auth.api_keys has no key")
        if method == "jwt" and auth.jwt is None:
            raise ConfigError("listen.auth: jwt is listed, but [auth.jwt] is not set")
        if method == "mtls" and (config.listen.tls is None or
                                 config.listen.tls.verify_clients == "none"):
            raise ConfigError("listen.auth: mtls is listed, but [listen.tls] does not ask "
                              "for client certificates (set client_ca_file)")
    if auth.jwt is not None and not auth.jwt.audience and not auth.resource:
        raise ConfigError("auth.jwt.audience: set it, or auth.resource (the gateway's own "
                          "URI, which tokens must then be issued for)")
    methods = sorted(set(config.listen.auth))
    for i, rule in enumerate(config.authorization.rules):
        if rule.upstream is not None and rule.upstream not in config.upstreams:
            raise ConfigError(f"authorization.rules[{i}].upstream: no upstream is named "
                              f"{rule.upstream!r}")
        for j, name in enumerate(rule.names):
            if scoped_name(name):
                if not name.partition(":")[2]:
                    raise ConfigError(f"authorization.rules[{i}].names[{j}]: {name!r} "
                                      "names no one; write METHOD:NAME")
            elif name != "*" and len(methods) > 1:
                # An API key's name, a JWT's subject and a certificate's name are chosen
                # by different people: a bare name would grant one what is meant for
                # another.
                raise ConfigError(
                    f"authorization.rules[{i}].names[{j}]: {name!r} is ambiguous with "
                    f"listen.auth = {methods}: write which one is meant, as "
                    + " or ".join(f"{method}:{name}" for method in methods))


AUTH_METHODS: tuple[str, ...] = get_args(AuthMethod)


def scoped_name(name: str) -> bool:
    """Whether an authorization rule's ``names`` entry is ``METHOD:NAME``."""
    method, colon, _ = name.partition(":")
    return bool(colon) and method in AUTH_METHODS


def user_socket_path(environ: Mapping[str, str] | None = None) -> str:
    """Where ``unix_socket = "auto"`` listens and ``mcpfast connect`` connects by
    default: in the user's runtime directory (private, per login), else in a directory
    of /tmp that only this user may enter, so that no other user can take the name."""
    runtime = (os.environ if environ is None else environ).get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "mcpfast.sock")
    return f"/tmp/mcpfast-{os.getuid()}/mcpfast.sock"


def private_directory(path: str, create: bool) -> None:
    """Check (``create``: make, 0700, if missing) that ``path`` is a directory of this
    user that no one else may write to; raise OSError otherwise. In /tmp another user
    could have made it first, to put a socket of their own in place of the gateway's."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise OSError(f"{path} is not a private directory of this user; remove it, or "
                      "choose another socket path")


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load ``path``, or the bundled default config when it is None."""
    if path is None:
        text = resources.files("mcpfast").joinpath("default.toml").read_text("utf-8")
        return parse(text, "<bundled default.toml>")
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read: not UTF-8 text (byte "
                          f"0x{exc.object[exc.start]:02x} at offset {exc.start}); TOML "
                          "files are UTF-8") from None
    return parse(text, str(path))
