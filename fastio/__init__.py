"""fastio: C-accelerated IO multiplexing for CPython.

`fastio.selectors` is a drop-in, faster `selectors`; `install()` makes the
stdlib (asyncio, socketserver, subprocess, multiprocessing) use it unchanged.
`fastio.loop.Loop` is a small callback loop with fast TCP transports (also
pika's ioloop); `new_event_loop()` / `run()` run asyncio over fastio.
`IMPLEMENTATION` is "cython" with the compiled core, "python" on the fallback.
"""

# Nothing heavy at import: `import fastio; fastio.install()` at the top of a
# program must not slow its start (benchmarks/bench_import.py).
import os as _os

from fastio._install import install, installed, uninstall

if _os.environ.get("FASTIO_REQUIRE_EXTENSIONS", "") not in ("", "0"):
    # Fail at import, not at first use, when the extension is demanded.
    import fastio._ext  # noqa: F401

__all__ = [
    "IMPLEMENTATION",
    "install",
    "installed",
    "uninstall",
    "Loop",
    "new_event_loop",
    "run",
    "__version__",
]

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import fastio` for the selectors should not import asyncio.
    if name == "IMPLEMENTATION":
        from fastio._ext import IMPLEMENTATION

        return IMPLEMENTATION
    if name == "Loop":
        from fastio.loop import Loop

        return Loop
    if name in ("new_event_loop", "run"):
        from fastio import _aio

        return getattr(_aio, name)
    raise AttributeError("module 'fastio' has no attribute %r" % (name,))
