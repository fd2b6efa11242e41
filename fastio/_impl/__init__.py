"""Find the compiled core, honouring FASTIO_NO_EXTENSIONS / FASTIO_REQUIRE_EXTENSIONS.

`core` is the `fastio._core` extension module, or None when fastio runs on
its pure-Python fallback; `loop` likewise for `fastio._loop` (the event
loop's hot path), `amqp` for `fastio._amqp` (AMQP publish frames) and `echo`
for `fastio._echo` (the echo protocol's per-chunk path). `IMPLEMENTATION`
names which: "cython" or "python".

A compiled module that fails to import when nobody asked for the fallback
(FASTIO_NO_EXTENSIONS unset) is a broken install: fastio still works, slower,
and says so once with a RuntimeWarning. Not an ImportWarning: the default
warning filters hide those, and this one is for the user, not for developers.
"""

import os
import sys

__all__ = ["core", "loop", "amqp", "echo", "IMPLEMENTATION"]


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _load(name="_core"):
    require = _flag("FASTIO_REQUIRE_EXTENSIONS")
    # sys.implementation, not the platform module: that one costs ms at startup.
    if _flag("FASTIO_NO_EXTENSIONS") or sys.implementation.name != "cpython":
        if require:
            raise ImportError(
                "FASTIO_REQUIRE_EXTENSIONS is set, but the extension is disabled "
                "(FASTIO_NO_EXTENSIONS or a non-CPython interpreter)"
            )
        return None
    try:
        __import__("fastio." + name)
        module = sys.modules["fastio." + name]
    except ImportError as exc:
        if require:
            raise ImportError(
                "FASTIO_REQUIRE_EXTENSIONS is set, but fastio.%s could not be "
                "imported: %s (build it with `make build` or reinstall fastio)" % (name, exc)
            ) from exc
        _warn_fallback(name, exc)
        return None
    return module


_warned = False


def _warn_fallback(name, exc):
    global _warned
    if _warned:
        return
    _warned = True
    import warnings  # not at the top: interpreter start does not load it

    warnings.warn(
        "fastio.%s could not be imported (%s): fastio runs on its pure-Python "
        "fallback, which is much slower. Rebuild fastio (`make build`, or "
        "reinstall it with a C compiler); set FASTIO_NO_EXTENSIONS=1 to choose "
        "the fallback and silence this warning." % (name, exc),
        RuntimeWarning,
        stacklevel=2,
    )


core = _load()
IMPLEMENTATION = "cython" if core is not None else "python"

# Loaded on first use (`from fastio._ext import loop`): importing fastio for
# its selectors must not pay for the loop's, AMQP's and the echo server's
# extensions (and the modules they import, such as socket).
# name -> (extension module, the attribute it needs: both or neither).
_LAZY = {
    # The loop's extension needs the core's pollers.
    "loop": ("_loop", "core"),
    # basic.publish frame encoding (fastio.rabbitmq's hot path); as the core.
    "amqp": ("_amqp", "core"),
    # The echo protocol's per-chunk path; it writes through the loop's C API.
    "echo": ("_echo", "loop"),
}


def __getattr__(name):
    try:
        module_name, needs = _LAZY[name]
    except KeyError:
        raise AttributeError("module %r has no attribute %r" % (__name__, name)) from None
    needed = globals()[needs] if needs == "core" else __getattr__(needs)
    value = _load(module_name) if needed is not None else None
    globals()[name] = value
    return value
