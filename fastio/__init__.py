"""fastio: C-accelerated IO multiplexing for CPython.

`fastio.selectors` is a drop-in, faster `selectors`; `install()` makes the
stdlib (asyncio, socketserver, subprocess, multiprocessing) use it unchanged.
`fastio.loop.Loop` is a small callback loop with fast TCP transports (also
pika's ioloop); `EventLoop` is an asyncio event loop on the same compiled
core (`new_event_loop()`, `run()`, `EventLoopPolicy`), and
`SelectorEventLoop` asyncio's own loop over a fastio selector.
`IMPLEMENTATION` is "cython" with the compiled core, "python" on the fallback.

`Loop`, the asyncio loop classes, `new_event_loop` and `run` are imported
on first use, so that ``import fastio`` for the selectors does not import
asyncio.
"""

# Nothing heavy at import: `import fastio; fastio.install()` at the top of a
# program must not slow its start (benchmarks/bench_import.py), and `typing`
# alone costs more than that: annotations are strings, and the names they use
# are imported for type checkers only (mypy and pyright read TYPE_CHECKING
# as true).
from __future__ import annotations

import os as _os

from fastio._install import install, installed, uninstall

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List

    from fastio._aio import EventLoop, EventLoopPolicy, SelectorEventLoop, new_event_loop, run
    from fastio._impl import IMPLEMENTATION
    from fastio.loop import Loop

if _os.environ.get("FASTIO_REQUIRE_EXTENSIONS", "") not in ("", "0"):
    # Fail at import, not at first use, when the extension is demanded.
    import fastio._impl  # noqa: F401

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

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"

_LAZY = ("Loop", "EventLoop", "EventLoopPolicy", "SelectorEventLoop", "new_event_loop", "run")


def __getattr__(name: str) -> Any:
    """Import the lazy attributes (`Loop`, the asyncio loop classes, `new_event_loop`, `run`) on first use.

    :raises AttributeError: `name` is not an attribute of fastio.
    """
    if name == "IMPLEMENTATION":
        from fastio._impl import IMPLEMENTATION

        return IMPLEMENTATION
    if name == "Loop":
        from fastio.loop import Loop

        return Loop
    if name in _LAZY:
        from fastio import _aio

        return getattr(_aio, name)
    raise AttributeError("module 'fastio' has no attribute %r" % (name,))


def __dir__() -> List[str]:
    """List fastio's attributes, the lazy ones included."""
    return sorted(set(globals()) | set(_LAZY) | {"IMPLEMENTATION"})
