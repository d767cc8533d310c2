"""``mcpfast serve`` with ``workers`` > 1: a supervisor and that many worker processes.

Each worker is ``python -m mcpfast serve`` with the supervisor's own arguments and a few
hidden ones (``--worker I`` and where it serves), started as a subprocess, never
forked: uvloop's loop does not survive a fork. Each runs the whole gateway of
server.py:

- TCP: every worker binds ``listen.host:listen.port`` with SO_REUSEPORT, and the kernel
  spreads new connections over them. The unix socket (SO_REUSEPORT does not apply to
  AF_UNIX) is bound here once, with its file mode, and its descriptor passed to every
  worker, each accepting on it; its allow-list is checked in the worker, per connection.
- Upstreams: each worker has its own connections and processes. A worker that crashes
  takes only its own with it, and the hot path never crosses a process; the cost is
  ``workers`` times the upstream processes (and connections to remote ones).
- Legacy Streamable HTTP sessions: a client's next request may reach another worker,
  which serves it from the signed id (protocol/session_ids.py), since all the workers
  sign with one secret: ``listen.http.session_secret``, or one made here at random and
  handed over in the environment (``WORKER_SECRET_VARIABLE``), never on a command line
  and never logged.
- Admin: each worker's admin app answers on a private unix socket (a 0700 directory);
  the configured admin port is this process's, and combines them (admin/workers.py).

Signals: SIGHUP rereads the config; one that does not load is refused with its key path
and the workers are not disturbed; one that does goes to every worker as SIGHUP (each
puts it in force as a single gateway would). A change of ``workers`` itself waits for a
restart. SIGTERM or SIGINT: every worker gets SIGTERM and drains as a single gateway
does; those still running after ``shutdown.drain_timeout`` and a margin are killed, and
the supervisor exits 0.

A worker that exits unasked is started again after a backoff (0.5 s, doubling to 30 s,
back to 0.5 s once a worker has run 10 s), logged and counted. The upstream processes it
left (this process is their subreaper) are ended first. Restarted, it binds its
listeners once its upstreams are initialized (the others serve meanwhile), and gets the
operator's switches (drain, disable) that the others have. A worker that cannot start
at all the first time (its port is taken) ends the supervisor with its exit status: no
restart would help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import msgspec
from aiohttp import web

from .admin.workers import WorkerAdmin, create_supervisor_app
from .config import (
    WORKER_SECRET_VARIABLE,
    Config,
    ConfigError,
    cannot_listen,
    private_directory,
    user_socket_path,
)
from .listeners import bind_unix, check_port_free, file_identity, remove_if_same
from .upstream.stdio import become_subreaper, reap_orphans

log = logging.getLogger("mcpfast.supervisor")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STEADY = 10.0
"""Seconds a worker must run for its next crash to restart it after the first backoff."""
POLL = 0.05
STOP_MARGIN = 5.0
"""Seconds beyond the drain a worker gets to stop: its upstreams' stop takes up to three
``stop_timeout`` (stdin closed, SIGTERM, SIGKILL), added to this."""


class Worker:
    """One worker process, and the next ones that replace it."""

    def __init__(self, index: int, directory: str) -> None:
        self.index = index
        self.admin = WorkerAdmin(os.path.join(directory, f"worker-{index}.sock"))
        self.pid: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.state = "starting"
        """starting (until it listens), running, restarting (its backoff), stopping,
        stopped."""
        self.restarts = 0
        self.listening = asyncio.Event()
        self.reread = False
        """A reload came while it was starting: SIGHUP once it listens (before its
        handler is installed, SIGHUP would end it)."""


class Supervisor:
    def __init__(self, config: Config, reread: Callable[[], Config],
                 argv: Sequence[str]) -> None:
        self.config = config
        self.reread = reread
        self.argv = list(argv)
        self.started_at = time.time()
        self.draining = False
        self.directory = tempfile.mkdtemp(prefix="mcpfast-workers-")  # mode 0700
        self.workers = [Worker(index, self.directory) for index in range(config.workers)]
        self.unix: socket.socket | None = None
        self.unix_file: tuple[str, tuple[int, int]] | None = None
        """The socket file it bound, to remove when it goes (``remove_if_same``)."""
        self.secret = "" if config.listen.http.session_secret else secrets.token_urlsafe(32)
        self.switches: dict[str, str] = {}
        """The operator's switches every worker took, by what they switch (an upstream,
        an endpoint, a tool) → the last path posted; replayed to a restarted worker."""
        self.stop = asyncio.Event()
        self.children = asyncio.Lock()
        """Held while a worker is started and while orphans are ended: a worker being
        started is a child whose pid ``workers`` does not hold yet, which the ending of
        another worker's orphans would take for one of them."""
        self.failed = 0
        """The exit status of a worker that could not start the first time."""

    @property
    def members(self) -> Sequence[Worker]:
        return self.workers

    # -- the admin app's requests ------------------------------------------------------
    def reload(self) -> list[str]:
        """Reread the config: ConfigError if it does not load (logged); otherwise the
        key paths the supervisor holds for a restart. The workers reread it themselves."""
        try:
            fresh = self.reread()
        except ConfigError as exc:
            log.error("reload refused, the config in force stays: %s", exc)
            raise
        held = []
        if fresh.workers != self.config.workers:
            held.append("workers")
            log.warning("config: workers changed (%d to %d) and will apply after a restart",
                        self.config.workers, fresh.workers)
        # The admin port and its tokens are held, as a single gateway holds them.
        self.config = msgspec.structs.replace(self.config, shutdown=fresh.shutdown)
        for worker in self.workers:
            worker.reread = worker.state != "running"
        return held

    def remember(self, path: str) -> None:
        what, _, _ = path.rpartition("/")
        self.switches.pop(what, None)
        self.switches[what] = path

    # -- life --------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        become_subreaper()
        runner: web.AppRunner | None = None
        keepers: list[asyncio.Task[None]] = []
        try:
            check_port_free(self.config.listen.host, self.config.listen.port)
            self._bind_unix()
            if self.config.admin.enabled:
                runner = web.AppRunner(create_supervisor_app(self), access_log=None,
                                       handle_signals=False)
                await runner.setup()
                admin = self.config.admin
                try:
                    await web.TCPSite(runner, admin.host, admin.port).start()
                except OSError as exc:
                    raise cannot_listen("admin.port", f"{admin.host}:{admin.port}",
                                        exc.strerror or exc) from None
                log.info("admin API of %d workers on http://%s:%d", len(self.workers),
                         admin.host, admin.port)
            log.info("starting %d workers", len(self.workers))
            keepers = [loop.create_task(self._keep(worker), name=f"worker-{worker.index}")
                       for worker in self.workers]
            ready = loop.create_task(self._log_when_ready(), name="readiness")
            await self.stop.wait()
            ready.cancel()
            if not self.failed:
                log.info("shutting down: each worker drains for up to %g s",
                         self.config.shutdown.drain_timeout)
            await self._stop_workers()
        finally:
            self.stop.set()
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            await self._kill_left()
            orphans = await reap_orphans()
            if orphans:
                log.info("ended %d process(es) the workers left behind: %s",
                         len(orphans), " ".join(map(str, orphans)))
            self._close_unix()
            for worker in self.workers:
                await worker.admin.close()
            if runner is not None:
                await runner.cleanup()
            shutil.rmtree(self.directory, ignore_errors=True)
        log.info("stopped")
        return self.failed

    def _bind_unix(self) -> None:
        listen = self.config.listen
        if not listen.unix_socket:
            return
        if listen.unix_socket == user_socket_path():
            private_directory(os.path.dirname(listen.unix_socket), create=True)
        self.unix = bind_unix(listen.unix_socket, listen.unix_mode, listen.backlog)
        self.unix_file = (listen.unix_socket, file_identity(listen.unix_socket))
        log.info("listening for newline-delimited JSON on unix:%s (mode %s), accepted by "
                 "every worker", listen.unix_socket, listen.unix_socket_mode)

    def _close_unix(self) -> None:
        """The socket file goes with the supervisor's copy: a client then finds no socket
        instead of a backlog that no worker accepts from."""
        if self.unix is None:
            return
        self.unix.close()
        self.unix = None
        if self.unix_file is not None:
            remove_if_same(*self.unix_file)
            self.unix_file = None

    async def _spawn(self, worker: Worker) -> asyncio.subprocess.Process:
        argv = [sys.executable, "-m", "mcpfast", *self.argv, "--worker", str(worker.index),
                "--worker-dir", self.directory, "--worker-since", str(int(self.started_at)),
                "--supervisor-pid", str(os.getpid())]
        fds: tuple[int, ...] = ()
        if self.unix is not None:
            fds = (self.unix.fileno(),)
            argv += ["--worker-unix-fd", str(fds[0])]
        if worker.restarts:
            argv.append("--worker-restarted")
        env = dict(os.environ)
        if self.secret:
            env[WORKER_SECRET_VARIABLE] = self.secret
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.admin.path)  # a crashed worker's
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, env=env, pass_fds=fds)
        worker.process, worker.pid = process, process.pid
        worker.state = "starting"
        worker.listening.clear()
        log.info("worker %d started: pid %d", worker.index, process.pid)
        return process

    async def _keep(self, worker: Worker) -> None:
        """Run ``worker`` until the supervisor stops; start it again when it exits
        unasked."""
        backoff = BACKOFF_FIRST
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                async with self.children:
                    process = await self._spawn(worker)
            except OSError as exc:
                log.error("worker %d could not be started: %s", worker.index, exc)
                self.failed = 1
                self.stop.set()
                return
            watch = asyncio.get_running_loop().create_task(self._until_listening(worker))
            code = await process.wait()
            watch.cancel()
            if self.stop.is_set() or self.draining:
                break
            if not worker.listening.is_set() and worker.restarts == 0:
                log.error("worker %d (pid %d) could not start (exit status %d); stopping",
                          worker.index, process.pid, code)
                self.failed = code if code > 0 else 1
                self.stop.set()
                break
            if time.monotonic() - started >= STEADY:
                backoff = BACKOFF_FIRST
            worker.restarts += 1
            worker.state = "restarting"
            log.error("worker %d (pid %d) exited unasked with %s; starting it again in "
                      "%g s (restart %d)", worker.index, process.pid, _exit(code), backoff,
                      worker.restarts)
            async with self.children:
                orphans = await reap_orphans(keep=[w.pid for w in self.workers
                                                   if w.pid is not None and w is not worker])
            if orphans:
                log.info("ended %d upstream process(es) worker %d left behind: %s",
                         len(orphans), worker.index, " ".join(map(str, orphans)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _until_listening(self, worker: Worker) -> None:
        """Mark ``worker`` running once its listeners are bound; give a restarted one
        the operator's switches as soon as its admin app answers, before it takes a
        client (``replay=1``: a tool is disabled before its upstream lists it). A
        switch the worker could not answer (no answer, a 5xx) is asked again while it
        starts; one it refused (a 4xx: an upstream a reload removed) is not."""
        # What it took of each switch; read afresh each time, so that a switch the
        # operator posts while the worker starts reaches it too.
        taken: dict[str, str] = {}
        while True:
            code, body = await worker.admin.ask_json("GET", "/readiness")
            if code and worker.restarts:
                for what, path in list(self.switches.items()):
                    if taken.get(what) == path:
                        continue
                    answer, _ = await worker.admin.ask_json("POST", f"{path}?replay=1")
                    log.info("worker %d: replayed %s (HTTP %d)", worker.index, path,
                             answer)
                    if 0 < answer < 500:
                        taken[what] = path
            if code == 200 or (code == 503 and body.get("reason") != "not listening yet"):
                worker.state = "running"
                worker.listening.set()
                if worker.reread:
                    worker.reread = False
                    self._signal(worker, signal.SIGHUP)
                return
            await asyncio.sleep(POLL)

    async def _log_when_ready(self) -> None:
        for worker in self.workers:
            await worker.listening.wait()
        while True:
            answers = await asyncio.gather(*(w.admin.ask("GET", "/readiness")
                                             for w in self.workers))
            if all(code == 200 for code, _ in answers):
                log.info("ready: %d workers", len(self.workers))
                return
            await asyncio.sleep(POLL * 5)

    async def _stop_workers(self) -> None:
        """SIGTERM to every worker; wait for their drains."""
        self.draining = True
        self._close_unix()
        for worker in self.workers:
            worker.state = "stopping"
            self._signal(worker, signal.SIGTERM)
        stop_timeout = max((u.stop_timeout for u in self.config.upstreams.values()),
                           default=0.0)
        deadline = self.config.shutdown.drain_timeout + STOP_MARGIN + 3 * stop_timeout
        waits = [w.process.wait() for w in self.workers if w.process is not None]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), deadline)

    async def _kill_left(self) -> None:
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                log.warning("worker %d (pid %d) did not stop in time: killed", worker.index,
                            process.pid)
                self._signal(worker, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 5.0)
            worker.state = "stopped"

    @staticmethod
    def _signal(worker: Worker, sig: signal.Signals) -> None:
        process = worker.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    def _reload_on_signal(self) -> None:
        try:
            self.reload()
        except ConfigError:
            return  # logged; the workers keep the config in force
        running = [worker for worker in self.workers if worker.state == "running"]
        for worker in running:
            self._signal(worker, signal.SIGHUP)
        log.info("reload: SIGHUP sent to %d workers%s", len(running),
                 "" if len(running) == len(self.workers) else
                 " (the others when they listen)")


def _exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"status {code}"

