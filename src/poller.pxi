# Poller: what the three backends share.
#
# The fd table maps fd -> (registered mask, slot). It is a flat array indexed
# by fd for the fds processes really have (below `_direct_limit`; the array
# logic is src/fastio_fdtable.h, shared with the loop), and a dict for the
# rest, so registering fd 2**31 - 1 costs a dict entry, not 16 GiB.
# `slot` is backend-specific (poll: index in its pollfd array; epoll: the
# generation of the kernel entry); -1 = absent. Any negative slot is absent
# to every lookup: epoll also uses -2, "unregistered, but possibly still in
# the kernel's interest list", with that entry's generation in `gen`.
#
# The wait loop lives here once: PEP 475 semantics (on EINTR run the signal
# handlers, let an exception from them propagate, retry with the time left)
# and the result buffer, which grows with the number of registered fds so no
# call ever caps the events it can return.
#
# Threads: a wait runs without the GIL. Registration changes made by other
# threads meanwhile are safe (epoll: the kernel; poll: the wait works on a
# private copy of the pollfd array; select: on copies of the fd_sets) and
# take effect at the next wait. A report made while its fd was not
# registered is never returned, even if the fd is registered again before
# the wait gets the GIL back (a thread that unregisters a socket, reads it
# and registers it again must not see it reported readable with nothing to
# read): epoll re-arms under a new generation (src/epoll.pxi); poll and
# select number every registration (`gen`, from `_regseq`) and drop reports
# of fds registered after the wait began: the wait goes on if one of them
# is registered again, and returns none otherwise, as the stdlib's wait
# returns no key for them. Waits may run in several threads at once on
# epoll and select, as on select.epoll and select.select (and nest, in a
# signal handler): the first wait fills `_buf`, the others a buffer of
# their own that their caller frees through `_release()`. A second wait on
# poll (or io_uring) raises RuntimeError, as select.poll does; a child
# forked while another thread waited may wait at once (see _forks). close() from another thread does not free
# anything a wait is using; the blocked wait returns normally when it wakes
# and every later call raises ValueError.

cdef struct fdentry:
    uint32_t mask
    int slot
    uint32_t gen

# What an fd without a registration holds in the flat table.
cdef fdentry _BLANK_FDENTRY
_BLANK_FDENTRY.mask = 0
_BLANK_FDENTRY.slot = -1
_BLANK_FDENTRY.gen = 0


cdef inline object _raise_errno(int err):
    raise OSError(err, _os.strerror(err))


# 3.13+: select's epoll, poll and select() warn about a bool used as an fd
# (PyObject_AsFileDescriptor); fastio's pollers and selectors do where they do.
cdef bint BOOL_FD_WARNS = _sys.version_info >= (3, 13)


cdef int warn_bool_fd() except -1:
    _warnings.warn("bool is used as a file descriptor", RuntimeWarning, 1)
    return 0


cdef long long fd_from_object(object obj) except -1:
    """Return the fd of an int or of an object with fileno(); stdlib errors."""
    cdef int overflow = 0
    cdef long long fd
    if type(obj) is bool and BOOL_FD_WARNS:
        warn_bool_fd()
    if not isinstance(obj, int):
        meth = getattr(obj, "fileno", None)
        if meth is None:
            raise TypeError(
                "argument must be an int, or have a fileno() method.")
        obj = meth()
        if not isinstance(obj, int):
            raise TypeError("fileno() returned a non-integer")
    fd = PyLong_AsLongLongAndOverflow(obj, &overflow)
    if overflow:
        raise OverflowError("Python int too large to convert to C int")
    if fd < 0:
        raise ValueError(
            "file descriptor cannot be a negative integer (%d)" % fd)
    return fd


cdef uint32_t mask_from_object(object obj) except? 0xFFFFFFFF:
    cdef long long v = obj
    if v < 0 or v > 0xFFFFFFFF:
        raise OverflowError("event mask out of range: %r" % (obj,))
    return <uint32_t>v


# Forks made by os.fork() in this process's line, counted in each child:
# a poller whose `_busy` dates from an earlier count was left busy by a
# thread of the parent.
cdef unsigned long _forks = 0


def _after_fork_in_child():
    global _forks
    _forks += 1


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)


cdef int grow_events(fastio_event **buf, Py_ssize_t *cap, Py_ssize_t n) except -1:
    """Make `buf` hold at least `n` events (and as many raw epoll events)."""
    cdef size_t item = sizeof(fastio_event)
    cdef void *p
    if n < 1:
        n = 1
    if n <= cap[0]:
        return 0
    if FASTIO_EPOLL_EVENT_SIZE > item:
        item = FASTIO_EPOLL_EVENT_SIZE
    n = n + n // 4
    p = PyMem_Realloc(buf[0], n * item)
    if p == NULL:
        raise MemoryError()
    buf[0] = <fastio_event *>p
    cap[0] = n
    return 0


cdef class Poller:
    """Base of the readiness pollers: one fd table, one wait loop.

    Subclasses supply only the syscalls (`_sys_add`, `_sys_mod`, `_sys_del`,
    `_wait_once`). Event masks use the native poll bits (POLLIN, POLLOUT...).
    """

    cdef fdentry *_entries
    cdef Py_ssize_t _cap
    cdef long long _direct_limit
    cdef dict _far
    cdef Py_ssize_t _count
    cdef fastio_event *_buf
    cdef Py_ssize_t _bufcap
    cdef bint _busy  # a wait is using `_buf`
    cdef unsigned long _busy_forks  # _forks when _busy was set
    cdef unsigned long _busy_thread  # the thread that set it
    cdef bint _shared_waits  # other waits may run while _busy
    cdef bint _kernel_table
    cdef bint _any_fd
    cdef int _err
    cdef uint32_t _regseq
    cdef bint _track_regs
    cdef dict _far_gen
    cdef readonly bint closed
    cdef readonly uint32_t flag_mask

    def __cinit__(self, *args, **kwargs):
        self._direct_limit = FASTIO_FDTABLE_DIRECT_MAX
        self._far = {}
        self._far_gen = {}

    def __dealloc__(self):
        PyMem_Free(self._entries)
        PyMem_Free(self._buf)

    def __len__(self):
        return self._count

    # ---------------------------------------------------------- fd table

    cdef inline bint _lookup(self, long long fd, uint32_t *mask, int *slot):
        cdef fdentry *e
        if fd < self._cap:
            e = &self._entries[fd]
            if e.slot < 0:
                return False
            mask[0] = e.mask
            slot[0] = e.slot
            return True
        if fd < self._direct_limit or not self._far:
            return False
        item = self._far.get(fd)
        if item is None:
            return False
        mask[0] = item[0]
        slot[0] = item[1]
        return True

    cdef int _store(self, long long fd, uint32_t mask, int slot) except -1:
        if fd >= self._direct_limit:
            self._far[fd] = (mask, slot)
            return 0
        fastio_fdtable_reserve(<void **>&self._entries, &self._cap, sizeof(fdentry), fd,
                               &_BLANK_FDENTRY)
        self._entries[fd].mask = mask
        self._entries[fd].slot = slot
        return 0

    cdef int _forget(self, long long fd) except -1:
        if fd < self._cap:
            self._entries[fd].slot = -1
            self._entries[fd].mask = 0
        elif fd >= self._direct_limit:
            self._far.pop(fd, None)
            if self._far_gen:
                self._far_gen.pop(fd, None)
        return 0

    cdef int _number(self, long long fd) except -1:
        """Give `fd`'s new registration the next registration number."""
        self._regseq += 1
        if fd < self._cap:
            self._entries[fd].gen = self._regseq
        else:
            self._far_gen[fd] = self._regseq
        return 0

    cdef inline bint _registered_now(self, long long fd):
        cdef uint32_t mask
        cdef int slot
        return self._lookup(fd, &mask, &slot)

    cdef inline bint _registered_since(self, long long fd, uint32_t start):
        """Tell whether `fd` is registered now under a registration that
        existed when `_regseq` was `start` (poll, select)."""
        cdef uint32_t mask, gen
        cdef int slot
        if not self._lookup(fd, &mask, &slot):
            return False
        if fd < self._cap:
            gen = self._entries[fd].gen
        else:
            gen = self._far_gen.get(fd, 0)
        # Wrap-safe "gen <= start".
        return <int32_t>(gen - start) <= 0

    cdef inline int _check_open(self) except -1:
        if self.closed:
            raise ValueError("I/O operation on closed " + self._noun())
        return 0

    cdef str _noun(self):
        """What the closed-poller error calls this poller."""
        return "poller"

    # ------------------------------------------------------ backend hooks

    cdef int _sys_add(self, long long fd, uint32_t mask) except -1:
        """Register `fd` with the kernel; return its slot."""
        return 0

    cdef int _sys_mod(self, long long fd, int slot, uint32_t mask) except -1:
        return 0

    cdef int _sys_del(self, long long fd, int slot, uint32_t mask) except -1:
        return 0

    cdef Py_ssize_t _wait_once(self, fastio_event **buf, Py_ssize_t *cap,
                               int64_t timeout_ns, Py_ssize_t maxevents) except -2:
        """Wait once into `buf[0]` (grown with grow_events); return the
        count, or -1 with `_err` set.

        `_err` == 0 with -1 means "woken only by events the backend dropped
        (epoll: stale kernel entries)": the wait goes on with the time left.
        """
        return 0

    # ------------------------------------------------------- C-level API

    cdef int _add(self, long long fd, uint32_t mask) except -1:
        cdef uint32_t old
        cdef int slot
        cdef bint present
        self._check_open()
        present = self._lookup(fd, &old, &slot)
        if present and not self._kernel_table:
            raise FileExistsError(EEXIST, _os.strerror(EEXIST))
        # epoll: the kernel is the judge. An fd closed without unregister()
        # left the interest list by itself, so its number may be added again.
        slot = self._sys_add(fd, mask)
        self._store(fd, mask, slot)
        if self._track_regs:
            self._number(fd)
        if not present:
            self._count += 1
        return 0

    cdef int _mod(self, long long fd, uint32_t mask) except -1:
        cdef uint32_t old
        cdef int slot
        self._check_open()
        if not self._lookup(fd, &old, &slot):
            raise FileNotFoundError(ENOENT, _os.strerror(ENOENT))
        self._sys_mod(fd, slot, mask)
        self._store(fd, mask, slot)
        return 0

    cdef int _del(self, long long fd) except -1:
        cdef uint32_t old
        cdef int slot
        self._check_open()
        if not self._lookup(fd, &old, &slot):
            raise FileNotFoundError(ENOENT, _os.strerror(ENOENT))
        # Forget it first: if the kernel refuses (the fd was closed: EBADF, or
        # its number now names another file: ENOENT) it is gone all the same.
        self._forget(fd)
        self._count -= 1
        self._sys_del(fd, slot, old)
        return 0

    cdef int _add_obj(self, object fd, uint32_t mask) except -1:
        """Register an fd given as a Python int (the selectors' entry point)."""
        cdef int overflow = 0
        cdef long long cfd = PyLong_AsLongLongAndOverflow(fd, &overflow)
        if not overflow and (cfd <= 2147483647 or self._any_fd):
            return self._add(cfd, mask)
        if not self._any_fd:
            # The int -> C int conversion fails before anything else is checked.
            raise OverflowError("Python int too large to convert to C int")
        # select: accepted now, refused by every wait, as the stdlib does.
        self._check_open()
        if fd in self._far:
            raise FileExistsError(EEXIST, _os.strerror(EEXIST))
        self._far[fd] = (mask, 0)
        self._count += 1
        return 0

    cdef uint32_t _take_stale(self, object fd, uint32_t mask, bint merge) except? 0xFFFFFFFF:
        """Drop a registration that outlived its selector's close(); return
        the mask to register instead of `mask`.

        The stdlib's PollSelector re-registers over it (poll.register
        replaces), its SelectSelector adds to its reader/writer sets, so the
        old interest stays: `merge` keeps it.
        """
        cdef uint32_t old = 0
        cdef int slot
        cdef int overflow = 0
        cdef long long cfd = PyLong_AsLongLongAndOverflow(fd, &overflow)
        if not overflow and self._lookup(cfd, &old, &slot):
            self._del(cfd)
        elif overflow and fd in self._far:
            old = self._far[fd][0]
            self._del_obj(fd)
        return (mask | old) if merge else mask

    cdef int _del_obj(self, object fd) except -1:
        cdef int overflow = 0
        cdef long long cfd = PyLong_AsLongLongAndOverflow(fd, &overflow)
        if not overflow:
            return self._del(cfd)
        self._check_open()
        if self._far.pop(fd, None) is None:
            raise FileNotFoundError(ENOENT, _os.strerror(ENOENT))
        self._count -= 1
        return 0

    cdef inline uint32_t _mask_of(self, long long fd):
        """Return the registered mask of `fd`, or 0 if it is not registered."""
        cdef uint32_t mask = 0
        cdef int slot
        if fd < self._cap:
            return self._entries[fd].mask if self._entries[fd].slot >= 0 else 0
        self._lookup(fd, &mask, &slot)
        return mask

    cdef Py_ssize_t _wait(self, int64_t timeout_ns, Py_ssize_t maxevents,
                          fastio_event **events) except -1:
        """Wait for events into `events[0]`; the caller must pass it to
        `_release()` after reading."""
        cdef Py_ssize_t n
        cdef int64_t deadline = 0
        cdef fastio_event *own = NULL
        cdef Py_ssize_t owncap = 0
        cdef fastio_event **buf = &self._buf
        cdef Py_ssize_t *cap = &self._bufcap
        cdef unsigned long thread = PyThread_get_thread_ident()
        self._check_open()
        if self._busy and (self._busy_forks == _forks or self._busy_thread == thread):
            # Another wait fills `_buf`: another thread's, or an outer one
            # of this thread's (a select() in a signal handler; after a
            # fork there, the child still has that frame).
            if not self._shared_waits:
                raise RuntimeError("concurrent poll() invocation")
            buf = &own
            cap = &owncap
        else:
            # A fork while another thread waited left `_busy` set in the
            # child, where that thread does not exist: a wait in the child
            # takes `_buf`.
            self._busy = True
            self._busy_forks = _forks
            self._busy_thread = thread
        try:
            if timeout_ns > 0:
                deadline = fastio_monotonic_ns() + timeout_ns
            while True:
                n = self._wait_once(buf, cap, timeout_ns, maxevents)
                if n >= 0:
                    # A signal that came while the wait ran (to another
                    # thread, so without EINTR here) has its Python handler
                    # run now, as the stdlib's select() runs it on return,
                    # before the events are handed out; if the handler
                    # raises, the events are dropped with the select().
                    PyErr_CheckSignals()
                    events[0] = buf[0]
                    return n
                if self._err == 0:
                    # Only dropped reports the stdlib's wait would not have
                    # woken for either (epoll: entries left by unregister();
                    # poll, select: fds registered again meanwhile): wait on.
                    if timeout_ns == 0 or self.closed:
                        events[0] = buf[0]
                        return 0
                elif self._err != EINTR:
                    _raise_errno(self._err)
                else:
                    PyErr_CheckSignals()  # raises what a handler raised
                    if self.closed:
                        events[0] = buf[0]
                        return 0
                if timeout_ns > 0:
                    timeout_ns = deadline - fastio_monotonic_ns()
                    if timeout_ns < 0:
                        events[0] = buf[0]
                        return 0
        except BaseException:
            self._release(buf[0])
            raise

    cdef inline void _release(self, fastio_event *events) noexcept:
        """End the wait that returned `events`."""
        if events == self._buf:
            self._busy = False
        else:
            PyMem_Free(events)

    # --------------------------------------------------------- Python API

    def register(self, fd, eventmask=POLLIN | POLLOUT):
        """Watch `fd` (an int or an object with fileno()) for `eventmask`.

        :raises FileExistsError: `fd` is already registered.
        """
        self._add(fd_from_object(fd), mask_from_object(eventmask))

    def modify(self, fd, eventmask):
        """Change the events watched on a registered `fd`.

        :raises FileNotFoundError: `fd` is not registered.
        """
        self._mod(fd_from_object(fd), mask_from_object(eventmask))

    def unregister(self, fd):
        """Stop watching `fd`.

        :raises FileNotFoundError: `fd` is not registered.
        :raises OSError: the kernel refused (the fd was closed); it is
            forgotten all the same. EpollPoller defers the kernel call (see
            src/epoll.pxi), so it raises this only for fds >= 2**20 and
            EPOLLEXCLUSIVE registrations.
        """
        self._del(fd_from_object(fd))

    def poll(self, timeout=None, int maxevents=-1):
        """Wait for events and return a list of ``(fd, events)``.

        :param timeout: seconds; None or negative waits forever. Rounded up
            to the syscall's resolution, so the wait is never shorter.
        :param maxevents: at most this many events (<= 0: no limit).
        """
        cdef int64_t ns
        cdef Py_ssize_t n, i
        cdef fastio_event *events
        if timeout is not None and timeout < 0:
            timeout = None
        ns = timeout_to_ns(timeout, self._timeout_unit())
        n = self._wait(ns, maxevents, &events)
        try:
            result = PyList_New(0)
            for i in range(n):
                result.append((events[i].fd, events[i].events))
        finally:
            self._release(events)
        return result

    cdef int64_t _timeout_unit(self):
        return NS_PER_MS

    def close(self):
        """Release the poller. Calling it again does nothing."""
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
