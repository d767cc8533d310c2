"""Build mcpfast, cythonizing the compiled hot path in mcpfast_ext.

MCPFAST_BUILD_EXTENSION selects what happens to the extension:
  yes   compile it, and fail the build when it cannot be compiled;
  no    skip it (the pure-Python twins are used at run time);
  auto  (default) try, and fall back to pure Python with a warning.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ["websocket_codec", "routing_table", "token_bucket", "http_reader"]
MODE = os.environ.get("MCPFAST_BUILD_EXTENSION", "auto").strip().lower()
if MODE not in {"yes", "no", "auto"}:
    sys.exit(f"MCPFAST_BUILD_EXTENSION must be yes, no or auto, not {MODE!r}")


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc)

    def _fallback(self, exc: Exception) -> None:
        if MODE == "yes":
            raise exc
        print(
            f"WARNING: mcpfast_ext could not be compiled ({exc}); "
            "the pure-Python implementation will be used",
            file=sys.stderr,
        )


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


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
