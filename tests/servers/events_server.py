"""The SDK test server (``sdk_server.py``) plus what the era tests need to watch: change
events in either era, legacy resource subscriptions, and the ``_meta`` a request arrived
with.

Run it over stdio: ``python tests/servers/events_server.py [--name NAME]``. Extra tools:
``announce`` (adds a tool named ``tool_name`` and announces the change: on a legacy
connection with ``notifications/tools/list_changed``, on a modern one to its
``subscriptions/listen`` streams), ``touch`` (announces ``notifications/resources/updated``
for ``uri`` the same two ways; on a legacy connection only for a subscribed URI),
``subscribed`` (the URIs legacy clients subscribed to, comma-separated), ``meta``
(the request's ``_meta`` as JSON) and ``interview`` (two rounds of client input, sampling
then elicitation, then one progress notification: standalone server-to-client requests
on a legacy connection, ``input_required`` results on a modern one), and ``push_sample``
(a push-style sampling request, which only a legacy session can carry).
"""

from __future__ import annotations

import argparse
import json
from typing import Annotated, Any

import mcp_types as types
from mcp.server.mcpserver import Context, Elicit, Resolve, Sample
from mcp.types import CreateMessageResult, SamplingMessage, TextContent
from pydantic import BaseModel

# Run as a script, so its own directory is first on sys.path.
from sdk_server import build_server


class Visitor(BaseModel):
    name: str


def _model_text(reply: CreateMessageResult) -> str:
    content = reply.content
    return content.text if isinstance(content, TextContent) else str(content)


def _ask_about(topic: str) -> Sample:
    text = TextContent(type="text", text=f"Tell me about {topic}")
    return Sample([SamplingMessage(role="user", content=text)], max_tokens=100)


def _ask_visitor(reply: Annotated[CreateMessageResult, Resolve(_ask_about)]) -> Elicit[Visitor]:
    # It needs the model's reply, so it is a second round of input.
    return Elicit(f"The model says {_model_text(reply)!r}. Who is asking?", Visitor)


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

    @server.tool(description="Ask the client's model about `topic`, then ask the user who "
                 "is asking; report progress; answer with both.")
    async def interview(
        topic: str, ctx: Context,
        reply: Annotated[CreateMessageResult, Resolve(_ask_about)],
        visitor: Annotated[Visitor, Resolve(_ask_visitor)],
    ) -> str:
        await ctx.report_progress(1, 1, "interviewed")
        return f"{visitor.name} asked about {topic}; the model said {_model_text(reply)}"

    @server.tool(description="Ask the client's model push-style (a legacy session's "
                 "sampling/createMessage; a modern one has no such channel).")
    async def push_sample(prompt: str, ctx: Context) -> str:
        reply = await ctx.session.create_message(
            [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100)
        return f"pushed: {_model_text(reply)}"

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
