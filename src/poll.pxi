# PollPoller: poll(2).
#
# The pollfd array keeps registration order, as CPython's select.poll does
# (it rebuilds its array from an insertion-ordered dict): unregister() turns
# an entry into a hole (fd = -1, which poll(2) ignores) and holes are
# compacted away once they are half the array. Each wait polls a private
# copy, so other threads may register while it blocks; a report is kept only
# if its fd has been registered since before the wait began (src/poller.pxi).


cdef class PollPoller(Poller):
    """Readiness poller over poll(2); masks are POLL* bits."""

    cdef fastio_pollfd *_fds
    cdef Py_ssize_t _nfds
    cdef Py_ssize_t _fdscap
    cdef Py_ssize_t _holes
    cdef fastio_pollfd *_work
    cdef Py_ssize_t _workcap

    def __cinit__(self, *args, **kwargs):
        self.flag_mask = POLLPRI | POLLRDHUP
        self._track_regs = True
        if not FASTIO_HAVE_POLL:
            raise OSError(ENOSYS, "poll is not available on this platform")

    def __dealloc__(self):
        PyMem_Free(self._fds)
        PyMem_Free(self._work)

    cdef int _sys_add(self, long long fd, uint32_t mask) except -1:
        cdef Py_ssize_t newcap
        cdef void *p
        if fd > 2147483647:
            raise OverflowError("Python int too large to convert to C int")
        if mask > 0xFFFF:
            raise OverflowError("event mask does not fit poll's 16 bits: %#x" % mask)
        if self._nfds == self._fdscap:
            newcap = self._fdscap * 2 if self._fdscap else 16
            p = PyMem_Realloc(self._fds, newcap * sizeof(fastio_pollfd))
            if p == NULL:
                raise MemoryError()
            self._fds = <fastio_pollfd *>p
            self._fdscap = newcap
        self._fds[self._nfds].fd = <int>fd
        self._fds[self._nfds].events = <short>mask
        self._fds[self._nfds].revents = 0
        self._nfds += 1
        return <int>(self._nfds - 1)

    cdef int _sys_mod(self, long long fd, int slot, uint32_t mask) except -1:
        if mask > 0xFFFF:
            raise OverflowError("event mask does not fit poll's 16 bits: %#x" % mask)
        self._fds[slot].events = <short>mask
        return 0

    cdef int _sys_del(self, long long fd, int slot, uint32_t mask) except -1:
        self._fds[slot].fd = -1
        self._fds[slot].events = 0
        self._holes += 1
        if self._holes > 16 and self._holes * 2 > self._nfds:
            self._compact()
        return 0

    cdef int _compact(self) except -1:
        cdef Py_ssize_t i, j = 0
        cdef long long fd
        for i in range(self._nfds):
            fd = self._fds[i].fd
            if fd >= 0:
                self._fds[j] = self._fds[i]
                self._store(fd, <uint16_t>self._fds[j].events, <int>j)
                j += 1
        self._nfds = j
        self._holes = 0
        return 0

    cdef Py_ssize_t _wait_once(self, fastio_event **buf, Py_ssize_t *bufcap,
                               int64_t timeout_ns, Py_ssize_t maxevents) except -2:
        cdef int n, err = 0
        cdef int ms = ns_to_ms(timeout_ns)
        cdef Py_ssize_t nfds = self._nfds, i, k = 0
        cdef fastio_pollfd *work
        cdef void *p
        cdef uint32_t start = self._regseq
        cdef bint renewed = False
        grow_events(buf, bufcap, self._count)
        if nfds > self._workcap:
            p = PyMem_Realloc(self._work, nfds * sizeof(fastio_pollfd))
            if p == NULL:
                raise MemoryError()
            self._work = <fastio_pollfd *>p
            self._workcap = nfds
        work = self._work
        if nfds:
            memcpy(work, self._fds, nfds * sizeof(fastio_pollfd))
        if ms == 0:
            n = fastio_poll(work, nfds, 0)
            if n < 0:
                err = fastio_last_error()
        else:
            with nogil:
                n = fastio_poll(work, nfds, ms)
                if n < 0:
                    err = fastio_last_error()
        if n < 0:
            self._err = err
            return -1
        if n == 0:
            return 0
        if maxevents <= 0 or maxevents > n:
            maxevents = n
        i = 0
        while k < maxevents and i < nfds:
            if work[i].revents and work[i].fd >= 0:
                if self._registered_since(work[i].fd, start):
                    buf[0][k].fd = work[i].fd
                    buf[0][k].events = <uint16_t>work[i].revents
                    k += 1
                elif self._registered_now(work[i].fd):
                    renewed = True
            i += 1
        if k == 0 and renewed:
            # Every report was dropped, some of an fd registered again
            # during the wait: the wait goes on (Poller._wait).
            self._err = 0
            return -1
        return k
