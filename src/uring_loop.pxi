# Completion-based transports: a Loop whose poller is a fastio._impl.core_c
# UringPoller with a buffer ring (Loop(backend="io_uring")).
#
# The ring is the poller's (src/uring_poller.pxi): readiness polls
# (add_reader, the waker, signals, listening sockets) and these transports'
# operations share it and its one io_uring_enter per loop iteration. The
# poller copies every completion that is not a poll into the hub's `done`
# array; LoopCore._run_once_c hands them to UringDriver._reap after the wait.
#
# A transport's data path, against Transport's readiness one:
# * Receiving: one multishot recv (IORING_RECV_MULTISHOT) into the provided
#   buffer ring while reading is wanted. Each completion names a buffer; its
#   bytes go to the protocol (a compiled data_received gets the buffer
#   itself, as on the readiness path) and the buffer goes back to the
#   kernel. pause_reading() cancels the recv; what was already received
#   when the cancel lands is kept and delivered after resume_reading(), so
#   data_received is never called while paused. ENOBUFS (the ring ran dry)
#   ends a multishot recv: it is re-armed.
# * Sending: write() appends to the pending buffer; one send SQE per
#   transport is in flight, from a buffer left untouched until its CQE (the
#   kernel may read it any time before). A short send is resubmitted from
#   where it stopped; what was written meanwhile goes next. The owed bytes
#   (pending + in flight) drive get_write_buffer_size() and flow control.
# * close() flushes, then closes; abort() cancels the send in flight and
#   reports the unsent bytes as 'dropped_bytes'; write_eof() shuts down the
#   sending side once flushed.
#
# Ownership: every op in flight refers to its transport by slot (user_data:
# kind | slot << 8); the driver's slot list holds the transport until its
# last CQE, even after connection_lost(), so a completion never lands on a
# freed object and a slot is never reused while an op of its is in flight.
# Closing the loop closes the ring: the kernel cancels everything, and the
# slot list goes with the driver.

from libc.errno cimport EAGAIN, EBUSY, EINTR
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
    """The completion side of a LoopCore on an io_uring poller."""

    cdef LoopCore _loop
    cdef object _poller  # keeps the hub alive
    cdef fastio_uring_hub *_hub
    cdef list _slots
    cdef list _free
    cdef readonly Py_ssize_t live
    # With incremental buffers: where each buffer's unread bytes start.
    cdef uint32_t *_boff

    def __init__(self, LoopCore loop, poller):
        self._loop = loop
        self._poller = poller
        self._hub = <fastio_uring_hub *>PyCapsule_GetPointer(
            poller._hub_capsule(), "fastio._impl.core_c.uring_hub")
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

    cdef int _submit(self) except -1:
        """Submit what is queued, without waiting (outside a loop run)."""
        cdef fastio_ring *ring = &self._hub.ring
        cdef int err
        if ring.fd < 0:
            return 0
        err = fastio_ring_submit_wait(ring, fastio_ring_publish(ring), 0, -1)
        if err and err != EINTR and err != EAGAIN and err != EBUSY:
            raise OSError(err, "io_uring_enter: " + _os.strerror(err))
        return 0

    cdef int _cancel(self, uint64_t target) except -1:
        cdef fastio_uring_sqe *sqe = self._sqe()
        sqe.opcode = FASTIO_OP_ASYNC_CANCEL
        sqe.fd = -1
        sqe.addr = target
        sqe.user_data = FASTIO_UD_IGNORE
        return 0

    cdef Py_ssize_t _attach(self, UringTransportCore t) except -1:
        cdef Py_ssize_t slot
        if self._free:
            slot = self._free.pop()
            self._slots[slot] = t
        else:
            slot = len(self._slots)
            self._slots.append(t)
        self.live += 1
        return slot

    cdef int _release(self, UringTransportCore t) except -1:
        """Free `t`'s slot once it is lost and has nothing in flight."""
        if t._slot < 0 or t._inflight or not t._released:
            return 0
        self._slots[t._slot] = None
        self._free.append(t._slot)
        t._slot = -1
        self.live -= 1
        return 0

    cdef int _reap(self) except -1:
        cdef fastio_uring_hub *hub = self._hub
        cdef size_t i = 0, n = hub.ndone
        cdef fastio_uring_cqe cqe
        cdef int kind
        cdef object t
        if n == 0:
            return 0
        try:
            while i < n:
                cqe = hub.done[i]
                i += 1
                kind = <int>(cqe.user_data & 0xff)
                t = self._slots[<Py_ssize_t>(cqe.user_data >> 8)]
                if t is None:
                    continue
                if kind == FASTIO_UD_RECV:
                    (<UringTransportCore>t)._on_recv(cqe.res, cqe.flags)
                elif kind == FASTIO_UD_SEND:
                    (<UringTransportCore>t)._on_send(cqe.res)
        finally:
            # A KeyboardInterrupt out of a protocol leaves the rest for the
            # next iteration, as the ready queue does.
            if hub.ring.fd >= 0:
                if i < n:
                    memmove(hub.done, hub.done + i, (n - i) * sizeof(fastio_uring_cqe))
                hub.ndone = n - i
                fastio_ring_recycle_flush(&hub.ring)
        return 0


cdef class UringTransportCore(TransportCore):
    """TransportCore on io_uring: multishot recv into the loop's buffer
    ring, sends as SQEs (see the top of this file)."""

    cdef UringDriver _drv
    cdef Py_ssize_t _slot
    cdef int _recv
    cdef int _inflight
    cdef bint _send_busy
    cdef bint _released
    # In flight: bytes [_soff:_slen] at _sptr, owned by _sending (a bytes
    # written as is, or a bytearray the writes collected in).
    cdef object _sending
    cdef const char *_sptr
    cdef Py_ssize_t _soff, _slen
    cdef bytearray _spare    # the next collecting buffer, kept for reuse
    cdef bytearray _held     # received while reading was paused
    cdef bint _held_eof

    def __init__(self, LoopCore loop, sock, protocol, dict extra, server=None):
        if loop._uring is None:
            raise TypeError("UringTransport needs a Loop on io_uring")
        TransportCore.__init__(self, loop, sock, protocol, extra, server)
        self._drv = <UringDriver>loop._uring
        self._slot = self._drv._attach(self)
        self._held = bytearray()

    # --- receiving

    cdef bint _wants_input(self):
        return not self._closing and not self._reading_paused and not self._held_eof

    def _set_reading(self, bint reading):
        """Arm the multishot recv (after delivering what was held), or cancel it."""
        if reading:
            self._start_reading()
        else:
            self._stop_reading()

    def _set_writing(self, bint writing):
        pass  # sends are SQEs: there is no writability to watch

    cdef int _start_reading(self) except -1:
        cdef fastio_uring_sqe *sqe
        if self._recv != UR_OFF:
            return 0  # armed, or being cancelled: _on_recv re-arms then
        if self._held or self._held_eof:
            # Input kept while paused goes first, in order.
            self._loop.call_soon(self._deliver_held)
            return 0
        sqe = self._drv._sqe()
        sqe.opcode = FASTIO_OP_RECV
        sqe.fd = self._cfd
        sqe.ioprio = FASTIO_RECV_MULTISHOT
        sqe.flags = FASTIO_SQE_BUFFER_SELECT
        sqe.buf_group = 0
        sqe.user_data = _uring_ud(FASTIO_UD_RECV, self._slot)
        self._recv = UR_ARMED
        self._inflight += 1
        return 0

    cdef int _stop_reading(self) except -1:
        if self._recv == UR_ARMED:
            self._drv._cancel(_uring_ud(FASTIO_UD_RECV, self._slot))
            self._recv = UR_CANCELLING
        return 0

    cdef int _on_recv(self, int res, uint32_t flags) except -1:
        cdef fastio_ring *ring = &self._drv._hub.ring
        cdef unsigned bid
        cdef char *buf
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
                if res > 0 and not self._closing:
                    if self._reading_paused or self._held:
                        self._held += buf[:res]
                    else:
                        self._deliver(buf, res)
            finally:
                if done:
                    fastio_ring_recycle(ring, bid)
        if more:
            return 0
        if self._released or self._closing:
            self._drv._release(self)
            return 0
        if res == 0:
            if self._reading_paused or self._held:
                self._held_eof = True
            else:
                self._on_eof()
        elif res < 0 and res != -ENOBUFS and res != -ECANCELED:
            self._fatal_error(OSError(-res, _os.strerror(-res)), "Fatal read error on socket transport")
        elif self._wants_input():
            self._start_reading()
        return 0

    cdef int _deliver(self, char *buf, Py_ssize_t n) except -1:
        if self._c_data_received != NULL:
            try:
                self._c_data_received(self._protocol, buf, n)
            except Exception as exc:
                self._fatal_error(exc, "protocol.data_received() call failed.")
            return 0
        try:
            self._protocol.data_received(PyBytes_FromStringAndSize(buf, n))
        except Exception as exc:
            self._fatal_error(exc, "protocol.data_received() call failed.")
        return 0

    cdef int _on_eof(self) except -1:
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._fatal_error(exc, "protocol.eof_received() call failed.")
            return 0
        if not keep_open:
            self.close()
        return 0

    def _deliver_held(self):
        # resume_reading(): what came in while paused, then the EOF if it
        # came too, then reading goes on.
        cdef bytearray held
        if self._closing or self._reading_paused:
            return
        if self._held:
            held = self._held
            self._held = bytearray()
            self._deliver(PyByteArray_AS_STRING(held), len(held))
            if self._closing or self._reading_paused:
                return
        if self._held_eof:
            self._held_eof = False
            self._on_eof()
            return
        self._start_reading()

    # --- sending

    cpdef Py_ssize_t _owed(self) except -1:
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(self._buffer)
        if self._sending is not None:
            n += self._slen - self._soff
        return n

    def write(self, data):
        """Send `data` (bytes-like), buffering what is not sent yet.

        :raises RuntimeError: after write_eof().
        """
        cdef Py_ssize_t n
        if (PyBytes_CheckExact(data) and self._loop._in_run and not self._send_busy
                and not PyByteArray_GET_SIZE(self._buffer) and not self._eof and not self._conn_lost):
            n = PyBytes_GET_SIZE(data)
            if n:
                # Nothing owed: the bytes object itself goes in flight (it is
                # immutable and held until the send's CQE), no copy.
                self._sending = data
                self._sptr = PyBytes_AS_STRING(data)
                self._soff, self._slen = 0, n
                self._submit_send()
                self._maybe_pause_protocol()
            return
        TransportCore.write(self, data)

    cdef int _write(self, const char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t size
        cdef long long sent
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if n == 0 or self._conn_lost:
            return 0
        if not self._loop._in_run and not self._send_busy and not PyByteArray_GET_SIZE(self._buffer):
            # Outside the loop's run nothing would submit an SQE or reap its
            # completion: send what the kernel takes now, as Transport does.
            sent = self._send_now(p, n)
            if sent < 0 or sent == n:
                return 0
            p += sent
            n -= sent
        size = PyByteArray_GET_SIZE(self._buffer)
        PyByteArray_Resize(self._buffer, size + n)
        memcpy(PyByteArray_AS_STRING(self._buffer) + size, p, n)
        if not self._send_busy:
            self._send_next()
        self._maybe_pause_protocol()
        return 0

    cdef int _send_next(self) except -1:
        """Put the pending bytes in flight (or the rest of a short send)."""
        cdef bytearray out
        if self._sending is None or self._soff >= self._slen:
            if type(self._sending) is bytearray:
                self._spare = <bytearray>self._sending
                del self._spare[:]
            self._sending = None
            if not PyByteArray_GET_SIZE(self._buffer):
                return 0
            # Swap: the pending buffer goes out, the spare one collects.
            out = self._buffer
            self._buffer = self._spare if self._spare is not None else bytearray()
            self._spare = None
            self._sending = out
            self._sptr = PyByteArray_AS_STRING(out)
            self._soff, self._slen = 0, PyByteArray_GET_SIZE(out)
        return self._submit_send()

    cdef int _submit_send(self) except -1:
        cdef fastio_uring_sqe *sqe = self._drv._sqe()
        sqe.opcode = FASTIO_OP_SEND
        sqe.fd = self._cfd
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
        if self._conn_lost:
            # Aborted: the bytes in flight were counted as dropped.
            self._sending = None
            self._drv._release(self)
            return 0
        if res < 0:
            self._fatal_error(OSError(-res, _os.strerror(-res)), "Fatal write error on socket transport")
            return 0
        self._soff += res
        self._send_next()
        self._maybe_resume_protocol()
        if not self._send_busy:
            if self._closing:
                if not self._conn_lost:
                    self._conn_lost += 1
                    self._call_connection_lost(None)
            elif self._eof:
                self._shutdown_write()
        return 0

    def _drop_output(self):
        cdef Py_ssize_t owed = self._owed()
        if owed:
            self._extra["dropped_bytes"] = owed
        del self._buffer[:]
        if self._send_busy:
            self._drv._cancel(_uring_ud(FASTIO_UD_SEND, self._slot))
            self._soff = self._slen
        else:
            self._sending = None
        return 0

    def _lost(self):
        # After connection_lost(): the slot goes once no op is in flight.
        self._released = True
        self._drv._release(self)


class UringTransport(TransportMixin, UringTransportCore):
    """A TCP transport on io_uring: multishot recv into the loop's buffer
    ring, sends as SQEs. Same contract as `Transport`."""

    __slots__ = ()

    def _call_connection_lost(self, exc):
        try:
            TransportMixin._call_connection_lost(self, exc)
        finally:
            self._lost()
