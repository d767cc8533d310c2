"""mcpfast's command line: serve, check-config, version."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import Config, ConfigError, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcpfast",
                                     description="A high-performance MCP gateway.")
    parser.add_argument("--version", action="version", version=f"mcpfast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", "-c", help="TOML config file (default: the bundled demo)")
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")
    commands.add_parser("version", help="print the version")
    connect = commands.add_parser(
        "connect", help="bridge stdio to a running gateway (for stdio-only MCP clients)")
    connect.add_argument("--unix", required=True, metavar="PATH",
                         help="the gateway's unix socket (listen.unix_socket)")
    args = parser.parse_args(argv)

    if args.command == "version":
        print(f"mcpfast {__version__}")
        return 0
    if args.command == "connect":
        import asyncio

        from .bridge import bridge_unix

        return asyncio.run(bridge_unix(args.unix))
    try:
        config = load(args.file if args.command == "check-config" else args.config)
    except ConfigError as exc:
        print(f"mcpfast: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        names = ", ".join(config.upstreams)
        print(f"{args.file}: OK ({len(config.upstreams)} upstream(s): {names})")
        return 0
    return _serve(config)


def _serve(config: Config) -> int:
    import uvloop

    from .logs import configure
    from .server import serve

    configure(config.logging.level, config.logging.format)
    try:
        uvloop.run(serve(config))
    except OSError as exc:
        print(f"mcpfast: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
