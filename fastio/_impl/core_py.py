"""Pure-Python fallback selectors: the stdlib classes plus fastio's extras.

Used when the compiled core is absent (FASTIO_NO_EXTENSIONS=1, a non-CPython
interpreter, or a failed build). Behaviour is the stdlib's; the additions are
`select_fds()` and the `flags` argument of register()/modify().
"""

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
        deadline = None if timeout is None or timeout <= 0 else time.monotonic() + timeout
        while True:
            start = self._registrations
            ready = super().select(timeout)
            numbers = self._numbers
            kept = [(key, events) for key, events in ready
                    if numbers.get(key.fd, start + 1) <= start]
            if kept or not ready or (timeout is not None and timeout <= 0):
                return kept
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
