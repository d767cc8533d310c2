"""``mcpfast serve``: run the gateway until SIGTERM or SIGINT, then shut down gracefully.

Shutdown order: readiness goes false, listeners stop accepting, requests in flight get
until ``shutdown.drain_timeout`` to finish, WebSocket clients get close 1001, upstream
processes are stopped, the admin app last (so that it reports the drain).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from mcpfast_ext import IMPLEMENTATION

from . import __version__
from .admin.app import create_app
from .config import Config
from .gateway.gateway import Gateway
from .gateway.listener import Listener, TcpListener, UnixListener

log = logging.getLogger("mcpfast")


async def serve(config: Config) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config)
    log.info("mcpfast %s starting (%s hot path) with %s", __version__, IMPLEMENTATION,
             config.source)

    admin_runner: web.AppRunner | None = None
    if config.admin.enabled:
        admin_runner = web.AppRunner(create_app(gateway), access_log=None,
                                     handle_signals=False)
        await admin_runner.setup()
        await web.TCPSite(admin_runner, config.admin.host, config.admin.port).start()
        log.info("admin API on http://%s:%d", config.admin.host, config.admin.port)

    listeners: list[Listener] = [TcpListener(gateway, "websocket", "")]
    if config.listen.unix_socket:
        listeners.append(UnixListener(gateway, "unix", config.listen.unix_socket))
    gateway.listeners = listeners
    try:
        await gateway.start_upstreams()
        for listener in listeners:
            await listener.start()
        gateway.listening = True
        log.info("ready")
        await stop.wait()
        log.info("shutting down: draining for up to %g s", config.shutdown.drain_timeout)
        for listener in listeners:
            listener.stop_accepting()
        await gateway.drain()
    finally:
        for listener in listeners:
            listener.stop_accepting()
        await gateway.stop()
        for listener in listeners:
            if listener.server is not None:
                await _closed(listener.server)
        if admin_runner is not None:
            await admin_runner.cleanup()
        log.info("stopped")


async def _closed(server: asyncio.AbstractServer) -> None:
    try:
        await asyncio.wait_for(server.wait_closed(), 2.0)
    except TimeoutError:
        pass
