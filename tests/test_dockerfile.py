"""What the README says of the image, read from the Dockerfile and the config it ships
(no container engine runs in make test; `make image-test` builds and runs the image): an
unprivileged user, ports 8080 and 9090 exposed and actually listened on, a health check
that asks the admin port the config names and survives a podman build, wheels mounted
rather than copied, pinned build tools, and a build context without caches, tests or
benches."""

from __future__ import annotations

import json
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


def test_the_health_check_asks_the_admin_port_the_config_names() -> None:
    """Not a port written into the Dockerfile: ``mcpfast probe`` reads the shipped
    config (``${ENV}`` included) and asks /liveness there."""
    (check,) = instructions("HEALTHCHECK")
    for option in ("--interval", "--timeout"):
        assert option in check
    command = json.loads(check.split("CMD", 1)[1])
    assert command == ["mcpfast", "probe", "--config", "/etc/mcpfast/mcpfast.toml"]
    assert "9090" not in check


def test_no_syntax_directive_offline_builders_cannot_fetch() -> None:
    assert not DOCKERFILE.read_text().lstrip().lower().startswith("# syntax")


def test_the_wheels_are_mounted_not_copied_into_the_image() -> None:
    assert not [rest for rest in instructions("COPY") if "--from" in rest]
    (install,) = [rest for rest in instructions("RUN") if "pip install" in rest]
    assert re.search(r"--mount=type=bind,from=build,source=/wheels,target=/tmp/wheels", install)


def test_the_build_tools_are_pinned() -> None:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    installs = [line for line in text.splitlines()
                if "pip install" in line and "--find-links" not in line]
    assert installs, "the build stage installs its tools"
    for line in installs:
        packages = [word for word in line.split("pip install", 1)[1].split()
                    if not word.startswith("-") and word != "&&"]
        assert packages and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][\w.]*", p)
                                for p in packages), line
    assert "--no-isolation" in text  # the pinned tools, not an unpinned build env


def test_the_build_context_leaves_out_caches_tests_and_benches() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {"tests", "bench", ".venv", ".git", ".pytest_cache", ".mypy_cache",
            ".ruff_cache", ".benchmarks", ".tools", "**/__pycache__"} <= ignored


def test_make_image_keeps_the_health_check_with_podman() -> None:
    """podman builds OCI images by default, and the OCI format has no HEALTHCHECK: it is
    dropped with a warning, unless the build asks for the docker format."""
    makefile = re.sub(r"\\\n", " ", (ROOT / "Makefile").read_text())
    (podman,) = [line for line in makefile.splitlines() if "podman build" in line]
    assert "--format docker" in podman and "--isolation chroot" in podman
