"""Turn what Loop(selector) was given into the poller and waker it drives.

The loop drives one small interface, `fastio._contracts.PollerLike`:
``register(fd, mask)``, ``modify``,
``unregister``, ``poll(timeout_seconds) -> [(fd, events)]`` with the poll(2)
bits (POLLIN, POLLOUT, POLLERR, POLLHUP), and ``close()`` -- the API of the
pollers of fastio._impl's core (compiled, or their stdlib-backed twins).
Any other `selectors.BaseSelector` is adapted through its `select()`.
"""

import selectors
from typing import Callable, Type, Union

from fastio._contracts import PollerLike, WakerLike
from fastio._impl import compiled, core, core_py

__all__ = ["make_poller", "Waker", "PollerLike", "SelectorArg"]


#: What Loop(selector) takes: None (the best backend), a selector or
#: selector class, or a poller or poller class.
SelectorArg = Union[None, selectors.BaseSelector, Type[selectors.BaseSelector], PollerLike,
                    Type[PollerLike]]


class SelectorPoller(core_py.SelectPoller):
    """Adapt any `selectors.BaseSelector` to the poller API (through its select())."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        core_py.Poller.__init__(self)
        self._drive(selector)


def make_poller(selector: SelectorArg = None) -> PollerLike:
    """Return a poller for `selector`.

    :param selector: None (the best available backend), a poller (an object
        with register/modify/unregister/poll, used as is), a poller class, or
        a `selectors.BaseSelector` instance or class (a fastio selector hands
        over its core poller; any other is adapted through select()).
    """
    if selector is None:
        if core.HAVE_EPOLL:
            return core.EpollPoller()
        return core.PollPoller() if core.HAVE_POLL else core.SelectPoller()
    if isinstance(selector, type):
        selector = selector()
    if isinstance(selector, selectors.BaseSelector):
        inner = getattr(selector, "_selector", None)
        core_c = compiled("core")
        if core_c is not None and isinstance(inner, core_c.Poller):
            return inner
        return SelectorPoller(selector)
    return selector


# The compiled core's eventfd/pipe Waker, or the twin's socket pair.
Waker: Callable[[], WakerLike] = core.Waker
