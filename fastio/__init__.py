"""fastio: C-accelerated IO multiplexing for CPython.

`fastio.selectors` is a drop-in, faster `selectors`; `install()` makes the
stdlib (asyncio, socketserver, subprocess, multiprocessing) use it unchanged.
`fastio.loop.Loop` is a small callback loop with fast TCP transports (also
pika's ioloop); `EventLoop` is an asyncio event loop on the same compiled
core (`new_event_loop()`, `run()`, `EventLoopPolicy`), and
`SelectorEventLoop` asyncio's own loop over a fastio selector.
`IMPLEMENTATION` is "cython" with the compiled core, "python" on the fallback.
"""

from fastio._ext import IMPLEMENTATION
from fastio._install import install, installed, uninstall

__all__ = [
    "IMPLEMENTATION",
    "install",
    "installed",
    "uninstall",
    "Loop",
    "EventLoop",
    "EventLoopPolicy",
    "SelectorEventLoop",
    "new_event_loop",
    "run",
    "__version__",
]

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import fastio` for the selectors should not import asyncio.
    if name == "Loop":
        from fastio.loop import Loop

        return Loop
    if name in ("EventLoop", "EventLoopPolicy", "SelectorEventLoop", "new_event_loop", "run"):
        from fastio import _aio

        return getattr(_aio, name)
    raise AttributeError("module 'fastio' has no attribute %r" % (name,))
