"""Find the compiled core, honouring FASTIO_NO_EXTENSIONS / FASTIO_REQUIRE_EXTENSIONS.

`core` is the `fastio._core` extension module, or None when fastio runs on
its pure-Python fallback; `loop` likewise for `fastio._loop` (the event
loop's hot path), `amqp` for `fastio._amqp` (AMQP publish frames) and `echo`
for `fastio._echo` (the echo protocol's per-chunk path). `IMPLEMENTATION`
names which: "cython" or "python".
"""

import importlib
import os
import platform

__all__ = ["core", "loop", "amqp", "echo", "IMPLEMENTATION"]


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _load(name="_core"):
    require = _flag("FASTIO_REQUIRE_EXTENSIONS")
    if _flag("FASTIO_NO_EXTENSIONS") or platform.python_implementation() != "CPython":
        if require:
            raise ImportError(
                "FASTIO_REQUIRE_EXTENSIONS is set, but the extension is disabled "
                "(FASTIO_NO_EXTENSIONS or a non-CPython interpreter)"
            )
        return None
    try:
        module = importlib.import_module("fastio." + name)
    except ImportError as exc:
        if require:
            raise ImportError(
                "FASTIO_REQUIRE_EXTENSIONS is set, but fastio.%s could not be "
                "imported: %s (build it with `make build` or reinstall fastio)" % (name, exc)
            ) from exc
        return None
    return module


core = _load()
# The loop's extension needs the core's pollers: both or neither.
loop = _load("_loop") if core is not None else None
# basic.publish frame encoding (fastio.rabbitmq's hot path); needs neither.
amqp = _load("_amqp") if core is not None else None
# The echo protocol's per-chunk path; it writes through the loop's C API.
echo = _load("_echo") if loop is not None else None
IMPLEMENTATION = "cython" if core is not None else "python"
