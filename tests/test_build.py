"""MCPFAST_BUILD_EXTENSION: `yes` fails loudly when the extension cannot be compiled,
`auto` falls back to pure Python with a warning, `no` does not try."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, source_tree_lock


def build(mode: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # CC=false stands for a machine without a working compiler; the build goes to a
    # temporary directory so the in-place extension is untouched.
    env = {**os.environ, "MCPFAST_BUILD_EXTENSION": mode, "CC": "false"}
    with source_tree_lock():
        return subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--force", "--build-lib",
             str(tmp_path / "lib"), "--build-temp", str(tmp_path / "temp")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_yes_fails_when_it_cannot_compile(tmp_path: Path) -> None:
    out = build("yes", tmp_path)
    assert out.returncode != 0
    assert "error: Command '['false'" in out.stderr  # the compiler's failure, not another
    assert not list((tmp_path / "lib").rglob("*.so"))


def test_auto_falls_back_with_a_warning(tmp_path: Path) -> None:
    out = build("auto", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "could not be compiled" in out.stderr and "pure-Python" in out.stderr
    assert not list((tmp_path / "lib").rglob("*.so"))


def test_no_skips_the_extension_and_bad_values_are_refused(tmp_path: Path) -> None:
    out = build("no", tmp_path)
    assert out.returncode == 0 and "could not be compiled" not in out.stderr
    bad = build("maybe", tmp_path)
    assert bad.returncode != 0 and "must be yes, no or auto" in bad.stderr
