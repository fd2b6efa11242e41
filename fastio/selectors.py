"""Drop-in replacement for the stdlib `selectors` module.

`EpollSelector`, `PollSelector`, `SelectSelector` and `DefaultSelector` behave
as the stdlib classes of the same names, down to the exception types: CPython's
own ``test_selectors`` passes against them. They subclass
`selectors.BaseSelector`, return the stdlib `selectors.SelectorKey`, and keep
the private names that tests and subclasses reach for (``_selector``,
``_selector_cls``, ``_fd_to_key``, ``_map``, ``_fileobj_lookup``).

Beyond the stdlib:

* ``select_fds(timeout=None)`` waits like ``select()`` but returns
  ``(fd, events)`` pairs without building or looking up keys;
* ``register(..., flags=...)`` / ``modify(..., flags=...)`` pass extra poller
  bits: `EPOLLET`, `EPOLLONESHOT`, `EPOLLEXCLUSIVE`, `EPOLLRDHUP`, `EPOLLPRI`
  on `EpollSelector`; `POLLPRI`, `POLLRDHUP` on `PollSelector`. Readiness from
  the extra bits (urgent data, peer half-close) is reported as `EVENT_READ`.
  ``modify()`` without ``flags`` keeps the registered flags; with ``flags`` it
  always re-arms the fd in the kernel (what `EPOLLONESHOT` needs).

`IMPLEMENTATION` is "cython" with the compiled core, "python" on the fallback
(the stdlib classes plus the extras above).
"""

import selectors as _stdlib

from selectors import EVENT_READ, EVENT_WRITE, BaseSelector, SelectorKey

from fastio._impl import IMPLEMENTATION, compiled

_core = compiled("core")

__all__ = [
    "EVENT_READ",
    "EVENT_WRITE",
    "SelectorKey",
    "BaseSelector",
    "SelectSelector",
    "PollSelector",
    "EpollSelector",
    "UringSelector",
    "DefaultSelector",
    "IMPLEMENTATION",
    "EPOLLET",
    "EPOLLONESHOT",
    "EPOLLEXCLUSIVE",
    "EPOLLRDHUP",
    "EPOLLPRI",
    "POLLPRI",
    "POLLRDHUP",
]

if _core is not None:
    EPOLLET = _core.EPOLLET
    EPOLLONESHOT = _core.EPOLLONESHOT
    EPOLLEXCLUSIVE = _core.EPOLLEXCLUSIVE
    EPOLLRDHUP = _core.EPOLLRDHUP
    EPOLLPRI = _core.EPOLLPRI
    POLLPRI = _core.POLLPRI
    POLLRDHUP = _core.POLLRDHUP

    class SelectSelector(_core.SelectorCore, BaseSelector):
        """Selector over select(2). Same contract as `selectors.SelectSelector`.

        fds >= FD_SETSIZE may be registered; select() then raises ValueError,
        as the stdlib does. Timeouts round up to whole microseconds.
        """

        _selector_cls = _core.SelectPoller
        # The stdlib's SelectSelector.modify() is unregister() + register().
        _modify_reregisters = True

    if _core.HAVE_POLL:

        class PollSelector(_core.SelectorCore, BaseSelector):
            """Selector over poll(2). Same contract as `selectors.PollSelector`."""

            _selector_cls = _core.PollPoller

    if _core.HAVE_EPOLL:

        class EpollSelector(_core.SelectorCore, BaseSelector):
            """Selector over epoll(7). Same contract as `selectors.EpollSelector`."""

            _selector_cls = _core.EpollPoller

            def fileno(self):
                """Return the epoll file descriptor."""
                return self._selector.fileno()

            def close(self):
                """Same contract as `selectors.EpollSelector.close`."""
                self._selector.close()
                super().close()

        class UringSelector(_core.SelectorCore, BaseSelector):
            """Selector over io_uring(7) polls (`fastio._impl.core_c.UringPoller`).

            Same contract as `selectors.PollSelector`; registrations and the
            wait go to the kernel as SQEs with one io_uring_enter per
            select(). Not in the stdlib and not the default: ask for it.

            :raises OSError: io_uring is unavailable here (the message says
                why: ENOSYS, EPERM, an old kernel, FASTIO_IO_URING=0).
            """

            _selector_cls = _core.UringPoller

            def fileno(self):
                """Return the io_uring file descriptor."""
                return self._selector.fileno()

            def close(self):
                """Same contract as `selectors.PollSelector.close`."""
                self._selector.close()
                super().close()

else:
    # The twin's selectors are whole classes (see fastio._impl.core_py).
    from fastio._impl.core_py import (EPOLLET, EPOLLEXCLUSIVE, EPOLLONESHOT, EPOLLPRI, EPOLLRDHUP,
                                      POLLPRI, POLLRDHUP, SelectSelector)

    try:
        from fastio._impl.core_py import PollSelector
    except ImportError:
        pass
    try:
        from fastio._impl.core_py import EpollSelector
    except ImportError:
        pass


# fastio has no kqueue backend: where the stdlib's best choice is kqueue
# (macOS, BSD), DefaultSelector stays the stdlib's.
if "EpollSelector" in globals():
    DefaultSelector = EpollSelector
elif hasattr(_stdlib, "KqueueSelector"):
    DefaultSelector = _stdlib.DefaultSelector
elif "PollSelector" in globals():
    DefaultSelector = PollSelector
else:
    DefaultSelector = SelectSelector

for _name in ("PollSelector", "EpollSelector", "UringSelector"):
    if _name not in globals():
        __all__.remove(_name)
del _name
