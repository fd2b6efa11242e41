# cython: language_level=3
"""fastio._impl.echo_c: the echo server's and the load generator's per-chunk paths, compiled.

EchoCore is the base of fastio.echo.server's protocol. On a fastio._impl.loop_c
transport its data_received runs as C with the loop's receive buffer (see
src/fastio_capi.h): no bytes object, no Python frame per chunk, the reply
uppercased in place and handed to the transport's C write. Anywhere else
(another loop, a direct call) the Python data_received does the same.

BenchCore is the hot loop of fastio.echo.client.bench: the load generator
must cost less per request than the servers it measures, or it, not they,
sets the req/s.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New, PyCapsule_SetContext
from libc.stdint cimport uint32_t
from libc.string cimport memcmp, memcpy, memmove, memset

from fastio_capi cimport *
from fastio_fdtable cimport *
from fastio_platform cimport (EINTR, POLLERR, POLLHUP, POLLIN, POLLOUT, fastio_event, fastio_last_error,
                              fastio_monotonic_ns, fastio_recv, fastio_send, fastio_would_block)

import os as _os

from fastio._impl import core_c as _core, loop_c as _loop

cdef fastio_loop_capi *_loop_api = <fastio_loop_capi *>PyCapsule_GetPointer(
    _loop._C_API, FASTIO_LOOP_CAPI)
cdef fastio_core_capi *_core_api = <fastio_core_capi *>PyCapsule_GetPointer(
    _core._C_API, FASTIO_CORE_CAPI)
cdef object _CorePoller = _core.Poller

__all__ = ["EchoCore", "BenchCore", "UringEcho", "uring_status"]


cdef int echo_data_received(object protocol, char *buf, Py_ssize_t n) except -1:
    cdef EchoCore self = <EchoCore>protocol
    cdef Py_ssize_t i
    if self._draining:
        return 0
    self._in += n
    if self._upper:
        # bytes.upper(): ASCII letters only.
        for i in range(n):
            if b'a' <= buf[i] <= b'z':
                buf[i] -= 32
    return _loop_api.transport_write(self._transport, buf, n)


cdef class EchoCore:
    """Echo every chunk back to the transport (its ASCII uppercase with
    `_upper`); count the bytes received in `_in`. Chunks arriving once
    `_draining` is set are dropped."""

    cdef public object _transport
    cdef public bint _upper
    cdef public bint _draining
    cdef public long long _in

    _fastio_data_received = PyCapsule_New(<void *>echo_data_received, FASTIO_DATA_RECEIVED, NULL)

    def data_received(self, data):
        if self._draining:
            return
        self._in += len(data)
        if self._upper:
            data = data.upper()
        self._transport.write(data)


# The capsule's context names the class whose data_received it stands for.
PyCapsule_SetContext(EchoCore._fastio_data_received, <void *>EchoCore)


# ------------------------------------------------------- load generator


cdef struct bconn:
    bint live
    bint replied
    Py_ssize_t spos      # offset in the send ring of the next request
    Py_ssize_t rpos      # offset in the expected ring of the next reply byte
    Py_ssize_t partial   # bytes of the oldest outstanding reply already received
    Py_ssize_t nsent     # outstanding requests
    Py_ssize_t head      # index in `sent` of the oldest one
    double *sent         # send times, a ring of `pipeline` slots
    char *out            # bytes the kernel did not take yet (a partial write)
    Py_ssize_t outlen


cdef inline double _clock() noexcept:
    return <double>fastio_monotonic_ns() / 1e9


cdef class BenchCore:
    """The load generator's per-event path (fastio.echo.client.bench), compiled.

    Each step waits once on a fastio._impl.core_c poller and, per ready connection,
    receives, checks every byte against the expected stream, records the
    latency of each completed request and sends the next ones. What is rare
    -- a dropped connection, switching POLLOUT on and off -- calls back into
    Python. Connections are indexed by fd.

    :param poller: a fastio._impl.core_c poller the connections are registered with.
    :param send_ring: the request stream (a ring of `ring_len` bytes, doubled).
    :param expect_ring: the expected reply stream, likewise.
    :param drop: ``drop(fd, why)``, called when a connection fails.
    """

    cdef object _poller
    cdef object _modify
    cdef object _drop
    cdef bytes _send_ring
    cdef bytes _expect_ring
    cdef Py_ssize_t _size, _pipeline, _ring_len
    cdef bconn *_conns
    cdef Py_ssize_t _cap
    cdef char *_buf
    cdef Py_ssize_t _bufsize
    cdef fastio_event *_events
    cdef Py_ssize_t _events_cap
    cdef double *_lat
    cdef Py_ssize_t _nlat, _latcap
    cdef readonly long long done
    cdef readonly Py_ssize_t cold
    cdef readonly Py_ssize_t outstanding
    cdef public bint sending

    def __cinit__(self, *args, **kwargs):
        self._conns = NULL

    def __init__(self, poller, Py_ssize_t size, Py_ssize_t pipeline, bytes send_ring,
                 bytes expect_ring, Py_ssize_t ring_len, Py_ssize_t recv_size, drop):
        if not isinstance(poller, _CorePoller):
            raise TypeError("BenchCore needs a fastio._impl.core_c poller, not %r" % (poller,))
        if size < 1 or pipeline < 1 or ring_len < size * pipeline or recv_size < 1:
            raise ValueError(
                "need size >= 1, pipeline >= 1, recv_size >= 1 and ring_len >= size * pipeline; "
                "got size=%d pipeline=%d ring_len=%d recv_size=%d" % (size, pipeline, ring_len, recv_size))
        if len(send_ring) < 2 * ring_len or len(expect_ring) < 2 * ring_len:
            raise ValueError("the rings must hold 2 * ring_len bytes")
        self._poller = poller
        self._modify = poller.modify
        self._drop = drop
        self._send_ring = send_ring
        self._expect_ring = expect_ring
        self._size = size
        self._pipeline = pipeline
        self._ring_len = ring_len
        self._bufsize = recv_size
        self._buf = <char *>PyMem_Malloc(recv_size)
        if self._buf == NULL:
            raise MemoryError()
        self.sending = True

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self._conns != NULL:
            for i in range(self._cap):
                PyMem_Free(self._conns[i].sent)
                PyMem_Free(self._conns[i].out)
        PyMem_Free(self._conns)
        PyMem_Free(self._buf)
        PyMem_Free(self._events)
        PyMem_Free(self._lat)

    def add(self, sock):
        """Track connected socket `sock` (registered for POLLIN by its fd) and
        send its first `pipeline` requests."""
        cdef int fd = sock.fileno()
        cdef bconn *c
        if fd < 0:
            raise ValueError("negative fd")
        fastio_fdtable_reserve(<void **>&self._conns, &self._cap, sizeof(bconn), fd, NULL)
        c = &self._conns[fd]
        if c.live:
            raise ValueError("fd %d is already tracked" % fd)
        PyMem_Free(c.sent)
        PyMem_Free(c.out)
        memset(c, 0, sizeof(bconn))
        c.sent = <double *>PyMem_Malloc(self._pipeline * sizeof(double))
        if c.sent == NULL:
            raise MemoryError()
        c.live = True
        self.cold += 1
        self._send(fd, c, self._pipeline, _clock())

    def clock(self):
        """Return the clock latencies are measured with (seconds)."""
        return _clock()

    @property
    def latency_count(self):
        return self._nlat

    def latencies(self, Py_ssize_t start, Py_ssize_t end):
        """Return the latencies (seconds) recorded between two latency_count readings."""
        cdef Py_ssize_t i
        start = max(0, min(start, self._nlat))
        end = max(start, min(end, self._nlat))
        return [self._lat[i] for i in range(start, end)]

    def step(self, double timeout):
        """Wait up to `timeout` seconds once and serve what is ready; return the clock."""
        cdef Py_ssize_t n, i
        n = _core_api.wait_into(self._poller, timeout, &self._events, &self._events_cap)
        now = _clock()
        for i in range(n):
            self._serve(self._events[i].fd, self._events[i].events, now)
        return now

    cdef int _serve(self, int fd, uint32_t ev, double now) except -1:
        cdef bconn *c
        cdef long long n
        cdef Py_ssize_t k, total, j
        cdef int err
        if fd < 0 or fd >= self._cap or not self._conns[fd].live:
            return 0
        c = &self._conns[fd]
        if ev & POLLOUT and c.outlen:
            n = fastio_send(fd, c.out, c.outlen)
            if n < 0:
                err = fastio_last_error()
                if not fastio_would_block(err):
                    return self._fail(fd, c, "send failed: %s" % _os.strerror(err))
                n = 0
            c.outlen -= n
            memmove(c.out, c.out + n, c.outlen)
            if not c.outlen:
                self._modify(fd, POLLIN)
        if not ev & (POLLIN | POLLERR | POLLHUP):
            return 0
        n = fastio_recv(fd, self._buf, self._bufsize)
        if n < 0:
            err = fastio_last_error()
            if fastio_would_block(err) or err == EINTR:
                return 0
            return self._fail(fd, c, "recv failed: %s" % _os.strerror(err))
        if n == 0:
            return self._fail(fd, c, "the server closed the connection")
        total = c.nsent * self._size - c.partial
        if n > total:
            return self._fail(fd, c, "received %d bytes more than were sent" % (n - total))
        if memcmp(self._buf, <const char *>self._expect_ring + c.rpos, n) != 0:
            return self._fail(fd, c, "echoed bytes differ from what was expected "
                                     "(%d-byte recv at ring offset %d)" % (n, c.rpos))
        c.rpos = (c.rpos + n) % self._ring_len
        k = (c.partial + n) // self._size
        c.partial = (c.partial + n) % self._size
        if not k:
            return 0
        if self._nlat + k > self._latcap:
            self._grow_latencies(k)
        for j in range(k):
            self._lat[self._nlat] = now - c.sent[c.head]
            self._nlat += 1
            c.head = (c.head + 1) % self._pipeline
        c.nsent -= k
        self.outstanding -= k
        self.done += k
        if not c.replied:
            c.replied = True
            self.cold -= 1
        if self.sending:
            self._send(fd, c, k, now)
        return 0

    cdef int _send(self, int fd, bconn *c, Py_ssize_t k, double now) except -1:
        """Queue the next `k` requests of `c` and write them."""
        cdef Py_ssize_t start = c.spos, length = k * self._size, j
        cdef const char *chunk = <const char *>self._send_ring + start
        cdef long long n = 0
        cdef int err
        cdef char *out
        c.spos = (start + length) % self._ring_len
        for j in range(k):
            c.sent[(c.head + c.nsent) % self._pipeline] = now
            c.nsent += 1
        self.outstanding += k
        if not c.outlen:
            n = fastio_send(fd, chunk, length)
            if n < 0:
                err = fastio_last_error()
                if not fastio_would_block(err):
                    return self._fail(fd, c, "send failed: %s" % _os.strerror(err))
                n = 0
            if n == length:
                return 0
        out = <char *>PyMem_Realloc(c.out, c.outlen + length - n)
        if out == NULL:
            raise MemoryError()
        memcpy(out + c.outlen, chunk + n, length - n)
        c.out = out
        if not c.outlen:
            self._modify(fd, POLLIN | POLLOUT)
        c.outlen += length - n
        return 0

    cdef int _fail(self, int fd, bconn *c, str why) except -1:
        c.live = False
        self.outstanding -= c.nsent
        if not c.replied:
            self.cold -= 1
        c.nsent = 0
        c.outlen = 0
        self._drop(fd, why)
        return 0

    cdef int _grow_latencies(self, Py_ssize_t k) except -1:
        cdef Py_ssize_t cap = self._latcap if self._latcap else 65536
        cdef double *lat
        while cap < self._nlat + k:
            cap *= 2
        lat = <double *>PyMem_Realloc(self._lat, cap * sizeof(double))
        if lat == NULL:
            raise MemoryError()
        self._lat = lat
        self._latcap = cap
        return 0

    def fail(self, int fd, str why):
        """Drop connection `fd` for `why` (calls `drop`); nothing if it is gone."""
        if 0 <= fd < self._cap and self._conns[fd].live:
            self._fail(fd, &self._conns[fd], why)

    def cold_fds(self):
        """Return the live connections that have had no reply yet."""
        cdef Py_ssize_t fd
        return [fd for fd in range(self._cap) if self._conns[fd].live and not self._conns[fd].replied]

    def pending(self):
        """Return (fd, outstanding requests) of the live connections still owed replies."""
        cdef Py_ssize_t fd
        return [(fd, self._conns[fd].nsent) for fd in range(self._cap)
                if self._conns[fd].live and self._conns[fd].nsent]


# ------------------------------------------------------- io_uring echo server

include "uring.pxi"
include "uring_echo.pxi"
