# Waker: wake a blocked wait from another thread.
#
# Linux: one eventfd (eventfd(2)) -- a counter, so any number of wakes stay
# one readable fd and never fill up. Elsewhere: a non-blocking pipe; a full
# pipe is already readable, so EAGAIN on write is success. Windows has
# neither and gets a connected socket pair.
#
# wake() writes only when no wake-up is pending (an atomic flag), so a storm
# of call_soon_threadsafe() costs one syscall per loop iteration, not one per
# call. drain() reads first and clears the flag after: a wake() racing with
# it either sees the flag still set (and its caller's work is picked up by
# the iteration that follows drain) or writes again.


cdef class Waker:
    """Cross-thread wake-up: register `fileno()` for reading, call `wake()`."""

    cdef int _rfd
    cdef int _wfd
    cdef long _pending
    cdef object _socks

    def __cinit__(self):
        cdef int fds[2]
        fds[0] = fds[1] = -1  # set by fastio_waker_open (gcc cannot tell)
        self._rfd = self._wfd = -1
        if not FASTIO_WINSOCK:
            if fastio_waker_open(fds) < 0:
                _raise_errno(fastio_last_error())
            self._rfd = fds[0]
            self._wfd = fds[1]
            return
        import socket
        self._socks = socket.socketpair()
        for s in self._socks:
            s.setblocking(False)
        self._rfd = self._socks[0].fileno()
        self._wfd = self._socks[1].fileno()

    def __dealloc__(self):
        if self._socks is None:
            self._close_fds()

    cdef void _close_fds(self) noexcept:
        if self._rfd >= 0:
            fastio_close_fd(self._rfd)
        if self._wfd >= 0 and self._wfd != self._rfd:
            fastio_close_fd(self._wfd)
        self._rfd = self._wfd = -1

    def fileno(self):
        """Return the fd that becomes readable on wake()."""
        if self._rfd < 0:
            raise ValueError("I/O operation on closed waker")
        return self._rfd

    def wake(self):
        """Make fileno() readable. Thread-safe; does nothing once closed."""
        if self._wfd < 0:
            return
        if fastio_atomic_exchange(&self._pending, 1) != 0:
            return
        if self._socks is not None:
            try:
                self._socks[1].send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass
            return
        if fastio_waker_write(self._wfd) < 0:
            _raise_errno(fastio_last_error())

    def drain(self):
        """Consume pending wake-ups.

        :returns: True if there was one.
        """
        cdef int r
        if self._rfd < 0:
            return False
        if self._socks is not None:
            woken = False
            try:
                while self._socks[0].recv(4096):
                    woken = True
            except (BlockingIOError, InterruptedError):
                pass
            fastio_atomic_exchange(&self._pending, 0)
            return woken
        r = fastio_waker_drain(self._rfd)
        fastio_atomic_exchange(&self._pending, 0)
        if r < 0:
            _raise_errno(fastio_last_error())
        return r == 1

    def close(self):
        """Close the fds. Calling it again does nothing."""
        if self._socks is not None:
            for s in self._socks:
                s.close()
            self._rfd = self._wfd = -1
        else:
            self._close_fds()

    @property
    def closed(self):
        return self._rfd < 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
