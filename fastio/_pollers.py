"""Pick the loop's poller and waker: fastio._core's, or stdlib stand-ins.

The loop drives one small interface: ``register(fd, mask)``, ``modify``,
``unregister``, ``poll(timeout_seconds) -> [(fd, events)]`` with the poll(2)
bits (POLLIN, POLLOUT, POLLERR, POLLHUP), and ``close()`` -- the API of
fastio._core's pollers. Without the extension, `select.epoll` (whose bits
equal poll's on Linux) and `select.poll` are wrapped to match; any
`selectors.BaseSelector` is adapted through its `select()`.
"""

import math
import select
import selectors
import socket
import typing
from typing import Any, List, Optional, Tuple, Type, Union

from fastio._ext import core

__all__ = ["make_poller", "backend_poller", "BACKENDS", "Waker", "PollerLike", "SelectorArg"]


class PollerLike(typing.Protocol):
    """What the loop drives: the API of fastio._core's pollers."""

    def register(self, fd: int, eventmask: int) -> None: ...
    def modify(self, fd: int, eventmask: int) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def poll(self, timeout: Optional[float] = ...) -> List[Tuple[int, int]]: ...
    def close(self) -> None: ...


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


def make_poller(selector: SelectorArg = None) -> Any:
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
    return selector



#: The backends a Loop or EventLoop can be asked for by name.
BACKENDS = ("epoll", "poll", "select", "io_uring")

# io_uring's buffer ring for a Loop's transports: 128 x 64 KiB, as the echo
# server's (a receive is at most 64 KiB; the ring is shared by all
# connections and each buffer goes back once its bytes are delivered).
URING_NBUFS = 128
URING_BUFSIZE = 64 * 1024


def uring_poller(nbufs: int = 0) -> Tuple[Any, Optional[str]]:
    """Return (a fastio._core.UringPoller, None), or (None, why io_uring is
    unavailable here); `nbufs` provided buffers of URING_BUFSIZE bytes."""
    if core is None or not hasattr(core, "UringPoller"):
        return None, "fastio's C extension is not available"
    try:
        return core.UringPoller(nbufs=nbufs, bufsize=URING_BUFSIZE), None
    except OSError as exc:
        return None, exc.strerror or str(exc)


def fallback_name() -> str:
    """Return the backend used when io_uring is refused: the best of the rest."""
    if core is not None:
        return "epoll" if core.HAVE_EPOLL else "poll" if core.HAVE_POLL else "select"
    return "epoll" if hasattr(select, "epoll") else "poll" if hasattr(select, "poll") else "select"


def uring_fallback_notice(who: str, reason: Optional[str]) -> None:
    """Say, in one line, that io_uring was asked for and `who` runs on the fallback."""
    import warnings

    warnings.warn("%s: io_uring is unavailable (%s); using %s" % (who, reason, fallback_name()),
                  RuntimeWarning, stacklevel=4)


def backend_poller(backend: str, who: str) -> Any:
    """Return a poller for the backend named `backend` (see BACKENDS).

    "io_uring" gives a UringPoller with a buffer ring, so a Loop's transports
    are completion-based; where io_uring is refused, the best other backend
    with a one-line RuntimeWarning naming `who` and the reason.

    :raises ValueError: an unknown name, or a backend this platform lacks.
    """
    if backend == "io_uring":
        poller, reason = uring_poller(URING_NBUFS)
        if poller is not None:
            return poller
        uring_fallback_notice(who, reason)
        return make_poller(None)
    if backend not in BACKENDS:
        raise ValueError("backend must be one of %s, not %r" % (", ".join(BACKENDS), backend))
    if core is not None:
        cls = {"epoll": "EpollPoller", "poll": "PollPoller", "select": "SelectPoller"}[backend]
        have = {"epoll": core.HAVE_EPOLL, "poll": core.HAVE_POLL, "select": True}[backend]
        if have:
            return getattr(core, cls)()
    elif backend == "epoll" and hasattr(select, "epoll"):
        return _StdlibEpoll()
    elif backend == "poll" and hasattr(select, "poll"):
        return _StdlibPoll()
    elif backend == "select":
        return SelectorPoller(selectors.SelectSelector())
    raise ValueError("backend %r is not available on this platform" % (backend,))


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
Waker: Any = core.Waker if core is not None else _SocketPairWaker
