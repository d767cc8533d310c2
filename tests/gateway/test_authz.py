"""Authorization (gateway/authz.py): rules select identities and allow or deny names;
a deny wins; lists show only what the caller may use; a denied call is answered as an
unknown name, never reaches the upstream, and is written to the audit log."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from mcpfast.auth.identity import Identity
from mcpfast.config import parse
from mcpfast.gateway.authz import Authorization
from mcpfast.gateway.call import NO_ENVELOPE, Request
from mcpfast.gateway.chain import compile_chain
from mcpfast.gateway.rate_limit import build
from mcpfast.gateway.session import DownstreamSession

from ..conftest import ROOT, InProcessClient, in_gateway, toml_value

BACKGROUND = ROOT / "tests" / "servers" / "background_server.py"


def authorization(rules: str, default: str = "allow") -> Authorization:
    config = parse(f'[authorization]\ndefault = "{default}"\n{rules}\n'
                   '[upstreams.docs]\ncommand = ["true"]\n[upstreams.files]\ncommand = ["true"]')
    return Authorization(config.authorization)


def session(identity: Identity) -> DownstreamSession:
    return DownstreamSession("s", "http", "-", lambda data: None, lambda c, r: None,
                             identity=identity)


ALICE = Identity("jwt:alice", method="jwt", name="alice", groups=("eng",),
                 scopes=frozenset({"mcp:call"}), claims={"tenant": "acme", "roles": ["admin"]})
BOB = Identity("jwt:bob", method="jwt", name="bob", groups=("sales",), claims={"tenant": "x"})
ANONYMOUS = Identity("ip:10.0.0.1", "10.0.0.1")
ALICE_KEY = Identity("api_key:alice", method="api_key", name="alice")


@pytest.mark.parametrize(("selector", "applies"), [
    ("", {"alice", "bob", "anonymous", "alice-key"}),
    # A bare name is the verified name, however verified (the config allows it only
    # while one method can verify: test_config).
    ('names = ["alice"]', {"alice", "alice-key"}),
    ('names = ["*"]', {"alice", "bob", "alice-key"}),
    ('groups = ["eng", "ops"]', {"alice"}),
    ('scopes = ["mcp:call"]', {"alice"}),
    ('claims = { tenant = "acme" }', {"alice"}),
    ('claims = { roles = ["admin", "root"] }', {"alice"}),
    ('names = ["alice", "bob"]\ngroups = ["sales"]', {"bob"}),
    # METHOD:NAME: that name verified that way only (an API key named alice is not the
    # JWT subject alice; an outside sweep found a bare name granting both).
    ('names = ["jwt:alice"]', {"alice"}),
    ('names = ["api_key:alice"]', {"alice-key"}),
    ('names = ["api_key:alice", "jwt:bob"]', {"alice-key", "bob"}),
])
def test_a_rule_applies_when_every_selector_given_matches(selector: str,
                                                          applies: set[str]) -> None:
    authz = authorization(f"[[authorization.rules]]\n{selector}\nallow_tools = [\"*\"]",
                          default="deny")
    who = {"alice": ALICE, "bob": BOB, "anonymous": ANONYMOUS, "alice-key": ALICE_KEY}
    allowed = {name for name, identity in who.items()
               if authz.grants(session(identity)).allows("tools", "docs", "docs__search")}
    assert allowed == applies


def test_deny_wins_and_the_default_decides_the_rest() -> None:
    authz = authorization('''
[[authorization.rules]]
allow_tools = ["docs__*"]
allow_resources = ["file:///public/*"]
[[authorization.rules]]
groups = ["eng"]
deny_tools = ["docs__delete*"]
[[authorization.rules]]
upstream = "files"
deny_tools = ["*"]''', default="deny")
    alice, bob = authz.grants(session(ALICE)), authz.grants(session(BOB))
    assert alice.allows("tools", "docs", "docs__search")
    assert not alice.allows("tools", "docs", "docs__delete_page")
    assert bob.allows("tools", "docs", "docs__delete_page")
    assert not bob.allows("tools", "files", "docs__copy")  # upstream-scoped deny
    assert not bob.allows("tools", "other", "other__x")  # no rule: the default
    assert bob.allows("resources", "files", "file:///public/a.txt")
    assert not bob.allows("resources", "files", "file:///etc/passwd")
    assert not bob.allows("prompts", "docs", "docs__summary")


def test_grants_are_worked_out_once_per_identity_and_config() -> None:
    authz = authorization('[[authorization.rules]]\nallow_tools = ["*"]')
    s = session(ALICE)
    grants = authz.grants(s)
    assert authz.grants(s) is grants and authz.grants(session(ALICE)) is grants
    assert authz.grants(session(BOB)) is not grants
    newer = authorization('[[authorization.rules]]\nallow_tools = ["*"]')
    assert newer.grants(s) is not grants  # a reload: worked out again


def test_the_denied_answer_is_the_unknown_name_answer() -> None:
    authz = authorization("", default="deny")
    (check,), (view,) = compile_chain(build([]), authz)
    alice = session(ALICE)
    refusal = check(Request(alice, NO_ENVELOPE, 1, "tools/call", "docs__search", None),
                    "docs", 0.0)
    assert refusal is not None and (refusal.code, refusal.message) == (
        -32602, "Unknown tool: docs__search")
    read = check(Request(alice, NO_ENVELOPE, 2, "resources/read", None, "file:///x"),
                 "files", 0.0)
    assert read is not None and (read.code, read.message) == (-32002,
                                                              "Resource not found: file:///x")
    modern = check(Request(alice, NO_ENVELOPE, 3, "resources/read", None, "file:///x",
                           True), "files", 0.0)
    assert modern is not None and (modern.code, modern.data) == (-32602, {"uri": "file:///x"})
    assert check(Request(alice, NO_ENVELOPE, 4, "ping", None, None), "docs", 0.0) is None
    assert not view(alice, "docs", "resourceTemplates", "file:///{path}")
    assert authz.denied == {"tools": 1, "prompts": 0, "resources": 2}


def test_no_authorization_config_compiles_to_nothing() -> None:
    config = parse('[upstreams.a]\ncommand = ["true"]')
    assert not config.authorization.active
    assert compile_chain(build([]), None) == ((), ())


def allowing_but(tmp_path: Path, rules: str) -> Path:
    """A gateway config fronting the background server, allowing all but what the
    ``[[authorization.rules]]`` given deny."""
    config = tmp_path / "gw.toml"
    config.write_text(f"""
[authorization]
default = "allow"
[[authorization.rules]]
{rules}
[upstreams.bg]
command = {toml_value(["python", str(BACKGROUND)])}
era = "legacy"
""")
    return config


def test_a_denied_call_never_reaches_the_upstream_and_lists_hide_it(
        tmp_path: Path, caplog: Any) -> None:
    config = allowing_but(tmp_path, 'names = ["*"]\ndeny_tools = ["big"]\n'
                                    '[[authorization.rules]]\ndeny_tools = ["count"]')

    async def body(gw: Any, client: InProcessClient) -> None:
        # The in-process client is "uid:1000", not authenticated: only the rule without
        # selectors applies to it.
        listed = await client.request("tools/list", {})
        names = {tool["name"] for tool in listed["result"]["tools"]}
        assert "count" not in names and "big" in names
        upstream = gw.upstreams["bg"]
        ids_before = upstream.connection._next_id  # every forward takes an id
        with caplog.at_level(logging.WARNING, logger="mcpfast.audit"):
            denied = await client.request("tools/call", {"name": "count", "arguments": {}})
        assert denied["error"] == {"code": -32602, "message": "Unknown tool: count"}
        assert not upstream.pending and upstream.connection._next_id == ids_before
        record = next(r for r in caplog.records if r.name == "mcpfast.audit")
        assert (record.event, record.identity, record.target) == ("denied", "uid:1000",
                                                                  "count")
        assert "identity=uid:1000 method=tools/call name=count upstream=bg" in \
            record.getMessage()
        allowed = await client.request("tools/call", {"name": "big", "arguments": {"size": 1}})
        assert "result" in allowed, allowed
        assert gw.authorization.denied["tools"] == 1
    in_gateway(config, body)


def test_a_name_given_twice_reaches_the_upstream_as_the_policy_read_it(
        tmp_path: Path) -> None:
    """JSON leaves a repeated member name to the parser: the gateway reads the last one,
    an upstream may read the first. A call that names an allowed tool last and a denied
    one first reaches the upstream with the allowed name only; spelled with escapes,
    too."""
    config = allowing_but(tmp_path, 'deny_tools = ["count"]')

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in pairs]
        assert len(names) == len(set(names)), names
        return dict(pairs)

    async def body(gw: Any, client: InProcessClient) -> None:
        sent: list[bytes] = []
        real = gw.upstreams["bg"].connection.writer

        class Spy:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def write(self, data: bytes) -> None:
                sent.append(data)
                real.write(data)

        gw.upstreams["bg"].connection.writer = Spy()
        for number, params in enumerate([
                b'{"name":"count","name":"big","arguments":{"size":1}}',
                b'{"name":"count","na\\u006de":"big","arguments":{"size":1}}',
                b'{"arguments":{"size":1},"name":"count", "name" : "big"}']):
            sent.clear()
            request_id = f"twice-{number}"
            gw.handle(client.session, b'{"jsonrpc":"2.0","id":"%s","method":"tools/call",'
                      b'"params":%s}' % (request_id.encode(), params))
            for _ in range(3000):
                answer = next((m for m in client.received if m.get("id") == request_id), None)
                if answer is not None:
                    break
                await asyncio.sleep(0.01)
            assert answer is not None and "result" in answer, answer
            (line,) = [json.loads(chunk, object_pairs_hook=unique)
                       for chunk in b"".join(sent).splitlines()]
            assert line["params"] == {"name": "big", "arguments": {"size": 1}}, line
        # Named last, the denied tool is what the gateway reads: refused, never sent.
        sent.clear()
        gw.handle(client.session, b'{"jsonrpc":"2.0","id":"last","method":"tools/call",'
                  b'"params":{"name":"big","name":"count","arguments":{}}}')
        for _ in range(300):
            if any(m.get("id") == "last" for m in client.received):
                break
            await asyncio.sleep(0.01)
        denied = next(m for m in client.received if m.get("id") == "last")
        assert denied["error"]["message"] == "Unknown tool: count" and not sent
    in_gateway(config, body)
