"""asyncio on fastio: a stdlib SelectorEventLoop over a fastio selector."""

import asyncio
import sys

__all__ = ["new_event_loop", "run"]


def new_event_loop():
    """Return an `asyncio.SelectorEventLoop` over `fastio.selectors.DefaultSelector`.

    Usable as ``asyncio.run(main(), loop_factory=fastio.new_event_loop)``
    on Python 3.12+.
    """
    from fastio.selectors import DefaultSelector

    return asyncio.SelectorEventLoop(DefaultSelector())


def run(main, *, debug=None):
    """Run coroutine `main` on a fresh `new_event_loop()`; same contract as `asyncio.run`."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    # 3.9/3.10: asyncio.run() with the policy's loop factory swapped in.
    # An instance attribute shadows the policy's method until deleted.
    policy = asyncio.get_event_loop_policy()
    policy.new_event_loop = new_event_loop
    try:
        return asyncio.run(main, debug=debug)
    finally:
        del policy.new_event_loop
