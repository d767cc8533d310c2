"""Build mcpfast, cythonizing the compiled hot path in mcpfast_ext.

MCPFAST_BUILD_EXTENSION selects what happens to the extension:
  yes   compile it, and fail the build when it cannot be compiled;
  no    skip it (the pure-Python twins are used at run time);
  auto  (default) try, and fall back to pure Python with a warning.

A fallback is also written into the build as mcpfast_ext/not-compiled.txt, so that the
installed package can say why it runs pure Python: pip shows a successful build's
warnings only with -v.

Wheels get stripped extensions (no debug information, no symbol table): a tenth of
the size, and what PyPI expects. In-place builds keep them, for gdb and perf.
"""

import os
import re
import sys

from setuptools import Extension, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext

MODULES = ["websocket_codec", "routing_table", "token_bucket", "http_reader", "message_scan"]
MODE = os.environ.get("MCPFAST_BUILD_EXTENSION", "auto").strip().lower()
if MODE not in {"yes", "no", "auto"}:
    sys.exit(f"MCPFAST_BUILD_EXTENSION must be yes, no or auto, not {MODE!r}")
# Read by mcpfast_ext at import time; keep the two names in step.
NOT_COMPILED = "not-compiled.txt"
FALLBACKS: list[str] = []
"""Why the extension is not in this build (auto mode only), one reason a line."""


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        if "bdist_wheel" in self.distribution.commands:
            # After Python's own CFLAGS, so -g0 overrides their -g.
            ext.extra_compile_args = [*ext.extra_compile_args, "-g0"]
            ext.extra_link_args = [*ext.extra_link_args, "-s"]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc, ext.name)

    def _fallback(self, exc: Exception, name: str = "mcpfast_ext") -> None:
        if MODE == "yes":
            raise exc
        FALLBACKS.append(f"{name}: {type(exc).__name__}: {_reason(exc)}")
        print(
            f"WARNING: mcpfast_ext could not be compiled ({exc}); "
            "the pure-Python implementation will be used",
            file=sys.stderr,
        )


def _reason(exc: Exception) -> str:
    """The first line of ``exc``, short: the compiler's whole command line says little
    (what it printed, "Python.h: No such file", is in the build's output above)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    failed = re.match(r"Command '\['([^']+)'.*returned non-zero exit status (\d+)", text)
    if failed:
        text = f"{failed[1]} exited with status {failed[2]}"
    return text if len(text) <= 200 else text[:197] + "..."


class BuildRecordingFallback(build):
    """Leaves mcpfast_ext/not-compiled.txt in the build when the extension fell back,
    and no stale one from an earlier build when it did not."""

    def run(self) -> None:
        super().run()
        marker = os.path.join(self.build_lib, "mcpfast_ext", NOT_COMPILED)
        if FALLBACKS:
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            with open(marker, "w") as f:
                f.write("\n".join(FALLBACKS) + "\n")
        elif os.path.exists(marker):
            os.remove(marker)


def extensions() -> list[Extension]:
    if MODE == "no":
        return []
    sources = [Extension(f"mcpfast_ext.{name}", [f"mcpfast_ext/{name}.pyx"]) for name in MODULES]
    try:
        from Cython.Build import cythonize
    except ImportError:
        if MODE == "yes":
            raise
        print("WARNING: Cython is not installed; building without mcpfast_ext", file=sys.stderr)
        FALLBACKS.append("Cython is not installed")
        return []
    compiled = cythonize(
        sources,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
    # cythonize() drops optional=True, so set it after it has run.
    for ext in compiled:
        ext.optional = MODE == "auto"
    return compiled


setup(
    ext_modules=extensions(),
    cmdclass={"build": BuildRecordingFallback, "build_ext": OptionalBuildExt},
)
