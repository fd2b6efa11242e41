# asyncio's face of the loop core: data arriving for asyncio's streams.
#
# A stream server's transport hands every chunk to
# asyncio.StreamReaderProtocol.data_received(), which finds its
# StreamReader through a weak reference and calls feed_data(), which wakes
# the reader's waiter through _wakeup_waiter(): four Python frames per chunk
# (CPython 3.9-3.13 have the same code). _aio_data_received() takes those
# steps in C, in that order, on asyncio's own objects, when the protocol
# and the reader are exactly asyncio's classes, those classes are as asyncio
# defines them, and no instance shadows the methods involved; anything else
# -- a subclass, a patched class, a method set on an instance, a reader of
# another class -- is called as Python would call it. Only the tracebacks
# of the errors those steps can raise (feed_data's assertion, a buffer that
# cannot grow) lack the Python frames. When the transport knows before its
# recv() that all of it will be C (_aio_stream_reader), the received bytes
# go from its receive buffer straight into the reader's bytearray: the
# `data` bytes object asyncio makes per read would be seen by nothing.
#
# Discussion: the classes are checked once per change (their type version
# tags), the instances per call. The instance attributes are read with
# getattr, never through a __dict__ taken from C: on 3.11+ that would build
# the dict out of the instance's inline values for good, and every
# specialised LOAD_ATTR of asyncio's own code on that object would then
# miss.

from cpython.ref cimport Py_DECREF
from cpython.long cimport PyLong_AsLongLongAndOverflow

cdef extern from *:
    """
    #if PY_VERSION_HEX >= 0x030D0000
    /* Exported by every CPython 3; 3.13 moved its declaration to the
     * internal headers. */
    PyAPI_FUNC(int) _PyObject_GetMethod(PyObject *obj, PyObject *name, PyObject **method);
    #endif
    /* The type's version tag, 0 while it is not valid: it changes whenever
     * the type or one of its bases is modified. Before 3.12 a modified
     * type keeps its old number with the VALID flag cleared. */
    #if PY_VERSION_HEX < 0x030C0000
    #define FASTIO_TYPE_TAG(t) ((((PyTypeObject *)(t))->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) \\
                                ? ((PyTypeObject *)(t))->tp_version_tag : 0u)
    #else
    #define FASTIO_TYPE_TAG(t) (((PyTypeObject *)(t))->tp_version_tag)
    #endif
    /* What calling the weak reference `wr` returns (None once dead). */
    static PyObject *fastio_weakref_get(PyObject *wr) {
        PyObject *obj;
    #if PY_VERSION_HEX >= 0x030D0000
        if (PyWeakref_GetRef(wr, &obj) < 0)
            return NULL;
        if (obj == NULL)
            Py_RETURN_NONE;
        return obj;
    #else
        obj = PyWeakref_GetObject(wr);
        Py_XINCREF(obj);
        return obj;
    #endif
    }
    """
    unsigned int FASTIO_TYPE_TAG(object t)
    bint PyWeakref_CheckRefExact(object obj)
    object _aio_weakref_get "fastio_weakref_get" (object wr)
    int _PyObject_GetMethod(object obj, object name, PyObject **method)
    void PyErr_Clear()

cdef type _aio_SRP = None          # asyncio.StreamReaderProtocol
cdef type _aio_SR = None           # asyncio.StreamReader
cdef object _aio_srp_data_received = None
cdef object _aio_srp_stream_reader = None   # the `_stream_reader` property
cdef object _aio_sr_feed_data = None
cdef object _aio_sr_wakeup_waiter = None
cdef bint _aio_asserts = True      # feed_data's `assert` runs (not python -O)
# The version tags the two classes had when last found as asyncio defines
# them (0: not checked yet, or not as asyncio defines them).
cdef unsigned int _aio_srp_tag = 0, _aio_sr_tag = 0
# _asyncio.Future and its own cancelled()/set_result() descriptors.
cdef type _aio_CFuture = None
cdef object _aio_fut_cancelled = None
cdef object _aio_fut_set_result = None
# The reader's buffer, from _aio_stream_reader() to _aio_feed_data().
cdef object _aio_reader_buf = None


cdef _aio_streams_setup():
    global _aio_SRP, _aio_SR, _aio_srp_data_received, _aio_srp_stream_reader
    global _aio_sr_feed_data, _aio_sr_wakeup_waiter, _aio_asserts
    global _aio_CFuture, _aio_fut_cancelled, _aio_fut_set_result
    import sys
    from asyncio import futures, streams
    srp = streams.StreamReaderProtocol
    sr = streams.StreamReader
    prop = srp.__dict__.get("_stream_reader")
    if (type(prop) is not property or "data_received" not in srp.__dict__
            or "feed_data" not in sr.__dict__ or "_wakeup_waiter" not in sr.__dict__):
        return  # not the asyncio this was written against: no compiled twin
    _aio_srp_data_received = srp.__dict__["data_received"]
    _aio_srp_stream_reader = prop
    _aio_sr_feed_data = sr.__dict__["feed_data"]
    _aio_sr_wakeup_waiter = sr.__dict__["_wakeup_waiter"]
    _aio_asserts = not sys.flags.optimize
    _aio_SRP = srp
    _aio_SR = sr
    cfut = getattr(futures, "_CFuture", None)
    if isinstance(cfut, type):
        _aio_CFuture = cfut
        _aio_fut_cancelled = cfut.__dict__["cancelled"]
        _aio_fut_set_result = cfut.__dict__["set_result"]


cdef bint _aio_streams_classes_ok() except -1:
    # True if both classes are as asyncio defines them (checked again only
    # after one of them, or a base, changed).
    global _aio_srp_tag, _aio_sr_tag
    cdef unsigned int a, b
    if _aio_SRP is None:
        return False
    a = FASTIO_TYPE_TAG(_aio_SRP)
    b = FASTIO_TYPE_TAG(_aio_SR)
    if a != 0 and a == _aio_srp_tag and b == _aio_sr_tag:
        return True
    _aio_srp_tag = _aio_sr_tag = 0
    if (_PyType_Lookup(<PyTypeObject *>_aio_SRP, "data_received") != <PyObject *>_aio_srp_data_received
            or _PyType_Lookup(<PyTypeObject *>_aio_SRP, "_stream_reader") != <PyObject *>_aio_srp_stream_reader
            or _PyType_Lookup(<PyTypeObject *>_aio_SR, "feed_data") != <PyObject *>_aio_sr_feed_data
            or _PyType_Lookup(<PyTypeObject *>_aio_SR, "_wakeup_waiter") != <PyObject *>_aio_sr_wakeup_waiter):
        return False
    # (the lookups above gave both types a valid tag)
    a = FASTIO_TYPE_TAG(_aio_SRP)
    b = FASTIO_TYPE_TAG(_aio_SR)
    if a == 0 or b == 0:
        return False
    _aio_srp_tag, _aio_sr_tag = a, b
    return True


cdef inline bint _aio_shadowed(object obj, str name) except -1:
    # True if obj has an instance attribute `name` (a method of its class
    # the class checks found, so _PyObject_GetMethod sees the class's
    # function unless the instance shadows it; it reads 3.11+'s inline
    # values without building a __dict__).
    cdef PyObject *m = NULL
    cdef int r = _PyObject_GetMethod(obj, name, &m)
    if m == NULL:
        PyErr_Clear()  # the ordinary call raises it again
        return True
    Py_DECREF(<object>m)
    return r != 1


cdef object _aio_stream_reader(object protocol):
    """Return the StreamReader protocol.data_received() would feed in C, or None.

    Its buffer is left in _aio_reader_buf for _aio_feed_data().

    Not None only if asyncio's steps for the next chunk are all in C: an
    asyncio StreamReaderProtocol and StreamReader as asyncio defines them,
    the reader alive, not at EOF (feed_data's assertion), with a bytearray
    buffer. The transport then receives straight into that buffer.
    """
    global _aio_reader_buf
    if (type(protocol) is not _aio_SRP or not _aio_streams_classes_ok()
            or _aio_shadowed(protocol, "data_received")):
        return None
    wr = protocol._stream_reader_wr
    if wr is None or not PyWeakref_CheckRefExact(wr):
        return None
    reader = _aio_weakref_get(wr)
    if (type(reader) is not _aio_SR or _aio_shadowed(reader, "feed_data")
            or _aio_shadowed(reader, "_wakeup_waiter") or reader._eof):
        return None
    buf = reader._buffer
    if type(buf) is not bytearray:
        return None
    _aio_reader_buf = buf
    return reader


cdef inline void _aio_stream_reader_unused() noexcept:
    # Nothing to feed after all: drop the buffer _aio_stream_reader() kept.
    global _aio_reader_buf
    _aio_reader_buf = None


cdef int _aio_data_received(object protocol, object data) except -1:
    """protocol.data_received(data), asyncio's steps in C where that is asyncio's."""
    if (type(protocol) is not _aio_SRP or not _aio_streams_classes_ok()
            or _aio_shadowed(protocol, "data_received")):
        protocol.data_received(data)
        return 0
    # reader = self._stream_reader (the property)
    wr = protocol._stream_reader_wr
    if wr is None:
        return 0
    if PyWeakref_CheckRefExact(wr):
        reader = _aio_weakref_get(wr)
    else:
        reader = wr()
    if reader is None:
        return 0
    if (type(reader) is not _aio_SR or _aio_shadowed(reader, "feed_data")
            or _aio_shadowed(reader, "_wakeup_waiter")):
        reader.feed_data(data)
        return 0
    _aio_feed_data(reader, data, NULL, 0)
    return 0


cdef int _aio_feed_data(object self, object data, const char *p, Py_ssize_t n) except -1:
    # StreamReader.feed_data(data). data None: the n bytes at p (n > 0),
    # for the reader _aio_stream_reader() just returned (not at EOF, its
    # buffer in _aio_reader_buf).
    global _aio_reader_buf
    cdef Py_ssize_t old, size
    cdef long long lim
    cdef int overflow = 0
    cdef PyObject **dp
    if data is None:
        buf = _aio_reader_buf
        _aio_reader_buf = None
    else:
        if _aio_asserts and self._eof:
            raise AssertionError('feed_data after feed_eof')
        if not data:
            return 0
        if PyBytes_CheckExact(data):
            p = PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        buf = self._buffer
    if type(buf) is bytearray and (data is None or PyBytes_CheckExact(data)):
        old = PyByteArray_GET_SIZE(buf)
        PyByteArray_Resize(buf, old + n)
        memcpy(PyByteArray_AS_STRING(buf) + old, p, n)
    else:
        if data is None:
            data = PyBytes_FromStringAndSize(p, n)
        buf.extend(data)
    buf = None

    # self._wakeup_waiter()
    waiter = self._waiter
    if waiter is not None:
        self._waiter = None
        if type(waiter) is _aio_CFuture and _aio_CFuture is not None:
            # Its own methods, unless its instance dict shadows them.
            dp = _PyObject_GetDictPtr(waiter)
            if dp == NULL or dp[0] == NULL or not <object>dp[0]:
                if not _aio_fut_cancelled(waiter):
                    _aio_fut_set_result(waiter, None)
                waiter = None
        if waiter is not None and not waiter.cancelled():
            waiter.set_result(None)
    waiter = None

    transport = self._transport
    if transport is not None and not self._paused:
        buf = self._buffer
        limit = self._limit
        if type(buf) is bytearray and type(limit) is int:
            size = PyByteArray_GET_SIZE(buf)
            lim = PyLong_AsLongLongAndOverflow(limit, &overflow)
            if overflow == 0 and -(1LL << 60) < lim < (1LL << 60):
                big = size > 2 * lim
            else:
                big = size > 2 * limit
        else:
            big = len(buf) > 2 * limit
        buf = limit = None
        if big:
            try:
                transport.pause_reading()
            except NotImplementedError:
                # The transport can't be paused.
                # We'll just have to buffer all data.
                # Forget the transport so we don't keep trying.
                self._transport = None
            else:
                self._paused = True
    return 0
