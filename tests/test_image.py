"""The container image, built with ``make image`` (docker, or podman) and run: the admin
port's /liveness answers through its published port, and MCP clients reach the bundled
demo server through the MCP port. Not part of ``make test`` (it needs a container engine
and a base image, and takes minutes): ``make image-test`` runs it, and prints the build
time and the image's size. ``BASE_IMAGE=...`` builds from another base."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import mcp
import pytest

from .conftest import ROOT, free_port, run, sdk_text, wait_until, ws_client

pytestmark = pytest.mark.image

IMAGE = os.environ.get("IMAGE", "mcpfast:image-test")


def engine() -> str:
    """The one ``make image`` uses: docker when its daemon answers, else podman."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return docker
    podman = shutil.which("podman")
    if podman is None:
        pytest.fail("the image test needs docker (with its daemon running) or podman")
    return podman


@pytest.fixture(scope="module")
def image() -> str:
    started = time.monotonic()
    built = subprocess.run(["make", "-C", str(ROOT), "image", f"IMAGE={IMAGE}"],
                           capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-5000:]
    size = subprocess.run([engine(), "image", "inspect", "--format", "{{.Size}}", IMAGE],
                          capture_output=True, text=True, check=True).stdout.strip()
    # -s shows it; `make image-test` passes -s.
    print(f"\n{IMAGE}: built in {seconds:.0f} s (layers cached or not), "
          f"{int(size) / 1e6:.0f} MB")
    return IMAGE


class Container:
    def __init__(self, image: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.token = secrets.token_hex(24)
        started = subprocess.run(
            [engine(), "run", "-d", "-p", f"127.0.0.1:{self.port}:8080",
             "-p", f"127.0.0.1:{self.admin_port}:9090",
             "-e", f"MCPFAST_ADMIN_TOKEN={self.token}", image],
            capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        self.id = started.stdout.strip()

    def admin(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def logs(self) -> str:
        out = subprocess.run([engine(), "logs", self.id], capture_output=True, text=True)
        return out.stdout + out.stderr

    def remove(self) -> None:
        subprocess.run([engine(), "rm", "-f", self.id], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Container]:
    running = Container(image)
    try:
        try:
            wait_until(lambda: running.admin("/readiness")[0] == 200, timeout=60)
        except AssertionError:
            raise AssertionError(f"not ready within 60 s:\n{running.logs()}") from None
        yield running
    finally:
        running.remove()


def test_liveness_answers_on_the_published_admin_port(container: Container) -> None:
    code, _ = container.admin("/liveness")
    assert code == 200
    assert container.admin("/status")[0] == 401  # beyond loopback: the token is needed
    code, body = container.admin("/status", container.token)
    assert code == 200
    status = json.loads(body)
    assert status["implementation"] == "compiled"
    assert [u["name"] for u in status["upstreams"]] == ["demo"]


def test_mcp_calls_reach_the_demo_server_through_the_published_port(
        container: Container) -> None:
    async def over_websocket() -> None:
        async with ws_client(f"ws://127.0.0.1:{container.port}/mcp") as c:
            initialized = await c.initialize()
            assert initialized["result"]["serverInfo"]["name"]
            tools = await c.request("tools/list")
            assert "echo" in [t["name"] for t in tools["result"]["tools"]]
            called = await c.call_tool("echo", {"text": "from the image"})
            assert called["result"]["content"][0]["text"] == "from the image"

    async def with_the_sdk() -> None:
        async with mcp.Client(f"http://127.0.0.1:{container.port}/mcp",
                              mode="legacy") as client:
            tools = await client.list_tools()
            assert "echo" in [t.name for t in tools.tools]
            assert sdk_text(await client.call_tool("echo", {"text": "hi"})) == "hi"

    run(over_websocket())
    run(with_the_sdk())
