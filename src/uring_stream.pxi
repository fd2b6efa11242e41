# The completion engine both faces' io_uring transports run on:
# UringDriver (the ring side of a loop whose poller is a
# fastio._impl.core_c UringPoller with a buffer ring) and UringStream (one
# connected socket's operations on that ring). Loop's UringTransport
# (src/uring_loop.pxi) and fastio.EventLoop's (src/aio_uring.pxi) are thin
# faces over a UringStream: they own the transport semantics (flow control,
# close, the protocol's callbacks), the stream owns every SQE and CQE.
#
# The ring is the poller's (src/uring_poller.pxi): readiness polls
# (add_reader, the waker, signals, listening sockets) and these streams'
# operations share it and its one io_uring_enter per loop iteration. The
# poller copies every completion that is not a poll into the hub's `done`
# array; each loop iteration hands them to UringDriver._reap after the wait.
#
# A stream's data path:
# * Receiving: one multishot recv (IORING_RECV_MULTISHOT) into the provided
#   buffer ring while reading is wanted. Each completion names a buffer; its
#   bytes go to the face (_up_data) and the buffer goes back to the kernel.
#   stop_reading() cancels the recv; what was already received when the
#   cancel lands is kept (`_held`) and handed over after start_reading(),
#   so no data reaches a face that paused reading. ENOBUFS (the ring ran
#   dry) ends a multishot recv: it is re-armed. The EOF or error ending a
#   recv whose bytes were handed over from the same wait goes the way of
#   held input too, through the ready queue: a readiness transport reads
#   one or the other per turn, so the callbacks data_received() queued run
#   first, on a transport that is not closing yet.
# * Sending: write() copies into the stream's collecting buffer; one send
#   SQE per stream is in flight, from the other buffer, left untouched until
#   its CQE (the kernel may read it any time before). A short send is
#   resubmitted from where it stopped; what was written meanwhile goes next.
#   A write while the send in flight is still in the SQ (unseen by the
#   kernel, on the loop's thread) joins that send instead: both leave
#   together, as a readiness transport would already have sent both.
#   The owed bytes (collected + in flight) drive the face's
#   get_write_buffer_size() and flow control. The buffers come from the
#   driver's pool and go back to it once the stream owes nothing.
#   Discussion: a send from the written object itself (no copy) keeps every
#   reply alive until its completion; with many connections those overlap,
#   and glibc's malloc trims and refaults the top of its heap all the time
#   (two page faults per 16 KiB request at 100 connections, more CPU than
#   the copy). Pooled buffers never go back to malloc while in use.
#   Outside a loop run nothing would submit an SQE or reap its completion,
#   so write() then sends what the kernel takes at once, as a readiness
#   transport does.
#   Discussion: inside a run, write() does not send(2) at once either, even
#   with nothing owed (which would save the copy and the SQE, and send
#   while the bytes are hot). Measured on echo servers (Loop and EventLoop,
#   64 B to 16 KiB x 100 connections, 1 KiB x 1,000), that costs 1.14-1.19x
#   the CPU per request of the queued send: with COOP_TASKRUN the kernel
#   flags pending completions on the thread, so each send(2) leaves through
#   the task-work exit path and runs the receives one by one instead of in
#   the wait's batch; even with DEFER_TASKRUN it costs 1.03-1.12x (a syscall
#   per reply against a share of one io_uring_enter, and smaller batches).
#   Submitting the queued sends before the wait, once 64 or 256 KiB are
#   queued, costs 1.06-1.08x at 16 KiB for the same reasons. What keeps 16
#   KiB x 100 above epoll is the size of one turn's batch (a hundred
#   receives in the buffer ring, their bytes objects, a hundred pooled
#   replies: megabytes, past a core's L2), so the kernel's copies and ours
#   miss the cache; a ring of 32 buffers instead of 128 narrows that (0.96x
#   at 16 KiB, 0.86x at 64 KiB) but runs dry at 4 KiB x 1,000 (1.08x).
#   Handing the kernel only what the last turns used (plus a margin, more
#   after ENOBUFS), from a stack of the buffers returned last, measured
#   0.96-0.97x at 16 KiB x 100 on EventLoop but 0.99x on Loop and 0.95x to
#   1.04x at 1-4 KiB x 1,000: within the noise but for one case, and a
#   burst then costs re-arms after ENOBUFS. Not done.
# * drop_output() (abort, a broken connection) cancels the send in flight.
#
# Ownership: every op in flight refers to its stream by slot (user_data:
# kind | slot << 8); the driver's slot list holds the stream until its last
# CQE, even after the face lost its connection, so a completion never lands
# on a freed object and a slot is never reused while an op of its is in
# flight. SQEs are submitted by the next wait, which comes before any
# callback the loop schedules: a face that closes its socket from a
# scheduled callback (connection_lost) never leaves an SQE naming a reused
# fd number. Closing the loop closes the ring: the kernel cancels
# everything (fastio_ring_cancel_all waits for it), and the slot list goes
# with the driver.

from libc.errno cimport EAGAIN, EBADF, EBUSY, EEXIST, EINTR, EINVAL, EPIPE
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memmove, memset
from cpython.mem cimport PyMem_Realloc
from cpython.pythread cimport PyThread_get_thread_ident

from fastio_uring cimport *

cdef extern from "<errno.h>":
    int ECANCELED, ENOBUFS

cdef enum:
    UR_OFF = 0
    UR_ARMED = 1
    UR_CANCELLING = 2


cdef inline uint64_t _uring_ud(int kind, Py_ssize_t slot) noexcept:
    return <uint64_t>kind | (<uint64_t>slot << 8)


# Send buffers: size classes of 4 KiB << k; the driver keeps up to
# URING_POOL_BYTES of free ones. A buffer larger than the last class is
# malloc'd to size and freed when done.
cdef enum:
    URING_MIN_SHIFT = 12
    URING_CLASSES = 9           # 4 KiB .. 1 MiB
    URING_POOL_BYTES = 16 << 20


cdef inline int _uring_class(Py_ssize_t need) noexcept:
    cdef int k = 0
    while k < URING_CLASSES and (<Py_ssize_t>1 << (URING_MIN_SHIFT + k)) < need:
        k += 1
    return k  # URING_CLASSES: too big for a class


@cython.final
cdef class UringDriver:
    """The completion side of a loop on an io_uring poller with buffers.

    :param poller: a fastio._impl.core_c.UringPoller made with nbufs > 0.
    """

    cdef object _poller  # keeps the hub alive
    cdef fastio_uring_hub *_hub
    cdef list _slots
    cdef list _free
    cdef readonly Py_ssize_t live
    # The thread running the loop (0: none). Inside its run the next wait
    # submits what is queued and the loop reaps the completions; else
    # write() sends at once (see UringStream.write for another thread).
    cdef unsigned long _owner
    # With incremental buffers: where each buffer's unread bytes start.
    cdef uint32_t *_boff
    # Free send buffers, a stack per size class (see _take/_give).
    cdef char **_pool[URING_CLASSES]
    cdef Py_ssize_t _npool[URING_CLASSES]
    cdef Py_ssize_t _cappool[URING_CLASSES]
    cdef Py_ssize_t _poolbytes
    cdef bint _no_sync_cancel  # the kernel has no IORING_REGISTER_SYNC_CANCEL (before 6.0)

    def __init__(self, poller):
        self._poller = poller
        self._hub = <fastio_uring_hub *>PyCapsule_GetPointer(
            poller._hub_capsule(), "fastio._impl.core_c.uring_hub")
        if not self._hub.has_buffers:
            raise ValueError("the poller has no buffer ring (UringPoller(nbufs=...))")
        self._slots = []
        self._free = []
        if self._hub.ring.br_inc:
            self._boff = <uint32_t *>PyMem_Malloc(self._hub.ring.br_entries * sizeof(uint32_t))
            if self._boff == NULL:
                raise MemoryError()
            memset(self._boff, 0, self._hub.ring.br_entries * sizeof(uint32_t))

    def __dealloc__(self):
        cdef int k
        cdef Py_ssize_t i
        PyMem_Free(self._boff)
        for k in range(URING_CLASSES):
            for i in range(self._npool[k]):
                PyMem_Free(self._pool[k][i])
            PyMem_Free(self._pool[k])

    cdef char *_take(self, Py_ssize_t need, Py_ssize_t *cap) except NULL:
        """Return a send buffer of at least `need` bytes (its size in `cap`)."""
        cdef int k = _uring_class(need)
        cdef char *p
        if k < URING_CLASSES and self._npool[k]:
            self._npool[k] -= 1
            cap[0] = <Py_ssize_t>1 << (URING_MIN_SHIFT + k)
            self._poolbytes -= cap[0]
            return self._pool[k][self._npool[k]]
        cap[0] = need if k == URING_CLASSES else <Py_ssize_t>1 << (URING_MIN_SHIFT + k)
        p = <char *>PyMem_Malloc(cap[0])
        if p == NULL:
            raise MemoryError()
        return p

    cdef char *_append(self, char *buf, Py_ssize_t *cap, Py_ssize_t length,
                       const char *p, Py_ssize_t n) except NULL:
        """Copy `n` bytes at `p` after the `length` bytes held in `buf` (a
        buffer from _take(), or NULL, of `cap[0]` bytes); return the buffer
        they are in: a bigger one from _take() if they did not fit."""
        cdef char *grown
        cdef Py_ssize_t old = cap[0]
        if old - length < n:
            # (geometric growth: many small writes stay linear)
            grown = self._take(max(length + n, 2 * old), cap)
            if length:
                memcpy(grown, buf, length)
            self._give(buf, old)
            buf = grown
        memcpy(buf + length, p, n)
        return buf

    cdef void _give(self, char *p, Py_ssize_t cap) noexcept:
        """Take back a buffer from _take() (nothing in flight from it)."""
        cdef int k = _uring_class(cap)
        cdef char **grown
        if p == NULL:
            return
        if (k == URING_CLASSES or cap != (<Py_ssize_t>1 << (URING_MIN_SHIFT + k))
                or self._poolbytes + cap > URING_POOL_BYTES):
            PyMem_Free(p)
            return
        if self._npool[k] == self._cappool[k]:
            grown = <char **>PyMem_Realloc(self._pool[k], (self._cappool[k] * 2 + 16) * sizeof(char *))
            if grown == NULL:
                PyMem_Free(p)
                return
            self._pool[k] = grown
            self._cappool[k] = self._cappool[k] * 2 + 16
        self._pool[k][self._npool[k]] = p
        self._npool[k] += 1
        self._poolbytes += cap

    cdef fastio_uring_sqe *_sqe(self) except NULL:
        cdef fastio_ring *ring = &self._hub.ring
        cdef fastio_uring_sqe *sqe
        cdef int err
        if ring.fd < 0:
            raise RuntimeError("Event loop is closed")
        sqe = fastio_ring_get_sqe(ring)
        if sqe == NULL:
            fastio_check_own_ring(ring)
            # SQ full: submit what is queued now, without waiting.
            err = fastio_ring_submit_wait(ring, fastio_ring_publish(ring), 0, -1)
            if err and err != EINTR and err != EAGAIN and err != EBUSY:
                raise OSError(err, "io_uring_enter: " + _os.strerror(err))
            sqe = fastio_ring_get_sqe(ring)
            if sqe == NULL:
                raise OSError(EBUSY, "io_uring submission queue stays full")
        return sqe

    @property
    def _running(self):
        """Whether a loop run is going on (set by the loop, from its thread)."""
        return self._owner != 0

    @_running.setter
    def _running(self, bint running):
        self._owner = PyThread_get_thread_ident() if running else 0

    cdef int _submit_now(self) except -1:
        """Submit what is queued from a thread other than the loop's, whose
        wait would not see it before it wakes."""
        cdef fastio_ring *ring = &self._hub.ring
        cdef int err
        if ring.fd < 0 or fastio_ring_inherited(ring):
            return 0
        err = fastio_ring_submit_wait(ring, fastio_ring_publish(ring), 0, -1)
        # (EEXIST: a single-issuer ring serves only the loop's thread; the
        # loop's next wake submits it)
        if err and err != EINTR and err != EAGAIN and err != EBUSY and err != EEXIST:
            raise OSError(err, "io_uring_enter: " + _os.strerror(err))
        return 0

    def _submit(self):
        """Submit what is queued, without waiting (at the end of a loop run)."""
        cdef fastio_ring *ring = &self._hub.ring
        cdef int err
        if ring.fd < 0 or fastio_ring_inherited(ring):
            return
        err = fastio_ring_submit_wait(ring, fastio_ring_publish(ring), 0, -1)
        if err and err != EINTR and err != EAGAIN and err != EBUSY:
            raise OSError(err, "io_uring_enter: " + _os.strerror(err))

    cdef int _cancel_now(self, uint64_t target) except -1:
        """Cancel the op `target` at once where the kernel can, else as
        `_cancel` does (with the next wait).

        A recv left armed until the next wait goes on taking whatever
        arrives (the ring's task work runs at any syscall's exit, a send(2)
        of the same turn's included) into the buffer ring, up to all of it:
        a paused transport would hold it and its writer would never meet
        backpressure, where a readiness transport stops reading at
        pause_reading(). Not by submitting an async cancel now: that would
        submit the sends queued before it too, which a close() or a write
        of this turn may still take back (UringStream.flush_now). An op the
        kernel does not know (ENOENT) may be one whose SQE waits in the SQ
        (a recv re-armed and paused in one turn): the async cancel queued
        behind it stops it as soon as it is submitted."""
        cdef int err
        if self._hub.ring.fd < 0 or fastio_ring_inherited(&self._hub.ring):
            return 0
        if not self._no_sync_cancel:
            err = fastio_ring_cancel_now(&self._hub.ring, target)
            if err == 0:
                return 0
            if err == EINVAL:
                self._no_sync_cancel = True
        return self._cancel(target)

    cdef int _cancel(self, uint64_t target) except -1:
        cdef fastio_uring_sqe *sqe
        if self._hub.ring.fd < 0 or fastio_ring_inherited(&self._hub.ring):
            # The ring is gone, and with it every op; or it is a forked
            # child's copy of the parent's, whose ops are not the child's.
            return 0
        sqe = self._sqe()
        sqe.opcode = FASTIO_OP_ASYNC_CANCEL
        sqe.fd = -1
        sqe.addr = target
        sqe.user_data = FASTIO_UD_IGNORE
        return 0

    cdef Py_ssize_t _attach(self, UringStream s) except -1:
        cdef Py_ssize_t slot
        if self._free:
            slot = self._free.pop()
            self._slots[slot] = s
        else:
            slot = len(self._slots)
            self._slots.append(s)
        self.live += 1
        return slot

    cdef int _release(self, UringStream s) except -1:
        """Free `s`'s slot once its face is done with it and nothing is in flight."""
        if s._slot < 0 or s._inflight or not s._released:
            return 0
        self._slots[s._slot] = None
        self._free.append(s._slot)
        s._slot = -1
        self.live -= 1
        return 0

    def _forget(self):
        """Let go of every stream once the ring is closed (no completion can
        come any more), so that the transports' sockets are collected and
        closed as a readiness loop's are; before that, do nothing."""
        cdef object s
        if self._hub.ring.fd >= 0:
            return
        for s in self._slots:
            if s is not None:
                (<UringStream>s)._slot = -1
        self._slots = []
        self._free = []
        self.live = 0
        self._owner = 0

    def _reap(self):
        """Hand this iteration's completions to their streams."""
        self._reap_c(-1)

    def _reap_next(self):
        """Hand the next completion of this iteration to its stream (a loop
        in debug mode runs each completion as a Handle of its own)."""
        self._reap_c(1)

    cdef object _stream_of(self, size_t i):
        """Return the stream of the i-th completion of this iteration, or None."""
        if i >= self._hub.ndone:
            return None
        return self._slots[<Py_ssize_t>(self._hub.done[i].user_data >> 8)]

    cdef int _note_sent(self) except -1:
        """Tell each stream what its send completion, not handled yet,
        says the kernel took, so its write buffer's size drops at once.

        A face that handles the completions after other callbacks of the
        iteration (asyncio's: after the handles ready before the wait)
        calls it right after the wait: a write made before the wait has
        then left the buffer, as a readiness transport's send(2) would have
        emptied it, before any callback asks get_write_buffer_size().
        """
        cdef fastio_uring_hub *hub = self._hub
        cdef size_t i
        cdef fastio_uring_cqe *cqe
        cdef object s
        for i in range(hub.ndone):
            cqe = &hub.done[i]
            if <int>(cqe.user_data & 0xff) == FASTIO_UD_SEND and cqe.res > 0:
                s = self._slots[<Py_ssize_t>(cqe.user_data >> 8)]
                if s is not None:
                    (<UringStream>s)._acked = cqe.res
        return 0

    cdef int _reap_c(self, Py_ssize_t most=-1) except -1:
        """Hand the first `most` completions (-1: all) to their streams."""
        cdef fastio_uring_hub *hub = self._hub
        cdef size_t i = 0, total = hub.ndone, n = hub.ndone
        cdef fastio_uring_cqe cqe
        cdef object s
        if n == 0:
            return 0
        if 0 <= most < <Py_ssize_t>n:
            n = <size_t>most
        try:
            while i < n:
                cqe = hub.done[i]
                i += 1
                s = self._slots[<Py_ssize_t>(cqe.user_data >> 8)]
                if s is not None:
                    (<UringStream>s)._complete(<int>(cqe.user_data & 0xff), cqe.res, cqe.flags)
        finally:
            # A KeyboardInterrupt out of a protocol leaves the rest for the
            # next iteration, as the ready queue does.
            if hub.ring.fd >= 0:
                if i < total:
                    memmove(hub.done, hub.done + i, (total - i) * sizeof(fastio_uring_cqe))
                hub.ndone = total - i
                fastio_ring_recycle_flush(&hub.ring)
        return 0


cdef class UringStream:
    """One connected socket's operations on the ring: a multishot recv into
    the buffer ring while reading is wanted, one send in flight (see the
    top of this file).

    A face subclasses it and overrides the upcalls: `_holding()` (reading
    is paused: keep what arrives), `_dead()` (closing: drop what arrives,
    arm nothing), `_up_data()`, `_up_eof()`, `_up_error()`, `_up_sent()` and
    `_up_held()` (schedule `_deliver_held()`).
    """

    cdef UringDriver _drv
    cdef Py_ssize_t _slot
    cdef int _fd
    cdef int _recv
    cdef int _inflight
    cdef bint _send_busy
    cdef bint _released
    cdef bint _dropped
    # Owed: bytes [_soff:_slen] of _fbuf (in flight while _send_busy, else
    # the rest of a short send), then _plen bytes collected in _cbuf.
    cdef char *_fbuf
    cdef Py_ssize_t _fcap, _soff, _slen
    cdef char *_cbuf
    cdef Py_ssize_t _ccap, _plen
    # The send SQE in flight and its position in the SQ (see write()).
    cdef fastio_uring_sqe *_send_sqe
    cdef unsigned _send_pos
    # What the send's completion, waiting in the driver, says the kernel
    # took (UringDriver._note_sent), until _on_send handles it.
    cdef Py_ssize_t _acked
    cdef bytearray _held     # received while reading was paused
    cdef bint _held_eof      # ... and then the EOF
    cdef int _held_err       # ... or then this error (errno)
    cdef bint _held_due      # _deliver_held() is scheduled
    cdef unsigned long _data_turn   # the loop's wait whose bytes were last handed over

    def __dealloc__(self):
        # Nothing is in flight by now: the driver's slot held this stream
        # until its last completion, or the ring was closed (everything
        # cancelled) before it let go.
        PyMem_Free(self._fbuf)
        PyMem_Free(self._cbuf)

    cdef int _bind(self, UringDriver drv, int fd) except -1:
        self._drv = drv
        self._fd = fd
        self._slot = -1
        self._held = bytearray()
        self._slot = drv._attach(self)
        return 0

    # --- upcalls, the face's

    cdef bint _holding(self) except -1:
        return False

    cdef bint _dead(self) except -1:
        return False

    cdef Py_ssize_t _up_data(self, char *buf, Py_ssize_t n) except -1:
        """Hand `n` received bytes to the face; return how many it took
        (fewer only if it paused reading or closed meanwhile)."""
        return n

    cdef int _up_eof(self) except -1:
        return 0

    cdef int _up_error(self, int err, bint sending) except -1:
        return 0

    cdef int _up_sent(self) except -1:
        """A send completed (`_send_busy`: another one is in flight)."""
        return 0

    cdef int _up_held(self) except -1:
        """Call `_deliver_held()` soon (from the loop's ready queue)."""
        return 0

    cdef int _live_fd(self) except -2:
        """Return the fd a new op may name, or -1 if the face's socket was
        closed behind it (its number may be another file's by now)."""
        return self._fd

    cdef bint _fd_gone(self, bint sending) except -1:
        # An op on a number the socket no longer owns could reach another
        # file: fail as recv(2)/send(2) on the closed socket object would.
        if self._live_fd() >= 0:
            return False
        self._up_error(EBADF, sending)
        return True

    # --- completions

    cdef int _complete(self, int kind, int res, uint32_t flags) except -1:
        if kind == FASTIO_UD_RECV:
            return self._on_recv(res, flags)
        if kind == FASTIO_UD_SEND:
            return self._on_send(res)
        return 0

    # --- receiving

    cdef int start_reading(self) except -1:
        """Arm the multishot recv, or hand over what was held first."""
        cdef fastio_uring_sqe *sqe
        if self._recv != UR_OFF:
            return 0  # armed, or being cancelled: _on_recv re-arms then
        if PyByteArray_GET_SIZE(self._held) or self._held_eof or self._held_err:
            # Input kept while paused goes first, in order.
            self._deliver_held_soon()
            return 0
        if self._fd_gone(False):
            return 0
        sqe = self._drv._sqe()
        sqe.opcode = FASTIO_OP_RECV
        sqe.fd = self._fd
        sqe.ioprio = FASTIO_RECV_MULTISHOT
        sqe.flags = FASTIO_SQE_BUFFER_SELECT
        sqe.buf_group = 0
        sqe.user_data = _uring_ud(FASTIO_UD_RECV, self._slot)
        self._recv = UR_ARMED
        self._inflight += 1
        return 0

    cdef int stop_reading(self, bint now=True) except -1:
        """Cancel the recv (`now`: at once, for a pause; else with the next
        wait, for a close, whose stream drops what arrives meanwhile); what
        it still completes with is held."""
        if self._recv == UR_ARMED:
            if now:
                self._drv._cancel_now(_uring_ud(FASTIO_UD_RECV, self._slot))
            else:
                self._drv._cancel(_uring_ud(FASTIO_UD_RECV, self._slot))
            self._recv = UR_CANCELLING
        return 0

    cdef int _hold(self, char *buf, Py_ssize_t n) except -1:
        cdef Py_ssize_t size = PyByteArray_GET_SIZE(self._held)
        PyByteArray_Resize(self._held, size + n)
        memcpy(PyByteArray_AS_STRING(self._held) + size, buf, n)
        return 0

    cdef int _on_recv(self, int res, uint32_t flags) except -1:
        cdef fastio_ring *ring = &self._drv._hub.ring
        cdef unsigned bid
        cdef char *buf
        cdef Py_ssize_t took
        cdef bint more = flags & FASTIO_CQE_F_MORE
        cdef bint done = True
        if not more:
            self._recv = UR_OFF
            self._inflight -= 1
        if flags & FASTIO_CQE_F_BUFFER:
            bid = flags >> FASTIO_CQE_BUFFER_SHIFT
            buf = fastio_ring_buffer(ring, bid)
            if self._drv._boff != NULL:
                # Incremental: the bytes follow what earlier receives took
                # from this buffer; it goes back once the kernel is done.
                buf += self._drv._boff[bid]
                if flags & FASTIO_CQE_F_BUF_MORE and res > 0:
                    self._drv._boff[bid] += res
                    done = False
                else:
                    self._drv._boff[bid] = 0
            try:
                if res > 0 and not self._dead():
                    if self._holding() or PyByteArray_GET_SIZE(self._held):
                        self._hold(buf, res)
                    else:
                        self._data_turn = self._drv._hub.turn
                        took = self._up_data(buf, res)
                        if took < res and not self._dead():
                            self._hold(buf + took, res - took)
            finally:
                if done:
                    fastio_ring_recycle(ring, bid)
        if more:
            return 0
        if self._released or self._dead():
            self._drv._release(self)
            return 0
        if res == 0 or (res < 0 and res != -ENOBUFS and res != -ECANCELED):
            if (PyByteArray_GET_SIZE(self._held) or self._holding()
                    or self._data_turn == self._drv._hub.turn):
                # The EOF or error comes after the bytes held before it, or,
                # reading paused, once it resumes: asyncio's transport does
                # not read (so sees neither) while paused. After bytes of
                # the same wait, it comes from the ready queue, behind the
                # callbacks their data_received() queued: a readiness
                # transport reads one or the other per turn, and sees the
                # EOF at its next read, queued behind those callbacks.
                if res == 0:
                    self._held_eof = True
                else:
                    self._held_err = -res
                if not self._holding():
                    # (also: reading resumed while this recv was being
                    # cancelled; start_reading() left the held bytes to us)
                    self._deliver_held_soon()
            elif res == 0:
                self._up_eof()
            else:
                self._up_error(-res, False)
        elif not self._holding() and not self._held_eof and not self._held_err:
            self.start_reading()
        return 0

    def reap_next(self):
        """Hand the loop's next completion, one of this stream's, to it."""
        self._drv._reap_c(1)

    cdef int _deliver_held_soon(self) except -1:
        # Once: a resume and an EOF of the same turn both ask.
        if not self._held_due:
            self._held_due = True
            self._up_held()
        return 0

    def _deliver_held(self):
        # After start_reading(): what came in while paused, then the EOF or
        # the error that ended the recv if one did, else reading goes on.
        cdef bytearray held
        cdef Py_ssize_t n, took
        cdef int err
        self._held_due = False
        if self._dead() or self._holding():
            return
        n = PyByteArray_GET_SIZE(self._held)
        if n:
            held = self._held
            self._held = bytearray()
            took = self._up_data(PyByteArray_AS_STRING(held), n)
            if took < n and not self._dead():
                self._hold(PyByteArray_AS_STRING(held) + took, n - took)
            if self._dead() or self._holding():
                return
        if self._held_eof:
            self._held_eof = False
            self._up_eof()
            return
        if self._held_err:
            err, self._held_err = self._held_err, 0
            self._up_error(err, False)
            return
        self.start_reading()

    # --- sending

    cdef Py_ssize_t owed(self) except -1:
        """Return the bytes written and not yet sent (in flight + collected)."""
        return self._slen - self._soff + self._plen

    cdef Py_ssize_t unsent(self) except -1:
        """Return owed() less what a completion not handled yet says the
        kernel took: the write buffer's size as a readiness transport's
        send(2) would have left it."""
        return self.owed() - self._acked

    cdef int write_bytes(self, bytes data, bint now=False) except -1:
        """write() the bytes of `data`."""
        return self.write(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), now)

    cdef int write(self, const char *p, Py_ssize_t n, bint now=False) except -1:
        """Queue `n` bytes at `p` (copied); send them when the send before is done.

        With nothing owed, what the kernel takes is sent at once (send(2))
        outside a loop run, or when `now`.
        """
        cdef long long sent
        cdef int err
        cdef unsigned long owner = self._drv._owner
        # Transports are not thread-safe, but a write from another thread
        # while the loop waits must not sit in the SQ until something wakes
        # the loop: it goes out as outside a run, and what it queues is
        # submitted at once, as a readiness transport's send(2) would go out.
        cdef bint foreign = owner != 0 and owner != PyThread_get_thread_ident()
        if n == 0 or self._dropped:
            return 0
        if self._held_err:
            # An error a recv ended with, not reported yet (held behind
            # bytes, a pause or the callbacks of its turn): the kernel
            # reports one once, and on a readiness transport it is this
            # write's send(2) that gets it.
            err, self._held_err = self._held_err, 0
            self._up_error(err, True)
            return 0
        if (now or owner == 0 or foreign) and not self.owed():
            if self._fd_gone(True):
                return 0
            sent = fastio_send(self._fd, p, n)
            if sent < 0:
                err = fastio_last_error()
                if not fastio_would_block(err):
                    self._up_error(err, True)
                    return 0
                sent = 0
            if sent == n:
                return 0
            p += sent
            n -= sent
            if self._drv._hub.ring.fd < 0:
                # As a readiness transport's write() on a closed loop: what
                # the kernel took is sent, the rest is not kept.
                raise RuntimeError("Event loop is closed")
        if (self._send_busy and not self._plen and owner != 0 and not foreign
                and self._slen - self._soff + n <= (1 << 30)
                and fastio_ring_sqe_unsubmitted(&self._drv._hub.ring, self._send_pos)):
            # The send in flight is still in the SQ, unseen by the kernel:
            # these bytes join it. They leave together, as a readiness
            # transport's write() would have sent both by now; a later
            # abort() then drops nothing that such a transport had sent.
            self._fbuf = self._drv._append(self._fbuf, &self._fcap, self._slen, p, n)
            self._slen += n
            self._send_sqe.addr = <uint64_t><size_t>(self._fbuf + self._soff)
            self._send_sqe.len = <uint32_t>(self._slen - self._soff)
            return 0
        self._cbuf = self._drv._append(self._cbuf, &self._ccap, self._plen, p, n)
        self._plen += n
        if not self._send_busy:
            self._send_next()
            if foreign:
                self._drv._submit_now()
        return 0

    cdef int flush_now(self) except -1:
        """Send at once (send(2)), as far as the kernel takes them, the
        bytes of a send still in the SQ: what a readiness transport's
        write() would already have sent. The face calls it where asyncio's
        outcome depends on its buffer being empty (close(), a write over the
        high-water mark); the rest goes in a new send, as after a short one."""
        cdef fastio_uring_sqe *sqe
        cdef long long sent
        if not (self._send_busy and not self._plen and self._drv._owner != 0
                and self._drv._owner == PyThread_get_thread_ident()
                and fastio_ring_sqe_unsubmitted(&self._drv._hub.ring, self._send_pos)):
            return 0
        if self._fd_gone(True):
            return 0
        # The kernel never sees that send: it becomes a no-op.
        sqe = self._send_sqe
        sqe.opcode = FASTIO_OP_NOP
        sqe.flags = 0
        sqe.fd = -1
        sqe.addr = 0
        sqe.len = 0
        sqe.op_flags = 0
        sqe.user_data = FASTIO_UD_IGNORE
        self._send_busy = False
        self._inflight -= 1
        sent = fastio_send(self._fd, self._fbuf + self._soff, self._slen - self._soff)
        if sent < 0:
            # An error goes the way it would have: the send is queued again
            # and fails in its turn, after the completions before it (a
            # reset the recv already took is reported first, as such).
            sent = 0
        self._soff += sent
        return self._send_next()

    cdef int _send_next(self) except -1:
        """Put the collected bytes in flight (or the rest of a short send)."""
        cdef char *b
        cdef Py_ssize_t c
        if self._soff >= self._slen:
            self._soff = self._slen = 0
            if not self._plen:
                # Owing nothing: the buffers go back to the pool.
                self._drv._give(self._fbuf, self._fcap)
                self._drv._give(self._cbuf, self._ccap)
                self._fbuf = self._cbuf = NULL
                self._fcap = self._ccap = 0
                return 0
            # Swap: the collected bytes go out, the sent buffer collects.
            b, c = self._fbuf, self._fcap
            self._fbuf, self._fcap = self._cbuf, self._ccap
            self._cbuf, self._ccap = b, c
            self._slen, self._plen = self._plen, 0
        return self._submit_send()

    cdef int _submit_send(self) except -1:
        cdef fastio_uring_sqe *sqe
        if self._fd_gone(True):
            return 0
        sqe = self._drv._sqe()
        sqe.opcode = FASTIO_OP_SEND
        sqe.fd = self._fd
        sqe.addr = <uint64_t><size_t>(self._fbuf + self._soff)
        sqe.len = <uint32_t>min(self._slen - self._soff, 1 << 30)
        sqe.op_flags = FASTIO_MSG_NOSIGNAL
        sqe.user_data = _uring_ud(FASTIO_UD_SEND, self._slot)
        self._send_sqe = sqe
        self._send_pos = fastio_ring_last_sqe_pos(&self._drv._hub.ring)
        self._send_busy = True
        self._inflight += 1
        return 0

    cdef int _on_send(self, int res) except -1:
        self._send_busy = False
        self._inflight -= 1
        self._acked = 0
        if self._dropped:
            # The bytes in flight were counted as dropped.
            self._soff = self._slen = 0
            self._send_next()  # (nothing collected: the buffers go back)
            self._drv._release(self)
            return 0
        if res < 0:
            if res == -EPIPE and self._held_err:
                # A recv took the reset first (the kernel reports it once):
                # the send fails with it, as a readiness transport's would.
                res, self._held_err = -self._held_err, 0
            self._up_error(-res, True)
            return 0
        self._soff += res
        self._send_next()
        self._up_sent()
        return 0

    cdef Py_ssize_t drop_output(self) except -1:
        """Drop what is owed and cancel the send in flight; return how much
        of it the kernel had not taken (unsent()). Nothing is sent from
        then on."""
        cdef Py_ssize_t owed = self.unsent()
        self._acked = 0
        self._dropped = True
        self._plen = 0
        self._soff = self._slen
        if self._send_busy:
            # Its buffer stays until the completion (the kernel may be
            # reading it); _on_send gives it back.
            self._drv._cancel(_uring_ud(FASTIO_UD_SEND, self._slot))
        else:
            self._send_next()
        return owed

    cdef int lost(self) except -1:
        """The face is done (connection lost): free the slot once nothing is in flight."""
        self._released = True
        self._drv._release(self)
        return 0
