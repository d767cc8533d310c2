"""Routing through the real gateway, both eras: requests that name nothing routable get
their exact error, prefixed names reach the upstream under the upstream's own name, and
params the gateway has no reason to rewrite reach the upstream byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import (
    GatewayProcess,
    Record,
    events_upstream,
    modern,
    recording_upstream,
    run,
    running_gateway,
    start_era,
    unix_client,
)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[GatewayProcess, Record, Record]]:
    workdir = tmp_path_factory.mktemp("two")
    a, b = Record(workdir / "a.jsonl"), Record(workdir / "b.jsonl")
    with running_gateway(workdir, {"a": recording_upstream(a.path, "a"),
                                   "b": recording_upstream(b.path, "b")}) as gw:
        yield gw, a, b


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Record]]:
    workdir = tmp_path_factory.mktemp("one")
    record = Record(workdir / "one.jsonl")
    with running_gateway(workdir, {"one": recording_upstream(record.path, "one")}) as gw:
        yield gw, record


def error_of(response: dict[str, Any]) -> tuple[int, str]:
    assert "error" in response, response
    return response["error"]["code"], response["error"]["message"]


@pytest.mark.parametrize("method,params,message", [
    ("tools/call", {"arguments": {}}, "tools/call requires params.name"),
    ("prompts/get", {}, "prompts/get requires params.name"),
    ("resources/read", {}, "resources/read requires params.uri"),
    ("resources/subscribe", {"_meta": {}}, "resources/subscribe requires params.uri"),
    ("tools/call", {"name": "whoami"}, "Unknown tool: whoami"),
    ("prompts/get", {"name": "a__nothing"}, "Unknown prompt: a__nothing"),
    ("completion/complete", {"ref": {"type": "ref/resource", "uri": "v://{z}"},
                             "argument": {"name": "z", "value": ""}},
     "Unknown resource template: v://{z}"),
    ("completion/complete", {"argument": {"name": "z", "value": ""}},
     "completion/complete requires params.ref"),
    ("completion/complete", {"ref": {"type": "ref/prompt"}},
     "params.ref must be a ref/prompt with a name or a ref/resource with a uri"),
])
def test_legacy_requests_that_route_nowhere(two: tuple[GatewayProcess, Record, Record],
                                            method: str, params: dict[str, Any],
                                            message: str) -> None:
    gw, _, _ = two

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            assert error_of(await c.request(method, params, request_id="r")) == (
                -32602, message)
    run(body())


@pytest.mark.parametrize("method,params,message", [
    ("tools/call", {"name": 7}, "params.name must be a string"),
    ("tools/call", {"arguments": {}}, "tools/call requires params.name"),
    ("prompts/get", {}, "prompts/get requires params.name"),
    ("prompts/get", {"name": None}, "prompts/get requires params.name"),
    ("tools/call", {"name": "whoami"}, "Unknown tool: whoami"),
    ("resources/read", {"uri": ["x"]}, "params.uri must be a string"),
    ("resources/read", {}, "resources/read requires params.uri"),
    ("completion/complete", {"ref": {"type": "ref/resource", "uri": "v://{z}"},
                             "argument": {"name": "z", "value": ""}},
     "Unknown resource template: v://{z}"),
    ("completion/complete", {"ref": {"type": "ref/prompt", "name": "a__nothing"},
                             "argument": {"name": "z", "value": ""}},
     "Unknown prompt: a__nothing"),
    # A modern request reads a missing or malformed ref as an empty one.
    ("completion/complete", {"argument": {"name": "z", "value": ""}},
     "params.ref must be a ref/prompt with a name or a ref/resource with a uri"),
])
def test_modern_requests_that_route_nowhere(two: tuple[GatewayProcess, Record, Record],
                                            method: str, params: dict[str, Any],
                                            message: str) -> None:
    gw, _, _ = two

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            code, text = error_of(await c.request(method, modern(params), request_id="m"))
            assert code == -32602 and text.startswith(message), text
    run(body())


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_a_prefixed_name_reaches_its_upstream_unprefixed(
        two: tuple[GatewayProcess, Record, Record], era: str) -> None:
    gw, a, b = two

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            if era == "legacy":
                await c.initialize()
            for name, record in (("a", a), ("b", b)):
                params = {"name": f"{name}__echo", "arguments": {"text": f"{era} {name}"}}
                reply = await c.request("tools/call", modern(params) if era == "modern"
                                        else params)
                assert reply["result"]["content"][0]["text"] == f"{era} {name}"
                call = record.call("echo", text=f"{era} {name}")
                assert call is not None and call["params"]["name"] == "echo"
            read = await c.request("resources/read", modern({"uri": "rec://b/doc"})
                                   if era == "modern" else {"uri": "rec://b/doc"})
            assert read["result"]["contents"][0]["text"] == "b rec://b/doc"
    run(body())


def test_params_reach_the_upstream_byte_for_byte(one: tuple[GatewayProcess, Record]) -> None:
    """Nothing to rename or map: the client's params are forwarded as they were written
    (DESIGN.md: params stay undecoded), escapes and number spelling included."""
    gw, record = one
    raw_params = '{"name":"echo","arguments":{"text":"\\u00e9t\\u00e9","n":1e2, "x":[1.50]}}'

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            await c.send_raw('{"jsonrpc":"2.0","id":"raw","method":"tools/call","params":'
                             + raw_params + "}")
            reply = await c.wait_for("raw")
            assert reply["result"]["content"][0]["text"] == "été"
    run(body())
    (line,) = [e["raw"] for e in record.events("recv")
               if e["message"].get("params", {}).get("arguments", {}).get("n") == 100]
    assert json.loads(line)["params"] == json.loads(raw_params)
    assert f'"params":{raw_params}' in line, line


def test_one_upstream_serves_what_it_does_not_list(one: tuple[GatewayProcess, Record]) -> None:
    """With one upstream an unlisted URI or template is still its own: forwarded, not
    refused by the gateway."""
    gw, record = one

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            read = await c.request("resources/read", {"uri": "unlisted://x"})
            assert read["result"]["contents"][0]["text"] == "one unlisted://x"
            done = await c.request("completion/complete", {
                "ref": {"type": "ref/resource", "uri": "v://{z}"},
                "argument": {"name": "z", "value": ""}})
            # The recording server knows no completion/complete: its own -32601.
            assert error_of(done) == (-32601, "Method not found: completion/complete")
    run(body())
    assert record.received("completion/complete")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A modern upstream (the SDK events server, pinned modern) beside a legacy one."""
    workdir = tmp_path_factory.mktemp("mixed")
    with running_gateway(workdir, {"m": events_upstream(era="modern", name="m"),
                                   "r": recording_upstream(workdir / "r.jsonl", "r")}) as gw:
        yield gw


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_prefixed_names_reach_a_modern_upstream_unprefixed(mixed: GatewayProcess,
                                                           era: str) -> None:
    async def body() -> None:
        async with unix_client(mixed.unix_path) as c:
            params = await start_era(c, era)
            echo = await c.request("tools/call", params(
                {"name": "m__echo", "arguments": {"text": era}}))
            assert echo["result"]["content"][0]["text"] == era, echo
            # Each era's result shape: a legacy client's has no modern members.
            if era == "legacy":
                assert not {"resultType", "ttlMs", "cacheScope"} & set(echo["result"])
            else:
                assert echo["result"]["resultType"] == "complete"
            greet = await c.request("prompts/get", params(
                {"name": "m__greet", "arguments": {"name": "Ada"}}))
            assert "Ada" in json.dumps(greet["result"]["messages"]), greet
            done = await c.request("completion/complete", params({
                "ref": {"type": "ref/prompt", "name": "m__greet"},
                "argument": {"name": "name", "value": "Al"}}))
            assert done["result"]["completion"]["values"] == ["Alice", "Alfred"], done
            whoami = await c.request("tools/call", params({"name": "r__whoami"}))
            assert whoami["result"]["content"][0]["text"] == "r"
    run(body())


def test_a_legacy_session_s_log_level_travels_to_a_modern_upstream(mixed: GatewayProcess
                                                                   ) -> None:
    """A modern upstream has no logging/setLevel: the level a legacy session set goes
    in each of its requests' _meta."""
    async def body() -> None:
        async with unix_client(mixed.unix_path) as c:
            await c.initialize()
            before = await c.call_tool("m__meta")
            assert "io.modelcontextprotocol/logLevel" not in before["result"]["content"][0][
                "text"]
            assert (await c.request("logging/setLevel", {"level": "notice"}))["result"] == {}
            after = await c.call_tool("m__meta")
            meta = json.loads(after["result"]["content"][0]["text"])
            assert meta["io.modelcontextprotocol/logLevel"] == "notice", meta
    run(body())
