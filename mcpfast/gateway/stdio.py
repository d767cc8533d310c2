"""StdioUpstream: an MCP server run as a subprocess, spoken to over stdin/stdout.

The gateway owns the process: it starts it in its own process group, speaks
newline-delimited JSON on its pipes (transports/stdio), sends its stderr to the log under
the upstream's name, restarts it with exponential backoff when it dies, and on stop
closes stdin, then sends SIGTERM, then SIGKILL to the whole group (PROTOCOL.md).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from typing import Any

from ..protocol.ndjson import OVERSIZED, LineFramer
from ..transport.writer import CoalescingWriter
from .upstream import Upstream, UpstreamError

STDERR_LINE_LIMIT = 8192
STABLE_AFTER = 30.0
"""A process that ran this long before dying restarts with the initial backoff again."""


class _PipeProtocol(asyncio.SubprocessProtocol):
    def __init__(self, upstream: StdioUpstream) -> None:
        self.upstream = upstream
        self.stdout = LineFramer(upstream.config.max_message_bytes)
        self.stderr = LineFramer(STDERR_LINE_LIMIT)
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        upstream = self.upstream
        if fd == 1:
            for line in self.stdout.feed(data):
                if line is OVERSIZED:
                    upstream.log.warning("dropped a message from the upstream over %d bytes",
                                         self.stdout.limit)
                else:
                    upstream.on_message(line)
        else:
            for line in self.stderr.feed(data):
                text = "(line too long, dropped)" if line is OVERSIZED else \
                    line.decode("utf-8", "replace")
                upstream.stderr_log.info("%s", text)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(0)


class StdioUpstream(Upstream):
    kind = "stdio"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stderr_log = self.log.getChild("stderr")
        self.pid: int | None = None
        self.returncode: int | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._protocol: _PipeProtocol | None = None
        self._writer: CoalescingWriter | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            raise UpstreamError(-32000, f"upstream {self.name!r} is not running")
        # Two chunks rather than data + b"\n": the flush joins them anyway, so this saves
        # a copy of every message.
        writer.write(data)
        writer.write(b"\n")

    async def start(self) -> None:
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"upstream:{self.name}")

    def _argv(self) -> list[str]:
        argv = list(self.config.command)
        # "python" means the gateway's own interpreter, so a bundled or test server runs
        # in the same environment as the gateway whatever PATH says.
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        elif os.sep not in argv[0]:
            found = shutil.which(argv[0])
            if found is None:
                raise UpstreamError(-32000, f"command not found: {argv[0]!r}")
            argv[0] = found
        return argv

    async def _spawn(self) -> _PipeProtocol:
        env = dict(os.environ) if self.config.inherit_env else {"PATH": os.defpath}
        env.update(self.config.env)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            lambda: _PipeProtocol(self), *self._argv(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.config.cwd, env=env,
            start_new_session=True)
        self._transport = transport
        self._protocol = protocol
        stdin = transport.get_pipe_transport(0)
        assert stdin is not None
        self._writer = CoalescingWriter(stdin, loop)  # type: ignore[arg-type]
        self.pid = transport.get_pid()
        self.starts += 1
        self.log.info("started pid %d: %s", self.pid, " ".join(self.config.command))
        return protocol

    async def _supervise(self) -> None:
        backoff = self.config.restart_backoff
        while not self._stopping:
            started = time.monotonic()
            try:
                self.state = "starting"
                protocol = await self._spawn()
                self.state = "initializing"
                await self._initialize(protocol)
                self.state = "ready"
                self.ready = True
                self.last_error = None
                self.gateway.upstream_ready(self)
                self.initialized_once.set()
                await protocol.exited
                self.last_error = f"process exited with code {self._returncode()}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means restart
                self.last_error = str(exc) or type(exc).__name__
            finally:
                self.ready = False
                await self._reap()
            if self._stopping:
                break
            message = f"upstream {self.name!r} is down: {self.last_error}"
            self.fail_all(message)
            self.gateway.upstream_down(self)
            if time.monotonic() - started >= STABLE_AFTER:
                backoff = self.config.restart_backoff
            self.state = "restarting"
            self.log.warning("%s; restarting in %.1f s", message, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.restart_backoff_max)
        self.state = "stopped"

    async def _initialize(self, protocol: _PipeProtocol) -> None:
        work: asyncio.Future[Any] = asyncio.ensure_future(self._handshake_and_catalog())
        exited: asyncio.Future[Any] = protocol.exited
        done, _ = await asyncio.wait({work, exited}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            work.cancel()
            # fail_all() may already have failed it; either way nobody awaits it now.
            work.add_done_callback(lambda task: task.cancelled() or task.exception())
            raise UpstreamError(-32000, f"process exited with code {self._returncode()} "
                                "during initialization")
        work.result()

    async def _handshake_and_catalog(self) -> None:
        await self.handshake()
        await self.fetch_catalog()
        if self.era == "modern" and self.listen():
            # Ready only once the upstream listens, so that no change made by a call the
            # gateway forwards from now on goes unannounced.
            try:
                await asyncio.wait_for(self.listen_acknowledged.wait(),
                                       self.config.init_timeout)
            except TimeoutError:
                self.log.warning("subscriptions/listen was not acknowledged within %g s",
                                 self.config.init_timeout)

    def _returncode(self) -> int | None:
        return self._transport.get_returncode() if self._transport is not None else \
            self.returncode

    async def _reap(self) -> None:
        """Stop the process if it still runs, and always clear its whole process group."""
        transport, protocol = self._transport, self._protocol
        if transport is None or protocol is None:
            return
        # Cleared first so that a second caller (stop() racing the supervisor) is a no-op.
        self._transport = None
        self._protocol = None
        self._writer = None
        if transport.get_returncode() is None:
            stdin = transport.get_pipe_transport(0)
            if stdin is not None:
                stdin.close()
            if not await self._wait_exit(protocol, self.config.stop_timeout):
                self._signal_group(signal.SIGTERM)
                if not await self._wait_exit(protocol, self.config.stop_timeout):
                    self._signal_group(signal.SIGKILL)
                    await self._wait_exit(protocol, self.config.stop_timeout)
        # Children the server left behind share its group; they die with it.
        self._signal_group(signal.SIGKILL)
        self.returncode = transport.get_returncode()
        self.log.info("pid %s ended with code %s", self.pid, self.returncode)
        transport.close()

    @staticmethod
    async def _wait_exit(protocol: _PipeProtocol, timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(protocol.exited), timeout)
            return True
        except TimeoutError:
            return False

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self) -> None:
        self._stopping = True
        self.state = "stopping"
        task = self._supervisor
        if task is None:
            return
        if self._transport is not None and self._protocol is not None and \
                not self._protocol.exited.done():
            # Ends the supervisor's wait on protocol.exited; _reap does the rest.
            await self._reap()
        if not task.done():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        self.ready = False
        self.fail_all(f"upstream {self.name!r} stopped")
        self.state = "stopped"

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({"pid": self.pid if self._transport is not None else None,
                     "command": self.config.command})
        return info
