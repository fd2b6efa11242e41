# SelectPoller: select(2).
#
# An fd_set is a bitmap of FD_SETSIZE bits on POSIX: FD_SET with a larger fd
# writes past it. So fds that don't fit are accepted at register() (the
# stdlib's SelectSelector accepts them too), kept in the table's dict part,
# and make every wait raise ValueError -- never touch an fd_set. Windows'
# fd_set is a counted array of sockets instead (FD_SETSIZE raised at build).
# The master sets are copied for each wait, since select() overwrites its
# arguments. Timeouts are microseconds, rounded up.


cdef class SelectPoller(Poller):
    """Readiness poller over select(2); masks are POLLIN / POLLOUT bits."""

    cdef fd_set _rset
    cdef fd_set _wset
    cdef int _maxfd

    def __cinit__(self, *args, **kwargs):
        FD_ZERO(&self._rset)
        FD_ZERO(&self._wset)
        self._maxfd = -1
        self.flag_mask = 0
        self._any_fd = True
        self._track_regs = True
        self._shared_waits = True
        if not FASTIO_WINSOCK:
            self._direct_limit = FD_SETSIZE

    cdef int64_t _timeout_unit(self):
        return NS_PER_US

    cdef void _set(self, long long fd, uint32_t mask) noexcept:
        if fd >= self._direct_limit:
            return
        if mask & POLLIN:
            FD_SET(<int>fd, &self._rset)
        if mask & POLLOUT:
            FD_SET(<int>fd, &self._wset)
        if fd > self._maxfd:
            self._maxfd = <int>fd

    cdef void _clear(self, long long fd) noexcept:
        cdef uint32_t m
        cdef int slot
        if fd >= self._direct_limit:
            return
        FD_CLR(<int>fd, &self._rset)
        FD_CLR(<int>fd, &self._wset)
        while self._maxfd >= 0 and not self._lookup(self._maxfd, &m, &slot):
            self._maxfd -= 1

    cdef int _sys_add(self, long long fd, uint32_t mask) except -1:
        if FASTIO_WINSOCK and self._count >= FD_SETSIZE:
            raise ValueError("too many file descriptors in select()")
        self._set(fd, mask)
        return 0

    cdef int _sys_mod(self, long long fd, int slot, uint32_t mask) except -1:
        if fd < self._direct_limit:
            FD_CLR(<int>fd, &self._rset)
            FD_CLR(<int>fd, &self._wset)
        self._set(fd, mask)
        return 0

    cdef int _sys_del(self, long long fd, int slot, uint32_t mask) except -1:
        self._clear(fd)
        return 0

    cdef Py_ssize_t _wait_once(self, fastio_event **buf, Py_ssize_t *bufcap,
                               int64_t timeout_ns, Py_ssize_t maxevents) except -2:
        cdef fd_set r, w, x
        cdef int n, fd, err = 0
        cdef uint32_t ev
        cdef int64_t us = -1 if timeout_ns < 0 else (timeout_ns + 999) // 1000
        cdef Py_ssize_t k = 0
        cdef uint32_t start = self._regseq
        # Bits at or above nfds are select()'s input, never a report.
        cdef int nfds = self._maxfd + 1
        cdef bint renewed = False
        if self._far:
            for fd_obj in self._far:
                if fd_obj > 2147483647:
                    raise OverflowError("Python int too large to convert to C int")
            raise ValueError("filedescriptor out of range in select()")
        grow_events(buf, bufcap, self._count)
        r = self._rset
        w = self._wset
        if FASTIO_WINSOCK:
            x = self._wset
        else:
            FD_ZERO(&x)
        if us == 0:
            n = fastio_select(nfds, &r, &w, &x, 0)
            if n < 0:
                err = fastio_last_error()
        else:
            with nogil:
                n = fastio_select(nfds, &r, &w, &x, us)
                if n < 0:
                    err = fastio_last_error()
        if n < 0:
            self._err = err
            return -1
        fd = 0
        while n > 0 and fd < nfds:
            ev = 0
            if FD_ISSET(fd, &r):
                ev |= POLLIN
                n -= 1
            if FD_ISSET(fd, &w):
                ev |= POLLOUT
                n -= 1
            if FASTIO_WINSOCK and FD_ISSET(fd, &x):
                ev |= POLLOUT
                n -= 1
            if ev:
                if self._registered_since(fd, start):
                    buf[0][k].fd = fd
                    buf[0][k].events = ev
                    k += 1
                    if k == maxevents:
                        break
                elif self._registered_now(fd):
                    renewed = True
            fd += 1
        if k == 0 and renewed:
            # Every report was dropped, some of an fd registered again
            # during the wait: the wait goes on (Poller._wait).
            self._err = 0
            return -1
        return k
