# The TCP transport's hot half, TransportCore: recv into the loop's buffer,
# send from the caller's, the write buffer and flow control. The cold half
# (start, close/abort, write_eof, pause/resume reading, limits, extra info)
# is fastio._transport.TransportMixin, shared with the pure-Python twin;
# `Transport` joins the two. The attributes and methods the mixin uses are
# public/readonly/cpdef here; C callers still reach them as struct fields
# and C methods.


cdef extern from *:
    """
    /* Make `b`, a bytes object nothing else has seen yet (made by
     * PyBytes_FromStringAndSize(NULL, m), m >= n), n bytes long. Its memory
     * stays m bytes until it is freed. */
    static CYTHON_INLINE void fastio_bytes_truncate(PyObject *b, Py_ssize_t n) {
        Py_SET_SIZE(b, n);
        PyBytes_AS_STRING(b)[n] = '\\0';
    }
    """
    void fastio_bytes_truncate(object b, Py_ssize_t n)


# Reads into the bytes object data_received() gets, for both transports
# (TransportCore here, EventLoop's in aio_transport.pxi). A read of 4 KiB to
# 64 KiB sizes the connection's next one: that length rounded up to the next
# 4 KiB. (Larger blocks would come and go from malloc's top of heap, which
# glibc trims and grows again: page faults, not a copy, per read.) That next
# read then goes straight into a bytes object of that capacity, with no copy
# out of the loop's shared buffer; smaller reads use the shared buffer and a
# copy. A read that fills the capacity goes on with
# a second recv into the shared buffer, up to max_size in all, as one
# recv(max_size) would read. (One readv(2) into both buffers would do it in
# one syscall, but costs more than recv(2) here: the kernel copies into a
# single buffer faster.)
cdef Py_ssize_t _RECV_DIRECT_MIN = 4096
cdef Py_ssize_t _RECV_DIRECT_MAX = 64 * 1024


cdef inline Py_ssize_t _recv_cap_after(Py_ssize_t n):
    # The capacity of the read after one of n bytes; 0: the shared buffer.
    if n < _RECV_DIRECT_MIN or n >= _RECV_DIRECT_MAX:
        return 0
    return ((n >> 12) + 1) << 12


cdef object _recv_sized(int fd, char *rbuf, Py_ssize_t cap, Py_ssize_t size,
                        long long *n, int *err, int *later):
    # Receive up to `size` (> cap) bytes: into a new bytes object of `cap`,
    # and on into `rbuf` if that fills. Returns the bytes (*n > 0), or None
    # with *n the recv's result (0 at EOF; -1 with the error in *err).
    # *later is an error the second recv got: recv(2) reports one once and
    # clears it, so the caller reports it after these bytes (0 if none).
    cdef long long got, more
    later[0] = 0
    data = PyBytes_FromStringAndSize(NULL, cap)
    got = fastio_recv(fd, PyBytes_AS_STRING(data), cap)
    n[0] = got
    if got <= 0:
        err[0] = fastio_last_error() if got < 0 else 0
        return None
    if got == cap and cap < size:
        more = fastio_recv(fd, rbuf, size - cap)
        if more > 0:
            whole = PyBytes_FromStringAndSize(NULL, cap + more)
            memcpy(PyBytes_AS_STRING(whole), PyBytes_AS_STRING(data), cap)
            memcpy(PyBytes_AS_STRING(whole) + cap, rbuf, more)
            n[0] = cap + more
            return whole
        if more < 0:
            later[0] = fastio_last_error()
            if fastio_would_block(later[0]):
                later[0] = 0
    if cap - got > 4096:
        # Shorter than the capacity by more than the margin: a copy of its
        # length, so a protocol keeping it never holds more than n + 4 KiB.
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), got)
    fastio_bytes_truncate(data, got)
    return data


@cython.final
cdef class _ReadHandle(Handle):
    # The transport's reader: dispatch calls it as a C method, no Python call.
    cdef TransportCore _transport

    cdef int _run(self) except -1:
        self._transport._read_ready()
        return 0


@cython.final
cdef class _WriteHandle(Handle):
    cdef TransportCore _transport

    cdef int _run(self) except -1:
        self._transport._write_ready()
        return 0


cdef class TransportCore:
    """A TCP transport's per-chunk path: recv, send, buffer, flow control.

    Writes go out at once; what the kernel does not take waits in a buffer
    flushed on writability. `pause_writing()` is called above the high-water
    mark and `resume_writing()` once the buffer drains below the low one.
    """

    max_size = 256 * 1024

    # Read and written by fastio._transport.TransportMixin too.
    cdef readonly LoopCore _loop
    cdef readonly object _sock
    cdef readonly object _fd
    cdef readonly object _protocol
    cdef readonly dict _extra
    cdef public object _server
    cdef readonly bytearray _buffer
    cdef readonly Py_ssize_t _high
    cdef readonly Py_ssize_t _low
    cdef public bint _closing
    cdef public int _conn_lost
    cdef public bint _eof
    cdef public bint _reading_paused
    # Only here.
    cdef int _cfd
    cdef Py_ssize_t _max_size
    cdef Py_ssize_t _recv_cap   # the next read's capacity (_recv_sized); 0: the shared buffer
    cdef int _read_err          # _recv_sized's later error, kept for the next read
    cdef bint _protocol_paused
    cdef _ReadHandle _reader
    cdef _WriteHandle _writer
    # The protocol's compiled data_received, if it has one (fastio_capi.h).
    cdef fastio_data_received_fn _c_data_received

    def __init__(self, LoopCore loop, sock, protocol, dict extra, server=None):
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._cfd = self._fd
        self._set_protocol(protocol)
        self._extra = extra
        self._server = server
        self._buffer = bytearray()
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._max_size = min(self.max_size, loop._rbuf_size)
        self._reader = _ReadHandle.__new__(_ReadHandle, None, (), loop)
        self._reader._transport = self
        self._writer = _WriteHandle.__new__(_WriteHandle, None, (), loop)
        self._writer._transport = self
        if server is not None:
            server._attach()

    # --- event side

    cdef int _read_ready(self) except -1:
        cdef long long n
        cdef int err = 0, later = 0
        data = None
        err = self._take_read_err()
        if err:
            # What the read before got after its bytes.
            self._fatal_error(OSError(err, _os.strerror(err)),
                              "Fatal read error on socket transport")
            return 0
        if self._recv_cap and self._c_data_received == NULL:
            data = _recv_sized(self._cfd, self._loop._rbuf, self._recv_cap, self._max_size,
                               &n, &err, &later)
        else:
            n = fastio_recv(self._cfd, self._loop._rbuf, self._max_size)
            if n < 0:
                err = fastio_last_error()
        if n < 0:
            if not fastio_would_block(err):
                self._fatal_error(OSError(err, _os.strerror(err)),
                                  "Fatal read error on socket transport")
            return 0
        if n and self._c_data_received != NULL:
            try:
                self._c_data_received(self._protocol, self._loop._rbuf, n)
            except Exception as exc:
                self._fatal_error(exc, "protocol.data_received() call failed.")
            return 0
        if n:
            self._recv_cap = min(_recv_cap_after(n), self._max_size)
            if data is None:
                data = PyBytes_FromStringAndSize(self._loop._rbuf, n)
            if later:
                # The second recv's error (see _recv_sized), kept before
                # the bytes are handed over: reported by the next read, as
                # a transport reading once would see it (the next turn's,
                # after the callbacks data_received() queued: the socket
                # stays readable, recv(2) reporting an error once, on a
                # connection it ended), or the first after resume_reading();
                # or by a send before that, which would have got it.
                self._read_err = later
            try:
                self._protocol.data_received(data)
            except Exception as exc:
                self._fatal_error(exc, "protocol.data_received() call failed.")
                return 0
            return 0
        self._loop._remove_io(self._fd, True)
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._fatal_error(exc, "protocol.eof_received() call failed.")
            return 0
        if not keep_open:
            self.close()
        return 0

    cdef inline int _take_read_err(self):
        # The error a read took after its bytes and did not report yet
        # (0: none), forgotten: the next read or send reports it.
        cdef int err = self._read_err
        self._read_err = 0
        return err

    cdef int _write_ready(self) except -1:
        cdef bytearray buf = self._buffer
        cdef long long n = -1
        cdef int err = self._take_read_err()  # (see _send_now)
        if not err:
            n = fastio_send(self._cfd, PyByteArray_AS_STRING(buf), len(buf))
            if n < 0:
                err = fastio_last_error()
        if n < 0:
            if fastio_would_block(err):
                return 0
            self._loop._remove_io(self._fd, False)
            del buf[:]
            self._fatal_error(OSError(err, _os.strerror(err)), "Fatal write error on socket transport")
            return 0
        if n:
            del buf[:n]
        self._maybe_resume_protocol()
        if not buf:
            self._loop._remove_io(self._fd, False)
            if self._closing:
                self._conn_lost += 1
                self._call_connection_lost(None)
            elif self._eof:
                self._shutdown_write()
        return 0

    # --- user side

    def write(self, data):
        """Send `data` (bytes-like), buffering what the kernel does not take.

        :raises RuntimeError: after write_eof().
        """
        cdef Py_buffer view
        if not PyBytes_CheckExact(data) and not PyObject_CheckBuffer(data):
            raise TypeError("data argument must be a bytes-like object, not %r"
                            % type(data).__name__)
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data or self._conn_lost:
            return
        if PyBytes_CheckExact(data):
            self._write(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._write(<char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef int _write(self, const char *p, Py_ssize_t n) except -1:
        """write() of `n` bytes at `p`: send now, buffer what the kernel leaves."""
        cdef long long sent
        cdef Py_ssize_t size
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if n == 0 or self._conn_lost:
            return 0
        if not PyByteArray_GET_SIZE(self._buffer):
            sent = self._send_now(p, n)
            if sent < 0 or sent == n:
                return 0
            p += sent
            n -= sent
            self._writer._cancelled = False
            self._loop._set_io(self._fd, False, self._writer)
        size = PyByteArray_GET_SIZE(self._buffer)
        PyByteArray_Resize(self._buffer, size + n)
        memcpy(PyByteArray_AS_STRING(self._buffer) + size, p, n)
        self._maybe_pause_protocol()
        return 0

    cdef long long _send_now(self, const char *p, Py_ssize_t size) except -2:
        """Send what the kernel takes of `size` bytes at `p` now; -1 after a
        fatal error."""
        cdef long long n
        cdef int err = self._take_read_err()
        if err:
            # The error a read took after its bytes, not reported yet: the
            # kernel reports one once, and this send(2) would get it.
            self._fatal_error(OSError(err, _os.strerror(err)), "Fatal write error on socket transport")
            return -1
        n = fastio_send(self._cfd, p, size)
        if n >= 0:
            return n
        err = fastio_last_error()
        if fastio_would_block(err):
            return 0
        self._fatal_error(OSError(err, _os.strerror(err)), "Fatal write error on socket transport")
        return -1

    # --- what the mixin drives

    def _set_reading(self, bint reading):
        """Watch the socket for readability (this transport's reader), or stop."""
        if reading:
            self._reader._cancelled = False
            self._loop._set_io(self._fd, True, self._reader)
        else:
            self._loop._remove_io(self._fd, True)

    def _set_writing(self, bint writing):
        """Watch the socket for writability (this transport's writer), or stop."""
        if writing:
            self._writer._cancelled = False
            self._loop._set_io(self._fd, False, self._writer)
        else:
            self._loop._remove_io(self._fd, False)

    def _set_write_buffer_limits(self, Py_ssize_t high, Py_ssize_t low):
        """Install flow-control marks the mixin has checked; pause now if above."""
        self._high = high
        self._low = low
        self._maybe_pause_protocol()

    cpdef int _set_protocol(self, object protocol) except -1:
        # A compiled data_received is used only where it is what Python would
        # call: not when a subclass overrides it.
        cdef object cls = type(protocol)
        cdef object capsule = getattr(cls, "_fastio_data_received", None)
        self._protocol = protocol
        self._c_data_received = NULL
        if capsule is None or not PyCapsule_IsValid(capsule, FASTIO_DATA_RECEIVED):
            return 0
        owner = PyCapsule_GetContext(capsule)
        if owner == NULL:
            return 0
        if (isinstance(protocol, <object>owner)
                and getattr(cls, "data_received", None) is getattr(<object>owner, "data_received", None)):
            self._c_data_received = <fastio_data_received_fn>PyCapsule_GetPointer(
                capsule, FASTIO_DATA_RECEIVED)
        return 0

    cpdef Py_ssize_t _owed(self) except -1:
        """Return the bytes written but not yet sent."""
        return PyByteArray_GET_SIZE(self._buffer)

    def _drop_output(self):
        """Drop what is owed (abort, a broken connection); count it as
        'dropped_bytes'."""
        if self._buffer:
            self._extra["dropped_bytes"] = len(self._buffer)
            del self._buffer[:]
            self._loop._remove_io(self._fd, False)

    cdef int _maybe_pause_protocol(self) except -1:
        if self._owed() <= self._high or self._protocol_paused:
            return 0
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed",
                "exception": exc, "transport": self, "protocol": self._protocol})
        return 0

    cdef int _maybe_resume_protocol(self) except -1:
        if not self._protocol_paused or self._owed() > self._low:
            return 0
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": "protocol.resume_writing() failed",
                "exception": exc, "transport": self, "protocol": self._protocol})
        return 0


class Transport(TransportMixin, TransportCore):
    """A TCP transport: non-blocking socket <-> asyncio-shaped protocol.

    TransportCore's recv/send path under fastio._transport's asyncio
    transport methods.
    """

    __slots__ = ()
