"""The gateway's configuration: TOML decoded into msgspec Structs and validated.

Every error names the key path and the reason (``upstreams.demo.command: expected a
non-empty list``), so an operator can fix a file without reading this module. String
values may use ``${NAME}`` to take a secret from the environment (``$${`` for a literal
``${``); an unset variable is an error, never an empty string.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec

KEY = dict(forbid_unknown_fields=True, kw_only=True)
UPSTREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LOG_LEVELS = ("debug", "info", "warning", "error")


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
    max_sessions: int = 10000
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
        _check(self.replay_events >= 0, "replay_events", "must not be negative")
        _check(self.sse_retry_ms >= 0, "sse_retry_ms", "must not be negative")
        _check(not self.session_secret or len(self.session_secret) >= 16, "session_secret",
               "must be at least 16 characters (or empty for a random per-process key)")


class ListenConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/mcp"
    unix_socket: str | None = None
    unix_socket_mode: str = "0660"
    max_message_bytes: int = 4 * 1024 * 1024
    idle_timeout: float = 300.0
    backlog: int = 1024
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port", "must be between 0 and 65535")
        _check(self.path.startswith("/"), "path", "must start with '/'")
        _check(self.max_message_bytes >= 1024, "max_message_bytes", "must be at least 1024")
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

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port", "must be between 0 and 65535")


class LoggingConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class ShutdownConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        _check(self.drain_timeout >= 0, "drain_timeout", "must not be negative")


class RoutingConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    prefix: Literal["always", "conditional", "never"] = "always"
    separator: str = "__"

    def __post_init__(self) -> None:
        _check(bool(re.fullmatch(r"[A-Za-z0-9_.-]{1,8}", self.separator)), "separator",
               "must be 1 to 8 of the characters allowed in tool names (A-Z a-z 0-9 _ . -)")


class UpstreamConfig(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    transport: Literal["stdio"] = "stdio"
    command: list[str]  # type: ignore[misc]  # kw_only: required after defaults is fine
    era: Literal["auto", "legacy", "modern"] = "auto"
    """The protocol era to speak: ``auto`` probes with ``server/discover`` and falls back
    to the legacy ``initialize`` handshake (stdio "Backward Compatibility"). Clients of
    either era are served whatever the verdict; client input crosses eras as
    gateway/mrtr.py describes."""
    env: dict[str, str] = {}
    inherit_env: bool = True
    cwd: str | None = None
    init_timeout: float = 15.0
    request_timeout: float = 60.0
    restart_backoff: float = 0.5
    restart_backoff_max: float = 30.0
    stop_timeout: float = 3.0
    max_message_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        _check(self.max_message_bytes >= 1024, "max_message_bytes", "must be at least 1024")
        _check(len(self.command) > 0 and bool(self.command[0]), "command",
               "must be a non-empty list: the program and its arguments")
        for key in ("init_timeout", "request_timeout", "restart_backoff", "stop_timeout"):
            _check(getattr(self, key) > 0, key, "must be positive")
        _check(self.restart_backoff_max >= self.restart_backoff, "restart_backoff_max",
               "must be at least restart_backoff")


class Config(msgspec.Struct, **KEY):  # type: ignore[call-arg]
    listen: ListenConfig = msgspec.field(default_factory=ListenConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    upstreams: dict[str, UpstreamConfig] = {}
    source: str = ""


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
    elif (k := re.match(r"^(\w+): (.*)$", reason, re.S)) is not None:
        path = f"{path}.{k[1]}" if path else k[1]
        reason = k[2]
    elif reason.startswith("Object missing required field"):
        field = reason.split("`")[1]
        path = f"{path}.{field}" if path else field
        reason = "is required"
    return f"{path.lstrip('.') or '(top level)'}: {reason}"


_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{([^}]*)\}?")


def interpolate(value: Any, path: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${NAME}`` in every string of a decoded TOML document."""
    env = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else k, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(m: re.Match[str]) -> str:
        if m[0] == "$${":
            return "${"
        if m[1] is None:
            raise ConfigError(f"{path}: malformed variable reference {m[0]!r}; "
                              "write ${NAME}, or $${ for a literal ${")
        if m[1] not in env:
            raise ConfigError(f"{path}: environment variable {m[1]} is not set")
        return env[m[1]]

    return _ENV.sub(substitute, value)


def parse(text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
          ) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    document = interpolate(document, environ=environ)
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
        converted[name] = _convert(table, UpstreamConfig, f".upstreams.{name}")
    if not converted:
        raise ConfigError("upstreams: at least one upstream is required")
    config.upstreams = converted
    config.source = source
    return config


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load ``path``, or the bundled default config when it is None."""
    if path is None:
        text = resources.files("mcpfast").joinpath("default.toml").read_text("utf-8")
        return parse(text, "<bundled default.toml>")
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse(text, str(path))
