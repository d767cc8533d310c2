"""What an upstream can learn of the gateway and what outlives it: the environment it
inherits, the secrets /status and the logs show, and the processes it leaves behind."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from mcpfast.config import parse

from ..conftest import SDK_SERVER, GatewayProcess, wait_until

# Records its environment and argv in the file named by its first argument, then becomes
# the SDK test server: a real upstream that reports what it was started with.
REPORTER = ("import json, os, sys; "
            "fds = [fd for fd in os.listdir('/proc/self/fd') "
            "if os.path.exists('/proc/self/fd/' + fd)]; "
            "json.dump({'env': dict(os.environ), 'argv': sys.argv, 'fds': fds}, "
            "open(sys.argv[1], 'w')); "
            f"os.execv(sys.executable, [sys.executable, {SDK_SERVER!r}])")
SECRET = "s3cret-value-that-must-not-leak"
SESSION_SECRET = "session-secret-0123456789abcdef"


def reporter(out: Path, *extra: str, **table: Any) -> dict[str, Any]:
    return {"command": ["python", "-c", REPORTER, str(out), *extra], **table}


def reported(path: Path) -> dict[str, Any]:
    wait_until(path.exists, 15)
    return json.loads(path.read_text())


@pytest.fixture
def gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables of the kinds a gateway's environment holds."""
    monkeypatch.setenv("MCPFAST_ISO_SECRET", "gateway-own")
    monkeypatch.setenv("ISO_UNRELATED_SECRET", "database-password")
    monkeypatch.setenv("ISO_TOKEN", SECRET)
    monkeypatch.setenv("ISO_SESSION", SESSION_SECRET)
    monkeypatch.setenv("ISO_EXPLICIT", "explicit-value")
    monkeypatch.setenv("AWS_ISO_REGION", "eu-west-3")
    monkeypatch.setenv("LC_ISO", "fr_FR.UTF-8")


@pytest.mark.usefixtures("gateway_environment")
def test_upstreams_inherit_an_allow_list_and_never_the_gateways_secrets(
        gateway_factory: Any, tmp_path: Path) -> None:
    out = {name: tmp_path / f"{name}.json" for name in ("allow", "wider", "all", "none")}
    gateway_factory({
        "allow": reporter(out["allow"], env={"EXPLICIT": "${ISO_EXPLICIT}"}),
        "wider": reporter(out["wider"], env_allow=["AWS_*", "MCPFAST_*", "ISO_SESSION"]),
        "all": reporter(out["all"], inherit_env=True, env={"ISO_EXPLICIT": "${ISO_EXPLICIT}"}),
        "none": reporter(out["none"], inherit_env=False, env={"ONLY": "this"}),
    }, listen={"http": {"session_secret": "${ISO_SESSION}"}})
    allow, wider, everything, none = (reported(out[n])["env"]
                                      for n in ("allow", "wider", "all", "none"))

    # The default: what programs need, nothing else, plus what env sets.
    assert allow["PATH"] == os.environ["PATH"] and allow["HOME"] == os.environ["HOME"]
    assert allow["LC_ISO"] == "fr_FR.UTF-8"
    assert allow["EXPLICIT"] == "explicit-value"
    assert "ISO_UNRELATED_SECRET" not in allow and "AWS_ISO_REGION" not in allow
    assert "ISO_EXPLICIT" not in allow
    # env_allow widens the list, but not to the gateway's own variables nor to a
    # variable the config interpolates.
    assert wider["AWS_ISO_REGION"] == "eu-west-3"
    assert "MCPFAST_ISO_SECRET" not in wider and "ISO_SESSION" not in wider
    # inherit_env = true: everything but the same two kinds, unless env sets them.
    assert everything["ISO_UNRELATED_SECRET"] == "database-password"
    assert everything["ISO_EXPLICIT"] == "explicit-value"
    for env in (allow, wider, everything, none):
        assert not any(name.startswith("MCPFAST_") for name in env), env
        assert "ISO_SESSION" not in env and SESSION_SECRET not in env.values()
    # inherit_env = false: nothing but a default PATH and env.
    assert set(none) - {"PATH", "ONLY", "PWD", "SHLVL", "_", "LC_CTYPE"} == set()
    assert none["ONLY"] == "this"
    # Nor any descriptor but its stdin, stdout and stderr: not the gateway's, not its
    # pipes a second time (which would keep its stdout open after it closed fd 1).
    assert sorted(reported(out["allow"])["fds"]) == ["0", "1", "2"]


def test_upstream_environment_rules() -> None:
    from mcpfast.upstream.stdio import upstream_environment

    config = parse('[upstreams.a]\ncommand = ["srv"]\nenv_allow = ["AWS_*"]\n'
                   'env = { MCPFAST_X = "given" }\n'
                   '[listen.http]\nsession_secret = "${SESSION}"\n',
                   environ={"SESSION": SESSION_SECRET})
    environ = {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "AWS_REGION": "x",
               "SESSION": SESSION_SECRET, "MCPFAST_SESSION_SECRET": "y", "DB_PASSWORD": "z",
               "HOME_SECRET": "not HOME"}
    env, withheld = upstream_environment(config.upstreams["a"], config.interpolated.names,
                                         environ)
    assert env == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "AWS_REGION": "x",
                   "MCPFAST_X": "given"}
    assert withheld == []
    # A listed variable the config interpolates is withheld too, and said so.
    home = parse('[upstreams.a]\ncommand = ["srv"]\ncwd = "${HOME}"\n', environ=environ)
    env, withheld = upstream_environment(home.upstreams["a"], home.interpolated.names, environ)
    assert "HOME" not in env and withheld == ["HOME"]


@pytest.mark.usefixtures("gateway_environment")
def test_interpolated_values_are_redacted_in_status_and_logs(
        gateway_factory: Any, tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    gw: GatewayProcess = gateway_factory(
        {"secret": reporter(out, "--token=${ISO_TOKEN}", env={"TOKEN": "${ISO_TOKEN}"})},
        listen={"http": {"session_secret": "${ISO_SESSION}"}})
    started = reported(out)
    # The upstream does get the values.
    assert started["argv"][-1] == f"--token={SECRET}" and started["env"]["TOKEN"] == SECRET
    code, body = gw.admin_get("/status")
    assert code == 200
    text = body.decode()
    assert SECRET not in text and SESSION_SECRET not in text
    command = gw.upstream("secret")["command"]
    assert command[-1] == "--token=${ISO_TOKEN}"
    gw.terminate()
    log = gw.log()
    assert SECRET not in log and SESSION_SECRET not in log
    assert any("started pid" in line and "--token=${ISO_TOKEN}" in line
               for line in log.splitlines()), log


def test_a_grandchild_that_leaves_the_process_group_is_ended(
        gateway_factory: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    escape = (f"import os, time; os.setsid(); "
              f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)")
    gw: GatewayProcess = gateway_factory({"sdk": {"command": [
        "sh", "-c", f'{sys.executable} -c "{escape}" & exec {sys.executable} {SDK_SERVER}']}})
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", 10)
    grandchild = int(pid_file.read_text())
    upstream = gw.upstream("sdk")["pid"]
    try:
        assert os.getsid(grandchild) == grandchild != os.getsid(upstream)
        assert gw.terminate() == 0
        wait_until(lambda: not alive(grandchild), 5)
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
    assert "left behind" in gw.log()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"

