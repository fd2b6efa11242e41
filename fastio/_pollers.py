"""Turn what Loop(selector) was given into the poller and waker it drives.

The loop drives one small interface, `fastio._contracts.PollerLike`:
``register(fd, mask)``, ``modify``,
``unregister``, ``poll(timeout_seconds) -> [(fd, events)]`` with the poll(2)
bits (POLLIN, POLLOUT, POLLERR, POLLHUP), and ``close()`` -- the API of the
pollers of fastio._impl's core (compiled, or their stdlib-backed twins).
Any other `selectors.BaseSelector` is adapted through its `select()`.
"""

import selectors
from typing import Any, Callable, Optional, Tuple, Type, Union

from fastio._contracts import PollerLike, WakerLike
from fastio._impl import compiled, core, core_py

__all__ = ["make_poller", "backend_poller", "BACKENDS", "Waker", "PollerLike", "SelectorArg"]


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
    missing = [name for name in _POLLER_METHODS if not callable(getattr(selector, name, None))]
    if missing:
        raise TypeError(
            "selector must be None, a poller, or a selector class or instance, not %r (no %s); "
            "to choose a backend by name, pass backend=" % (type(selector).__name__, ", ".join(missing)))
    return selector


# What the loop calls on a poller it is given.
_POLLER_METHODS = ("register", "modify", "unregister", "poll", "close")


#: The backends a Loop or EventLoop can be asked for by name.
BACKENDS = ("epoll", "poll", "select", "io_uring")

# io_uring's buffer ring for a Loop's transports: 128 x 64 KiB, as the echo
# server's (a receive is at most 64 KiB; the ring is shared by all
# connections and each buffer goes back once its bytes are delivered).
URING_NBUFS = 128
URING_BUFSIZE = 64 * 1024


def uring_poller(nbufs: int = 0) -> Tuple[Any, Optional[str]]:
    """Return (a fastio._impl.core_c.UringPoller, None), or (None, why io_uring
    is unavailable here); `nbufs` provided buffers of URING_BUFSIZE bytes."""
    core_c = compiled("core")
    if core_c is None or not hasattr(core_c, "UringPoller"):
        return None, "fastio's C extension is not available"
    try:
        return core_c.UringPoller(nbufs=nbufs, bufsize=URING_BUFSIZE), None
    except OSError as exc:
        return None, exc.strerror or str(exc)


def fallback_name() -> str:
    """Return the backend used when io_uring is refused: the best of the rest."""
    return "epoll" if core.HAVE_EPOLL else "poll" if core.HAVE_POLL else "select"


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
    cls = {"epoll": "EpollPoller", "poll": "PollPoller", "select": "SelectPoller"}[backend]
    have = {"epoll": core.HAVE_EPOLL, "poll": core.HAVE_POLL, "select": True}[backend]
    if have:
        return getattr(core, cls)()
    raise ValueError("backend %r is not available on this platform" % (backend,))


# The compiled core's eventfd/pipe Waker, or the twin's socket pair.
Waker: Callable[[], WakerLike] = core.Waker
