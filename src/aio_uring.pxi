# asyncio's face of the io_uring completion engine (src/uring_stream.pxi):
# the compiled half of fastio.EventLoop(backend="io_uring")'s socket
# transport, fastio._aio_uring.UringSocketTransport.
#
# That transport is asyncio's _SelectorSocketTransport with its socket I/O
# taken over by an AioUringStream: the stream's upcalls below do what
# asyncio's _read_ready__data_received / _read_ready__get_buffer /
# _read_ready__on_eof / _write_ready do with what recv(2)/send(2) return,
# in asyncio's order, with its exceptions and messages. The loop iteration
# (src/aio_loop.pxi) reaps the completions after the I/O callbacks and
# before the due timers: they are this loop's I/O events.
#
# Discussion: a completion carries up to one provided buffer (64 KiB) of
# bytes already received. A data_received protocol gets them as one bytes
# object; a BufferedProtocol gets them copied into as many get_buffer()
# buffers as they fill, each reported with buffer_updated(). A protocol
# that pauses reading, or closes, in the middle stops the handover: the
# rest is held (paused) or dropped (closing), as asyncio would have left it
# in the socket or dropped it.
#
# Discussion: asyncio runs a transport's reader and writer callbacks as
# Handles, each in the context copied when the handle was made: the reader
# when reading starts or resumes (copied from the caller of
# resume_reading(), or from the transport's creation), the writer when a
# write() leaves bytes owed with none owed before. So data_received(),
# eof_received() and read errors see the context variables set where the
# connection was made (a server's: where it started serving), and what
# they set stays in that copy for the next read. Completions are reaped
# outside any Handle: the stream keeps the same two copies and enters the
# one a completion belongs to around its upcalls.

from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit

cdef extern from *:
    """
    #include <sys/socket.h>
    """
    int SHUT_WR


@cython.final
cdef class AioUringStream(UringStream):
    """The stream of one fastio.EventLoop io_uring transport."""

    cdef object _t        # the transport
    cdef object _sock     # its socket (the transport's `_sock` goes None at the end)
    cdef object _loop     # its loop (the transport's `_loop` goes None at the end)
    cdef bint _buffered   # the protocol is a BufferedProtocol
    # The transport's `_paused`, `_closing`, `_eof` and whether it has an
    # `_empty_waiter`, as its pause_reading(), resume_reading() (through
    # _add_reader), close(), _force_close(), write_eof() and
    # _make_empty_waiter()/_reset_empty_waiter() set them: read per
    # completion and per write without an attribute lookup.
    cdef bint _r_paused
    cdef bint _r_closing
    cdef bint _r_eof
    cdef bint _r_waiter
    cdef bint _r_ended    # the recv ended with an EOF the protocol kept the transport open for
    # The contexts asyncio's reader and writer Handles would run in (see
    # the Discussion above); None until reading starts / a write is owed.
    cdef object _rctx
    cdef object _wctx

    # --- upcalls

    cdef bint _holding(self) except -1:
        return self._r_paused

    cdef bint _dead(self) except -1:
        return self._r_closing

    cdef int _live_fd(self) except -2:
        return _aio_sock_fd(self._sock)

    cdef Py_ssize_t _up_data(self, char *buf, Py_ssize_t n) except -1:
        cdef Py_ssize_t took = 0, k, size
        if self._buffered:
            return self._up_buffered(buf, n)
        t = self._t
        # At most max_size bytes per data_received(), as asyncio reads.
        max_size = t.max_size
        size = max_size if type(max_size) is int and max_size > 0 else n
        while took < n:
            k = min(size, n - took)
            data = PyBytes_FromStringAndSize(buf + took, k)
            took += k
            try:
                t._protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                t._fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')
                return n
            if took < n:
                if self._r_closing or self._r_paused:
                    break  # the rest is held (paused) or dropped (closing)
                if self._buffered:
                    return took + self._up_buffered(buf + took, n - took)
        return took

    cdef Py_ssize_t _up_buffered(self, char *buf, Py_ssize_t n) except -1:
        cdef Py_buffer view
        cdef Py_ssize_t took = 0, k
        cdef bint unwritable = False
        t = self._t
        while took < n:
            protocol = t._protocol
            try:
                b = protocol.get_buffer(-1)
                if not len(b):
                    raise RuntimeError('get_buffer() returned an empty buffer')
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                t._fatal_error(exc, 'Fatal error: protocol.get_buffer() call failed.')
                return n
            try:
                PyObject_GetBuffer(b, &view, PyBUF_WRITABLE)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                unwritable = True
            if unwritable:
                _aio_fatal(t, _aio_unwritable(b), 'Fatal read error on socket transport')
                return n
            k = min(view.len, n - took)
            memcpy(view.buf, buf + took, k)
            PyBuffer_Release(&view)
            took += k
            try:
                protocol.buffer_updated(k)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                t._fatal_error(exc, 'Fatal error: protocol.buffer_updated() call failed.')
                return n
            if took < n:
                if self._r_closing or self._r_paused:
                    break  # the rest is held (paused) or dropped (closing)
                if not self._buffered:
                    # set_protocol() to a data_received protocol meanwhile.
                    return took + self._up_data(buf + took, n - took)
        return took

    cdef int _up_eof(self) except -1:
        t = self._t
        if self._loop.get_debug():
            _aio_logger.debug("%r received EOF", t)
        try:
            keep_open = t._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            t._fatal_error(exc, 'Fatal error: protocol.eof_received() call failed.')
            return 0
        # keep_open: the recv has ended with the EOF; nothing more is read
        # (asyncio removes its reader: its repr says read=idle).
        if not keep_open:
            t.close()
        else:
            self._r_ended = True
        return 0

    cdef int _up_error(self, int err, bint sending) except -1:
        t = self._t
        exc = _aio_oserror(err)
        if not sending:
            _aio_fatal(t, exc, 'Fatal read error on socket transport')
            return 0
        _aio_fatal(t, exc, 'Fatal write error on socket transport')
        waiter = t._empty_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        return 0

    cdef int _up_sent(self) except -1:
        t = self._t
        if t._protocol_paused:
            t._maybe_resume_protocol()  # may write more
        if self._send_busy:
            return 0
        if self._r_waiter:
            waiter = t._empty_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self._r_closing:
            if not t._conn_lost:
                t._conn_lost += 1
                t._call_connection_lost(None)
        elif self._r_eof:
            try:
                t._sock.shutdown(SHUT_WR)
            except OSError as exc:
                # (a reset can land between the last send and this call)
                t._fatal_error(exc, 'Fatal error on socket shutdown')
        return 0

    cdef int _up_held(self) except -1:
        # (asyncio's reader Handle, made by resume_reading(), reads it)
        self._loop.call_soon(self._deliver_held, context=self._rctx)
        return 0

    cdef int _complete(self, int kind, int res, uint32_t flags) except -1:
        # What asyncio runs as a reader/writer callback is a Handle: it
        # runs in that Handle's context, and an exception out of it goes to
        # the loop's exception handler, and the loop goes on.
        ctx = self._rctx if kind == FASTIO_UD_RECV else self._wctx
        if ctx is not None:
            PyContext_Enter(ctx)
        try:
            UringStream._complete(self, kind, res, flags)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                'message': 'Exception in an io_uring completion of %r' % (self._t,),
                'exception': exc,
                'transport': self._t,
            })
        finally:
            if ctx is not None:
                PyContext_Exit(ctx)
        return 0

    # --- what the transport (fastio._aio_uring) calls

    def set_buffered(self, bint buffered):
        """Deliver to get_buffer()/buffer_updated() (True) or data_received()."""
        self._buffered = buffered

    def resume(self):
        """Reading starts or resumes: arm the recv (after handing over what was held).

        What it reads is handed over in a copy of the caller's context, as
        asyncio's reader Handle made by this call would run.
        """
        self._r_paused = False
        self._r_ended = False
        self._rctx = PyContext_CopyCurrent()
        self.start_reading()

    def pause(self):
        """Reading is paused: cancel the recv; what it still brings is held."""
        self._r_paused = True
        self.stop_reading()

    def close(self):
        """The transport is closing: cancel the recv; what it still brings is dropped."""
        self._r_closing = True
        self.stop_reading(False)

    def eof(self):
        """The transport's write_eof() was called."""
        self._r_eof = True

    def waiter(self, bint present):
        """The transport has an `_empty_waiter` (True) or not any more."""
        self._r_waiter = present

    def owed_bytes(self):
        """Return the bytes written and not yet sent."""
        return self.owed()

    def reading(self):
        """Return whether reading was started and is neither paused nor
        closed: where asyncio's transport has its reader registered."""
        return (self._rctx is not None and not self._r_paused and not self._r_closing
                and not self._r_ended)

    def unsent_bytes(self):
        """Return the write buffer's size: owed_bytes() less what the kernel
        took in a send whose completion is not handled yet."""
        return self.unsent()

    def flush(self):
        """Send at once what the send still in the SQ would carry (flush_now())."""
        self.flush_now()

    def drop(self):
        """Drop what is owed, cancel the send in flight; return how much of
        it the kernel had not taken."""
        return self.drop_output()

    def done(self):
        """The connection is lost: free the slot once nothing is in flight."""
        self.lost()


def aio_uring_stream(UringDriver drv, transport, loop, int fd):
    """Return a new AioUringStream for `transport` on `loop`'s ring."""
    cdef AioUringStream s = AioUringStream.__new__(AioUringStream)
    s._t = transport
    s._sock = transport._sock
    s._loop = loop
    s._bind(drv, fd)
    return s


def aio_uring_write(self, data):
    """Send `data`: one send in flight, the rest queued behind it.

    Same contract as asyncio's socket transport write().
    """
    cdef Py_buffer view
    cdef AioUringStream s
    cdef Py_ssize_t high, owed, n
    cdef bint now
    if not (PyBytes_Check(data) or PyByteArray_Check(data) or PyMemoryView_Check(data)):
        raise TypeError(f'data argument must be a bytes-like object, '
                        f'not {type(data).__name__!r}')
    s = <AioUringStream?>self._stream
    if s._r_eof:
        raise RuntimeError('Cannot call write() after write_eof()')
    if s._r_waiter and self._empty_waiter is not None:
        raise RuntimeError('unable to write; sendfile is in progress')
    if not data:
        return
    conn_lost = self._conn_lost
    if conn_lost:
        if conn_lost >= _aio_log_threshold:
            _aio_logger.warning('socket.send() raised exception.')
        self._conn_lost = conn_lost + 1
        return
    high = self._high_water
    owed = s.owed()
    if PyBytes_CheckExact(data):
        n = PyBytes_GET_SIZE(data)
    else:
        if not _aio_write_view(self, data, &view):
            return
        n = -1
    try:
        # A write taking what is owed over the high-water mark goes to the
        # kernel at once, as far as it takes it, after what is still in the
        # SQ: asyncio's write() would have sent all of it, and pauses only
        # for what the kernel did not take. (Queued, it would pause the
        # protocol where asyncio does not, and protocols swapped in later,
        # as start_tls() does, would get a resume_writing() they never had
        # the pause of.)
        now = owed + (view.len if n < 0 else n) > high
        if now and owed:
            s.flush_now()
            owed = s.owed()
        if n >= 0:
            s.write_bytes(<bytes>data, now)
        else:
            s.write(<const char *>view.buf, view.len, now)
    finally:
        if n < 0:
            PyBuffer_Release(&view)
    if not owed and s.owed():
        # Owed from now on: where asyncio would add its writer Handle,
        # whose context the send completions run in.
        s._wctx = PyContext_CopyCurrent()
    if s.owed() > high:
        self._maybe_pause_protocol()


def aio_plain_sock(sock):
    """Return whether `sock`'s recv/recv_into/send are socket.socket's own
    (a subclass overriding them gets the readiness transport, which calls them)."""
    return _aio_plain_sock(sock)
