# The TCP transport: recv/send straight into the loop's buffer and out of the
# caller's, flow control, close/abort.


@cython.final
cdef class _ReadHandle(Handle):
    # The transport's reader: dispatch calls it as a C method, no Python call.
    cdef Transport _transport

    cdef int _run(self) except -1:
        self._transport._read_ready()
        return 0


@cython.final
cdef class _WriteHandle(Handle):
    cdef Transport _transport

    cdef int _run(self) except -1:
        self._transport._write_ready()
        return 0


cdef class Transport:
    """A TCP transport: non-blocking socket <-> asyncio-shaped protocol.

    Writes go out at once; what the kernel does not take waits in a buffer
    flushed on writability. `pause_writing()` is called above the high-water
    mark and `resume_writing()` once the buffer drains below the low one.
    """

    max_size = 256 * 1024

    cdef LoopCore _loop
    cdef object _sock
    cdef object _fd
    cdef int _cfd
    cdef object _protocol
    cdef dict _extra
    cdef object _server
    cdef bytearray _buffer
    cdef Py_ssize_t _high
    cdef Py_ssize_t _low
    cdef Py_ssize_t _max_size
    cdef bint _closing
    cdef int _conn_lost
    cdef bint _eof
    cdef bint _reading_paused
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

    def _start(self):
        try:
            self._protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            self._force_close(None)
            raise
        except BaseException as exc:
            # As asyncio: log it and serve the connection all the same; it
            # is closed by the protocol or the peer, never left behind.
            self._loop.call_exception_handler({
                "message": "protocol.connection_made() failed",
                "exception": exc, "transport": self, "protocol": self._protocol})
        if not self._closing and not self._reading_paused:
            self._start_reading()

    cdef int _read_ready(self) except -1:
        cdef long long n = fastio_recv(self._cfd, self._loop._rbuf, self._max_size)
        cdef int err
        if n < 0:
            err = fastio_last_error()
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
        data = PyBytes_FromStringAndSize(self._loop._rbuf, n)
        if data:
            try:
                self._protocol.data_received(data)
            except Exception as exc:
                self._fatal_error(exc, "protocol.data_received() call failed.")
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

    cdef int _write_ready(self) except -1:
        cdef bytearray buf = self._buffer
        cdef long long n = fastio_send(self._cfd, PyByteArray_AS_STRING(buf), len(buf))
        cdef int err
        if n < 0:
            err = fastio_last_error()
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
        cdef long long n = fastio_send(self._cfd, p, size)
        cdef int err
        if n >= 0:
            return n
        err = fastio_last_error()
        if fastio_would_block(err):
            return 0
        self._fatal_error(OSError(err, _os.strerror(err)), "Fatal write error on socket transport")
        return -1

    def writelines(self, list_of_data):
        """Send each bytes-like of `list_of_data`, as one write."""
        self.write(b"".join(list_of_data))

    def write_eof(self):
        """Shut down the sending side once the buffer is flushed."""
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._owed():
            self._shutdown_write()

    cdef int _shutdown_write(self) except -1:
        # A reset can land between the last send and this call.
        try:
            self._sock.shutdown(_SHUT_WR)
        except OSError as exc:
            self._fatal_error(exc, "Fatal error on socket shutdown")
        return 0

    def can_write_eof(self):
        return True

    def close(self):
        """Stop reading, flush the buffer, then close; connection_lost(None)."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._owed():
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        """Close at once, dropping buffered data; connection_lost(None)."""
        self._force_close(None)

    def is_closing(self):
        return self._closing

    def pause_reading(self):
        """Stop calling data_received() until resume_reading()."""
        if self._closing or self._reading_paused:
            return
        self._reading_paused = True
        self._stop_reading()

    def resume_reading(self):
        """Undo pause_reading()."""
        if self._closing or not self._reading_paused:
            return
        self._reading_paused = False
        self._start_reading()

    def is_reading(self):
        return not self._reading_paused and not self._closing

    def get_write_buffer_size(self):
        """Return the number of bytes waiting in the write buffer."""
        return self._owed()

    def get_write_buffer_limits(self):
        return (self._low, self._high)

    def set_write_buffer_limits(self, high=None, low=None):
        """Set the flow-control marks (asyncio defaults: 64 KiB / 16 KiB).

        :raises ValueError: unless high >= low >= 0.
        """
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError("high (%r) must be >= low (%r) must be >= 0" % (high, low))
        self._high = high
        self._low = low
        self._maybe_pause_protocol()

    def get_extra_info(self, name, default=None):
        """Return 'peername', 'sockname', 'socket', or 'dropped_bytes' (bytes
        left unsent when the connection broke or was aborted), else `default`."""
        return self._extra.get(name, default)

    def get_protocol(self):
        return self._protocol

    def set_protocol(self, protocol):
        self._set_protocol(protocol)

    # --- hooks: the readiness data path; UringTransport has the completion one

    cdef int _start_reading(self) except -1:
        self._reader._cancelled = False
        self._loop._set_io(self._fd, True, self._reader)
        return 0

    cdef int _stop_reading(self) except -1:
        self._loop._remove_io(self._fd, True)
        return 0

    cdef Py_ssize_t _owed(self) except -1:
        """Return the bytes written but not yet sent."""
        return PyByteArray_GET_SIZE(self._buffer)

    cdef int _drop_output(self) except -1:
        if self._buffer:
            # What never reached the peer, for get_extra_info('dropped_bytes').
            self._extra["dropped_bytes"] = len(self._buffer)
            del self._buffer[:]
            self._loop._remove_io(self._fd, False)
        return 0

    # --- internals

    cdef int _set_protocol(self, object protocol) except -1:
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

    cdef int _fatal_error(self, exc, message) except -1:
        # A connection the peer broke is the protocol's business, reported
        # through connection_lost(exc); anything else is also logged.
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({
                "message": message, "exception": exc,
                "transport": self, "protocol": self._protocol})
        self._force_close(exc)
        return 0

    cdef int _force_close(self, exc) except -1:
        if self._conn_lost:
            return 0
        self._drop_output()
        if not self._closing:
            self._closing = True
            self._stop_reading()
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)
        return 0

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._set_protocol(None)
            server = self._server
            if server is not None:
                self._server = None
                server._detach()

    def __repr__(self):
        return "<%s fd=%d%s>" % (type(self).__name__, self._fd,
                                 " closing" if self._closing else "")
