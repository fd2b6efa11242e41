"""asyncio on fastio: a stdlib SelectorEventLoop over a fastio selector."""

import asyncio
import sys
from typing import Any, Coroutine, Optional, TypeVar

__all__ = ["new_event_loop", "run"]

_T = TypeVar("_T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Return an asyncio event loop waiting on `fastio.selectors.DefaultSelector`.

    Usable as ``asyncio.run(main(), loop_factory=fastio.new_event_loop)``
    on Python 3.12+.
    """
    from fastio.selectors import DefaultSelector

    return asyncio.SelectorEventLoop(DefaultSelector())


def run(main: Coroutine[Any, Any, _T], *, debug: Optional[bool] = None) -> _T:
    """Run coroutine `main` on a fresh `new_event_loop()`; same contract as `asyncio.run`."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    # 3.9/3.10: asyncio.run() with the policy's loop factory swapped in.
    # An instance attribute shadows the policy's method until deleted.
    policy: Any = asyncio.get_event_loop_policy()
    policy.new_event_loop = new_event_loop
    try:
        return asyncio.run(main, debug=debug)
    finally:
        del policy.new_event_loop
