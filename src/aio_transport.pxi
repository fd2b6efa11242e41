# asyncio's face of the loop core: the TCP / Unix-socket transport's hot path.
#
# fastio.EventLoop's socket transport is asyncio's own
# selector_events._SelectorSocketTransport with these compiled twins of its
# per-event methods: the receive path (data_received and BufferedProtocol's
# get_buffer/buffer_updated, reading straight into the protocol's buffer)
# and write(). They call recv(2)/send(2) on the transport's fd instead of
# going through the socket object, and otherwise take asyncio's steps in
# asyncio's order, with its exceptions and messages. Everything else (close,
# abort, flow control, write_eof, sendfile, start_tls) is asyncio's code.

from cpython.buffer cimport PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_Check
from cpython.bytearray cimport PyByteArray_Check
from cpython.memoryview cimport PyMemoryView_Check
from cpython.method cimport PyMethod_Check, PyMethod_GET_FUNCTION, PyMethod_GET_SELF
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.ref cimport Py_DECREF

cdef extern from *:
    """
    /* The bytes of `o`, a memoryview recv_into() would write as one run of
     * len(o) bytes (1-D, unsigned-byte-sized items, contiguous, writable,
     * not released), and its length in *len; NULL for any other view.
     * The view keeps its exporter from resizing or freeing that memory
     * while it exists, and nothing runs Python code between this and the
     * recv(2) into it. */
    static CYTHON_INLINE char *fastio_mv_bytes(PyObject *o, Py_ssize_t *len) {
        PyMemoryViewObject *mv = (PyMemoryViewObject *)o;
        Py_buffer *v = &mv->view;
        if ((mv->flags & _Py_MEMORYVIEW_RELEASED) || (mv->mbuf->flags & _Py_MANAGED_BUFFER_RELEASED)
                || v->readonly || v->ndim != 1 || v->itemsize != 1 || v->suboffsets != NULL
                || (v->strides != NULL && v->strides[0] != 1))
            return NULL;
        *len = v->len;
        return (char *)v->buf;
    }
    """
    char *fastio_mv_bytes(object o, Py_ssize_t *len)
    PyObject *PyObject_CallMethodOneArg(object obj, object name, object arg)
    PyObject *_aio_bytes_new "PyBytes_FromStringAndSize" (const char *p, Py_ssize_t n)

cdef object _aio_py_read_data_received = None
cdef object _aio_py_read_get_buffer = None
cdef object _aio_py_write = None
cdef object _aio_socket_cls = None
# The compiled read methods themselves, to recognise them bound to a transport.
cdef object _aio_read_ready_fn = None
cdef object _aio_read_data_fn = None
cdef object _aio_read_buffer_fn = None
cdef object _aio_logger = None
cdef object _aio_log_threshold = None
# 3.12+ buffer writes as a deque of memoryviews, older versions as a bytearray.
cdef bint _aio_deque_buffer = False
# One receive buffer for every transport: a read and the copy out of it
# happen under the GIL on the loop's thread, never interleaved.
cdef char *_aio_rbuf = NULL
cdef Py_ssize_t _aio_rbuf_size = 256 * 1024
# fastio.EventLoop's transport class, whose instances keep the attributes
# read per event in slots: read at their offsets, no attribute lookup.
cdef type _aio_transport_cls = None
cdef Py_ssize_t _TOFF_SOCK, _TOFF_PROTOCOL, _TOFF_CONN_LOST, _TOFF_BUFFER
cdef Py_ssize_t _TOFF_EOF, _TOFF_EMPTY_WAITER, _TOFF_READ_CB, _TOFF_CLOSING, _TOFF_RECV_HINT
cdef Py_ssize_t _TOFF_READ_ERROR
cdef type _aio_csocket_type = None

cdef extern from *:
    """
    /* A socket object's fd as its fileno() returns it (-1 once closed):
     * _socket.socket's object struct (PySocketSockObject) starts with the
     * fd, an int on Unix, in every CPython 3. Windows asks fileno(). */
    #ifdef MS_WINDOWS
    #define FASTIO_SOCK_FD(o) (-2)
    #else
    typedef struct { PyObject_HEAD int sock_fd; } fastio_sock_head;
    #define FASTIO_SOCK_FD(o) (((fastio_sock_head *)(o))->sock_fd)
    #endif
    """
    int FASTIO_SOCK_FD(object o)


cdef _aio_transport_setup(base_events, selector_events):
    global _aio_py_read_data_received, _aio_py_read_get_buffer, _aio_py_write, _aio_socket_cls
    global _aio_logger, _aio_log_threshold
    global _aio_deque_buffer, _aio_rbuf
    global _aio_read_ready_fn, _aio_read_data_fn, _aio_read_buffer_fn
    _aio_read_ready_fn = aio_read_ready
    _aio_read_data_fn = aio_read_ready__data_received
    _aio_read_buffer_fn = aio_read_ready__get_buffer
    import sys
    from asyncio import constants
    cls = selector_events._SelectorSocketTransport
    _aio_py_read_data_received = cls._read_ready__data_received
    _aio_py_read_get_buffer = cls._read_ready__get_buffer
    _aio_py_write = cls.write
    import socket
    _aio_socket_cls = socket.socket
    global _aio_csocket_type
    import _socket
    _aio_csocket_type = _socket.socket
    _aio_logger = selector_events.logger
    _aio_log_threshold = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES
    _aio_deque_buffer = sys.version_info >= (3, 12)
    if _aio_rbuf == NULL:
        _aio_rbuf = <char *>PyMem_Malloc(_aio_rbuf_size)
        if _aio_rbuf == NULL:
            raise MemoryError()


def aio_transport_class(type cls):
    """Make `cls` (fastio.EventLoop's socket transport) the class whose slots are read directly."""
    global _aio_transport_cls, _TOFF_SOCK, _TOFF_PROTOCOL, _TOFF_CONN_LOST, _TOFF_BUFFER
    global _TOFF_EOF, _TOFF_EMPTY_WAITER, _TOFF_READ_CB, _TOFF_CLOSING, _TOFF_RECV_HINT
    global _TOFF_READ_ERROR
    _TOFF_SOCK = _slot_offset(cls, "_sock")
    _TOFF_PROTOCOL = _slot_offset(cls, "_protocol")
    _TOFF_CONN_LOST = _slot_offset(cls, "_conn_lost")
    _TOFF_BUFFER = _slot_offset(cls, "_buffer")
    _TOFF_EOF = _slot_offset(cls, "_eof")
    _TOFF_EMPTY_WAITER = _slot_offset(cls, "_empty_waiter")
    _TOFF_READ_CB = _slot_offset(cls, "_read_ready_cb")
    _TOFF_CLOSING = _slot_offset(cls, "_closing")
    _TOFF_RECV_HINT = _slot_offset(cls, "_recv_hint")
    _TOFF_READ_ERROR = _slot_offset(cls, "_read_error")
    _aio_transport_cls = cls


cdef extern from *:
    """
    /* obj.<name>: straight from its slot at `off` when `fast` (obj is of a
     * class whose slot that is); an unset slot, or not `fast`, goes
     * through getattr (AttributeError as usual). */
    static CYTHON_INLINE PyObject *fastio_slot_get(PyObject *obj, int fast, Py_ssize_t off,
                                                   PyObject *name) {
        if (fast) {
            PyObject *v = *(PyObject **)((char *)obj + off);
            if (v != NULL) {
                Py_INCREF(v);
                return v;
            }
        }
        return PyObject_GetAttr(obj, name);
    }
    """
    object _tget "fastio_slot_get" (object obj, bint fast, Py_ssize_t off, object name)


# The class and its version tag when its max_size was last looked up, and
# that value: valid while the tag is (any change to the class or a base
# gives it another).
cdef type _aio_ms_type = None
cdef unsigned int _aio_ms_tag = 0
cdef object _aio_ms_value = None


cdef inline object _aio_max_size(object self, bint fast):
    # self.max_size: a class attribute unless set on the instance.
    global _aio_ms_type, _aio_ms_tag, _aio_ms_value
    cdef PyObject **dp
    cdef PyObject *p
    cdef type t
    cdef unsigned int tag
    if fast:
        dp = _PyObject_GetDictPtr(self)
        if dp == NULL or dp[0] == NULL or PyDict_GetItemWithError(<object>dp[0], "max_size") == NULL:
            t = type(self)
            tag = FASTIO_TYPE_TAG(t)
            if t is _aio_ms_type and tag != 0 and tag == _aio_ms_tag:
                return _aio_ms_value
            p = _PyType_Lookup(<PyTypeObject *>t, "max_size")
            if p != NULL and type(<object>p) is int:
                _aio_ms_type, _aio_ms_tag, _aio_ms_value = t, FASTIO_TYPE_TAG(t), <object>p
                return <object>p
    return self.max_size


cdef inline bint _aio_conn_lost(object self, bint fast) except -1:
    # bool(self._conn_lost): 0 (the small-int singleton) until the
    # connection is lost.
    v = _tget(self, fast, _TOFF_CONN_LOST, "_conn_lost")
    return v is not _aio_zero and bool(v)


cdef inline object _aio_oserror(int err):
    # OSError(errno, ...) is the errno's subclass (ConnectionResetError...),
    # as socket methods raise.
    return OSError(err, _os.strerror(err))


cdef int _aio_raise(object exc) except -1:
    raise exc


cdef object _aio_fatal(object self, object exc, str message):
    # self._fatal_error(exc, message) as asyncio makes the call: from the
    # `except` clause that caught `exc` where the socket call raised it. So
    # `exc` has a traceback, and it is the exception being handled: a
    # debug-mode loop's log of an OSError (exc_info=True) shows it, and the
    # exception handler's log of any other error shows its traceback.
    try:
        _aio_raise(exc)
    except BaseException as caught:
        self._fatal_error(caught, message)


cdef inline bint _aio_plain_sock(object sock) except -1:
    # True if the socket's recv/recv_into/send are socket.socket's own, so
    # calling recv(2)/send(2) on its fd is what they would do. A subclass
    # overriding them (tracing, test doubles) gets asyncio's code, which
    # calls its methods.
    if type(sock) is _aio_socket_cls:
        return True
    return _aio_plain_sock_type(type(sock))


cdef bint _aio_plain_sock_type(type t) except -1:
    for name in ('recv', 'recv_into', 'send'):
        if getattr(t, name, None) is not getattr(_aio_socket_cls, name):
            return False
    return True


cdef inline int _aio_sock_fd(object sock) except? -2:
    # The socket's own fd now, as socket.recv()/send() use: -1 once the
    # socket object was closed (EBADF, as asyncio gets), never the fd number
    # the transport remembers, which may by now be another file's.
    cdef int fd
    if (_aio_csocket_type is not None and (type(sock) is _aio_socket_cls
                                           or isinstance(sock, _aio_csocket_type))):
        fd = FASTIO_SOCK_FD(sock)
        if fd != -2:
            return fd
    return sock.fileno()


def aio_read_ready(self):
    """Call the read callback chosen for the protocol's kind."""
    _aio_read_ready(self)


cdef int _aio_read_ready(object self) except -1:
    # `_read_ready_cb` is one of the two methods below bound to this
    # transport unless someone set it otherwise: then call those directly.
    cdef bint fast = type(self) is _aio_transport_cls
    if fast and _aio_error_slot(self)[0] != NULL:
        # What the read before got after its bytes (see
        # _aio_read_ready__data_received), reported as asyncio's next
        # read would.
        _aio_fatal(self, _aio_take_read_error(self), 'Fatal read error on socket transport')
        return 0
    cb = _tget(self, fast, _TOFF_READ_CB, "_read_ready_cb")
    if PyMethod_Check(cb) and PyMethod_GET_SELF(cb) == <PyObject *>self:
        func = <object>PyMethod_GET_FUNCTION(cb)
        if func is _aio_read_data_fn:
            _aio_read_ready__data_received(self)
            return 0
        if func is _aio_read_buffer_fn:
            _aio_read_ready__get_buffer(self)
            return 0
    cb()
    return 0


def aio_read_ready__data_received(self):
    """Receive what is there and hand it to protocol.data_received()."""
    return _aio_read_ready__data_received(self)


# The transport's `_recv_hint` slot holds _recv_cap_after()'s capacity for
# its next read, in KiB (a small int, no object made); unset for small reads.
cdef inline PyObject **_aio_hint_slot(object self):
    return <PyObject **>(<char *><PyObject *>self + _TOFF_RECV_HINT)


# The transport's `_read_error` slot: an error a read got after the bytes
# it handed to data_received(), for the next read to report (unset: none).
cdef inline PyObject **_aio_error_slot(object self):
    return <PyObject **>(<char *><PyObject *>self + _TOFF_READ_ERROR)


cdef inline Py_ssize_t _aio_recv_cap(object self, Py_ssize_t size):
    cdef PyObject *h = _aio_hint_slot(self)[0]
    cdef Py_ssize_t cap
    if h == NULL or type(<object>h) is not int:
        return 0
    cap = <Py_ssize_t><object>h
    if cap <= 0:
        return 0
    cap <<= 10
    return cap if cap < size else size


cdef inline int _aio_note_recv(object self, Py_ssize_t n) except -1:
    # Reads the shared buffer serves leave the slot unset: a NULL test each.
    cdef PyObject **slot = _aio_hint_slot(self)
    cdef PyObject *old = slot[0]
    cdef Py_ssize_t cap = _recv_cap_after(n)
    cdef object v
    if cap == 0:
        if old != NULL:
            slot[0] = NULL
            Py_XDECREF(old)
        return 0
    v = cap >> 10   # a cached small int: 8..64
    if <PyObject *>v != old:
        Py_INCREF(v)
        slot[0] = <PyObject *>v
        Py_XDECREF(old)
    return 0


cdef inline void _aio_keep_read_error(object self, object exc) noexcept:
    cdef PyObject **kept = _aio_error_slot(self)
    Py_INCREF(exc)
    Py_XDECREF(kept[0])
    kept[0] = <PyObject *>exc


cdef object _aio_take_read_error(object self):
    # The error the slot keeps, taken out of it (None if it keeps none).
    cdef PyObject **kept = _aio_error_slot(self)
    if kept[0] == NULL:
        return None
    exc = <object>kept[0]
    kept[0] = NULL
    Py_DECREF(exc)
    return exc


cdef object _aio_read_ready__data_received(object self):
    # asyncio's steps. max_size is compared in C (no int object made for
    # the bound), and a protocol other than asyncio's StreamReaderProtocol
    # is called without a `try` block, its error handled in
    # _aio_call_failed (as in _aio_read_ready__get_buffer).
    cdef long long size = 0
    cdef long long n
    cdef Py_ssize_t cap = 0
    cdef int err = 0, fd, overflow = 1, later = 0
    cdef PyObject *r
    cdef bint fast = type(self) is _aio_transport_cls
    cdef bint plain
    if _aio_conn_lost(self, fast):
        return
    max_size = _aio_max_size(self, fast)
    sock = _tget(self, fast, _TOFF_SOCK, "_sock")
    if type(max_size) is int:
        size = PyLong_AsLongLongAndOverflow(max_size, &overflow)
    if overflow or not 0 < size <= _aio_rbuf_size or not _aio_plain_sock(sock):
        # A size the shared buffer does not cover, or a socket with its own
        # recv(): asyncio's own code.
        return _aio_py_read_data_received(self)
    # An asyncio StreamReader behind the protocol takes the bytes straight
    # into its buffer (src/aio_streams.pxi): no bytes object in between.
    fd = _aio_sock_fd(sock)
    protocol = _tget(self, fast, _TOFF_PROTOCOL, "_protocol")
    reader = _aio_stream_reader(protocol)
    plain = reader is None and type(protocol) is not _aio_SRP
    if plain and fast:
        cap = _aio_recv_cap(self, <Py_ssize_t>size)
    if cap:
        data = _recv_sized(fd, _aio_rbuf, cap, <Py_ssize_t>size, &n, &err, &later)
    else:
        n = fastio_recv(fd, _aio_rbuf, <Py_ssize_t>size)
        err = fastio_last_error() if n < 0 else 0
    if n <= 0 and reader is not None:
        _aio_stream_reader_unused()
    if n < 0:
        if fastio_would_block(err):
            return
        _aio_fatal(self, _aio_oserror(err), 'Fatal read error on socket transport')
        return
    if n == 0:
        self._read_ready__on_eof()
        return
    if later:
        # The second recv's error (see _recv_sized), kept before the bytes
        # are handed over: the failure asyncio's next read would report,
        # or its next send() (a write in data_received() or after it, see
        # aio_write and aio_take_read_error); the socket stays readable
        # (recv(2) reports an error once, on a connection it ended), so the
        # next turn's read reports it, behind the callbacks data_received()
        # queued, or the first after resume_reading() (only `fast`
        # transports get here).
        _aio_keep_read_error(self, _aio_oserror(later))
    if plain:
        if fast:
            _aio_note_recv(self, <Py_ssize_t>n)
        if cap:
            r = PyObject_CallMethodOneArg(protocol, "data_received", data)
        else:
            r = _aio_bytes_new(_aio_rbuf, <Py_ssize_t>n)
            if r != NULL:
                data = <object>r
                Py_DECREF(data)
                r = PyObject_CallMethodOneArg(protocol, "data_received", data)
        if r == NULL:
            return _aio_call_failed(self, 'Fatal error: protocol.data_received() call failed.')
        Py_DECREF(<object>r)
        return
    try:
        if reader is not None:
            _aio_feed_data(reader, None, _aio_rbuf, n)
        else:
            _aio_data_received(protocol, PyBytes_FromStringAndSize(_aio_rbuf, n))
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        self._fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')


def aio_read_ready__get_buffer(self):
    """Receive straight into protocol.get_buffer(); report it with buffer_updated()."""
    return _aio_read_ready__get_buffer(self)


cdef object _aio_minus_one = -1
cdef object _aio_zero = 0


cdef int _aio_reraise() except -1:
    # Propagate the exception the caller found set (a NULL from the C API).
    return -1


cdef object _aio_call_failed(object self, str message):
    # asyncio's `except` clauses around a protocol call, for the exception
    # the call just left set: KeyboardInterrupt/SystemExit leave the loop,
    # anything else is the transport's fatal error.
    try:
        _aio_reraise()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        self._fatal_error(exc, message)


cdef object _aio_empty_buffer(object self):
    try:
        raise RuntimeError('get_buffer() returned an empty buffer')
    except BaseException as exc:
        self._fatal_error(exc, 'Fatal error: protocol.get_buffer() call failed.')


cdef object _aio_read_ready__get_buffer(object self):
    # asyncio's steps; the two protocol calls are made without a `try`
    # block (Cython saves and restores the exception state on entering
    # one) and their errors handled in _aio_call_failed. A bytearray or a
    # plain memoryview is received into at its address: no len() and no
    # buffer export and release around the recv(2).
    cdef PyObject *r
    cdef char *p = NULL
    cdef Py_ssize_t size = 0
    cdef long long n
    cdef int err, fd
    cdef bint fast = type(self) is _aio_transport_cls
    if _aio_conn_lost(self, fast):
        return
    sock = _tget(self, fast, _TOFF_SOCK, "_sock")
    if not _aio_plain_sock(sock):
        return _aio_py_read_get_buffer(self)
    r = PyObject_CallMethodOneArg(_tget(self, fast, _TOFF_PROTOCOL, "_protocol"), "get_buffer",
                                  _aio_minus_one)
    if r == NULL:
        return _aio_call_failed(self, 'Fatal error: protocol.get_buffer() call failed.')
    buf = <object>r
    Py_DECREF(buf)
    if type(buf) is bytearray:
        p = PyByteArray_AS_STRING(buf)
        size = PyByteArray_GET_SIZE(buf)
    elif type(buf) is memoryview:
        p = fastio_mv_bytes(buf, &size)
    if p == NULL:
        return _aio_recv_into_any(self, fast, sock, buf)
    if size == 0:
        return _aio_empty_buffer(self)
    fd = _aio_sock_fd(sock)
    n = fastio_recv(fd, p, size)
    err = fastio_last_error() if n < 0 else 0
    return _aio_buffer_received(self, fast, n, err)


cdef object _aio_recv_into_any(object self, bint fast, object sock, object buf):
    # Any other buffer: len() and a writable buffer export, as
    # sock.recv_into() takes it.
    cdef Py_buffer view
    cdef long long n
    cdef int err, fd
    cdef bint unwritable = False
    try:
        if not len(buf):
            raise RuntimeError('get_buffer() returned an empty buffer')
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        self._fatal_error(exc, 'Fatal error: protocol.get_buffer() call failed.')
        return
    try:
        PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        unwritable = True
    if unwritable:
        # (out of the `except`: recv_into()'s TypeError has no context)
        _aio_fatal(self, _aio_unwritable(buf), 'Fatal read error on socket transport')
        return
    try:
        fd = _aio_sock_fd(sock)
        n = fastio_recv(fd, <char *>view.buf, view.len)
        err = fastio_last_error() if n < 0 else 0
    finally:
        PyBuffer_Release(&view)
    return _aio_buffer_received(self, fast, n, err)


cdef object _aio_unwritable(object buf):
    """Return what socket.recv_into() raises for a buffer it cannot write
    (read-only, not contiguous, no buffer at all), for _aio_fatal."""
    return TypeError(f'recv_into() argument 1 must be read-write bytes-like '
                     f'object, not {type(buf).__name__}')


cdef object _aio_buffer_received(object self, bint fast, long long n, int err):
    # What follows recv_into() returning n (or failing with err).
    cdef PyObject *r
    if n < 0:
        if fastio_would_block(err):
            return
        _aio_fatal(self, _aio_oserror(err), 'Fatal read error on socket transport')
        return
    if n == 0:
        self._read_ready__on_eof()
        return
    r = PyObject_CallMethodOneArg(_tget(self, fast, _TOFF_PROTOCOL, "_protocol"), "buffer_updated", n)
    if r == NULL:
        return _aio_call_failed(self, 'Fatal error: protocol.buffer_updated() call failed.')
    Py_DECREF(<object>r)


cdef bint _aio_write_view(object self, object data, Py_buffer *view) except -1:
    # Get the buffer of a write()'s `data`; for one it cannot read (a
    # non-contiguous memoryview) do what asyncio does with the error its
    # socket.send() raises -- the transport's fatal error -- and say False.
    try:
        PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        self._fatal_error(exc, 'Fatal write error on socket transport')
        return False
    return True


def aio_take_read_error(self):
    """Return the error a read took after its bytes and did not report
    yet, forgetting it (None if there is none): what asyncio's next send()
    would fail with."""
    if type(self) is not _aio_transport_cls:
        return None
    return _aio_take_read_error(self)


def aio_write(self, data):
    """Send `data` now if nothing is buffered; buffer what the kernel leaves.

    Same contract as asyncio's socket transport write().
    """
    cdef Py_buffer view
    cdef long long n
    cdef Py_ssize_t total
    cdef int err = 0
    cdef bint fast = type(self) is _aio_transport_cls
    sock = _tget(self, fast, _TOFF_SOCK, "_sock")
    if not _aio_plain_sock(sock):
        return _aio_py_write(self, data)
    if not (PyBytes_Check(data) or PyByteArray_Check(data) or PyMemoryView_Check(data)):
        raise TypeError(f'data argument must be a bytes-like object, '
                        f'not {type(data).__name__!r}')
    if _tget(self, fast, _TOFF_EOF, "_eof"):
        raise RuntimeError('Cannot call write() after write_eof()')
    if _tget(self, fast, _TOFF_EMPTY_WAITER, "_empty_waiter") is not None:
        raise RuntimeError('unable to write; sendfile is in progress')
    if not data:
        return
    conn_lost = _tget(self, fast, _TOFF_CONN_LOST, "_conn_lost")
    if conn_lost:
        if conn_lost >= _aio_log_threshold:
            _aio_logger.warning('socket.send() raised exception.')
        self._conn_lost = conn_lost + 1
        return

    buffer = _tget(self, fast, _TOFF_BUFFER, "_buffer")
    if not buffer:
        if fast and _aio_error_slot(self)[0] != NULL:
            # The error a read took after its bytes, not reported yet: the
            # kernel reports one once, and asyncio's send() would get it.
            _aio_fatal(self, _aio_take_read_error(self), 'Fatal write error on socket transport')
            return
        # Try to send now.
        if PyBytes_CheckExact(data):
            # (its bytes are the buffer send() would take)
            total = PyBytes_GET_SIZE(data)
            n = fastio_send(_aio_sock_fd(sock), PyBytes_AS_STRING(data), total)
            if n < 0:
                err = fastio_last_error()
        else:
            if not _aio_write_view(self, data, &view):
                return
            total = view.len
            n = fastio_send(_aio_sock_fd(sock), <const char *>view.buf, total)
            if n < 0:
                err = fastio_last_error()
            PyBuffer_Release(&view)
        if n < 0:
            if not fastio_would_block(err):
                _aio_fatal(self, _aio_oserror(err), 'Fatal write error on socket transport')
                return
            n = 0
        elif n >= total:
            return
        if n:
            data = memoryview(data)[n:] if _aio_deque_buffer else data[n:]
        # Not all was written; register write handler.
        self._loop._add_writer(self._sock_fd, self._write_ready)

    # Add it to the buffer.
    if _aio_deque_buffer:
        buffer.append(data)
    else:
        buffer.extend(data)
    self._maybe_pause_protocol()


def aio_is_closing(self):
    """Same contract as asyncio's socket transport is_closing()."""
    return _tget(self, type(self) is _aio_transport_cls, _TOFF_CLOSING, "_closing")
