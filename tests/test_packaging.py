"""The built wheel, installed apart from the source tree, works: what the Dockerfile
and any pip user get (the extension compiled in, the default config and demo bundled)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from .conftest import ROOT, source_tree_lock


def test_wheel_carries_the_extension_and_runs_installed(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    env = {**os.environ, "MCPFAST_BUILD_EXTENSION": "yes"}
    with source_tree_lock():
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", str(wheels), str(ROOT)], capture_output=True, text=True, env=env,
            timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("mcpfast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("websocket_codec", "routing_table", "token_bucket"):
        assert any(n.startswith(f"mcpfast_ext/{module}.") and n.endswith(".so") for n in names)
        assert f"mcpfast_ext/{module}_py.py" in names
    assert "mcpfast/default.toml" in names and "mcpfast/demo.py" in names
    for asset in ("dashboard.html", "dashboard.js", "dashboard.css"):
        assert f"mcpfast/admin/static/{asset}" in names

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    # Run from an empty directory so that nothing is imported from the source tree.
    run_env = {**os.environ, "PYTHONPATH": str(target)}
    probe = subprocess.run(
        [sys.executable, "-c", "import mcpfast, mcpfast_ext; "
         "print(mcpfast.__file__); print(mcpfast_ext.IMPLEMENTATION)"],
        capture_output=True, text=True, cwd=tmp_path, env=run_env, timeout=60)
    where, implementation = probe.stdout.split()
    assert where.startswith(str(target))
    expected = "pure" if os.environ.get("MCPFAST_NO_EXTENSIONS") == "1" else "compiled"
    assert implementation == expected
    check = subprocess.run([sys.executable, "-m", "mcpfast", "--version"], capture_output=True,
                           text=True, cwd=tmp_path, env=run_env, timeout=60)
    assert check.returncode == 0 and check.stdout.startswith("mcpfast ")
