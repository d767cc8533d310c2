"""StdioUpstream: an MCP server run as a subprocess, spoken to over stdin/stdout.

The gateway owns the process: it starts it in its own process group, speaks
newline-delimited JSON on its pipes (transports/stdio), sends its stderr to the log under
the upstream's name, restarts it with exponential backoff when it dies, and on stop
closes stdin, then sends SIGTERM, then SIGKILL to the whole group (PROTOCOL.md).

A process that leaves its group (``setsid``) escapes that kill. The gateway is therefore
a child subreaper (Linux): such a process, once orphaned, becomes the gateway's child, and
``reap_orphans`` ends it when the upstreams have stopped.

The environment an upstream gets is an allow-list by default (``upstream_environment``):
a server is often third-party code, and the gateway's environment holds its secrets.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import sys
import time
from collections.abc import Collection, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ..config import Interpolated, UpstreamConfig
from ..protocol.ndjson import OVERSIZED, LineFramer
from ..transport.writer import UPSTREAM_HIGH_WATER, CoalescingWriter
from .base import CallT, Upstream, UpstreamError, UpstreamEvents, deliver_lines
from .process import WATCHED, ChildProcess

STDERR_LINE_LIMIT = 8192
STDOUT_EXIT_GRACE = 2.0
"""Seconds a process on its way out (its stdout closed by its exit) has to be seen to
exit before the connection ends without its exit code."""
UNKNOWN_GRACE = 0.1
"""The same, where it cannot be told whether the process is on its way out (no /proc)."""
EXIT_STDOUT_GRACE = 0.25
"""Seconds the stdout of a process that has exited has to end (what is left in the pipe
is read first) before the connection ends: a child of the process may hold it open."""
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*",
                 "TZ", "TMPDIR", "TEMP", "TMP", "TERM", "COLORTERM", "XDG_RUNTIME_DIR",
                 "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "SSL_CERT_FILE",
                 "SSL_CERT_DIR")
"""What ``inherit_env = "allowlist"`` passes on: what programs need to find themselves,
their files and the user's locale, and nothing that usually holds a credential (proxy
URLs can: list them in ``env_allow`` when an upstream needs them)."""
GATEWAY_OWN = "MCPFAST_*"
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def upstream_environment(config: UpstreamConfig, withheld: Collection[str],
                         environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment an upstream starts with, and the names that would have been
    inherited but were withheld because the config interpolates them."""
    if config.inherit_env is True:
        patterns: tuple[str, ...] = ("*",)
    elif config.inherit_env == "allowlist":
        patterns = (*INHERITED_ENV, *config.env_allow)
    else:
        patterns = ()
    env: dict[str, str] = {} if patterns else {"PATH": os.defpath}
    dropped: list[str] = []
    for name, value in environ.items():
        if fnmatchcase(name, GATEWAY_OWN) or not any(fnmatchcase(name, p) for p in patterns):
            continue
        if name in withheld:
            dropped.append(name)
            continue
        env[name] = value
    env.update(config.env)
    return env, [name for name in dropped if name not in config.env]


class CannotStartError(LookupError):
    """The upstream's program or working directory is missing; ``key`` is the config
    key at fault (``command[0]`` or ``cwd``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def shown_command(name: str, config: UpstreamConfig, interpolated: Interpolated) -> list[str]:
    """The command as /status and the logs show it: ``${...}`` values stay hidden."""
    return [interpolated.shown(f"upstreams.{name}.command[{i}]", arg)
            for i, arg in enumerate(config.command or ())]


def resolve_command(name: str, config: UpstreamConfig, interpolated: Interpolated,
                    env: Mapping[str, str]) -> list[str]:
    """The argv to execute: the program looked up on the upstream's own PATH. Raises
    CannotStartError naming the program as written (it may come from ``${...}``)."""
    argv = list(config.command or ())
    shown = shown_command(name, config, interpolated)
    # "python" means the gateway's own interpreter, so a bundled or test server runs
    # in the same environment as the gateway whatever PATH says.
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    elif os.sep not in argv[0]:
        found = shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if found is None:
            raise CannotStartError("command[0]", f"program {shown[0]!r} not found on the "
                                   f"upstream's PATH ({env.get('PATH', os.defpath)})")
        argv[0] = found
    elif not os.path.isfile(argv[0]):
        raise CannotStartError("command[0]", f"program {shown[0]!r} does not exist")
    elif not os.access(argv[0], os.X_OK):
        raise CannotStartError("command[0]", f"program {shown[0]!r} is not executable")
    cwd = config.cwd
    if cwd is not None and not os.path.isdir(cwd):
        written = interpolated.shown(f"upstreams.{name}.cwd", cwd)
        raise CannotStartError("cwd", f"cwd {written!r} is not a directory")
    return argv


def become_subreaper() -> bool:
    """Make the gateway the parent of every orphaned descendant of its upstreams (Linux
    prctl; elsewhere a no-op), so that one that left its process group still ends with
    the gateway (``reap_orphans``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _children(exclude: Collection[int | None] = ()) -> dict[int, str]:
    """This process's children (pid → state letter), read from /proc."""
    me = os.getpid()
    found: dict[int, str] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat_file.parent.name)
        if int(fields[1]) == me and pid not in exclude:
            found[pid] = fields[0]
    return found


def _waited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _signal_orphan(pid: int, sig: signal.Signals) -> None:
    try:
        pgid = os.getpgid(pid)
        # An orphan that called setsid leads its own group: its children go with it.
        if pgid == pid:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def reap_orphans(grace: float = 1.0, keep: Collection[int] = ()) -> list[int]:
    """End the processes that upstreams left behind and that were reparented to the
    gateway (its only children once every upstream has stopped; a supervisor's, but
    for its workers in ``keep``): SIGTERM, then SIGKILL after ``grace`` seconds.
    Returns their pids."""
    ended: list[int] = []
    # Each round may orphan the next generation, which comes to the gateway in turn.
    for _ in range(8):
        orphans = _children(keep)
        if not orphans:
            break
        ended.extend(orphans)
        for pid, state in orphans.items():
            if state != "Z":
                _signal_orphan(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        left = [pid for pid in orphans if not _waited(pid)]
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            left = [pid for pid in left if not _waited(pid)]
        for pid in left:
            _signal_orphan(pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            left = [pid for pid in left if not _waited(pid)]
    return ended


def reap_exited_orphans(keep: Collection[int] = ()) -> list[int]:
    """Collect orphans that have already exited (zombies), leaving alone the upstream
    processes (a ChildProcess collects its own exit, ``WATCHED`` from the moment it is
    started) and those in ``keep``."""
    return [pid for pid, state in _children({*keep, *WATCHED}).items()
            if state == "Z" and _waited(pid)]


class _PipeProtocol:
    def __init__(self, upstream: StdioUpstream[Any]) -> None:
        self.upstream = upstream
        self.stdout = LineFramer(upstream.config.max_message_bytes)
        self.stderr = LineFramer(STDERR_LINE_LIMIT)
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        """Done when the process has exited and its stdout has ended: then nothing more
        can be answered, and what it wrote before it exited has been read. Either alone
        ends it after a grace: a process that closed its stdout and runs on would leave
        every request to time out, for ever; one whose stdout a child of its own keeps
        open has still exited."""
        self.stdout_closed = False
        self.stdin_closed = False
        self._grace: asyncio.TimerHandle | None = None
        self.process: ChildProcess

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd > 1:
            return
        if fd == 0:
            # It reads no more requests: what is in flight fails now rather than at its
            # time-out.
            self.stdin_closed = True
        else:
            self.stdout_closed = True
        # A process that exits closes its pipes a moment before its exit is seen: wait
        # that moment, so that the exit code is what is reported. One that closed one
        # and runs on is over now.
        exiting = self.process.exiting()
        self._end_after(0 if exiting is False or self.process.exited else
                        STDOUT_EXIT_GRACE if exiting else UNKNOWN_GRACE)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        upstream = self.upstream
        if fd == 1:
            deliver_lines(upstream, self.stdout, data)
        else:
            for line in self.stderr.feed(data):
                text = "(line too long, dropped)" if line is OVERSIZED else \
                    line.decode("utf-8", "replace")
                upstream.stderr_log.info("%s", text)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(0)
        self._end_after(0 if self.stdout_closed else EXIT_STDOUT_GRACE)

    def _end_after(self, delay: float) -> None:
        if delay == 0:
            if self._grace is not None:
                self._grace.cancel()
            self._end()
        elif self._grace is None:
            self._grace = asyncio.get_running_loop().call_later(delay, self._end)

    def _end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


class StdioUpstream(Upstream[CallT]):
    kind = "stdio"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT], interpolated: Interpolated) -> None:
        super().__init__(name, index, config, events)
        self.interpolated = interpolated
        """What the config interpolated (``${VAR}``): withheld from the environment,
        and the command shown with it masked."""
        self.stderr_log = self.log.getChild("stderr")
        self.pid: int | None = None
        self._process: ChildProcess | None = None
        self._started: ChildProcess | None = None
        self._protocol: _PipeProtocol | None = None
        self.connection.delimiter = b"\n"
        self.shown_command = shown_command(self.name, self.config, interpolated)

    async def connect(self) -> asyncio.Future[Any]:
        """Start the process; the future is done when it has ended (``_PipeProtocol.ended``)."""
        env, withheld = upstream_environment(
            self.config, self.interpolated.names, os.environ)
        if withheld and self.starts == 0:
            self.log.info("not passing %s to the upstream: the config interpolates it "
                          "(set it in the upstream's env to pass it)", ", ".join(withheld))
        try:
            argv = resolve_command(self.name, self.config, self.interpolated,
                                   env)
        except CannotStartError as exc:
            raise UpstreamError(-32000, str(exc)) from None
        protocol = _PipeProtocol(self)
        try:
            process = ChildProcess(argv, protocol, cwd=self.config.cwd, env=env,
                                   wide_stdin=self.config.mode == "shared")
        except OSError as exc:
            # The OS message would name the resolved path, which may be a secret.
            raise UpstreamError(-32000, f"cannot start {self.shown_command[0]!r}: "
                                f"{exc.strerror or type(exc).__name__}") from None
        # Known before the first await: the gateway's collection of exited children
        # leaves alone the upstreams' own.
        protocol.process = process
        self.pid = process.pid
        try:
            process.connect()
        except BaseException:
            process.kill()
            process.close()
            raise
        self._process = self._started = process
        self._protocol = protocol
        assert process.stdin is not None
        self.connection.writer = CoalescingWriter(process.stdin, asyncio.get_running_loop(),
                                                  high_water=UPSTREAM_HIGH_WATER,
                                                  on_congested=self.congested)
        self.starts += 1
        self.log.info("started pid %d: %s", self.pid, " ".join(self.shown_command))
        return protocol.ended

    def ended_because(self) -> str:
        # The last process started, even once ``disconnect`` has let it go: a stop
        # clears ``_process`` before the process has ended.
        process = self._started
        if process is not None and not process.exited:
            protocol = self._protocol
            if protocol is not None and protocol.stdin_closed and not protocol.stdout_closed:
                return "the process closed its stdin"
            return "the process closed its stdout"
        return f"process exited with code {process.returncode if process else None}"

    async def disconnect(self) -> None:
        """Stop the process if it still runs, and always clear its whole process group."""
        process, protocol = self._process, self._protocol
        if process is None or protocol is None:
            return
        # Cleared first so that a second caller (stop() racing the supervisor) is a no-op.
        self._process = None
        self._protocol = None
        self.connection.writer = None
        if not process.exited:
            if process.stdin is not None:
                process.stdin.close()
            if not await self._wait_exit(protocol, self.config.stop_timeout):
                self._signal_group(signal.SIGTERM)
                if not await self._wait_exit(protocol, self.config.stop_timeout):
                    self._signal_group(signal.SIGKILL)
                    await self._wait_exit(protocol, self.config.stop_timeout)
        # Children the server left behind share its group; they die with it.
        self._signal_group(signal.SIGKILL)
        self.log.info("pid %s ended with code %s", self.pid, process.returncode)
        process.close()

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

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({"pid": self.pid if self._process is not None else None,
                     "command": self.shown_command})
        return info
