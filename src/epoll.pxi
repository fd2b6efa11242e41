# EpollPoller: epoll(7).
#
# Traps (epoll(7), epoll_ctl(2)):
# * The interest list holds (file description, fd number) pairs. Closing an
#   fd removes its entry only when no other fd (a dup(), a forked child)
#   still refers to the same file; so unregister before close, as the
#   selectors contract asks. An entry for a closed fd cannot be removed any
#   more (EBADF); one whose number was reused gives ENOENT. Both are
#   "already gone" for unregister().
# * Regular files and directories cannot be watched: EPERM at register
#   (EPOLL_CTL_MOD checks this first too, so it fails the same way).
# * EPOLLEXCLUSIVE is accepted only by EPOLL_CTL_ADD (EINVAL on MOD).
# * EPOLLONESHOT disables the fd after one event; EPOLL_CTL_MOD re-arms it.
# Timeouts are whole milliseconds; fastio rounds up so a wait is never early.
#
# Lazy EPOLL_CTL_DEL (libev's and libuv's technique, made safe):
# * Why: epoll_ctl is most of what register+unregister costs, and callers
#   often unregister an fd only to register it again soon (asyncio's
#   add_reader/remove_reader). unregister() forgets the registration at
#   once -- every lookup treats it as absent -- but leaves the kernel entry
#   in place and marks the table entry deferred (slot -2). register() of a
#   deferred fd re-arms that entry with one EPOLL_CTL_MOD (which re-arms an
#   EPOLLONESHOT-disabled one too) under a new generation; ENOENT means the entry is gone (the file
#   was closed, or the number now names another file), so it falls back to
#   EPOLL_CTL_ADD. EPOLLEXCLUSIVE entries cannot be MODed, so they are
#   deleted eagerly, as are fds >= FASTIO_FDTABLE_DIRECT_MAX (no table slot to
#   remember them in).
# * Why generations: a deferred entry may still report, and the number may
#   since name another registered file. Every ADD takes a new generation
#   from a per-poller 31-bit counter (it lives in `slot`, which must stay
#   >= 0); the kernel entry's data carries (fd, generation), so a report is
#   kept only if it comes from the entry the table holds. A report from a
#   deferred entry is the moment to delete it: the fd still names that file
#   (its generation matches), so EPOLL_CTL_DEL removes exactly that entry.
# * Why rebuild: epoll keys on (file, fd), so the entry of a file whose fd
#   was closed while a dup kept it alive can never be removed with
#   epoll_ctl (EBADF; or, if the number was reused, ENOENT or the wrong
#   entry). It would report forever. Such a report (an older generation, or
#   a failed DEL) makes the poller rebuild its kernel set: a new epoll
#   instance gets every registered fd (an ADD that fails -- a closed fd --
#   leaves the registration in the table, as the stdlib keeps a closed fd
#   registered), and dup3() puts it on the old fd number, so fileno() stays.
#   Costs: one syscall per registered fd; an outer epoll that watched this
#   poller's fd loses its watch (the old epoll file is gone) -- the one
#   visible side effect, and only after the user closed a watched fd while
#   a dup of it was alive; an EPOLLONESHOT registration disabled by an
#   event is armed again; and a registered fd the user closed without
#   unregistering, whose number now names another file, starts watching
#   that file (as a register() by the caller would).
# * Why re-arm under a new generation: while deferred, the entry still
#   reports, and a thread blocked in epoll_wait may have taken such a report
#   before another thread registers the fd again (then reads it, and the
#   report means nothing). The table keeps the old generation in `gen`, so
#   reports carrying it are dropped without a rebuild; the kernel reports
#   again, under the new generation, whatever is still ready.
# * Dropped reports must not end a wait early: the wait goes on with the
#   time left (Poller._wait), and the buffer holds registered + deferred
#   entries' reports, so none is ever starved by stale ones.
# * Waits in several threads at once (Poller._wait): a report of an entry
#   may reach two of them. The first deletes a deferred one; the other
#   drops its copy (the table keeps the deleted entry's generation in `gen`
#   until the next ADD of a deferred fd). A rebuild leaves the waits of
#   other threads blocked on the old set (their epoll_wait holds its file):
#   before the new set takes the fd number, a signalled eventfd joins the
#   old one, so they wake, drop its report (generation 0, never an entry's)
#   and wait again on the new set. It stays open, and in the sets it joined
#   (they go with their last waiter), until the poller is closed. A set
#   shared with a forked child lives on in the child, with the eventfd in
#   it: a wait that meets its report in a set no rebuild of its own
#   replaced rebuilds too, onto a set without it.
# * A generation repeats only after 2**31 ADDs; a stale entry would have to
#   outlive all of them, on the same fd number, to be mistaken for a live one.


cdef enum:
    FASTIO_EPOLL_DEFERRED = -2
    FASTIO_EPOLL_GEN_MASK = 0x7FFFFFFF
    FASTIO_EPOLL_WAKE_GEN = 0  # the wake-up entry of a replaced set (see _rebuild)


cdef class EpollPoller(Poller):
    """Readiness poller over epoll(7); masks are EPOLL* bits."""

    cdef int _epfd
    cdef uint32_t _gen
    cdef Py_ssize_t _deferred
    cdef int _wake_fd  # signalled; joins each set _rebuild() replaces (-1: none yet)
    cdef unsigned long _rebuilds

    def __cinit__(self, *args, **kwargs):
        self._epfd = -1
        self._wake_fd = -1
        self._kernel_table = True
        self._shared_waits = True
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
        if self._wake_fd >= 0:
            fastio_close_fd(self._wake_fd)
            self._wake_fd = -1

    cdef int _ctl(self, int op, long long fd, uint32_t mask, uint32_t gen) except -1:
        if fastio_epoll_ctl(self._epfd, op, <int>fd, mask, gen) < 0:
            _raise_errno(fastio_last_error())
        return 0

    cdef int _sys_add(self, long long fd, uint32_t mask) except -1:
        """ADD `fd` under a new generation, or re-arm its deferred entry."""
        cdef fdentry *e = NULL
        cdef int err
        cdef uint32_t gen
        if fd > 2147483647:
            raise OverflowError("Python int too large to convert to C int")
        if fd < self._cap and self._entries[fd].slot == FASTIO_EPOLL_DEFERRED:
            e = &self._entries[fd]
            if mask & EPOLLEXCLUSIVE:
                # MOD cannot set EXCLUSIVE: remove the old entry, then ADD.
                # If DEL fails the entry may live on (a dup): still deferred.
                if fastio_epoll_ctl(self._epfd, EPOLL_CTL_DEL, <int>fd, 0, 0) == 0:
                    e.slot = -1
                    self._deferred -= 1
                    e = NULL
            else:
                # A new generation: reports the old one made while the fd
                # was unregistered may still be on their way to a waiting
                # thread; `gen` keeps the old one so they are dropped
                # without a rebuild.
                gen = self._next_gen()
                if fastio_epoll_ctl(self._epfd, EPOLL_CTL_MOD, <int>fd, mask, gen) == 0:
                    self._deferred -= 1
                    return <int>gen
                err = fastio_last_error()
                if err != ENOENT:
                    # EPERM (regular file), EBADF: what ADD would say too.
                    _raise_errno(err)
        gen = self._next_gen()
        self._ctl(EPOLL_CTL_ADD, fd, mask, gen)
        if e != NULL:
            self._deferred -= 1
        if fd < self._cap and (e != NULL or self._entries[fd].slot != -1):
            # An older entry may live on (a deferred one MOD could not
            # re-arm; a registration whose fd was closed): a report from it
            # carries an older generation and triggers a rebuild.
            self._entries[fd].gen = gen
        # After a deleted entry (-1), `gen` keeps that entry's generation:
        # it is gone from the set, and a report of it that another thread
        # still holds is dropped without a rebuild.
        return <int>gen

    cdef inline uint32_t _next_gen(self) noexcept:
        # 0 is never used: it is what a fresh table entry's `gen` holds.
        self._gen = (self._gen + 1) & FASTIO_EPOLL_GEN_MASK
        if self._gen == 0:
            self._gen = 1
        return self._gen

    cdef int _sys_mod(self, long long fd, int slot, uint32_t mask) except -1:
        if fd > 2147483647:
            raise OverflowError("Python int too large to convert to C int")
        return self._ctl(EPOLL_CTL_MOD, fd, mask, <uint32_t>slot)

    cdef int _sys_del(self, long long fd, int slot, uint32_t mask) except -1:
        """Defer the DEL (the fd was just forgotten from the table)."""
        if fd < self._cap and not (mask & EPOLLEXCLUSIVE):
            self._defer(fd, slot)
            return 0
        if fastio_epoll_ctl(self._epfd, EPOLL_CTL_DEL, <int>fd, 0, 0) < 0:
            if fd < self._cap:
                # EBADF with a dup alive: the entry may still report.
                self._defer(fd, slot)
            _raise_errno(fastio_last_error())
        return 0

    cdef inline void _defer(self, long long fd, int slot) noexcept:
        self._entries[fd].slot = FASTIO_EPOLL_DEFERRED
        self._entries[fd].gen = <uint32_t>slot
        self._deferred += 1

    cdef Py_ssize_t _wait_once(self, fastio_event **buf, Py_ssize_t *bufcap,
                               int64_t timeout_ns, Py_ssize_t maxevents) except -2:
        cdef int n, err = 0
        cdef int ms = ns_to_ms(timeout_ns)
        # Deferred entries may report too: room for them, so none starves.
        cdef Py_ssize_t cap = self._count + self._deferred
        cdef Py_ssize_t kept
        cdef int epfd = self._epfd
        cdef fastio_event *events
        cdef unsigned long rebuilds = self._rebuilds
        if 0 < maxevents < cap:
            cap = maxevents
        grow_events(buf, bufcap, cap)
        events = buf[0]
        if cap < 1:
            cap = 1
        if ms == 0:
            # Nothing to wait for: keep the GIL, save two context switches.
            n = fastio_epoll_wait(epfd, events, <int>cap, 0)
            if n < 0:
                err = fastio_last_error()
        else:
            with nogil:
                n = fastio_epoll_wait(epfd, events, <int>cap, ms)
                if n < 0:
                    err = fastio_last_error()
        self._err = err
        if n <= 0:
            return n
        kept = self._filter(events, n, rebuilds)
        if kept == 0:
            self._err = 0
            return -1
        return kept

    cdef Py_ssize_t _filter(self, fastio_event *buf, Py_ssize_t n,
                            unsigned long rebuilds) except -1:
        """Keep, in place, the reports of the registrations the table holds.

        Deferred entries that report are deleted now; reports no epoll_ctl
        can stop (see the top of this file) make the kernel set be rebuilt.
        `rebuilds` is `_rebuilds` when the wait began.
        """
        cdef fdentry *entries = self._entries
        cdef Py_ssize_t cap = self._cap
        cdef Py_ssize_t i, k = 0
        cdef int fd, slot
        cdef uint32_t mask, gen
        cdef bint settled = self.closed
        for i in range(n):
            fd = buf[i].fd
            gen = buf[i].gen
            if gen == FASTIO_EPOLL_WAKE_GEN and (settled or rebuilds != self._rebuilds):
                # A set replaced by _rebuild() woke this wait: it waits
                # again, on the new set. (Met in a set no rebuild replaced
                # since the wait began, it is a set another process still
                # shares with this one after a fork, and the rebuild below
                # leaves it.)
                continue
            if fd < cap and gen != FASTIO_EPOLL_WAKE_GEN:
                slot = entries[fd].slot
                if slot >= 0 and <uint32_t>slot == gen:
                    if k != i:
                        buf[k] = buf[i]
                    k += 1
                    continue
                if settled or (slot >= 0 and entries[fd].gen == gen):
                    # The second: made by this fd's entry before it was
                    # re-armed (while unregistered): stale, and harmless.
                    continue
                if (slot == FASTIO_EPOLL_DEFERRED and entries[fd].gen == gen
                        and fastio_epoll_ctl(self._epfd, EPOLL_CTL_DEL, fd, 0, 0) == 0):
                    entries[fd].slot = -1
                    self._deferred -= 1
                    continue
                if slot == -1 and entries[fd].gen == gen:
                    # From an entry deleted since (one wait cannot hold
                    # such a report: another wait took one too, and
                    # deleted the entry or rebuilt without it).
                    continue
            elif self._lookup(fd, &mask, &slot) and <uint32_t>slot == gen:
                if k != i:
                    buf[k] = buf[i]
                k += 1
                continue
            elif settled:
                continue
            # After a rebuild the kernel holds only what the table holds, so
            # the rest of this buffer needs no more syscalls.
            self._rebuild()
            settled = True
        return k

    cdef int _rebuild(self) except -1:
        """Replace the kernel set by a new one holding exactly the table."""
        cdef int newfd = fastio_epoll_create()
        cdef int err
        cdef int pair[2]
        cdef bint wake = False
        cdef Py_ssize_t fd
        cdef fdentry *e
        if newfd < 0:
            _raise_errno(fastio_last_error())
        for fd in range(self._cap):
            e = &self._entries[fd]
            if e.slot >= 0:
                # Failure (a closed fd): stays registered, as in the stdlib.
                fastio_epoll_ctl(newfd, EPOLL_CTL_ADD, <int>fd, e.mask, <uint32_t>e.slot)
        for fd, item in self._far.items():
            fastio_epoll_ctl(newfd, EPOLL_CTL_ADD, <int>fd, <uint32_t>item[0], <uint32_t>item[1])
        # Waits of other threads blocked on the old set: wake them (see the
        # top of this file). Best effort: without an eventfd they wake at
        # the old set's next report. The eventfd stays readable (level-
        # triggered, never drained): each wait that takes its report
        # passes the wake-up on to the next.
        if self._wake_fd < 0 and fastio_waker_open(pair) == 0:
            self._wake_fd = pair[0]
            fastio_waker_write(self._wake_fd)
        if self._wake_fd >= 0:
            wake = fastio_epoll_ctl(self._epfd, EPOLL_CTL_ADD, self._wake_fd, EPOLLIN,
                                    FASTIO_EPOLL_WAKE_GEN) == 0
        if fastio_dup_onto(newfd, self._epfd) < 0:
            err = fastio_last_error()
            fastio_close_fd(newfd)
            if wake:
                # The set stays: an always-ready member would wake every wait.
                fastio_epoll_ctl(self._epfd, EPOLL_CTL_DEL, self._wake_fd, 0, 0)
            _raise_errno(err)
        fastio_close_fd(newfd)
        # The deferred entries went with the old set.
        for fd in range(self._cap):
            if self._entries[fd].slot == FASTIO_EPOLL_DEFERRED:
                self._entries[fd].slot = -1
        self._deferred = 0
        self._rebuilds += 1
        return 0

    cdef str _noun(self):
        return "epoll object"  # as select.epoll says

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
            if self._wake_fd >= 0:
                fastio_close_fd(self._wake_fd)
                self._wake_fd = -1
