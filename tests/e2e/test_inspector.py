"""The MCP Inspector's command line (2.x, --cli) against the gateway over Streamable HTTP.

``make test`` installs it into ``.tools/inspector`` with Node 22 (scripts/node-tools.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT, GatewayProcess, sdk_upstream

NODE_BIN = ROOT / ".tools" / "node22" / "node_modules" / ".bin"
INSPECTOR = ROOT / ".tools" / "inspector" / "node_modules" / ".bin" / "mcp-inspector"


def inspector(home: Path, url: str, *args: str) -> dict[str, Any]:
    assert INSPECTOR.exists(), "run scripts/node-tools.sh (make test does) first"
    env = {**os.environ, "HOME": str(home),
           "PATH": f"{NODE_BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(INSPECTOR), "--cli", url, *args, "--format", "json"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=home)
    assert proc.returncode == 0, f"inspector {args} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)["result"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("upstream_era", ["legacy", "modern"])
@pytest.mark.parametrize("era", ["legacy", "modern", "auto"])
def test_inspector_lists_and_calls_tools(gateway_factory: Any, tmp_path: Path, era: str,
                                         upstream_era: str) -> None:
    gw: GatewayProcess = gateway_factory({"sdk": sdk_upstream(era=upstream_era)})
    listed = inspector(tmp_path, gw.http_url, "--protocol-era", era, "--method", "tools/list")
    assert "echo" in [tool["name"] for tool in listed["tools"]]
    called = inspector(tmp_path, gw.http_url, "--protocol-era", era, "--method", "tools/call",
                       "--tool-name", "add", "--tool-arg", "a=2", "b=40")
    assert called["content"][0]["text"] == "42"
    read = inspector(tmp_path, gw.http_url, "--protocol-era", era, "--method",
                     "resources/read", "--uri", "test://static")
    assert read["contents"][0]["uri"] == "test://static"


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_with_a_bearer_api_key(gateway_factory: Any, tmp_path: Path,
                                         era: str) -> None:
    """The gateway requires an API key: the Inspector passes it as a header."""
    from mcpfast.auth.api_keys import hash_key

    key = "mcpf_inspector-key-0123456789"
    gw: GatewayProcess = gateway_factory(
        listen={"auth": ["api_key"]},
        auth={"api_keys": [{"name": "inspector", "hash": hash_key(key)}]})
    called = inspector(tmp_path, gw.http_url, "--protocol-era", era,
                       "--header", f"Authorization: Bearer {key}", "--method", "tools/call",
                       "--tool-name", "add", "--tool-arg", "a=2", "b=40")
    assert called["content"][0]["text"] == "42"
    assert "authentication refused" not in gw.log()
