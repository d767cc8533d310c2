"""TLS on the main listener: HTTPS and WSS with a certificate of a test CA, mutual TLS
whose certificate names the identity, and a renewed certificate loaded without a
restart while connections stay open."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from ..conftest import INIT_PARAMS, Pki, http_headers, run, wait_until, ws_client

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}


def tls_gateway(gateway_factory: Any, pki: Pki, **tls: Any) -> Any:
    cert, key, _ = pki.issue("server", server=True)
    sections = tls.pop("sections", {})
    listen = {"tls": {"cert_file": cert, "key_file": key, **tls},
              **sections.pop("listen", {})}
    return gateway_factory(listen=listen, **sections)


def test_https_and_wss(gateway_factory: Any, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    gw = tls_gateway(gateway_factory, pki)
    context = pki.client_context()

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"https://127.0.0.1:{gw.port}/mcp", json=INIT,
                                 headers=http_headers(), ssl=context) as resp:
                assert resp.status == 200
                assert (await resp.json())["result"]["serverInfo"]["name"] == "mcpfast"
            # Plain HTTP to the TLS port gets no HTTP answer.
            with pytest.raises(aiohttp.ClientError):
                async with http.post(gw.http_url, json=INIT, headers=http_headers()) as resp:
                    await resp.read()
        async with ws_client(f"wss://127.0.0.1:{gw.port}/mcp", ssl=context) as client:
            await client.initialize()
            assert (await client.request("ping", {}))["result"] == {}
    run(main())
    assert f"listening for MCP clients on https://127.0.0.1:{gw.port}/mcp" in gw.log()


def test_mutual_tls_names_the_identity(gateway_factory: Any, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    gw = tls_gateway(gateway_factory, pki, client_ca_file=pki.ca_file, sections={
        "listen": {"auth": ["mtls"]},
        "authorization": {"default": "deny",
                          "rules": [{"names": ["alice"], "allow_tools": ["echo"]}]}})

    async def main() -> None:
        async with ws_client(f"wss://127.0.0.1:{gw.port}/mcp",
                             ssl=pki.client_context("alice")) as alice:
            await alice.initialize()
            tools = await alice.request("tools/list", {})
            assert [t["name"] for t in tools["result"]["tools"]] == ["echo"]
            code, body = gw.admin_get("/api/v1/connections")
            assert code == 200
            (connection,) = json.loads(body)["connections"]
            assert connection["credentials"]["name"] == "alice"
            assert connection["credentials"]["method"] == "mtls"
        # Without a certificate the handshake (or the first read after it) fails.
        with pytest.raises((ssl.SSLError, OSError, websockets.InvalidMessage,
                            websockets.ConnectionClosed)):
            async with ws_client(f"wss://127.0.0.1:{gw.port}/mcp",
                                 ssl=pki.client_context()) as anonymous:
                await anonymous.initialize()
    run(main())


def test_a_renewed_certificate_is_used_without_a_restart(gateway_factory: Any,
                                                         tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    gw = tls_gateway(gateway_factory, pki, reload_interval=0.2)
    context = pki.client_context()

    def served_serial() -> int:
        from cryptography import x509

        raw = ssl.get_server_certificate(("127.0.0.1", gw.port), ca_certs=pki.ca_file)
        return x509.load_pem_x509_certificate(raw.encode()).serial_number

    async def main() -> None:
        before = await asyncio.to_thread(served_serial)
        async with ws_client(f"wss://127.0.0.1:{gw.port}/mcp", ssl=context) as kept:
            await kept.initialize()
            # A renewed certificate whose key is not there yet: it does not load, and
            # the one in use stays whole (handshakes go on with it).
            cert, key, renewed = pki.issue("renewed", server=True)
            Path(pki.root / "server.pem").write_bytes(Path(cert).read_bytes())
            await logged(gw, "the renewed certificate files do not load")
            assert await asyncio.to_thread(served_serial) == before
            # The key follows: the renewal loads.
            Path(pki.root / "server.pem.key").write_bytes(Path(key).read_bytes())
            await asyncio.to_thread(wait_until, lambda: served_serial() == renewed, 20.0)
            # The connection opened before the renewal goes on.
            assert (await kept.request("ping", {}))["result"] == {}
    run(main())
    assert "TLS: loaded the renewed certificate" in gw.log()


async def logged(gw: Any, text: str) -> None:
    for _ in range(600):
        if text in gw.log():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} was not logged:\n{gw.log()[-2000:]}")


def test_tls_config_errors_name_the_key(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    cert, key, _ = pki.issue("server", server=True)
    cases = {
        f'[listen.tls]\ncert_file = "{tmp_path}/none.pem"\nkey_file = "{key}"':
            "listen.tls.cert_file: ",
        f'[listen]\nauth = ["mtls"]\n[listen.tls]\ncert_file = "{cert}"\nkey_file = "{key}"':
            "listen.auth: mtls is listed, but [listen.tls] does not ask",
        f'[listen.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\nclient_cert = "required"':
            "listen.tls.client_cert: needs client_ca_file",
    }
    for text, error in cases.items():
        path = tmp_path / "gw.toml"
        path.write_text(text + '\n[upstreams.a]\ncommand = ["python", "-c", "pass"]\n')
        out = subprocess.run([sys.executable, "-m", "mcpfast", "check-config", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and error in out.stderr, (text, out.stderr)
