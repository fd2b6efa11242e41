"""Pure-Python twin of src/_core.pyx: pollers, waker and selectors on the stdlib.

fastio._impl runs it when core_c is absent (FASTIO_NO_EXTENSIONS=1, a
non-CPython interpreter, or a failed build).

* The pollers (`EpollPoller`, `PollPoller`, `SelectPoller`) and `Waker` have
  the compiled ones' API, what the loop drives: ``register(fd, mask)``,
  ``modify``, ``unregister``, ``poll(timeout_seconds) -> [(fd, events)]``
  with the poll(2) bits, ``close()``. `select.epoll` (whose bits equal
  poll's on Linux) and `select.poll` are wrapped to match; the waker is a
  socket pair.
* The selectors: the compiled core gives fastio.selectors a `SelectorCore`
  to put under `selectors.BaseSelector`; here the classes are whole
  (`SelectSelector`, `PollSelector`, `EpollSelector`): the stdlib's, plus
  `select_fds()` and the `flags` argument of register()/modify().
"""

import math
import select
import selectors
import time

from selectors import EVENT_READ, EVENT_WRITE

# Bound now: after fastio.install() the module attributes name our classes.
_BaseSelectorImpl = selectors._BaseSelectorImpl
_StdSelectSelector = selectors.SelectSelector


class _Extras:
    """`select_fds()` and `flags` on top of a stdlib selector class."""

    #: Extra poller bits register()/modify() accept through ``flags``.
    _flag_mask = 0

    def select_fds(self, timeout=None):
        """Wait like select(), but return ``(fd, events)`` pairs instead of keys."""
        return [(key.fd, events) for key, events in self.select(timeout)]

    def _check_flags(self, flags):
        if flags & ~self._flag_mask:
            raise ValueError("unsupported flags for %s: %r" % (type(self).__name__, flags))

    def register(self, fileobj, events, data=None, *, flags=0):
        self._check_flags(flags)
        if not flags:
            return super().register(fileobj, events, data)
        key = _BaseSelectorImpl.register(self, fileobj, events, data)
        mask = flags
        if events & EVENT_READ:
            mask |= self._EVENT_READ
        if events & EVENT_WRITE:
            mask |= self._EVENT_WRITE
        try:
            self._selector.register(key.fd, mask)
        except BaseException:
            _BaseSelectorImpl.unregister(self, fileobj)
            raise
        self._fastio_flags[key.fd] = flags
        return key

    def unregister(self, fileobj):
        key = super().unregister(fileobj)
        self._fastio_flags.pop(key.fd, None)
        return key

    def modify(self, fileobj, events, data=None, *, flags=None):
        try:
            fd = self._fileobj_lookup(fileobj)
        except ValueError:
            fd = None
        if flags is None:
            if not self._fastio_flags.get(fd):
                return super().modify(fileobj, events, data)
            flags = self._fastio_flags[fd]
            try:
                key = self._fd_to_key[fd]
            except KeyError:
                raise KeyError("{!r} is not registered".format(fileobj)) from None
            if events == key.events:
                # Same events, flags kept: no syscall, as the stdlib.
                if data != key.data:
                    key = key._replace(events=events, data=data)
                    self._fd_to_key[key.fd] = key
                return key
        self._check_flags(flags)
        try:
            key = self._fd_to_key[self._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError("{!r} is not registered".format(fileobj)) from None
        mask = flags
        if events & EVENT_READ:
            mask |= self._EVENT_READ
        if events & EVENT_WRITE:
            mask |= self._EVENT_WRITE
        try:
            self._selector.modify(key.fd, mask)
        except BaseException:
            _BaseSelectorImpl.unregister(self, fileobj)
            self._fastio_flags.pop(key.fd, None)
            raise
        self._fastio_flags[key.fd] = flags
        key = key._replace(events=events, data=data)
        self._fd_to_key[key.fd] = key
        return key

    @property
    def _fastio_flags(self):
        try:
            return self.__dict__["_fastio_flags_map"]
        except KeyError:
            return self.__dict__.setdefault("_fastio_flags_map", {})


class _Numbered:
    """Never return a report made while its fd was not registered.

    select(2) and poll(2) wait on the fds registered when the wait began. If
    another thread unregisters an fd, reads it and registers it again while
    the wait is blocked, the wait's report for it means nothing by the time
    it is returned. Each registration gets a number; reports of fds whose
    registration is newer than the wait are dropped, and the wait goes on
    with the time left (an fd still ready is reported by the next wait).
    """

    def __init__(self):
        super().__init__()
        self._registrations = 0
        self._numbers = {}

    def register(self, fileobj, events, data=None, *, flags=0):
        key = super().register(fileobj, events, data, flags=flags)
        self._registrations += 1
        self._numbers[key.fd] = self._registrations
        return key

    def unregister(self, fileobj):
        key = super().unregister(fileobj)
        self._numbers.pop(key.fd, None)
        return key

    def select(self, timeout=None):
        # (the deadline is worked out once the stdlib took the timeout: a
        # type it refuses fails there, with its error)
        started, deadline = time.monotonic(), None
        while True:
            start = self._registrations
            ready = super().select(timeout)
            numbers = self._numbers
            # An fd without a number was registered through the private names
            # (a subclass calling _BaseSelectorImpl.register): keep its reports.
            kept = [(key, events) for key, events in ready
                    if numbers.get(key.fd, 0) <= start]
            if kept or not ready or (timeout is not None and timeout <= 0):
                return kept
            if timeout is not None and deadline is None:
                deadline = started + float(timeout)
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return kept


class _SelectExtras(_Extras):
    """`_Extras` for select(2), which takes no flags."""

    def register(self, fileobj, events, data=None, *, flags=0):
        self._check_flags(flags)
        return _StdSelectSelector.register(self, fileobj, events, data)

    def unregister(self, fileobj):
        return _StdSelectSelector.unregister(self, fileobj)

    def modify(self, fileobj, events, data=None, *, flags=None):
        if flags:
            self._check_flags(flags)
        return _StdSelectSelector.modify(self, fileobj, events, data)


class SelectSelector(_Numbered, _SelectExtras, _StdSelectSelector):
    __doc__ = selectors.SelectSelector.__doc__


if hasattr(selectors, "PollSelector"):

    class PollSelector(_Numbered, _Extras, selectors.PollSelector):
        __doc__ = selectors.PollSelector.__doc__
        _flag_mask = select.POLLPRI | getattr(select, "POLLRDHUP", 0)


if hasattr(selectors, "EpollSelector"):

    class EpollSelector(_Extras, selectors.EpollSelector):
        __doc__ = selectors.EpollSelector.__doc__
        _flag_mask = (
            select.EPOLLET
            | select.EPOLLONESHOT
            | getattr(select, "EPOLLEXCLUSIVE", 0)
            | getattr(select, "EPOLLRDHUP", 0)
            | select.EPOLLPRI
        )


# ------------------------------------------------------------------ pollers

HAVE_EPOLL = hasattr(select, "epoll")
HAVE_POLL = hasattr(select, "poll")
HAVE_EVENTFD = False  # the twin's Waker is a socket pair

# poll(2)'s bits, which the pollers use whatever their syscall (as the
# compiled ones); the selectors' extra flags (POLLPRI, POLLRDHUP, EPOLL*) are
# 0 where this platform's select module has no such bit.
POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 0x001, 0x004, 0x008, 0x010, 0x020
POLLPRI = getattr(select, "POLLPRI", 0)
POLLRDHUP = getattr(select, "POLLRDHUP", 0)
EPOLLIN = getattr(select, "EPOLLIN", 0)
EPOLLPRI = getattr(select, "EPOLLPRI", 0)
EPOLLOUT = getattr(select, "EPOLLOUT", 0)
EPOLLERR = getattr(select, "EPOLLERR", 0)
EPOLLHUP = getattr(select, "EPOLLHUP", 0)
EPOLLRDHUP = getattr(select, "EPOLLRDHUP", 0)
EPOLLET = getattr(select, "EPOLLET", 0)
EPOLLONESHOT = getattr(select, "EPOLLONESHOT", 0)
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)


class Poller:
    """Base of the pollers: the compiled `Poller`'s API over a stdlib object."""

    #: Extra bits register() accepts beyond poll's; the stand-ins pass all through.
    flag_mask = 0

    def __init__(self):
        self.closed = False

    def __len__(self):
        return len(self._fds)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def register(self, fd, eventmask=POLLIN | POLLOUT):
        """Watch `fd` for the poll bits in `eventmask`."""
        self._register(fd, eventmask)
        self._fds.add(fd if isinstance(fd, int) else fd.fileno())

    def modify(self, fd, eventmask):
        """Change the bits `fd` is watched for."""
        self._modify(fd, eventmask)

    def unregister(self, fd):
        """Stop watching `fd`."""
        self._unregister(fd)
        self._fds.discard(fd if isinstance(fd, int) else fd.fileno())

    def poll(self, timeout=None, maxevents=-1):
        """Wait up to `timeout` seconds (None: forever); return ``(fd, events)`` pairs."""
        events = self._poll(timeout)
        return events if maxevents < 0 else events[:maxevents]

    def close(self):
        """Release the poller; idempotent."""
        if not self.closed:
            self.closed = True
            self._close()


class EpollPoller(Poller):
    """`select.epoll` with the compiled poller's API (its bits are poll's)."""

    def __init__(self):
        super().__init__()
        self._fds = set()
        self._ep = select.epoll()
        self._register = self._ep.register
        self._modify = self._ep.modify
        self._unregister = self._ep.unregister
        self._close = self._ep.close

    def fileno(self):
        """Return the epoll file descriptor."""
        return self._ep.fileno()

    def _poll(self, timeout):
        # select.epoll rounds a float timeout up to whole ms, like the core.
        return self._ep.poll(-1 if timeout is None else timeout)


class PollPoller(Poller):
    """`select.poll` with the compiled poller's API (seconds, rounded up to ms)."""

    def __init__(self):
        super().__init__()
        self._fds = set()
        self._p = select.poll()
        self._register = self._p.register
        self._modify = self._p.modify
        self._unregister = self._p.unregister

    def _poll(self, timeout):
        return self._p.poll(None if timeout is None else math.ceil(timeout * 1e3))

    def _close(self):
        pass


class SelectPoller(Poller):
    """select(2), through the stdlib's selector, with the poller API (POLLIN/POLLOUT)."""

    def __init__(self):
        super().__init__()
        self._drive(_StdSelectSelector())

    def _drive(self, selector):
        # The selector whose select() this poller runs; the poller owns it.
        self._fds = set()
        self._sel = selector
        self._close = selector.close

    @staticmethod
    def _events(mask):
        events = (EVENT_READ if mask & POLLIN else 0) | (EVENT_WRITE if mask & POLLOUT else 0)
        return events or EVENT_READ

    def _register(self, fd, mask):
        self._sel.register(fd, self._events(mask))

    def _modify(self, fd, mask):
        self._sel.modify(fd, self._events(mask))

    def _unregister(self, fd):
        self._sel.unregister(fd)

    def _poll(self, timeout):
        return [(key.fd, (POLLIN if ev & EVENT_READ else 0) | (POLLOUT if ev & EVENT_WRITE else 0))
                for key, ev in self._sel.select(timeout)]


class Waker:
    """Cross-thread wake-up over a socket pair: register `fileno()` for reading, call `wake()`."""

    def __init__(self):
        import socket  # not at the top: the selectors alone do not need it

        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def fileno(self):
        """Return the fd to watch for reading."""
        return self._r.fileno()

    def wake(self):
        """Make `fileno()` readable; from any thread, never blocks."""
        try:
            self._w.send(b"\0")
        except OSError:
            pass  # full (already readable) or closed

    def drain(self):
        """Consume the wake-ups; return whether there were any."""
        woken = False
        try:
            while self._r.recv(4096):
                woken = True
        except OSError:
            pass
        return woken

    def close(self):
        """Close both ends; idempotent."""
        self.closed = True
        self._r.close()
        self._w.close()
