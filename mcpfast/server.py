"""``mcpfast serve``: run the gateway until SIGTERM or SIGINT, then shut down gracefully.

SIGHUP (and the admin API's POST /api/v1/reload) rereads the config file and, when it
is valid as a whole, puts it in force at once (``Gateway.use``): limits, rate limits
and the policy chain apply to the next request, connection or call, and no connection
is dropped. A config that does not load
is refused with its key path, and the one in force stays. What the process was built
from (upstreams, listener and admin addresses, routing, logging) is named in the log
and applies after a restart, until hot reload (a later issue) learns to apply it.

Start order: the admin app, then the listeners, then the upstreams. The listeners accept
clients while the upstreams initialize, so that one that is slow or cannot start at all
does not keep the port closed for its ``init_timeout``; /readiness stays 503, and "ready"
is logged, only once every upstream has initialized.

Shutdown order: readiness goes false, listeners stop accepting, requests in flight get
until ``shutdown.drain_timeout`` to finish, WebSocket clients get close 1001, upstream
processes are stopped and anything they left behind is reaped, the admin app last (so
that it reports the drain).

A worker of a supervisor (``workers`` > 1, supervisor.py) runs the same way with three
differences (``WorkerPlace``): its admin app answers the supervisor on a private unix
socket, its unix-socket listener accepts on the socket the supervisor bound, and a
reload that moves the unix socket waits for a restart (the supervisor binds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mcpfast_ext import IMPLEMENTATION, NO_EXTENSIONS, PURE_REASON

from . import __version__
from .admin.app import create_app
from .config import Config, ConfigError, cannot_listen, private_directory, user_socket_path
from .gateway.gateway import Gateway
from .listeners import Listener, TcpListener, UnixListener
from .upstream.stdio import become_subreaper, reap_exited_orphans, reap_orphans

log = logging.getLogger("mcpfast")

READY_POLL = 0.25
ZOMBIE_SWEEP = 30.0
"""Seconds between collections of orphans that exited while their upstream still runs
(they are the gateway's children once it is a subreaper, and would stay zombies)."""
GC_YOUNG_THRESHOLD = 10_000
"""Objects allocated (net) between two collections of the youngest generation: 700 by
default. Every call in flight holds a few objects the collector tracks (an HTTP request
and its exchange and stream), so with hundreds in flight each young collection found
them alive, promoted them and soon paid for an older one: 1.7 µs of CPU per call over
Streamable HTTP at 64x8 (docs/benchmarks.md). The older generations keep their
defaults."""


@dataclass(frozen=True)
class WorkerPlace:
    """Where a worker process of a supervisor serves (supervisor.py)."""

    index: int
    admin_socket: str
    """The private unix socket its admin app answers the supervisor on."""
    unix_fd: int | None
    """The listening unix socket the supervisor bound (listen.unix_socket), inherited."""
    not_before: int
    """When the supervisor started: a Streamable HTTP session id another worker signed
    since then is served here (``Endpoint.not_before``), even one issued before this
    worker started or restarted."""
    restarted: bool
    """Started again after a crash: it listens once its upstreams are initialized."""
    supervisor: int

    def leave(self) -> None:
        """Remove the admin socket; and its directory, if the supervisor that would
        have is gone (killed) and no other worker's socket is left in it."""
        with contextlib.suppress(OSError):
            os.unlink(self.admin_socket)
            if os.getppid() != self.supervisor:
                os.rmdir(os.path.dirname(self.admin_socket))


async def serve(config: Config, reread: Callable[[], Config] | None = None,
                worker: WorkerPlace | None = None) -> None:
    """Run until SIGTERM or SIGINT; ``reread`` loads the config again on SIGHUP."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    subreaper = become_subreaper()
    tune_collector()
    if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
        # Inherited: the kernel would collect every upstream's exit, and its code with it.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    gateway = Gateway(config)
    reloader: Callable[[], list[str]] | None = None
    if reread is not None:
        rebinds = LISTENER_ADDRESSES if worker is None else WORKER_REBINDS

        def reloader() -> list[str]:
            return reload(gateway, reread, rebinds)

        loop.add_signal_handler(signal.SIGHUP, _reload_on_signal, reloader)
    log.info("mcpfast %s starting (%s hot path) with %s", __version__, IMPLEMENTATION,
             config.source)
    if PURE_REASON and not NO_EXTENSIONS:
        # Asked for, the twins are not news; fallen back to, they are several times slower.
        log.warning("running the pure-Python hot path: %s", PURE_REASON)

    admin_runner: web.AppRunner | None = None
    if worker is not None:
        # The supervisor checks the admin token; this socket's directory is private.
        admin_runner = web.AppRunner(create_app(gateway, reloader, guarded=False),
                                     access_log=None, handle_signals=False)
        await admin_runner.setup()
        await web.UnixSite(admin_runner, worker.admin_socket).start()
    elif config.admin.enabled:
        admin_runner = web.AppRunner(create_app(gateway, reloader), access_log=None,
                                     handle_signals=False)
        await admin_runner.setup()
        try:
            await web.TCPSite(admin_runner, config.admin.host, config.admin.port).start()
        except OSError as exc:
            raise cannot_listen("admin.port", f"{config.admin.host}:{config.admin.port}",
                                exc.strerror or exc) from None
        log.info("admin API on http://%s:%d%s", config.admin.host, config.admin.port,
                 " (bearer token required but for the health probes)"
                 if config.admin.guarded else "")

    tcp = TcpListener(gateway, "websocket", "")
    listeners: list[Listener] = [tcp]
    if worker is not None:
        tcp.endpoint.not_before = worker.not_before
        if worker.unix_fd is not None and config.listen.unix_socket:
            inherited = socket.socket(fileno=worker.unix_fd)
            inherited.setblocking(False)
            listeners.append(UnixListener(gateway, "unix", config.listen.unix_socket,
                                          inherited))
    elif config.listen.unix_socket:
        if config.listen.unix_socket == user_socket_path():
            private_directory(os.path.dirname(config.listen.unix_socket), create=True)
        listeners.append(UnixListener(gateway, "unix", config.listen.unix_socket))
    gateway.listeners = listeners
    background: list[asyncio.Task[Any]] = []
    try:
        await gateway.authenticator.start()  # keys first: the first request verifies
        starting: asyncio.Task[None] | None = None
        if worker is not None and worker.restarted:
            # Its siblings serve meanwhile: bound only once its upstreams are in, it
            # gives none of the connections the kernel hands it "not ready yet".
            starting = _start_upstreams(gateway, background)
            background.append(loop.create_task(stop.wait(), name="stop-while-starting"))
            await asyncio.wait({starting, background[-1]},
                               return_when=asyncio.FIRST_COMPLETED)
        for listener in listeners:
            await listener.start()
        gateway.listening = True
        if starting is None:
            starting = _start_upstreams(gateway, background)
        stopping = loop.create_task(stop.wait(), name="stop")
        background.append(stopping)
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            background.append(loop.create_task(_log_when_ready(gateway), name="readiness"))
            if subreaper:
                background.append(loop.create_task(_collect_zombies(), name="zombies"))
        await stopping
        log.info("shutting down: draining for up to %g s", config.shutdown.drain_timeout)
        for listener in listeners:
            listener.stop_accepting()
        await gateway.drain()
    finally:
        for task in background:
            task.cancel()
        # Whatever they ended with, the upstreams below must still be stopped.
        await asyncio.gather(*background, return_exceptions=True)
        for listener in listeners:
            listener.stop_accepting()
        await gateway.stop()
        if subreaper:
            orphans = await reap_orphans()
            if orphans:
                log.info("ended %d process(es) the upstreams left behind: %s",
                         len(orphans), " ".join(map(str, orphans)))
        for listener in listeners:
            if listener.server is not None:
                await _closed(listener.server)
        if admin_runner is not None:
            await admin_runner.cleanup()
        if worker is not None:
            worker.leave()
        log.info("stopped")


def tune_collector() -> None:
    """Collect young garbage cycles less often (``GC_YOUNG_THRESHOLD``)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    log.debug("cyclic garbage collector thresholds: %s", gc.get_threshold())


def _start_upstreams(gateway: Gateway, background: list[asyncio.Task[Any]]
                     ) -> asyncio.Task[None]:
    log.info("initializing %d upstream(s): %s", len(gateway.upstreams),
             ", ".join(gateway.upstreams))
    starting = asyncio.get_running_loop().create_task(gateway.start_upstreams(),
                                                      name="start-upstreams")
    background.append(starting)
    return starting


def reload(gateway: Gateway, reread: Callable[[], Config],
           rebinds: tuple[str, ...] | None = None) -> list[str]:
    """Read the config again and put it in force whole (SIGHUP, POST /api/v1/reload);
    returns the key paths that wait for a restart. A config that does not load raises
    ConfigError, and the one in force stays. ``rebinds``: the listener addresses a
    reload binds anew (default: all of them)."""
    rebinds = LISTENER_ADDRESSES if rebinds is None else rebinds
    try:
        config = reread()
        held = gateway.use(config)
    except ConfigError as exc:
        log.error("reload refused, the config in force stays: %s", exc)
        raise
    moved = [path for path in held if path in rebinds]
    if moved:
        held = [path for path in held if path not in rebinds]
        gateway.background(_rebind(gateway, config, moved))
    log.info("reloaded %s", config.source)
    if held:
        log.warning("config: %s changed and will apply after a restart", ", ".join(held))
    return held


LISTENER_ADDRESSES = ("listen.host", "listen.port", "listen.unix_socket")
"""What a reload applies by binding anew (``_rebind``), not by a restart."""
WORKER_REBINDS = ("listen.host", "listen.port")
"""What a worker's reload binds anew: each worker binds the TCP port itself, while the
unix socket is the supervisor's."""

PR_SET_PDEATHSIG = 1


def end_with_supervisor(supervisor: int) -> None:
    """Have the kernel send this worker SIGTERM (a graceful drain) when its supervisor
    dies, however it dies (Linux prctl; elsewhere a no-op); exit at once if it is gone
    already."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM,
                                                    0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != supervisor:
        raise SystemExit("mcpfast: the supervisor that started this worker is gone")


async def _rebind(gateway: Gateway, config: Config, rebinding: list[str]) -> None:
    """Listen where ``config`` says, if that moved: the new socket is bound first, then
    the old one stops accepting; connections open on it stay until they end, and the
    HTTP sessions go on (the endpoint is shared). A bind that fails is logged, and the
    listener stays where it was."""
    old, new = gateway.config.listen, config.listen
    if (new.host, new.port) != (old.host, old.port):
        current = next((listener for listener in gateway.listeners
                        if isinstance(listener, TcpListener) and listener.server is not None
                        and listener.server.is_serving()), None)
        if current is not None:
            moved = TcpListener(gateway, current.kind, "", current.endpoint)
            try:
                await moved.start(new.host, new.port)
            except (OSError, ConfigError) as exc:
                log.error("reload: cannot listen on %s:%d (%s); still on %s", new.host,
                          new.port, exc, current.address)
            else:
                current.stop_accepting()
                gateway.listeners.append(moved)
                gateway.listening_on(host=new.host, port=new.port)
                log.info("listener moved from %s to %s; connections open there stay",
                         current.address, moved.address)
    if "listen.unix_socket" in rebinding and new.unix_socket != old.unix_socket:
        current_unix = next((listener for listener in gateway.listeners
                             if isinstance(listener, UnixListener)
                             and listener.server is not None
                             and listener.server.is_serving()), None)
        if new.unix_socket:
            fresh = UnixListener(gateway, "unix", new.unix_socket)
            try:
                await fresh.start()
            except (OSError, ConfigError) as exc:
                log.error("reload: cannot listen on unix:%s (%s)", new.unix_socket, exc)
                return
            gateway.listeners.append(fresh)
        if current_unix is not None:
            current_unix.stop_accepting()
        gateway.listening_on(unix_socket=new.unix_socket)
        log.info("unix-socket listener moved from %s to %s", old.unix_socket,
                 new.unix_socket)


def _reload_on_signal(reloader: Callable[[], list[str]]) -> None:
    try:
        reloader()
    except ConfigError:
        pass  # logged; the config in force stays


async def _log_when_ready(gateway: Gateway) -> None:
    """Say "ready" when /readiness starts answering 200, and not before."""
    if not gateway.ready:
        waiting = [name for name, u in gateway.upstreams.items()
                   if not u.initialized_once.is_set()]
        log.warning("listening, but not ready: /readiness answers 503 until every upstream "
                    "has initialized and one is up (%s)",
                    f"waiting for {', '.join(waiting)}" if waiting else "none is up")
        while not gateway.ready:
            await asyncio.sleep(READY_POLL)
    log.info("ready")


async def _collect_zombies() -> None:
    while True:
        await asyncio.sleep(ZOMBIE_SWEEP)
        reap_exited_orphans()


async def _closed(server: asyncio.AbstractServer) -> None:
    try:
        await asyncio.wait_for(server.wait_closed(), 2.0)
    except TimeoutError:
        pass
