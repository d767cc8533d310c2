"""The command line: version, check-config, serve (its flags, JSON logs, what it says
while upstreams start), connect, and the Makefile a new user runs first."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from mcpfast import __version__
from mcpfast_ext import compiled_modules

from ..conftest import ROOT, SDK_SERVER, free_port, run, wait_until, ws_client


def mcpfast(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcpfast", *args], capture_output=True,
                          text=True, timeout=30, **kw)


def test_version_names_the_hot_path_and_why_it_is_pure() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MCPFAST_NO_EXTENSIONS"}
    if compiled_modules() is not None:
        hot_path = "(compiled hot path)"
    else:  # a tree whose extension was not built
        hot_path = "(pure-Python hot path: the compiled extension cannot be imported"
    for command in ("--version", "version"):
        out = mcpfast(command, env=env)
        assert out.returncode == 0 and out.stdout.startswith(f"mcpfast {__version__} ")
        assert out.stdout.removeprefix(f"mcpfast {__version__} ").startswith(hot_path)
        forced = mcpfast(command, env={**env, "MCPFAST_NO_EXTENSIONS": "1"})
        assert forced.stdout == (f"mcpfast {__version__} (pure-Python hot path: "
                                 "MCPFAST_NO_EXTENSIONS is set)\n")


def test_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[upstreams.demo]\ncommand = ["python", "-m", "mcpfast.demo"]\n')
    out = mcpfast("check-config", str(path))
    assert out.returncode == 0 and "OK" in out.stdout and "demo" in out.stdout


def test_check_config_ok_for_upstreams_it_does_not_start(tmp_path: Path) -> None:
    """Upstreams reached by a URL or a socket have no program to look for."""
    path = tmp_path / "remote.toml"
    path.write_text('[upstreams.h]\nurl = "http://127.0.0.1:9/mcp"\n'
                    '[upstreams.w]\nurl = "ws://127.0.0.1:9/mcp"\n'
                    '[upstreams.s]\ntransport = "unix"\nsocket = "/tmp/none.sock"\n'
                    '[upstreams.demo]\ncommand = ["python", "-m", "mcpfast.demo"]\n')
    out = mcpfast("check-config", str(path))
    assert out.returncode == 0 and "OK (4 upstream(s)" in out.stdout, out.stderr


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


def test_serve_names_a_listening_host_that_does_not_resolve(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text(f'[listen]\nhost = "no-such-host.invalid"\nport = {free_port()}\n'
                    f'[admin]\nport = {free_port()}\n'
                    f'[upstreams.a]\ncommand = ["{sys.executable}", "-c", "pass"]\n')
    out = mcpfast("serve", "--config", str(path))
    assert out.returncode == 2, out.stderr
    assert "listen.host: cannot listen on 'no-such-host.invalid'" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_names_the_key_of_an_address_it_cannot_take(tmp_path: Path) -> None:
    """A port another process holds, a socket in a directory that does not exist: the
    error names the key that chose it (an outside sweep found the listen and admin
    ports' errors alike, and the socket's naming neither key nor path)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        upstream = f'[upstreams.a]\ncommand = ["{sys.executable}", "-c", "pass"]\n'
        for key, text in (
                ("listen.port", f"[listen]\nport = {busy}\n[admin]\nport = {free_port()}\n"),
                ("admin.port", f"[listen]\nport = {free_port()}\n[admin]\nport = {busy}\n"),
                # Workers: the supervisor's own check before it starts any.
                ("listen.port", f"workers = 2\n[listen]\nport = {busy}\n"
                                f"[admin]\nport = {free_port()}\n"),
                ("listen.unix_socket", f'[listen]\nport = {free_port()}\nunix_socket = '
                 f'"{tmp_path}/no/such/dir/gw.sock"\n[admin]\nport = {free_port()}\n')):
            path = tmp_path / "taken.toml"
            path.write_text(text + upstream)
            out = mcpfast("serve", "--config", str(path))
            assert out.returncode == 2, out.stderr
            assert f"mcpfast: config error: {key}: cannot listen on " in out.stderr, \
                (key, out.stderr)
            assert "Traceback" not in out.stderr


def test_check_config_refuses_what_serve_cannot_bind(tmp_path: Path) -> None:
    """check-config and serve agree (an outside sweep found check-config passing each of
    these): a host that does not resolve, a socket's missing directory, TLS files that
    do not load, each named by its key."""
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    upstream = f'[upstreams.a]\ncommand = ["{sys.executable}", "-c", "pass"]\n'
    for key, listen in (
            ("listen.host", 'host = "256.1.1.1"'),
            ("listen.unix_socket", f'unix_socket = "{tmp_path}/no/such/dir/gw.sock"'),
            ("listen.tls.cert_file", f'[listen.tls]\ncert_file = "{tmp_path}/garbage.pem"\n'
                                     f'key_file = "{tmp_path}/garbage.pem"')):
        path = tmp_path / "unbindable.toml"
        path.write_text(f"[listen]\nport = {free_port()}\n{listen}\n"
                        f"[admin]\nport = {free_port()}\n{upstream}")
        checked = mcpfast("check-config", str(path))
        assert checked.returncode == 2 and f"mcpfast: config error: {key}: " in checked.stderr, \
            (key, checked.stderr)
        served = mcpfast("serve", "--config", str(path))
        assert served.returncode == 2 and f"mcpfast: config error: {key}: " in served.stderr, \
            (key, served.stderr)


def test_serve_flags_are_held_to_what_the_file_is() -> None:
    """--port and --admin-port the same, one name for two --stdio commands: refused as
    the same values in a config file are."""
    port = str(free_port())
    out = mcpfast("serve", "--port", port, "--admin-port", port, "--stdio", "a=true")
    assert out.returncode == 2 and "admin.port: is listen.port too" in out.stderr, out.stderr
    out = mcpfast("serve", "--port", port, "--stdio", "a=true", "--stdio", "a=false")
    assert out.returncode == 2 and "the name 'a' is given to two commands" in out.stderr, \
        out.stderr


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


def wait_for_port(port: int, timeout: float) -> float:
    """Seconds until 127.0.0.1:port accepts a connection."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return time.monotonic() - started
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} still closed after {timeout} s")


def test_serve_fronts_stdio_commands_on_given_ports(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    unix = str(tmp_path / "gw.sock")
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcpfast", "serve", "--port", str(port),
         "--admin-port", str(admin_port), "--unix", unix,
         "--stdio", f"python {SDK_SERVER} --name one",
         "--stdio", f"two=python {SDK_SERVER} --name two"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readiness",
                                            timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False
        wait_until(ready, 20)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status") as response:
            status = json.loads(response.read())
        assert [u["name"] for u in status["upstreams"]] == ["sdk_server", "two"]
        assert {lst["address"] for lst in status["listeners"]} == {f"127.0.0.1:{port}", unix}

        async def body() -> None:
            async with ws_client(f"ws://127.0.0.1:{port}/mcp") as c:
                await c.initialize()
                answer = await c.call_tool("two__whoami")
                assert answer["result"]["content"][0]["text"] == "two"
        run(body())
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_serve_flags_are_checked() -> None:
    out = mcpfast("serve", "--port", "70000")
    assert out.returncode == 2 and "not a port number" in out.stderr


def test_check_config_names_a_missing_program(tmp_path: Path) -> None:
    path = tmp_path / "ghost.toml"
    path.write_text('[upstreams.demo]\ncommand = ["python", "-m", "mcpfast.demo"]\n'
                    '[upstreams.ghost]\ncommand = ["mcpfast-no-such-server", "--stdio"]\n'
                    '[upstreams.far]\ncommand = ["/nonexistent/bin/server"]\n'
                    '[upstreams.lost]\ncommand = ["python"]\ncwd = "/nonexistent/dir"\n')
    out = mcpfast("check-config", str(path))
    assert out.returncode == 2, out
    assert "upstreams.ghost.command[0]: program 'mcpfast-no-such-server' not found" \
        in out.stderr
    assert "upstreams.far.command[0]: program '/nonexistent/bin/server' does not exist" \
        in out.stderr
    assert "upstreams.lost.cwd: cwd '/nonexistent/dir' is not a directory" in out.stderr


def test_an_upstream_that_cannot_start_neither_blocks_the_port_nor_logs_ready(
        gateway_factory: Any) -> None:
    gw = gateway_factory({"demo": {"command": ["python", "-m", "mcpfast.demo"]},
                          "ghost": {"command": ["mcpfast-no-such-server"],
                                    "init_timeout": 4.0, "restart_backoff": 0.5}},
                         start=False)
    gw.start(wait_ready=False)
    # Well before init_timeout: the port does not wait for an upstream that cannot start.
    assert wait_for_port(gw.port, 10) < 3.0

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            for _ in range(100):
                tools = (await c.request("tools/list"))["result"]["tools"]
                if tools:
                    break
                await asyncio.sleep(0.05)
            assert "demo__echo" in {t["name"] for t in tools}
    run(body())
    wait_until(lambda: "not ready" in gw.log(), 10)
    assert gw.admin_get("/readiness")[0] == 503
    lines = gw.log().splitlines()
    assert not [line for line in lines if line.endswith("mcpfast: ready")], gw.log()
    assert any("program 'mcpfast-no-such-server' not found" in line for line in lines)
    assert "mcpfast-no-such-server" in (gw.upstream("ghost")["last_error"] or "")


def test_ready_is_logged_once_ready(gateway_factory: Any) -> None:
    gw = gateway_factory({"demo": {"command": ["python", "-m", "mcpfast.demo"]}})
    wait_until(lambda: any(line.endswith("mcpfast: ready") for line in gw.log().splitlines()))


def test_connect_defaults_to_the_bundled_configs_socket(tmp_path: Path) -> None:
    from mcpfast.config import load, user_socket_path

    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    probe = subprocess.run(
        [sys.executable, "-c", "from mcpfast.config import load, user_socket_path; "
         "print(load().listen.unix_socket); print(user_socket_path())"],
        capture_output=True, text=True, env=env, timeout=30)
    assert probe.stdout.split() == [str(runtime / "mcpfast.sock")] * 2
    assert load().listen.unix_socket == user_socket_path()
    # Nothing listens there: the bridge says where it looked.
    out = subprocess.run([sys.executable, "-m", "mcpfast", "connect"], capture_output=True,
                         text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and str(runtime / "mcpfast.sock") in out.stderr
    # A directory others may write to could hold someone else's socket: neither side
    # uses it.
    runtime.chmod(0o777)
    out = subprocess.run([sys.executable, "-m", "mcpfast", "connect"], capture_output=True,
                         text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and "not a private directory" in out.stderr
    out = mcpfast("serve", "--port", str(free_port()), "--admin-port", str(free_port()),
                  env=env)
    assert out.returncode == 1 and "not a private directory" in out.stderr


# The first five minutes of a new user: the Makefile and the package metadata.

def make(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args],
                          capture_output=True, text=True, timeout=120, **kw)


def test_bare_make_builds_and_does_not_serve() -> None:
    planned = make("-n", "-B").stdout
    assert "build_ext" in planned and "mcpfast serve" not in planned


def test_make_run_installs_only_runtime_dependencies() -> None:
    run_plan, test_plan = make("-n", "-B", "run").stdout, make("-n", "-B", "test").stdout
    assert "pip install --quiet -e ." in run_plan and "[test" not in run_plan
    assert "-e '.[test,dev,bench,tracing]'" in test_plan


def test_missing_headers_and_compiler_are_named_up_front(tmp_path: Path) -> None:
    # Python without its headers, as on Debian without python3-dev: INCLUDEPY lacks
    # Python.h. And no compiler at all.
    (tmp_path / "sitecustomize.py").write_text(
        "import sysconfig\n_get = sysconfig.get_config_var\n"
        "sysconfig.get_config_var = lambda n: '/nonexistent' if n == 'INCLUDEPY' else _get(n)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CC": "no-such-cc"}
    out = make("check-build-deps", f"PYTHON={sys.executable}", "PY=/nonexistent/python",
               f"EXT_BUILT={tmp_path}/not-built", env=env)
    assert out.returncode != 0
    assert "Python.h" in out.stderr and "apt-get install python3-dev" in out.stderr
    assert "no C compiler (no-such-cc)" in out.stderr and "build-essential" in out.stderr
    fine = make("check-build-deps", f"PYTHON={sys.executable}", "PY=/nonexistent/python",
                f"EXT_BUILT={tmp_path}/not-built")
    assert fine.returncode == 0, fine.stderr


def test_a_venv_left_without_pip_is_made_again(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    out = make("venv", f"VENV={venv}", f"PYTHON={sys.executable}")
    assert out.returncode == 0, out.stderr
    subprocess.run([str(venv / "bin" / "python"), "-c", "import pip"], check=True, timeout=60)


def test_license_file_and_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_sigterm_while_upstreams_initialize_stops_at_once(gateway_factory: Any) -> None:
    from ..conftest import group_alive

    gw = gateway_factory({"mute": {"command": ["python", "-c", "import time; time.sleep(60)"],
                                   "init_timeout": 30.0, "stop_timeout": 0.5}}, start=False)
    gw.start(wait_ready=False)
    wait_for_port(gw.port, 10)
    wait_until(lambda: gw.admin_get("/status")[0] == 200 and gw.upstream("mute")["pid"])
    pid = gw.upstream("mute")["pid"]
    started = time.monotonic()
    assert gw.terminate() == 0
    assert time.monotonic() - started < 10
    wait_until(lambda: not group_alive(pid), 5)
    assert not [line for line in gw.log().splitlines() if line.endswith("mcpfast: ready")]


def test_probe_asks_the_admin_port_the_config_names(gateway_factory: Any) -> None:
    """``mcpfast probe`` (the image's health check): 0 while /liveness answers, 1 with
    the reason once nothing listens there."""
    gw = gateway_factory()

    def probe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mcpfast", "probe", "--config",
                               str(gw.config_path), *args], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)

    assert probe().returncode == 0
    assert probe("--path", "/readiness").returncode == 0
    gw.terminate()
    down = probe()
    assert down.returncode == 1
    assert f"http://127.0.0.1:{gw.admin_port}/liveness" in down.stderr
