# UringPoller: readiness on io_uring (src/fastio_uring.h), and the ring
# fastio._impl.loop_c's completion transports share.
#
# Readiness is a one-shot IORING_OP_POLL_ADD per registered fd, re-armed at
# the next wait once it has fired. A poll checks the file when it is armed,
# so re-arming a still-ready fd completes at once: level-triggered, as
# poll(2) and the other pollers. Not multishot: a multishot poll only posts
# on wake-ups, so data left unread would never be reported again. Re-arming
# costs an SQE, not a syscall: it goes in with the wait's io_uring_enter.
#
# Traps this code depends on:
# - A poll in flight holds a reference to the file: closing an fd without
#   unregistering it leaves the socket open until the poll fires. Loop and
#   the selectors unregister before closing, as they must for epoll anyway.
# - io_uring polls any file; on one without poll support (a regular file)
#   the poll completes at once, for ever. register() refuses those with
#   EPERM, as epoll_ctl does (fastio_fd_poll_error), so a reader on a
#   regular file fails as on the epoll selectors and asyncio's loop rather
#   than spinning.
# - The kernel adds POLLRDHUP (and the error bits) to every io_uring poll.
#   A socket waiting only to write whose peer has shut down its side would
#   complete each one-shot poll at once, for ever: a 100% CPU spin where
#   epoll and poll(2) wait. A completion carrying none of the bits asked for
#   is not reported; the fd is then armed with a multishot poll, which posts
#   on the socket's wake-ups only (its first check posts the RDHUP again,
#   dropped the same way). When that poll reports what was asked for, it is
#   removed and the fd goes back to one-shot polls under a new generation,
#   so the level-triggered report repeats while the fd stays ready.
# - A poll's CQE can still arrive after a modify() or unregister(): every
#   arming gets a new generation, carried in user_data, and CQEs of an old
#   one are dropped (the fd table holds the live generation as the slot).
# - The SQ is written with the GIL held (register() may run in another
#   thread while a wait is blocked): the wait publishes the SQ tail before
#   it drops the GIL, and the syscall itself only reads what was published.
# - The ring's queues and buffers are MAP_SHARED and its fd is inherited:
#   a forked child shares them with the parent. There the ring is dead
#   (fastio_ring_inherited): a wait or a registration raises EBADF,
#   unregister() and close() submit nothing (closing cancels none of the
#   parent's ops), and only the child's mappings and fd go.
# - With buffers (UringPoller(nbufs=...)), fastio._impl.loop_c submits recv/send
#   SQEs on this ring through `_hub_capsule()`; their CQEs are copied to the
#   hub's `done` array for the loop, which reads it after each wait.
#
# Setup: COOP_TASKRUN (5.19) by default rather than SINGLE_ISSUER|
# DEFER_TASKRUN, which binds the ring to the thread that created it: a
# selector may be waited on from any thread, and a Loop may be built in one
# thread and run in another.

from fastio_uring cimport *

cdef extern from "<errno.h>":
    int ETIME, EAGAIN, EBUSY, EINVAL

cdef uint32_t URING_GEN_MASK = 0xffffff
cdef uint32_t POLL_ADD_MULTI = 1   # IORING_POLL_ADD_MULTI, in sqe.len (5.13)
# fdentry.gen on this poller: what is in flight for the fd.
cdef enum:
    URING_IDLE = 0     # nothing (fired, to re-arm at the next wait; or unarmed)
    URING_ONESHOT = 1  # a one-shot poll
    URING_BADFD = 2    # its poll failed: reported, not re-armed
    URING_MULTI = 3    # a multishot poll, waiting for a wake-up (see above)

_URING_POLLER_MODES = {"defer_taskrun": 3, "coop_taskrun": 2, "plain": 1}


cdef inline uint64_t _poll_ud(long long fd, uint32_t gen) noexcept:
    return <uint64_t>FASTIO_UD_POLL | (<uint64_t><uint32_t>fd << 8) | (<uint64_t>(gen & URING_GEN_MASK) << 40)


def _uring_fake_errno(int err):
    """Make io_uring_setup fail with `err` in this module from now on (0:
    stop); a test hook for the fallback."""
    fastio_uring_set_fake_errno(err)


cdef str _uring_refusal(int err):
    if err == ENOSYS:
        return "io_uring_setup: %s (kernel without io_uring, or a seccomp filter)" % _os.strerror(err)
    if err == EPERM:
        return "io_uring_setup: %s (kernel.io_uring_disabled)" % _os.strerror(err)
    if err == EINVAL:
        return "io_uring_setup: %s (kernel too old)" % _os.strerror(err)
    return "io_uring_setup: %s" % _os.strerror(err)


cdef class UringPoller(Poller):
    """Readiness poller over io_uring(7) polls; masks are poll bits.

    :param mode: the best setup mode to try: "coop_taskrun" (the default),
        "defer_taskrun" (the ring then serves only the thread that created
        it) or "plain"; the kernel may give a lower one (see `mode`).
    :param entries: SQ size (the CQ is four times it).
    :param nbufs: provided buffers to register for fastio._impl.loop_c's
        completion transports (a power of two; 0: none, readiness only),
        consumed incrementally where the kernel can (6.12: see `incremental`).
    :param bufsize: bytes per provided buffer.
    :raises OSError: io_uring is unavailable here (its message says why:
        ENOSYS, EPERM, an old kernel, FASTIO_IO_URING=0).
    """

    cdef fastio_uring_hub _hub
    cdef bint _open
    cdef uint32_t _next
    # fds whose poll fired: re-armed at the next wait if still registered.
    cdef int *_fired
    cdef Py_ssize_t _nfired, _capfired
    cdef readonly str mode
    cdef readonly unsigned nbufs, bufsize
    cdef readonly bint incremental  # the buffers are consumed incrementally
    cdef bint _no_multi  # the kernel refused a multishot poll

    def __cinit__(self, *args, **kwargs):
        self._hub.ring.fd = -1

    def __init__(self, *, str mode="coop_taskrun", unsigned entries=256, unsigned nbufs=0,
                 unsigned bufsize=65536):
        cdef int err
        cdef unsigned op
        if self._open:
            return
        if mode not in _URING_POLLER_MODES:
            raise ValueError("mode must be one of %s, not %r" % (", ".join(_URING_POLLER_MODES), mode))
        if nbufs & (nbufs - 1) or nbufs > 32768:
            raise ValueError("nbufs must be 0 or a power of two up to 32768")
        if entries < 8 or bufsize < 64:
            raise ValueError("entries must be >= 8 and bufsize >= 64")
        if _os.environ.get("FASTIO_IO_URING", "") == "0":
            raise OSError(ENOSYS, "io_uring is disabled by FASTIO_IO_URING=0")
        if not FASTIO_HAVE_URING:
            raise OSError(ENOSYS, "io_uring is Linux-only")
        err = fastio_ring_init(&self._hub.ring, entries, _URING_POLLER_MODES[mode])
        if err:
            raise OSError(err, _uring_refusal(err))
        self._open = True
        ops = [FASTIO_OP_POLL_ADD, FASTIO_OP_POLL_REMOVE, FASTIO_OP_ASYNC_CANCEL]
        if nbufs:
            # Multishot recv has no probe bit: SEND_ZC came with it (6.0).
            ops += [FASTIO_OP_SEND, FASTIO_OP_RECV, FASTIO_OP_SEND_ZC]
        for op in ops:
            if not fastio_ring_probe(&self._hub.ring, op):
                self.close()
                raise OSError(EINVAL, "kernel too old (io_uring opcode %d missing)" % op)
        if nbufs:
            err = fastio_ring_setup_buffers_inc(&self._hub.ring, nbufs, bufsize, 1)
            if err:
                self.close()
                raise OSError(err, "IORING_REGISTER_PBUF_RING: %s" % _os.strerror(err))
            self._hub.has_buffers = True
            self.incremental = self._hub.ring.br_inc
        self.nbufs = nbufs
        self.bufsize = bufsize
        self.mode = {3: "defer_taskrun", 2: "coop_taskrun", 1: "plain"}[self._hub.ring.mode]

    def __dealloc__(self):
        fastio_ring_close(&self._hub.ring)
        free(self._hub.done)
        PyMem_Free(self._fired)

    def _hub_capsule(self):
        """Return the ring for fastio._impl.loop_c (a capsule; valid while this
        poller lives and is open)."""
        self._check_open()
        return PyCapsule_New(&self._hub, "fastio._impl.core_c.uring_hub", NULL)

    # ------------------------------------------------------ backend hooks

    cdef fastio_uring_sqe *_sqe(self) except NULL:
        cdef fastio_uring_sqe *sqe = fastio_ring_get_sqe(&self._hub.ring)
        cdef int err
        if sqe == NULL:
            fastio_check_own_ring(&self._hub.ring)
            # SQ full: submit what is queued now, without waiting.
            err = fastio_ring_submit_wait(&self._hub.ring, fastio_ring_publish(&self._hub.ring), 0, -1)
            if err and err != EINTR and err != EAGAIN and err != EBUSY:
                _raise_errno(err)
            sqe = fastio_ring_get_sqe(&self._hub.ring)
            if sqe == NULL:
                raise OSError(EBUSY, "io_uring submission queue stays full")
        return sqe

    cdef int _arm(self, long long fd, uint32_t mask, uint32_t gen, bint multi=False) except -1:
        cdef fastio_uring_sqe *sqe = self._sqe()
        sqe.opcode = FASTIO_OP_POLL_ADD
        sqe.fd = <int>fd
        sqe.op_flags = mask
        sqe.len = POLL_ADD_MULTI if multi else 0
        sqe.user_data = _poll_ud(fd, gen)
        self._entries[fd].gen = URING_MULTI if multi else URING_ONESHOT
        return 0

    cdef int _disarm(self, long long fd, int slot) except -1:
        cdef fastio_uring_sqe *sqe
        if not self._entries[fd].gen:
            return 0
        if fastio_ring_inherited(&self._hub.ring):
            # A forked child forgets the fd; the poll is the parent's.
            self._entries[fd].gen = 0
            return 0
        sqe = self._sqe()
        sqe.opcode = FASTIO_OP_POLL_REMOVE
        sqe.fd = -1
        sqe.addr = _poll_ud(fd, <uint32_t>slot)
        sqe.user_data = FASTIO_UD_IGNORE
        self._entries[fd].gen = 0
        return 0

    cdef int _new_slot(self) noexcept:
        self._next = (self._next + 1) & URING_GEN_MASK
        return <int>self._next

    cdef int _sys_add(self, long long fd, uint32_t mask) except -1:
        cdef int slot, err
        # The kernel would only say so in the poll's CQE, later; and a file
        # without poll support (a regular file) it would report ready for
        # ever: refused as epoll refuses it.
        err = EBADF if fd >= self._direct_limit else fastio_fd_poll_error(<int>fd)
        if err:
            _raise_errno(err)
        slot = self._new_slot()
        self._store(fd, mask, slot)  # makes the table entry _arm marks
        self._arm(fd, mask, <uint32_t>slot)
        return slot

    cdef int _mod(self, long long fd, uint32_t mask) except -1:
        # Replaces Poller._mod: a modify re-arms under a new generation,
        # which is the table's slot (Poller._mod would store the old one).
        cdef uint32_t old
        cdef int slot
        cdef bint armed
        self._check_open()
        if not self._lookup(fd, &old, &slot):
            raise FileNotFoundError(ENOENT, _os.strerror(ENOENT))
        armed = self._entries[fd].gen != 0
        self._disarm(fd, slot)
        self._entries[fd].mask = mask
        if armed:
            # (if it had fired, the next wait re-arms it with the new mask)
            slot = self._new_slot()
            self._entries[fd].slot = slot
            self._arm(fd, mask, <uint32_t>slot)
        return 0

    cdef int _sys_del(self, long long fd, int slot, uint32_t mask) except -1:
        # _del has already forgotten the fd; the entry's armed flag is intact.
        if self._entries[fd].gen:
            self._entries[fd].gen = 1
            self._disarm(fd, slot)
            if not self._busy:
                # The poll in flight holds the file open: remove it now, so
                # that closing the fd next closes the socket (a listener
                # refuses connections at once), as after epoll's EPOLL_CTL_DEL.
                # During a wait (another thread) it goes in with that wait's
                # next io_uring_enter.
                self._flush_removals()
        return 0

    cdef int _flush_removals(self) except -1:
        cdef int err
        if fastio_ring_inherited(&self._hub.ring):
            return 0
        err = fastio_ring_enter(&self._hub.ring, 0, -1)
        if err and err not in (EINTR, EAGAIN, EBUSY, EEXIST):
            _raise_errno(err)  # (EEXIST: a single-issuer ring of another thread)
        return 0

    cdef int _rearm(self) except -1:
        cdef Py_ssize_t i
        cdef int fd
        cdef fdentry *e
        for i in range(self._nfired):
            fd = self._fired[i]
            if fd < self._cap:
                e = &self._entries[fd]
                if e.slot >= 0 and not e.gen:
                    self._arm(fd, e.mask, <uint32_t>e.slot)
        self._nfired = 0
        return 0

    cdef int _note_fired(self, int fd) except -1:
        cdef int *p
        if self._nfired == self._capfired:
            p = <int *>PyMem_Realloc(self._fired, (self._capfired * 2 + 64) * sizeof(int))
            if p == NULL:
                raise MemoryError()
            self._fired = p
            self._capfired = self._capfired * 2 + 64
        self._fired[self._nfired] = fd
        self._nfired += 1
        return 0

    cdef Py_ssize_t _wait_once(self, fastio_event **buf, Py_ssize_t *bufcap,
                               int64_t timeout_ns, Py_ssize_t maxevents) except -2:
        cdef unsigned to_submit, head
        cdef int err
        cdef fastio_ring *ring = &self._hub.ring
        cdef fastio_uring_cqe *cqe
        cdef Py_ssize_t k = 0, seen = 0
        cdef uint64_t ud
        cdef long long fd
        cdef uint32_t gen, events
        cdef fdentry *e
        fastio_check_own_ring(ring)
        self._hub.turn += 1
        self._rearm()
        grow_events(buf, bufcap, self._count)
        if self._hub.has_buffers:
            fastio_ring_recycle_flush(ring)
        to_submit = fastio_ring_publish(ring)
        if self._hub.ndone:
            timeout_ns = 0  # the loop has completions to handle: do not block
        if timeout_ns > 0:
            # epoll_wait() ends up to 0.1% past its timeout (the kernel's
            # timer slack for poll, select and epoll: 50 us to 100 ms), an
            # io_uring wait on time: given the same slack, timers run when
            # they run on epoll.
            timeout_ns += min(max(timeout_ns // 1000, 50000), 100000000)
        if timeout_ns == 0:
            err = fastio_ring_submit_wait(ring, to_submit, 1, 0)
        else:
            with nogil:
                err = fastio_ring_submit_wait(ring, to_submit, 1, timeout_ns)
        if err == EAGAIN or err == EBUSY:
            err = 0
        head = fastio_ring_cq_head(ring)
        while True:
            cqe = fastio_ring_peek(ring, &head)
            if cqe == NULL:
                if seen < ring.cq_entries:
                    break
                # A full CQ: the kernel may hold more (FEAT_NODROP keeps
                # overflowed CQEs); GETEVENTS moves them in.
                fastio_ring_cq_advance(ring, head)
                seen = 0
                if fastio_ring_submit_wait(ring, 0, 1, 0) not in (0, ETIME, EINTR, EAGAIN, EBUSY):
                    break
                head = fastio_ring_cq_head(ring)
                continue
            seen += 1
            ud = cqe.user_data
            if <int>(ud & 0xff) == FASTIO_UD_POLL:
                # (a C cast truncates: `& 0xffffffff` would be Python int arithmetic)
                fd = <long long><uint32_t>(ud >> 8)
                gen = <uint32_t>(ud >> 40)
                if fd < self._cap:
                    e = &self._entries[fd]
                    if e.slot >= 0 and e.gen and <uint32_t>e.slot == gen:
                        if cqe.res >= 0:
                            events = <uint32_t>cqe.res & (e.mask | POLLERR | POLLHUP | POLLNVAL)
                        elif e.gen == URING_MULTI and cqe.res == -EINVAL:
                            # A kernel without multishot polls (before 5.13):
                            # one-shot polls as before.
                            self._no_multi = True
                            events = 0
                        else:
                            events = POLLERR | POLLNVAL
                        if events == 0:
                            # Only what was not asked for (POLLRDHUP): not a
                            # report; wait for a wake-up (see the top).
                            if e.gen == URING_ONESHOT or not cqe.flags & FASTIO_CQE_F_MORE:
                                if self._no_multi:
                                    e.gen = URING_IDLE
                                    self._note_fired(<int>fd)
                                else:
                                    self._arm(fd, e.mask, <uint32_t>e.slot, True)
                            continue
                        if e.gen == URING_MULTI and cqe.flags & FASTIO_CQE_F_MORE:
                            # Remove the multishot poll; one-shot polls take
                            # over under a new generation, so none of its
                            # CQEs still to come passes for theirs.
                            self._disarm(fd, e.slot)
                            e.slot = self._new_slot()
                        e.gen = URING_IDLE
                        self._note_fired(<int>fd)
                        if k >= bufcap[0]:
                            grow_events(buf, bufcap, k + 1)
                        buf[0][k].fd = <int>fd
                        if cqe.res < 0:
                            # A bad fd: reported, not re-armed (it would spin).
                            e.gen = URING_BADFD
                        buf[0][k].events = events
                        buf[0][k].gen = 0
                        k += 1
            elif <int>(ud & 0xff) != FASTIO_UD_IGNORE:
                if fastio_hub_push(&self._hub, cqe):
                    fastio_ring_cq_advance(ring, head)
                    raise MemoryError()
        fastio_ring_cq_advance(ring, head)
        if self.closed:
            # close() from another thread while this wait blocked: it left
            # the ring for this thread to release, after reporting.
            self._release_ring()
            return k
        if k or err == ETIME or self._hub.ndone or timeout_ns == 0:
            return k
        self._err = err
        if err == 0:
            # Woken with nothing to report (stale or ignored completions, or
            # a signal the kernel did not report as EINTR): run the signal
            # handlers and wait on with the time left, as after EINTR.
            self._err = EINTR
        return -1

    cdef int64_t _timeout_unit(self):
        # The kernel takes a timespec, but a wait rounds up to whole ms as
        # epoll_wait's does: timers then run when they run on epoll (asyncio
        # code, and tests, come to rely on a deadline being passed by then).
        return NS_PER_MS

    def fileno(self):
        """Return the io_uring file descriptor."""
        self._check_open()
        return self._hub.ring.fd

    def close(self):
        """Release the ring (the kernel cancels what is in flight); calling
        it again does nothing. A wait blocked in another thread returns
        normally when it wakes, and releases the ring then."""
        if not self.closed:
            self.closed = True
            if not self._busy:
                self._release_ring()

    cdef void _release_ring(self) noexcept:
        if self._hub.ring.fd >= 0:
            fastio_ring_cancel_all(&self._hub.ring)
        fastio_ring_close(&self._hub.ring)
        self._hub.has_buffers = False
        self._hub.ndone = 0
