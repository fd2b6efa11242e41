"""fastio's implementations satisfy its contracts (fastio._contracts).

Type-checked, not run (tests/test_typing.py): each assignment is an error
for mypy the day an implementation drifts from its Protocol.
"""

from typing import List

from fastio import _pollers
from fastio._impl import core_c as _core
from fastio._contracts import IOLoopLike, LoopLike, PollerLike, WakerLike
from fastio.loop import Loop

loop = Loop()
as_loop: LoopLike = loop
as_ioloop: IOLoopLike = loop
pollers: List[PollerLike] = [_core.EpollPoller(), _core.PollPoller(), _core.SelectPoller(),
                             _pollers.make_poller()]
wakers: List[WakerLike] = [_core.Waker(), _pollers.Waker()]
