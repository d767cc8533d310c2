"""The live dashboard: its page, its event stream behind the admin token, and the page
itself in a real browser (Debian's chromium, driven by Playwright) watching a gateway
carry real traffic."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mcpfast.admin.app import create_app
from mcpfast.admin.dashboard import WINDOW
from mcpfast.auth.api_keys import hash_key
from mcpfast.config import parse
from mcpfast.gateway.call import OUTCOMES
from mcpfast.gateway.gateway import Gateway

from ..conftest import ROOT, GatewayProcess, run, ws_client

TOKEN = "dashboard-token-0123456789abcdef"
DEMO = {"demo": {"command": ["python", "-m", "mcpfast.demo"]}}
LIMIT = "identity:*:add"
RATE_LIMIT = '\n[[rate_limits]]\nrate = 0.001\nburst = 1\ntool = "add"\n'
STREAM = "/api/v1/dashboard/stream"
CHROMIUM = Path("/usr/bin/chromium")
# As the CI brief fixes them: no GPU, no sandbox (root in a container), nothing fetched
# from anywhere (no component or safe-browsing updates, no sync, no QUIC probing).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class EventStream:
    """The dashboard's Server-Sent Events, read off a real HTTP response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 30.0) -> tuple[str, dict[str, Any]]:
        block = await asyncio.wait_for(self.response.content.readuntil(b"\n\n"), timeout)
        if not block.endswith(b"\n\n"):
            raise EOFError(f"the stream ended: {block!r}")
        # One event: its name, then its data as one line of JSON.
        event, data = block.decode().removesuffix("\n\n").split("\n")
        assert event.startswith("event: ") and data.startswith("data: "), block
        return event.removeprefix("event: "), json.loads(data.removeprefix("data: "))

    async def until(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = 60.0) -> dict[str, Any]:
        """The first event whose data satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        data: dict[str, Any] = {}
        while time.monotonic() < deadline:
            _, data = await self.next(max(0.1, deadline - time.monotonic()))
            if predicate(data):
                return data
        raise AssertionError(f"no event showed {what} within {timeout:g} s; the last: "
                             f"{json.dumps(data)[:2000]}")


@asynccontextmanager
async def admin_app(config: str) -> AsyncIterator[tuple[str, Gateway, web.AppRunner]]:
    """The admin app of an in-process gateway (upstreams not started), served on
    loopback as server.py serves it."""
    gateway = Gateway(parse(config + '[upstreams.a]\ncommand = ["true"]\n'))
    runner = web.AppRunner(create_app(gateway), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", gateway, runner
    finally:
        await runner.cleanup()


def test_the_page_needs_no_token_and_its_stream_does() -> None:
    async def main() -> None:
        config = f'[admin]\ntoken_hashes = ["{hash_key(TOKEN)}"]\n'
        async with admin_app(config) as (base, _, _), aiohttp.ClientSession() as http:
            async with http.get(base + "/dashboard", allow_redirects=False) as moved:
                assert moved.status == 308 and moved.headers["Location"] == "dashboard/"
            for path, kind in (("/dashboard/", "text/html"),
                               ("/dashboard/dashboard.js", "text/javascript"),
                               ("/dashboard/dashboard.css", "text/css")):
                async with http.get(base + path) as page:
                    assert page.status == 200 and page.content_type == kind, path
                    policy = page.headers["Content-Security-Policy"]
                    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
                    assert "http" not in (await page.text()).replace("http://www.w3.org", "")
            for headers in ({}, bearer("wrong-token-0123456789abcdef"),
                            bearer(hash_key(TOKEN)), {"Authorization": f"Basic {TOKEN}"}):
                async with http.get(base + STREAM, headers=headers) as refused:
                    assert refused.status == 401, headers
                    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.get(base + STREAM, headers=bearer()) as response:
                assert response.status == 200
                assert response.content_type == "text/event-stream"
                assert response.headers["Cache-Control"] == "no-store"
                name, data = await EventStream(response).next()
                assert name == "snapshot"
                assert data["window_seconds"] == 300 and data["outcomes"] == list(OUTCOMES)
                assert len(data["latency_bounds_ms"]) == 16
                state = data["state"]
                assert state["sessions"] == {"open": 0, "by_transport": {}, "shown": [],
                                             "total": 0}
                (upstream,) = state["upstreams"]
                assert upstream["name"] == "a" and upstream["endpoints"][0]["address"] == "true"
                assert state["totals"]["requests"] == 0
    run(main())


def test_an_unguarded_admin_port_streams_without_a_token() -> None:
    """No admin token configured: like the rest of the admin API, the stream is open."""
    async def main() -> None:
        async with admin_app("") as (base, _, _), aiohttp.ClientSession() as http, \
                http.get(base + STREAM) as response:
            assert response.status == 200
            assert (await EventStream(response).next())[0] == "snapshot"
    run(main())


def test_samples_follow_the_counters_and_streams_end_at_shutdown() -> None:
    """Each second a sample of what changed; the latency tap is an observer only while
    a stream is open (per_tool off), and a stream open does not hold the admin app's
    shutdown (aiohttp would wait a minute for it)."""
    async def main() -> None:
        async with admin_app("[metrics]\nper_tool = false\n") as (base, gw, runner):
            window = runner.app[WINDOW]
            assert gw.observers == ()
            async with aiohttp.ClientSession() as http, http.get(base + STREAM) as response:
                events = EventStream(response)
                snapshot = (await events.next())[1]
                assert gw.observers == (window.tap.record,)  # type: ignore[union-attr]
                assert snapshot["state"]["latency_source"] == "dashboard"
                gw.counters.requests += 7
                gw.counters.ended[OUTCOMES.index("refused")] += 2
                gw.counters.denied["tools"] = 3
                moved = await events.until(
                    lambda d: any(s["requests"] for s in d.get("samples", [])),
                    "the requests counted")
                (sample,) = [s for s in moved["samples"] if s["requests"]]
                assert sample["requests"] == 7 and sample["outcomes"]["refused"] == 2
                assert sample["denied"] == 3 and sample["seconds"] > 0
                assert moved["state"]["totals"]["requests"] == 7
                assert moved["state"]["totals"]["authorization_denied"] == {"tools": 3}
            # The page went away: the next write finds it gone and the tap leaves.
            deadline = time.monotonic() + 30
            while gw.observers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert gw.observers == () and window.watchers == 0

            async with aiohttp.ClientSession() as http, http.get(base + STREAM) as response:
                events = EventStream(response)
                await events.next()
                started = time.monotonic()
                await asyncio.wait_for(runner.cleanup(), 30)
                assert time.monotonic() - started < 30
                with pytest.raises((EOFError, aiohttp.ClientPayloadError,
                                    asyncio.IncompleteReadError)):
                    while True:
                        await events.next()
    run(main())


def add_rate_limit(gw: GatewayProcess) -> GatewayProcess:
    gw.config_path.write_text(gw.config_path.read_text() + RATE_LIMIT)
    return gw.start()


@pytest.mark.parametrize("per_tool", [True, False], ids=["per-tool", "tap"])
def test_the_stream_moves_with_real_traffic(gateway_factory: Any, per_tool: bool) -> None:
    """A real gateway carrying real calls: the stream shows the session, the requests
    and their latency, the rate-limited call under its limit; and the gateway stops
    promptly with the stream still open."""
    gw = add_rate_limit(gateway_factory(DEMO, start=False, admin={"token": TOKEN},
                                        metrics={"per_tool": per_tool}))

    async def main() -> None:
        async with aiohttp.ClientSession() as http, \
                http.get(gw.admin_url + STREAM, headers=bearer()) as response:
            events = EventStream(response)
            assert (await events.next())[0] == "snapshot"
            async with ws_client(gw.ws_url) as client:
                await client.initialize(clientInfo={"name": "watched", "version": "1"})
                for _ in range(20):
                    assert "result" in await client.call_tool("echo", {"text": "x"})
                assert "result" in await client.call_tool("add", {"a": 1, "b": 2})
                refused = await client.call_tool("add", {"a": 1, "b": 2})
                assert refused["error"]["code"] == -32029
                seen: list[dict[str, Any]] = []

                def caught_up(data: dict[str, Any]) -> bool:
                    seen.extend(data["samples"])
                    return sum(s["requests"] for s in seen) >= 23 and \
                        data["state"]["totals"]["outcomes"]["refused"] == 1
                data = await events.until(caught_up, "the calls made")
                state = data["state"]
                assert state["sessions"]["open"] == 1
                assert state["sessions"]["by_transport"] == {"websocket": 1}
                (session,) = state["sessions"]["shown"]
                assert session["transport"] == "websocket" and session["client"] == "watched"
                assert session["identity"] == "ip:127.0.0.1"
                totals = state["totals"]
                assert totals["rate_limited"] == {LIMIT: 1}
                assert totals["outcomes"]["answered"] == 21
                assert sum(s["rate_limited"] for s in seen) == 1
                timed = sum(s["latency"]["count"] for s in seen if s["latency"])
                assert timed == 22
                assert all(s["latency"]["mean_ms"] > 0 for s in seen
                           if s["latency"] and s["latency"]["count"])
                assert state["latency_source"] == ("per_tool" if per_tool else "dashboard")
                (upstream,) = state["upstreams"]
                assert upstream["state"] == "ready" and upstream["requests_forwarded"] == 21
                assert "mcpfast.demo" in upstream["endpoints"][0]["address"]
            await events.until(lambda d: d["state"]["sessions"]["open"] == 0,
                               "the session closed")
            assert gw.terminate() == 0  # raises if the open stream held the shutdown
            with pytest.raises((EOFError, aiohttp.ClientPayloadError,
                                asyncio.IncompleteReadError)):
                while True:
                    await events.next()
    run(main(), timeout=180)


# -- in a browser -------------------------------------------------------------------------
def chromium() -> str:
    """Debian's chromium, which ``make browser-deps`` installs. Only a machine where it
    cannot (not root) skips; as root (CI) its absence is a failure."""
    if not CHROMIUM.exists():
        if os.geteuid() == 0:
            pytest.fail(f"{CHROMIUM} is missing: `make browser-deps` installs it")
        pytest.skip(f"{CHROMIUM} is missing and installing it needs root: "
                    "sudo apt-get install chromium")
    return str(CHROMIUM)


def save_screenshot(png: bytes, tmp_path: Path) -> None:
    """Beside the test, and in test-artifacts/ (git-ignored) for CI to keep. The two
    passes of make test both write it: each replaces it whole, never half-written."""
    (tmp_path / "dashboard.png").write_bytes(png)
    ARTIFACTS.mkdir(exist_ok=True)
    partial = ARTIFACTS / f".dashboard.png.{os.getpid()}"
    partial.write_bytes(png)
    os.replace(partial, ARTIFACTS / "dashboard.png")


METRIC = "n => Number(document.querySelector(`[data-metric=\"${n}\"]`).textContent" \
         ".replaceAll(',', ''))"


@pytest.mark.slow
def test_the_dashboard_in_a_browser(gateway_factory: Any, tmp_path: Path) -> None:
    """The page asks for the token (its stream answered 401), then shows the upstream,
    the session and numbers that move as real calls flow, and the rate-limited call."""
    from playwright.async_api import async_playwright

    executable = chromium()
    gw = add_rate_limit(gateway_factory(DEMO, start=False,
                                        admin={"token_hashes": [hash_key(TOKEN)]}))

    async def main() -> None:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=executable,
                                                       args=CHROMIUM_ARGS, headless=True)
            try:
                await watch(await browser.new_page(viewport={"width": 1280,
                                                             "height": 900}))
            finally:
                await browser.close()

    async def watch(page: Any) -> None:
        page.set_default_timeout(60_000)
        failures: list[str] = []
        page.on("pageerror", lambda error: failures.append(str(error)))
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))

        def from_stream(response: Any) -> bool:
            return bool(response.url.endswith(STREAM))

        async def wait(condition: str, arg: Any = None) -> None:
            await page.wait_for_function(condition, arg=arg, polling=100, timeout=60_000)

        async with page.expect_response(from_stream) as refused:
            await page.goto(gw.admin_url + "/dashboard")
        assert (await refused.value).status == 401
        await page.wait_for_selector("#auth-error:has-text('admin token')")
        assert await page.is_hidden("#board")
        await page.fill("#token", TOKEN)
        async with page.expect_response(from_stream) as admitted:
            await page.click("#token-form button")
        stream = await admitted.value
        assert stream.status == 200
        # The token travels in a header, never in a URL (access logs keep URLs).
        assert (await stream.request.all_headers())["authorization"] == f"Bearer {TOKEN}"
        await page.wait_for_selector("#connection[data-state=live]")
        await page.wait_for_selector("#upstreams tr[data-name=demo] .pill:has-text('ready')")
        assert "mcpfast.demo" in await page.inner_text("#upstreams tr[data-name=demo]")
        await wait(f"() => ({METRIC})('sessions-open') === 0")
        before = await page.evaluate(f"({METRIC})('requests-total')")

        async with ws_client(gw.ws_url) as client:
            await client.initialize(clientInfo={"name": "browser-test", "version": "1"})
            await wait(f"() => ({METRIC})('sessions-open') === 1")
            # The session is shown from its connection on; its client's name from the
            # first update after its initialize (a tick may fall between the two).
            await wait("() => [...document.querySelectorAll('#sessions tbody tr[data-id]')]"
                       ".some(r => r.querySelectorAll('td')[4].textContent === 'browser-test')")
            (row,) = await page.query_selector_all("#sessions tbody tr[data-id]")
            cells = [await c.inner_text() for c in await row.query_selector_all("td")]
            assert cells[1:3] == ["websocket", "ip:127.0.0.1"] and cells[4] == "browser-test"
            assert await page.inner_text("[data-metric=sessions-by-transport]") == \
                "websocket 1"

            # Calls flow until the page shows them moving (bounded: 3000 calls at most).
            moved = asyncio.Event()

            async def traffic() -> int:
                made = 0
                while not moved.is_set() and made < 3000:
                    assert "result" in await client.call_tool("echo", {"text": "x"})
                    made += 1
                    await asyncio.sleep(0.005)  # a steady rate, not a burst
                return made
            calls = asyncio.ensure_future(traffic())
            try:
                await wait(f"([before]) => ({METRIC})('requests-total') >= before + 50 && "
                           f"({METRIC})('request-rate') > 0", [before])
            finally:
                moved.set()
            made = await calls
            await wait(f"([total]) => ({METRIC})('requests-total') >= total",
                       [before + 1 + made])
            assert await page.inner_text("[data-metric=latency-p95]") != "\u2013"
            assert await page.locator("#chart-rate polyline").count() == 1

            assert "result" in await client.call_tool("add", {"a": 1, "b": 2})
            refused = await client.call_tool("add", {"a": 1, "b": 2})
            assert refused["error"]["code"] == -32029
            await wait(f"() => ({METRIC})('rate-limited-total') === 1")
            limit_row = page.locator(f'#rate-limits tr[data-name="{LIMIT}"] td.num')
            assert await limit_row.inner_text() == "1"
            await wait("() => document.querySelector('#outcomes tr[data-name=refused] "
                       "td.num').textContent === '1'")
            save_screenshot(await page.screenshot(full_page=True), tmp_path)
        await wait(f"() => ({METRIC})('sessions-open') === 0")
        assert failures == []
        assert urls and not [url for url in urls if TOKEN in url]

    run(main(), timeout=300)
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
