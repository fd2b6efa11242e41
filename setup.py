"""Build fastio's Cython extension, or fall back to pure Python.

Switches (environment variables):

FASTIO_NO_EXTENSIONS=1
    Build and install without the extension; fastio then runs on the stdlib.
FASTIO_REQUIRE_EXTENSIONS=1
    A failed extension build is an error instead of a silent fallback.
FASTIO_DEBUG_BUILD=1
    Compile with -O0 -g and Cython's bounds checks (used by the sanitizer runs).

Non-CPython interpreters always get the pure-Python fallback.
"""

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


class OptionalBuildExt(build_ext):
    """Let the extension build fail unless FASTIO_REQUIRE_EXTENSIONS demands it.

    A failure is never silent: the build ends with a warning banner naming
    what failed, and the installed fastio warns again at import (a
    RuntimeWarning from fastio._impl) until it is rebuilt.
    """

    def run(self):
        self._failures = []
        try:
            super().run()
        except Exception as exc:
            if not self._failures:  # else: a consequence of those
                self._fallback("build_ext", exc)
            elif _flag("FASTIO_REQUIRE_EXTENSIONS"):
                raise
        if self._failures:
            self._warn()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(ext.name, exc)

    def _fallback(self, what, exc):
        if _flag("FASTIO_REQUIRE_EXTENSIONS"):
            raise
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if len(message) > 160:
            message = "..." + message[-157:]
        self._failures.append("%s: %s" % (what, message))

    def _warn(self):
        bar = "*" * 78
        lines = [
            bar,
            "WARNING: fastio's C extension could not be built; fastio will run on its",
            "pure-Python fallback, which is much slower.",
        ]
        lines += ["  failed: %s" % f for f in self._failures]
        lines += [
            "Install a C compiler and the Python headers (e.g. apt install gcc",
            "python3-dev), then rebuild. Set FASTIO_REQUIRE_EXTENSIONS=1 to make this",
            "an error, or FASTIO_NO_EXTENSIONS=1 to choose the fallback on purpose.",
            bar,
        ]
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()


def _extensions():
    if _flag("FASTIO_NO_EXTENSIONS") or platform.python_implementation() != "CPython":
        return []
    from Cython.Build import cythonize

    debug = _flag("FASTIO_DEBUG_BUILD")
    macros = []
    libraries = []
    compile_args = []
    if sys.platform == "win32":
        # Raise winsock's fd_set capacity (a count of sockets there, not a
        # highest fd) before any header includes winsock2.h.
        macros.append(("FD_SETSIZE", "4096"))
        libraries.append("ws2_32")
    else:
        compile_args += ["-O0", "-g"] if debug else ["-O2"]
    exts = [
        Extension(
            name,
            [source],
            include_dirs=["src"],
            define_macros=macros,
            libraries=libraries,
            extra_compile_args=compile_args,
        )
        for name, source in (
            # Each compiled module sits beside its pure-Python twin
            # (fastio/_impl/<pair>_py.py); fastio._impl chooses between them.
            ("fastio._impl.core_c", "src/_core.pyx"),
            ("fastio._impl.loop_c", "src/_loop.pyx"),
            ("fastio._impl.amqp_c", "src/_amqp.pyx"),
            ("fastio._impl.echo_c", "src/_echo.pyx"),
        )
    ]
    directives = {
        "language_level": "3",
        "boundscheck": debug,
        "wraparound": False,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
        # Not yet: the pollers' fd tables and buffers rely on the GIL to
        # serialise calls on one object. On a free-threaded build, importing
        # fastio._impl.core_c re-enables the GIL (CPython warns once).
        "freethreading_compatible": False,
    }
    return cythonize(
        exts,
        include_path=["src"],
        compiler_directives=directives,
        # Debug C goes elsewhere, so a later normal build never reuses it.
        build_dir="build/cython-debug" if debug else None,
        quiet=True,
    )


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
