"""The SDK test server (``sdk_server.py``) plus what the era tests need to watch: change
events in either era, legacy resource subscriptions, and the ``_meta`` a request arrived
with.

Run it over stdio: ``python tests/servers/events_server.py [--name NAME]``. Extra tools:
``announce`` (adds a tool named ``tool_name`` and announces the change: on a legacy
connection with ``notifications/tools/list_changed``, on a modern one to its
``subscriptions/listen`` streams), ``touch`` (announces ``notifications/resources/updated``
for ``uri`` the same two ways; on a legacy connection only for a subscribed URI),
``subscribed`` (the URIs legacy clients subscribed to, comma-separated) and ``meta``
(the request's ``_meta`` as JSON).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import Context

# Run as a script, so its own directory is first on sys.path.
from sdk_server import build_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", default="events")
    args: Any = parser.parse_args(argv)
    server = build_server(args.name)
    subscribed: set[str] = set()

    def modern(ctx: Context) -> bool:
        return (ctx.protocol_version or "") >= "2026"

    @server.tool(description="Add a tool named `tool_name` and announce the change.")
    async def announce(tool_name: str, ctx: Context) -> str:
        def added(text: str) -> str:
            return f"{tool_name}: {text}"

        server.add_tool(added, name=tool_name, description="Added at run time by announce.")
        if modern(ctx):
            await ctx.notify_tools_changed()
        else:
            await ctx.session.send_tool_list_changed()
        return f"added {tool_name}"

    @server.tool(description="Announce that the resource `uri` changed.")
    async def touch(uri: str, ctx: Context) -> str:
        if modern(ctx):
            await ctx.notify_resource_updated(uri)
        elif uri in subscribed:
            await ctx.session.send_resource_updated(uri)
        return f"touched {uri}"

    @server.tool(description="The URIs legacy clients are subscribed to.")
    def subscriptions() -> str:
        return ",".join(sorted(subscribed))

    @server.tool(description="The request's _meta, as JSON.")
    def meta(ctx: Context) -> str:
        return json.dumps(dict(ctx.request_context.meta or {}), sort_keys=True, default=str)

    async def on_subscribe(ctx: Any, params: types.SubscribeRequestParams) -> dict[str, Any]:
        subscribed.add(str(params.uri))
        return {}

    async def on_unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> dict[str, Any]:
        subscribed.discard(str(params.uri))
        return {}

    low = server._lowlevel_server
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams,
                            on_unsubscribe)
    server.run("stdio")


if __name__ == "__main__":
    main()
