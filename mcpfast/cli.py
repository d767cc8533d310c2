"""mcpfast's command line: serve, check-config, connect, version."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from mcpfast_ext import IMPLEMENTATION, PURE_REASON

from . import __version__
from .config import (
    UPSTREAM_NAME,
    WORKER_SECRET_VARIABLE,
    Config,
    ConfigError,
    UpstreamConfig,
    cannot_listen,
    load,
    private_directory,
    user_socket_path,
)

if TYPE_CHECKING:
    from .server import WorkerPlace

STDIO_HELP = """front this stdio MCP server instead of the config's upstreams, for example
"npx -y @modelcontextprotocol/server-everything"; "NAME=command args" names it (default:
the server's name). Repeat to front several."""
LAUNCHERS = frozenset({"python", "python3", "node", "npx", "uvx", "bunx"})
"""Programs whose first argument that is not an option names the server they run."""
SCRIPT_SUFFIXES = frozenset({".py", ".js", ".mjs", ".cjs", ".ts"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcpfast",
                                     description="A high-performance MCP gateway.")
    parser.add_argument("--version", action=_PrintVersion, nargs=0,
                        help="print the version and the hot path in use, and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", "-c", help="TOML config file (default: the bundled demo)")
    serve.add_argument("--host", help="address the MCP listener binds (listen.host)")
    serve.add_argument("--port", type=_port, help="the MCP listener's port (listen.port)")
    serve.add_argument("--admin-port", type=_port, help="the admin API's port (admin.port)")
    serve.add_argument("--unix", metavar="PATH",
                       help="serve newline-delimited JSON on this unix socket "
                            "(listen.unix_socket)")
    serve.add_argument("--stdio", action="append", metavar="COMMAND", help=STDIO_HELP)
    # How a supervisor (workers > 1) starts each worker: never typed by hand.
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-dir", help=argparse.SUPPRESS)
    serve.add_argument("--worker-unix-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-since", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-pid", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-restarted", action="store_true", help=argparse.SUPPRESS)
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")
    probe = commands.add_parser(
        "probe", help="ask a running gateway's admin port (from its config) whether it "
                      "is alive: exit 0 if /liveness answers 200, else 1 (a container "
                      "health check)")
    probe.add_argument("--config", "-c", help="the gateway's config (default: the bundled "
                                              "one)")
    probe.add_argument("--path", default="/liveness",
                       choices=["/liveness", "/readiness", "/health"])
    probe.add_argument("--timeout", type=float, default=2.0)
    commands.add_parser("version", help="print the version")
    hash_key = commands.add_parser(
        "hash-key", help="print what [[auth.api_keys]] stores for an API key, read from "
                         "standard input (never an argument, which shells keep)")
    hash_key.add_argument("--new", action="store_true",
                          help="make a new random key and print it with its hash")
    connect = commands.add_parser(
        "connect", help="bridge stdio to a running gateway (for stdio-only MCP clients)")
    connect.add_argument("--unix", metavar="PATH", default=None,
                         help="the gateway's unix socket (listen.unix_socket; default: "
                              f"{user_socket_path()}, where the bundled config listens)")
    connect.add_argument("--keepalive", metavar="SECONDS", type=float, default=None,
                         help="after this long without a message from the client, send the "
                              "gateway a blank line, so that a quiet client's session is not "
                              "closed as idle; keep it under the gateway's "
                              "listen.idle_timeout (default 60; 0: never)")
    args = parser.parse_args(argv)
    secret = os.environ.pop(WORKER_SECRET_VARIABLE, "") \
        if getattr(args, "worker", None) is not None else ""

    if args.command == "version":
        print(_version())
        return 0
    if args.command == "hash-key":
        return _hash_key(args.new)
    if args.command == "connect":
        import asyncio

        from .bridge import KEEPALIVE, bridge_unix

        path = args.unix or user_socket_path()
        if args.unix is None and os.path.isdir(os.path.dirname(path)):
            try:
                private_directory(os.path.dirname(path), create=False)
            except OSError as exc:
                print(f"mcpfast connect: {exc}", file=sys.stderr)
                return 1
        return asyncio.run(bridge_unix(
            path, KEEPALIVE if args.keepalive is None else args.keepalive))
    try:
        config = load(args.file if args.command == "check-config" else args.config)
        if args.command == "probe":
            return _probe(config, args.path, args.timeout)
        if args.command == "serve":
            _apply_flags(config, args, secret)
    except ConfigError as exc:
        print(f"mcpfast: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        problems = _unstartable(config)
        for problem in problems:
            print(f"mcpfast: config error: {problem}", file=sys.stderr)
        if problems:
            return 2
        names = ", ".join(config.upstreams)
        print(f"{args.file}: OK ({len(config.upstreams)} upstream(s): {names})")
        return 0
    def reread() -> Config:
        """The config file as it is now, with the same flags on top (SIGHUP)."""
        fresh = load(args.config)
        _apply_flags(fresh, args, secret)
        return fresh

    if args.worker is not None:
        return _serve_worker(config, reread, args)
    if config.workers > 1:
        from .supervisor import Supervisor

        workers_argv = sys.argv[1:] if argv is None else argv
        return _run(config, lambda: Supervisor(config, reread, workers_argv).run())
    return _serve(config, reread)


class _PrintVersion(argparse.Action):
    """argparse's own version action wraps its text to the terminal width."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(_version())
        parser.exit()


def _version() -> str:
    """The version and the hot path it runs: a pure-Python fallback is several times
    slower, and its cause (no compiler at install time) is otherwise easy to miss."""
    if IMPLEMENTATION == "compiled":
        return f"mcpfast {__version__} (compiled hot path)"
    return f"mcpfast {__version__} (pure-Python hot path: {PURE_REASON})"


def _probe(config: Config, path: str, timeout: float) -> int:
    """GET ``path`` on the admin port the config names (a wildcard address is asked on
    loopback)."""
    import urllib.error
    import urllib.request

    host = config.admin.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{config.admin.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"mcpfast probe: {url}: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"mcpfast probe: {url}: HTTP {response.status}", file=sys.stderr)
    return 0 if ok else 1


def _hash_key(new: bool) -> int:
    from .auth.api_keys import hash_key, new_key

    if new:
        key = new_key()
        print(f"key:  {key}\nhash: {hash_key(key)}")
        return 0
    key = sys.stdin.readline().strip()
    if not key:
        print("mcpfast hash-key: no key on standard input", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port


def _apply_flags(config: Config, args: argparse.Namespace, secret: str = "") -> None:
    """Command-line flags win over the config file (validated as the file would be).
    ``secret``: the session secret a supervisor gave its workers, for a config that
    sets none."""
    if secret and not config.listen.http.session_secret:
        config.listen.http.session_secret = secret
    if args.host is not None:
        config.listen.host = args.host
    if args.port is not None:
        config.listen.port = args.port
    if args.admin_port is not None:
        config.admin.port = args.admin_port
    if args.unix is not None:
        config.listen.unix_socket = args.unix or None
    if args.stdio:
        config.upstreams = _stdio_upstreams(args.stdio, config.routing.separator)
    for checked in (config.listen, config.admin, config):
        # What the file's values would be held to (a port in range, the admin port
        # apart from the listener's), the flags' too.
        try:
            checked.__post_init__()
        except ValueError as exc:
            raise ConfigError(f"{exc} (as the command-line flags set it)") from None


def _stdio_upstreams(commands: list[str], separator: str) -> dict[str, UpstreamConfig]:
    upstreams: dict[str, UpstreamConfig] = {}
    for text in commands:
        name, _, rest = text.partition("=")
        if rest and UPSTREAM_NAME.match(name) and separator not in name:
            text = rest
            if name in upstreams:
                raise ConfigError(f"--stdio {name}=...: the name {name!r} is given to two "
                                  "commands")
        else:
            name = ""
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise ConfigError(f"--stdio {text!r}: {exc}") from None
        if not argv:
            raise ConfigError("--stdio: expected a command, such as \"npx -y some-server\"")
        if not name:
            name = _server_name(argv).replace(separator, "-") or "stdio"
        base, n = name, 2
        while name in upstreams:
            name, n = f"{base}-{n}", n + 1
        upstreams[name] = UpstreamConfig(command=argv)
    return upstreams


def _server_name(argv: list[str]) -> str:
    words = [argv[0]]
    if os.path.basename(argv[0]) in LAUNCHERS:
        words = [word for word in argv[1:] if not word.startswith("-")][:1] or words
    name, suffix = os.path.splitext(os.path.basename(words[0].rstrip("/")))
    if suffix not in SCRIPT_SUFFIXES:
        name += suffix
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:64]


def _unstartable(config: Config) -> list[str]:
    """Upstreams whose program or directory is missing, checked with the environment
    each would get; "key.path: reason" like any config error."""
    from .auth.authenticator import Authenticator
    from .upstream.stdio import CannotStartError, resolve_command, upstream_environment

    problems: list[str] = []
    try:
        Authenticator(config)  # its static keys load
    except ConfigError as exc:
        problems.append(str(exc))
    problems += _unbindable(config)
    for name, upstream in config.upstreams.items():
        if not upstream.command:
            continue  # reached by url or socket: nothing to start
        env, _ = upstream_environment(upstream, config.interpolated.names, os.environ)
        try:
            resolve_command(name, upstream, config.interpolated, env)
        except CannotStartError as exc:
            problems.append(f"upstreams.{name}.{exc.key}: {exc}")
    return problems


def _unbindable(config: Config) -> list[str]:
    """What ``serve`` would refuse when it binds, found without binding: a host that
    does not resolve, TLS files that do not load, a unix socket's missing directory.
    (Whether a port is free is the machine's business at the time, not the config's.)"""
    import socket

    from .transport.tls import load_server_tls

    problems: list[str] = []
    for key, host, port in (("listen.host", config.listen.host, config.listen.port),
                            ("admin.host", config.admin.host, config.admin.port)):
        if key == "admin.host" and not config.admin.enabled:
            continue
        try:
            socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            problems.append(str(cannot_listen(key, repr(host), exc.strerror)))
    if config.listen.tls is not None:
        try:
            load_server_tls(config.listen.tls)
        except ConfigError as exc:
            problems.append(str(exc))
    socket_path = config.listen.unix_socket
    if socket_path and socket_path != user_socket_path():  # ("auto": made when serving)
        directory = os.path.dirname(os.path.abspath(socket_path))
        if not os.path.isdir(directory):
            problems.append(f"listen.unix_socket: {directory} is not a directory that "
                            "exists")
    return problems


def _serve_worker(config: Config, reread: Callable[[], Config],
                  args: argparse.Namespace) -> int:
    from .server import WorkerPlace, end_with_supervisor

    end_with_supervisor(args.supervisor_pid)
    place = WorkerPlace(args.worker, os.path.join(args.worker_dir, f"worker-{args.worker}.sock"),
                        args.worker_unix_fd, args.worker_since, args.worker_restarted,
                        args.supervisor_pid)
    return _serve(config, reread, place)


def _serve(config: Config, reread: Callable[[], Config] | None = None,
           worker: WorkerPlace | None = None) -> int:
    from .server import serve

    return _run(config, lambda: serve(config, reread, worker),
                None if worker is None else worker.index)


def _run(config: Config, main: Callable[[], Coroutine[Any, Any, int | None]],
         worker: int | None = None) -> int:
    """Run ``main`` (a gateway, a worker, or the supervisor of workers) on uvloop until
    it ends; its exit status, or the one of the error that ended it."""
    import uvloop

    from .logs import configure

    configure(config.logging.level, config.logging.format, worker)
    try:
        return uvloop.run(main()) or 0
    except OSError as exc:
        print(f"mcpfast: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"mcpfast: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
