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
    """Let the extension build fail unless FASTIO_REQUIRE_EXTENSIONS demands it."""

    def run(self):
        try:
            super().run()
        except Exception as exc:
            self._fallback(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc)

    def _fallback(self, exc):
        if _flag("FASTIO_REQUIRE_EXTENSIONS"):
            raise
        sys.stderr.write(
            "*** fastio: building the C extension failed (%s); "
            "installing the pure-Python fallback.\n" % (exc,)
        )


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
            ("fastio._core", "src/_core.pyx"),
            ("fastio._loop", "src/_loop.pyx"),
            ("fastio._amqp", "src/_amqp.pyx"),
            ("fastio._echo", "src/_echo.pyx"),
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
        # fastio._core re-enables the GIL (CPython warns once).
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
