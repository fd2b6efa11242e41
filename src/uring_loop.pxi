# Loop's face of the completion engine (src/uring_stream.pxi): the TCP
# transport of a Loop whose poller is a fastio._impl.core_c UringPoller with
# a buffer ring (Loop(backend="io_uring")).
#
# UringTransportCore is a TransportCore whose socket I/O is a UringStream's:
# the stream arms the multishot recv and keeps the send in flight; this face
# turns its upcalls into Transport's semantics (a compiled data_received
# gets the receive buffer itself, as on the readiness path; pause_reading()
# holds what the cancelled recv still brings; close() flushes, then closes;
# abort() reports the unsent bytes as 'dropped_bytes'; write_eof() shuts
# down the sending side once flushed). LoopCore._run_once_c reaps the
# completions after the wait, before the timers.


@cython.final
cdef class _LoopStream(UringStream):
    # The stream of one UringTransportCore.
    cdef UringTransportCore _t

    cdef bint _holding(self) except -1:
        return self._t._reading_paused

    cdef bint _dead(self) except -1:
        return self._t._closing

    cdef Py_ssize_t _up_data(self, char *buf, Py_ssize_t n) except -1:
        self._t._deliver(buf, n)
        return n

    cdef int _up_eof(self) except -1:
        return self._t._on_eof()

    cdef int _up_error(self, int err, bint sending) except -1:
        self._t._fatal_error(OSError(err, _os.strerror(err)),
                             "Fatal write error on socket transport" if sending
                             else "Fatal read error on socket transport")
        return 0

    cdef int _up_sent(self) except -1:
        cdef UringTransportCore t = self._t
        t._maybe_resume_protocol()
        if not self._send_busy:
            if t._closing:
                if not t._conn_lost:
                    t._conn_lost += 1
                    t._call_connection_lost(None)
            elif t._eof:
                t._shutdown_write()
        return 0

    cdef int _up_held(self) except -1:
        self._t._loop.call_soon(self._deliver_held)
        return 0


cdef class UringTransportCore(TransportCore):
    """TransportCore on io_uring: its socket I/O is a UringStream's (see
    src/uring_stream.pxi)."""

    cdef _LoopStream _s

    def __init__(self, LoopCore loop, sock, protocol, dict extra, server=None):
        cdef _LoopStream s
        if loop._uring is None:
            raise TypeError("UringTransport needs a Loop on io_uring")
        TransportCore.__init__(self, loop, sock, protocol, extra, server)
        s = _LoopStream.__new__(_LoopStream)
        s._t = self
        s._bind(<UringDriver>loop._uring, self._cfd)
        self._s = s

    # --- receiving

    def _set_reading(self, bint reading):
        """Arm the multishot recv (after delivering what was held), or cancel it."""
        if reading:
            self._s.start_reading()
        else:
            self._s.stop_reading(not self._closing)

    def _set_writing(self, bint writing):
        pass  # sends are SQEs: there is no writability to watch

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

    # --- sending

    cpdef Py_ssize_t _owed(self) except -1:
        return self._s.owed()

    def write(self, data):
        """Send `data` (bytes-like), buffering what is not sent yet.

        :raises RuntimeError: after write_eof().
        """
        if PyBytes_CheckExact(data) and not self._eof and not self._conn_lost:
            # A bytes object goes in flight as it is when nothing is owed.
            self._s.write_bytes(<bytes>data)
            self._maybe_pause_protocol()
            return
        TransportCore.write(self, data)

    cdef int _write(self, const char *p, Py_ssize_t n) except -1:
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if n == 0 or self._conn_lost:
            return 0
        self._s.write(p, n)
        self._maybe_pause_protocol()
        return 0

    def _drop_output(self):
        cdef Py_ssize_t owed = self._s.drop_output()
        if owed:
            self._extra["dropped_bytes"] = owed
        return 0

    def _lost(self):
        # After connection_lost(): the slot goes once no op is in flight.
        self._s.lost()


class UringTransport(TransportMixin, UringTransportCore):
    """A TCP transport on io_uring: multishot recv into the loop's buffer
    ring, sends as SQEs. Same contract as `Transport`."""

    __slots__ = ()

    def _call_connection_lost(self, exc):
        try:
            TransportMixin._call_connection_lost(self, exc)
        finally:
            self._lost()
