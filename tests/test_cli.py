"""The command line: version, check-config, and serve with JSON logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mcpfast import __version__

from .conftest import run, ws_client


def mcpfast(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcpfast", *args], capture_output=True,
                          text=True, timeout=30, **kw)


def test_version() -> None:
    out = mcpfast("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"mcpfast {__version__}"


def test_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[upstreams.demo]\ncommand = ["python", "-m", "mcpfast.demo"]\n')
    out = mcpfast("check-config", str(path))
    assert out.returncode == 0 and "OK" in out.stdout and "demo" in out.stdout


def test_check_config_names_the_key_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[listen]\nport = "eighty"\n[upstreams.demo]\ncommand = ["x"]\n')
    out = mcpfast("check-config", str(path))
    assert out.returncode == 2
    assert "listen.port: expected int, got str" in out.stderr


def test_check_config_missing_env_var(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text('[upstreams.demo]\ncommand = ["x"]\n'
                    'env = { TOKEN = "${MCPFAST_TEST_UNSET}" }\n')
    out = mcpfast("check-config", str(path))
    assert out.returncode == 2
    assert "upstreams.demo.env.TOKEN: environment variable MCPFAST_TEST_UNSET is not set" \
        in out.stderr


def test_serve_refuses_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[upstreams]\n")
    out = mcpfast("serve", "--config", str(path))
    assert out.returncode == 2 and "upstreams: at least one upstream" in out.stderr


def test_json_logs(gateway_factory: Any) -> None:
    gw = gateway_factory({"demo": {"command": ["python", "-m", "mcpfast.demo"]}},
                         logging={"level": "info", "format": "json"})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
    run(body())
    gw.terminate()
    entries = [json.loads(line) for line in gw.log().splitlines() if line.strip()]
    assert entries and all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["logger"] == "mcpfast.upstream.demo.stderr" for e in entries)
