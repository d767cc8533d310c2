"""Listeners: the bound sockets. Each owns its connections and stops accepting on drain.

With ``workers`` > 1 (supervisor.py) every worker binds the TCP port itself with
SO_REUSEPORT, and the kernel spreads new connections over them; the unix socket, to
which SO_REUSEPORT does not apply, is bound once by the supervisor (``bind_unix``) and
each worker accepts on the descriptor it inherited."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import time
from typing import Any

from .config import cannot_listen
from .gateway.gateway import Gateway
from .protocol.http import refresh_date
from .transport.streamable import Endpoint
from .transport.tcp import TcpConnection
from .transport.tls import ServerTls, load_server_tls
from .transport.unix import UnixConnection

log = logging.getLogger("mcpfast.listener")


class Listener:
    def __init__(self, gateway: Gateway, kind: str, address: str) -> None:
        self.gateway = gateway
        self.kind = kind
        self.address = address
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[Any] = set()

    async def start(self) -> None:
        raise NotImplementedError

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address,
                "accepting": self.server is not None and self.server.is_serving(),
                "connections": len(self.connections)}


class TcpListener(Listener):
    def __init__(self, gateway: Gateway, kind: str, address: str,
                 endpoint: Endpoint | None = None) -> None:
        """``endpoint``: the Streamable HTTP side of a listener this one takes over from
        (a reload that moved the address), so that its sessions go on here."""
        super().__init__(gateway, kind, address)
        self.endpoint = endpoint if endpoint is not None else Endpoint(gateway)
        self.tls: ServerTls | None = None
        self._watch: asyncio.Task[None] | None = None
        self._clock: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        endpoint = self.endpoint
        return {**super().describe(),
                "http": {"sessions": len(endpoint.sessions),
                         "open_streams": len(endpoint.live) + len(endpoint.live_modern)}}

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Bind ``host``:``port`` (default: the config's)."""
        cfg = self.gateway.config.listen
        host = cfg.host if host is None else host
        port = cfg.port if port is None else port
        loop = asyncio.get_running_loop()
        if cfg.tls is not None:
            self.tls = load_server_tls(cfg.tls)
        try:
            self.server = await loop.create_server(
                lambda: TcpConnection(self.gateway, self), host, port, backlog=cfg.backlog,
                reuse_address=True, reuse_port=self.gateway.config.workers > 1,
                ssl=self.tls.context if self.tls is not None else None,
                ssl_handshake_timeout=self.gateway.config.limits.header_timeout
                if self.tls is not None else None)
        except socket.gaierror as exc:
            raise cannot_listen("listen.host", repr(host), exc.strerror) from None
        except OSError as exc:  # (the port taken, say)
            raise cannot_listen("listen.port", f"{host}:{port}",
                                exc.strerror or exc) from None
        if self.tls is not None:
            self._watch = loop.create_task(self.tls.watch(), name="tls-renewal")
        self._clock = loop.create_task(_keep_the_date(), name="http-date")
        sock = self.server.sockets[0]
        for s in self.server.sockets:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = sock.getsockname()[:2]
        self.address = f"{host}:{port}"
        log.info("listening for MCP clients on %s://%s%s (Streamable HTTP and "
                 "WebSocket)", "https" if self.tls is not None else "http", self.address,
                 cfg.path)

    def stop_accepting(self) -> None:
        super().stop_accepting()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None


class UnixListener(Listener):
    def __init__(self, gateway: Gateway, kind: str, address: str,
                 inherited: socket.socket | None = None) -> None:
        """``inherited``: the listening socket a supervisor bound at ``address``
        (``bind_unix``); the supervisor, not this listener, removes its file."""
        super().__init__(gateway, kind, address)
        self.inherited = inherited
        self.bound: tuple[int, int] | None = None
        """The socket file this listener made (``file_identity``), the one it removes:
        none while it has not bound (another process's socket, or a file that is no
        socket, stays where it is)."""

    async def start(self) -> None:
        cfg = self.gateway.config.listen
        path = self.address
        loop = asyncio.get_running_loop()
        if self.inherited is not None:
            self.server = await loop.create_unix_server(
                lambda: UnixConnection(self.gateway, self), sock=self.inherited,
                backlog=cfg.backlog)
            log.info("accepting newline-delimited JSON on unix:%s (bound by the "
                     "supervisor)", path)
            return
        _remove_stale_socket(path)
        try:
            self.server = await loop.create_unix_server(
                lambda: UnixConnection(self.gateway, self), path, backlog=cfg.backlog)
        except OSError as exc:
            raise cannot_listen("listen.unix_socket", path, exc.strerror or exc) from None
        self.bound = file_identity(path)
        os.chmod(path, cfg.unix_mode)
        log.info("listening for newline-delimited JSON on unix:%s (mode %s)", path,
                 cfg.unix_socket_mode)

    def stop_accepting(self) -> None:
        super().stop_accepting()
        if self.bound is not None:
            remove_if_same(self.address, self.bound)
            self.bound = None


async def _keep_the_date() -> None:
    """The responses' ``Date`` made anew at each second's turn (``refresh_date``), so
    that a response reads it rather than the clock."""
    while True:
        now = time.time()
        refresh_date(now)
        await asyncio.sleep(1.0 - now % 1.0 + 0.001)


def check_port_free(host: str, port: int) -> None:
    """Raise ConfigError (listen.port) if ``host:port`` is taken. Workers bind it with
    SO_REUSEPORT, which would let them join, without an error, the listening socket of
    another process of the same user that set it too (a second gateway started on the
    same port): a bind without it fails there."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise cannot_listen("listen.host", repr(host), exc.strerror) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise cannot_listen("listen.port", f"{host}:{port}", exc.strerror) from None


def bind_unix(path: str, mode: int, backlog: int) -> socket.socket:
    """The unix socket bound and listening at ``path`` with file mode ``mode``, for
    workers to inherit and accept on, each in its own process."""
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def file_identity(path: str) -> tuple[int, int]:
    """What tells the file at ``path`` from one put there later: device and inode."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def remove_if_same(path: str, identity: tuple[int, int]) -> None:
    """Remove the file at ``path`` if it is still the one ``file_identity`` saw: not a
    socket another gateway has bound there since."""
    try:
        if file_identity(path) == identity:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a gateway that died is removed; one that still answers
    means another gateway owns it, and that is an error, not something to steal."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"{path} is in use by another process")
