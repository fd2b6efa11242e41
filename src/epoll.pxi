# EpollPoller: epoll(7).
#
# Traps (epoll(7), epoll_ctl(2)):
# * The interest list holds (file description, fd number) pairs. Closing an
#   fd removes its entry only when no other fd (a dup(), a forked child)
#   still refers to the same file; so unregister before close, as the
#   selectors contract asks. An entry for a closed fd cannot be removed any
#   more (EBADF); one whose number was reused gives ENOENT. Both are
#   "already gone" for unregister().
# * Regular files and directories cannot be watched: EPERM at register.
# * EPOLLEXCLUSIVE is accepted only by EPOLL_CTL_ADD (EINVAL on MOD).
# * EPOLLONESHOT disables the fd after one event; EPOLL_CTL_MOD re-arms it.
# Timeouts are whole milliseconds; fastio rounds up so a wait is never early.


cdef class EpollPoller(Poller):
    """Readiness poller over epoll(7); masks are EPOLL* bits."""

    cdef int _epfd

    def __cinit__(self, *args, **kwargs):
        self._epfd = -1
        self._kernel_table = True
        self.flag_mask = EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE | EPOLLRDHUP | EPOLLPRI
        if not FASTIO_HAVE_EPOLL:
            raise OSError(ENOSYS, "epoll is not available on this platform")
        self._epfd = fastio_epoll_create()
        if self._epfd < 0:
            PyErr_SetFromErrno(OSError)

    def __dealloc__(self):
        if self._epfd >= 0:
            fastio_close_fd(self._epfd)
            self._epfd = -1

    cdef int _ctl(self, int op, long long fd, uint32_t mask) except -1:
        if fd > 2147483647:
            raise OverflowError("Python int too large to convert to C int")
        if fastio_epoll_ctl(self._epfd, op, <int>fd, mask) < 0:
            _raise_errno(fastio_last_error())
        return 0

    cdef int _sys_add(self, long long fd, uint32_t mask) except -1:
        self._ctl(EPOLL_CTL_ADD, fd, mask)
        return 0

    cdef int _sys_mod(self, long long fd, int slot, uint32_t mask) except -1:
        return self._ctl(EPOLL_CTL_MOD, fd, mask)

    cdef int _sys_del(self, long long fd, int slot, uint32_t mask) except -1:
        return self._ctl(EPOLL_CTL_DEL, fd, 0)

    cdef Py_ssize_t _wait_once(self, int64_t timeout_ns, Py_ssize_t maxevents) except -2:
        cdef int n, err = 0
        cdef int ms = ns_to_ms(timeout_ns)
        cdef Py_ssize_t cap = self._count
        cdef int epfd = self._epfd
        if 0 < maxevents < cap:
            cap = maxevents
        self._reserve(cap)
        if cap < 1:
            cap = 1
        if ms == 0:
            # Nothing to wait for: keep the GIL, save two context switches.
            n = fastio_epoll_wait(epfd, self._buf, <int>cap, 0)
            if n < 0:
                err = fastio_last_error()
        else:
            with nogil:
                n = fastio_epoll_wait(epfd, self._buf, <int>cap, ms)
                if n < 0:
                    err = fastio_last_error()
        self._err = err
        return n

    def fileno(self):
        """Return the epoll file descriptor."""
        self._check_open()
        return self._epfd

    def close(self):
        """Close the epoll fd. Calling it again does nothing."""
        if not self.closed:
            self.closed = True
            fastio_close_fd(self._epfd)
            self._epfd = -1
