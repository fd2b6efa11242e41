"""Pick the loop's poller and waker: fastio._core's, or stdlib stand-ins.

The loop drives one small interface, `fastio._contracts.PollerLike`:
``register(fd, mask)``, ``modify``, ``unregister``,
``poll(timeout_seconds) -> [(fd, events)]`` with the poll(2) bits (POLLIN,
POLLOUT, POLLERR, POLLHUP), and ``close()`` -- the API of fastio._core's
pollers. Without the extension, `select.epoll` (whose bits
equal poll's on Linux) and `select.poll` are wrapped to match; any
`selectors.BaseSelector` is adapted through its `select()`.
"""

import math
import select
import selectors
import socket
from typing import Callable, Type, Union

from fastio._contracts import PollerLike, WakerLike
from fastio._ext import core

__all__ = ["make_poller", "Waker", "PollerLike", "SelectorArg"]


#: What Loop(selector) takes: None (the best backend), a selector or
#: selector class, or a poller or poller class.
SelectorArg = Union[None, selectors.BaseSelector, Type[selectors.BaseSelector], PollerLike,
                    Type[PollerLike]]

POLLIN, POLLOUT, POLLERR, POLLHUP = 0x001, 0x004, 0x008, 0x010


class _StdlibEpoll:
    """`select.epoll` with the core poller's API (its bits are poll's)."""

    def __init__(self):
        self._ep = select.epoll()
        self.register = self._ep.register
        self.modify = self._ep.modify
        self.unregister = self._ep.unregister
        self.close = self._ep.close

    def poll(self, timeout=None):
        # select.epoll rounds a float timeout up to whole ms, like the core.
        return self._ep.poll(-1 if timeout is None else timeout)


class _StdlibPoll:
    """`select.poll` with the core poller's API (seconds, rounded up to ms)."""

    def __init__(self):
        self._p = select.poll()
        self.register = self._p.register
        self.modify = self._p.modify
        self.unregister = self._p.unregister

    def poll(self, timeout=None):
        return self._p.poll(None if timeout is None else math.ceil(timeout * 1e3))

    def close(self):
        pass


class SelectorPoller:
    """Adapt a `selectors.BaseSelector` to the poller API."""

    def __init__(self, selector):
        self._sel = selector
        self.close = selector.close

    @staticmethod
    def _events(mask):
        events = (selectors.EVENT_READ if mask & POLLIN else 0) | (
            selectors.EVENT_WRITE if mask & POLLOUT else 0)
        return events or selectors.EVENT_READ

    def register(self, fd, mask):
        self._sel.register(fd, self._events(mask))

    def modify(self, fd, mask):
        self._sel.modify(fd, self._events(mask))

    def unregister(self, fd):
        self._sel.unregister(fd)

    def poll(self, timeout=None):
        return [(key.fd, (POLLIN if ev & selectors.EVENT_READ else 0)
                 | (POLLOUT if ev & selectors.EVENT_WRITE else 0))
                for key, ev in self._sel.select(timeout)]


def make_poller(selector: SelectorArg = None) -> PollerLike:
    """Return a poller for `selector`.

    :param selector: None (the best available backend), a poller (an object
        with register/modify/unregister/poll, used as is), a poller class, or
        a `selectors.BaseSelector` instance or class (a fastio selector hands
        over its core poller; any other is adapted through select()).
    """
    if selector is None:
        if core is not None:
            if core.HAVE_EPOLL:
                return core.EpollPoller()
            return core.PollPoller() if core.HAVE_POLL else core.SelectPoller()
        if hasattr(select, "epoll"):
            return _StdlibEpoll()
        if hasattr(select, "poll"):
            return _StdlibPoll()
        return SelectorPoller(selectors.SelectSelector())
    if isinstance(selector, type):
        selector = selector()
    if isinstance(selector, selectors.BaseSelector):
        inner = getattr(selector, "_selector", None)
        if core is not None and isinstance(inner, core.Poller):
            return inner
        return SelectorPoller(selector)
    return selector  # a poller: used as is



class _SocketPairWaker:
    """Stand-in for fastio._core.Waker over a socket pair."""

    def __init__(self):
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self):
        return self._r.fileno()

    def wake(self):
        try:
            self._w.send(b"\0")
        except OSError:
            pass  # full (already readable) or closed

    def drain(self):
        woken = False
        try:
            while self._r.recv(4096):
                woken = True
        except OSError:
            pass
        return woken

    def close(self):
        self._r.close()
        self._w.close()


# The core's eventfd/pipe Waker, or a socket pair without the extension.
Waker: Callable[[], WakerLike] = core.Waker if core is not None else _SocketPairWaker
