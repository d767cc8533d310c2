"""Log levels: what each legacy upstream is asked to send (``logging/setLevel``), the
most verbose level any session or modern request in flight on it wants, so that each
then gets only what its own level admits."""

from __future__ import annotations

import msgspec
from msgspec import UNSET

from ..protocol import jsonrpc
from .call import Request, Upstream
from .ports import Core
from .session import LOG_LEVELS, DownstreamSession

_any = msgspec.json.Decoder()
LOG_LEVEL_NAMES = {number: name for name, number in LOG_LEVELS.items()}


class LogLevels:
    def __init__(self, gw: Core) -> None:
        self.gw = gw
        self._session_levels: dict[int, int] = {}
        """How many sessions asked (logging/setLevel) for each log level."""

    def set_level(self, req: Request) -> None:
        session, env = req.session, req.env
        try:
            params = _any.decode(env.params) if env.params is not UNSET else {}
            level = LOG_LEVELS[params["level"]]
        except (msgspec.DecodeError, KeyError, TypeError):
            self.gw.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                               f"params.level must be one of {', '.join(LOG_LEVELS)}")
            return
        if session.log_level is not None:
            self.count(session.log_level, -1)
        session.log_level = level
        self.count(level, 1)
        self.gw.respond(session, env.id, {})  # type: ignore[arg-type]
        self.sync()

    def count(self, level: int, delta: int) -> None:
        count = self._session_levels.get(level, 0) + delta
        if count > 0:
            self._session_levels[level] = count
        else:
            self._session_levels.pop(level, None)

    def sync(self, only: Upstream | None = None) -> None:
        """Ask each legacy upstream for the most verbose level any session, or any
        modern request in flight on it, wants; each then gets only what its own level
        admits. The request is written at once, so it reaches the upstream before a
        request forwarded after it."""
        session_levels = list(self._session_levels)
        for upstream in (only,) if only is not None else self._legacy_connections():
            if upstream.era == "modern" or "logging" not in upstream.capabilities:
                continue
            levels = session_levels + list(upstream.request_levels)
            wanted = LOG_LEVEL_NAMES[min(levels)] if levels else "emergency"
            if upstream.log_level != wanted:
                upstream.log_level = wanted
                if upstream.ready:
                    upstream.send_call("logging/setLevel", {"level": wanted})

    def _legacy_connections(self) -> list[Upstream]:
        """Every upstream as routed, and the legacy twin of each that has one
        (gateway/legacy_twin.py): the twin serves legacy clients' calls, and is asked
        for their levels as any legacy upstream is."""
        found = []
        for upstream in self.gw.upstreams.values():
            found.append(upstream)
            holder = upstream.legacy_twin
            if holder is not None and holder.twin is not None:
                found.append(holder.twin)
        return found

    def asked(self) -> bool:
        """Whether any session has set a log level."""
        return bool(self._session_levels)

    def hold(self, upstream: Upstream, level: int) -> None:
        counts = upstream.request_levels
        counts[level] = counts.get(level, 0) + 1
        if counts[level] == 1 and upstream.era == "legacy":
            self.sync(upstream)

    def release(self, upstream: Upstream, level: int) -> None:
        """A modern request that asked for logs is over."""
        counts = upstream.request_levels
        count = counts.get(level, 0) - 1
        if count > 0:
            counts[level] = count
            return
        counts.pop(level, None)
        if upstream.era == "legacy":
            self.sync(upstream)

    def session_closed(self, session: DownstreamSession) -> None:
        if session.log_level is not None:
            self.count(session.log_level, -1)
            self.sync()
