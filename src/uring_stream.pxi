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
#   dry) ends a multishot recv: it is re-armed.
# * Sending: write() appends to the pending buffer; one send SQE per stream
#   is in flight, from a buffer left untouched until its CQE (the kernel may
#   read it any time before). A short send is resubmitted from where it
#   stopped; what was written meanwhile goes next. The owed bytes (pending +
#   in flight) drive the face's get_write_buffer_size() and flow control.
#   Outside a loop run nothing would submit an SQE or reap its completion,
#   so write() then sends what the kernel takes at once, as a readiness
#   transport does.
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

from libc.errno cimport EAGAIN, EBADF, EBUSY, EINTR
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memmove, memset

from fastio_uring cimport *

cdef extern from "<errno.h>":
    int ECANCELED, ENOBUFS

cdef enum:
    UR_OFF = 0
    UR_ARMED = 1
    UR_CANCELLING = 2


cdef inline uint64_t _uring_ud(int kind, Py_ssize_t slot) noexcept:
    return <uint64_t>kind | (<uint64_t>slot << 8)


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
    # Inside the loop's run: the next wait submits what is queued and the
    # loop reaps the completions (else write() sends at once).
    cdef public bint _running
    # With incremental buffers: where each buffer's unread bytes start.
    cdef uint32_t *_boff

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
        PyMem_Free(self._boff)

    cdef fastio_uring_sqe *_sqe(self) except NULL:
        cdef fastio_ring *ring = &self._hub.ring
        cdef fastio_uring_sqe *sqe
        cdef int err
        if ring.fd < 0:
            raise RuntimeError("Event loop is closed")
        sqe = fastio_ring_get_sqe(ring)
        if sqe == NULL:
            # SQ full: submit what is queued now, without waiting.
            err = fastio_ring_submit_wait(ring, fastio_ring_publish(ring), 0, -1)
            if err and err != EINTR and err != EAGAIN and err != EBUSY:
                raise OSError(err, "io_uring_enter: " + _os.strerror(err))
            sqe = fastio_ring_get_sqe(ring)
            if sqe == NULL:
                raise OSError(EBUSY, "io_uring submission queue stays full")
        return sqe

    def _submit(self):
        """Submit what is queued, without waiting (at the end of a loop run)."""
        cdef fastio_ring *ring = &self._hub.ring
        cdef int err
        if ring.fd < 0:
            return
        err = fastio_ring_submit_wait(ring, fastio_ring_publish(ring), 0, -1)
        if err and err != EINTR and err != EAGAIN and err != EBUSY:
            raise OSError(err, "io_uring_enter: " + _os.strerror(err))

    cdef int _cancel(self, uint64_t target) except -1:
        cdef fastio_uring_sqe *sqe
        if self._hub.ring.fd < 0:
            return 0  # the ring is gone, and with it every op
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
        self._running = False

    def _reap(self):
        """Hand this iteration's completions to their streams."""
        self._reap_c()

    cdef int _reap_c(self) except -1:
        cdef fastio_uring_hub *hub = self._hub
        cdef size_t i = 0, n = hub.ndone
        cdef fastio_uring_cqe cqe
        cdef object s
        if n == 0:
            return 0
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
                if i < n:
                    memmove(hub.done, hub.done + i, (n - i) * sizeof(fastio_uring_cqe))
                hub.ndone = n - i
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
    # In flight: bytes [_soff:_slen] at _sptr, owned by _sending (a bytes
    # written as is, or a bytearray the writes collected in).
    cdef object _sending
    cdef const char *_sptr
    cdef Py_ssize_t _soff, _slen
    cdef bytearray _pending  # written, not in flight yet
    cdef bytearray _spare    # the next collecting buffer, kept for reuse
    cdef bytearray _held     # received while reading was paused
    cdef bint _held_eof

    cdef int _bind(self, UringDriver drv, int fd) except -1:
        self._drv = drv
        self._fd = fd
        self._slot = -1
        self._pending = bytearray()
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
        if PyByteArray_GET_SIZE(self._held) or self._held_eof:
            # Input kept while paused goes first, in order.
            self._up_held()
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

    cdef int stop_reading(self) except -1:
        """Cancel the recv; what it still completes with is held."""
        if self._recv == UR_ARMED:
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
        if res == 0:
            if self._holding() or PyByteArray_GET_SIZE(self._held):
                self._held_eof = True
            else:
                self._up_eof()
        elif res < 0 and res != -ENOBUFS and res != -ECANCELED:
            self._up_error(-res, False)
        elif not self._holding() and not self._held_eof:
            self.start_reading()
        return 0

    def _deliver_held(self):
        # After start_reading(): what came in while paused, then the EOF if
        # it came too, then reading goes on.
        cdef bytearray held
        cdef Py_ssize_t n, took
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
        self.start_reading()

    # --- sending

    cdef Py_ssize_t owed(self) except -1:
        """Return the bytes written and not yet sent (pending + in flight)."""
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(self._pending)
        if self._sending is not None:
            n += self._slen - self._soff
        return n

    cdef int write_bytes(self, bytes data) except -1:
        """write() `data`, in flight as it is (no copy) when nothing is owed."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if (self._drv._running and not self._send_busy and not PyByteArray_GET_SIZE(self._pending)
                and not self._dropped):
            if n:
                # Immutable, and held until the send's CQE.
                self._sending = data
                self._sptr = PyBytes_AS_STRING(data)
                self._soff, self._slen = 0, n
                self._submit_send()
            return 0
        return self.write(PyBytes_AS_STRING(data), n)

    cdef int write(self, const char *p, Py_ssize_t n) except -1:
        """Queue `n` bytes at `p` (copied); send them when the send before is done."""
        cdef Py_ssize_t size
        cdef long long sent
        cdef int err
        if n == 0 or self._dropped:
            return 0
        if not self._drv._running and not self._send_busy and not PyByteArray_GET_SIZE(self._pending):
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
        size = PyByteArray_GET_SIZE(self._pending)
        PyByteArray_Resize(self._pending, size + n)
        memcpy(PyByteArray_AS_STRING(self._pending) + size, p, n)
        if not self._send_busy:
            self._send_next()
        return 0

    cdef int _send_next(self) except -1:
        """Put the pending bytes in flight (or the rest of a short send)."""
        cdef bytearray out
        if self._sending is None or self._soff >= self._slen:
            if type(self._sending) is bytearray:
                self._spare = <bytearray>self._sending
                del self._spare[:]
            self._sending = None
            if not PyByteArray_GET_SIZE(self._pending):
                return 0
            # Swap: the pending buffer goes out, the spare one collects.
            out = self._pending
            self._pending = self._spare if self._spare is not None else bytearray()
            self._spare = None
            self._sending = out
            self._sptr = PyByteArray_AS_STRING(out)
            self._soff, self._slen = 0, PyByteArray_GET_SIZE(out)
        return self._submit_send()

    cdef int _submit_send(self) except -1:
        cdef fastio_uring_sqe *sqe
        if self._fd_gone(True):
            return 0
        sqe = self._drv._sqe()
        sqe.opcode = FASTIO_OP_SEND
        sqe.fd = self._fd
        sqe.addr = <uint64_t><size_t>(self._sptr + self._soff)
        sqe.len = <uint32_t>min(self._slen - self._soff, 1 << 30)
        sqe.op_flags = FASTIO_MSG_NOSIGNAL
        sqe.user_data = _uring_ud(FASTIO_UD_SEND, self._slot)
        self._send_busy = True
        self._inflight += 1
        return 0

    cdef int _on_send(self, int res) except -1:
        self._send_busy = False
        self._inflight -= 1
        if self._dropped:
            # The bytes in flight were counted as dropped.
            self._sending = None
            self._drv._release(self)
            return 0
        if res < 0:
            self._up_error(-res, True)
            return 0
        self._soff += res
        self._send_next()
        self._up_sent()
        return 0

    cdef Py_ssize_t drop_output(self) except -1:
        """Drop what is owed and cancel the send in flight; return how much
        that was. Nothing is sent from then on."""
        cdef Py_ssize_t owed = self.owed()
        self._dropped = True
        del self._pending[:]
        if self._send_busy:
            self._drv._cancel(_uring_ud(FASTIO_UD_SEND, self._slot))
            self._soff = self._slen
        else:
            self._sending = None
        return owed

    cdef int lost(self) except -1:
        """The face is done (connection lost): free the slot once nothing is in flight."""
        self._released = True
        self._drv._release(self)
        return 0
