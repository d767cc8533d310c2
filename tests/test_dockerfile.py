"""What the README says of the image, read from the Dockerfile and the config it ships
(no container engine runs here): an unprivileged user, ports 8080 and 9090 exposed and
actually listened on, and a health check on the admin port's /liveness."""

from __future__ import annotations

import re
import shlex
import tomllib

from .conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def final_stage() -> list[tuple[str, str]]:
    """(instruction, arguments) of the last stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, rest.strip()))
    return stages[-1]


def instructions(name: str) -> list[str]:
    return [rest for instruction, rest in final_stage() if instruction == name]


def shipped_config() -> dict[str, object]:
    (copy,) = [rest for rest in instructions("COPY") if "/etc/mcpfast/" in rest]
    source = shlex.split(copy)[-2]
    with open(ROOT / source, "rb") as f:
        return tomllib.load(f)


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = instructions("USER")
    assert users, "the final stage has no USER: it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(instructions("RUN"))
    assert re.search(rf"useradd\b[^&]*\b{re.escape(user)}\b", created), \
        f"user {user!r} is not created in the final stage"
    uid = re.search(r"--uid\s+(\d+)", created)
    assert uid is None or int(uid.group(1)) != 0
    # Nothing after USER switches back.
    stage = final_stage()
    last_user = max(i for i, (instruction, _) in enumerate(stage) if instruction == "USER")
    assert all(instruction != "USER" for instruction, _ in stage[last_user + 1:])


def test_the_exposed_ports_are_the_ones_the_shipped_config_listens_on() -> None:
    exposed = {int(port.split("/")[0]) for rest in instructions("EXPOSE")
               for port in rest.split()}
    assert exposed == {8080, 9090}
    config = shipped_config()
    listen, admin = config["listen"], config["admin"]
    assert isinstance(listen, dict) and isinstance(admin, dict)
    assert listen["port"] == 8080 and admin["port"] == 9090
    # Published ports reach only a listener bound to every interface.
    assert listen["host"] == "0.0.0.0" and admin["host"] == "0.0.0.0"
    entrypoint = " ".join(instructions("ENTRYPOINT") + instructions("CMD"))
    assert "mcpfast" in entrypoint and "/etc/mcpfast/mcpfast.toml" in entrypoint


def test_the_health_check_asks_liveness_on_the_admin_port() -> None:
    (check,) = instructions("HEALTHCHECK")
    assert "CMD" in check
    assert re.search(r"https?://(127\.0\.0\.1|localhost):9090/liveness\b", check), check
    for option in ("--interval", "--timeout"):
        assert option in check
