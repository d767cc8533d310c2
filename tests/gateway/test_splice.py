"""An upstream's response reaches its client with the client's id spliced in, not
decoded and encoded again, when the extension is compiled (mcpfast_ext.message_scan);
the pure twin costs more than re-encoding, so without it responses are re-encoded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from msgspec import UNSET

import mcpfast_ext
from bench.micro.fakes import gateway_in_process, initialized_session
from mcpfast.gateway import relay


@pytest.mark.parametrize("layout", ["canonical", "spaced"])
def test_a_response_is_spliced_only_when_compiled_and_laid_out_plainly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    encoded: list[object] = []
    reencode = relay.jsonrpc.reencode
    monkeypatch.setattr(relay.jsonrpc, "reencode",
                        lambda env: encoded.append(env) or reencode(env))

    async def main() -> tuple[list[bytes], bytes]:
        gateway, upstream = gateway_in_process(tmp_path)
        to_client: list[bytes] = []
        session = initialized_session(gateway, to_client)
        gateway.handle(session, json.dumps({
            "jsonrpc": "2.0", "id": 42, "method": "tools/call",
            "params": {"name": "docs__search", "arguments": {"q": "x" * 200}}}).encode())
        answer = json.dumps({
            "jsonrpc": "2.0", "id": upstream.connection._next_id,
            "result": {"content": [{"type": "text", "text": "y" * 200}], "isError": False}},
            separators=(",", ":")).encode()
        if layout == "spaced":
            answer = answer.replace(b'"result":', b'"result": ')
        upstream.on_message(answer)
        return to_client, answer
    to_client, answer = asyncio.run(main())
    assert json.loads(to_client[-1]) == {**json.loads(answer), "id": 42}
    spliced = mcpfast_ext.IMPLEMENTATION == "compiled" and layout == "canonical"
    responses = [env for env in encoded if env.method is UNSET]  # type: ignore[attr-defined]
    assert len(responses) == (0 if spliced else 1), (layout, mcpfast_ext.IMPLEMENTATION)
