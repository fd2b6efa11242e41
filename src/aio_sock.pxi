# asyncio's face of the loop core: readers and writers, the sock_*()
# coroutines and the accept loop.
#
# Compiled twins of asyncio's BaseSelectorEventLoop methods, installed on
# fastio.EventLoop under asyncio's names: add_reader/add_writer and their
# private halves (which transports use), _ensure_fd_no_transport, the
# sock_recv/sock_recv_into/sock_sendall/sock_connect/sock_accept coroutines
# with their I/O callbacks and done-callbacks, and the server's
# _accept_connection/_accept_connection2. They take asyncio's steps in
# asyncio's order, with its exceptions and messages; the differences
# between 3.9 and 3.13 that anything can observe are read off the running
# asyncio in _aio_sock_setup(). Handles are asyncio's Handle objects,
# futures the loop's create_future(), tasks its create_task().
#
# What is faster: a plain `socket.socket` in non-blocking mode is read and
# written with recv(2)/send(2) on its fd (no BlockingIOError raised and
# caught when it would block), a plain socket is accepted through
# `_socket.socket._accept()` without socket.py's frames, handles are made
# from C, and a fastio selector's key table is read directly. Anything else
# (a socket subclass, a socket with a timeout, another selector, a subclass
# of EventLoop overriding the private helpers) goes through the same Python
# calls asyncio makes. Debug mode runs asyncio's own sock_*() coroutines,
# _add_reader/_add_writer and _accept_connection (source tracebacks, the
# non-blocking check, logging each connection).

from cpython.buffer cimport PyBUF_WRITABLE as _AIO_BUF_WRITABLE, PyBuffer_IsContiguous
from cpython.bytes cimport PyBytes_AS_STRING as _aio_bytes_as_string

cdef extern from "Python.h":
    object PyMethod_New(object func, object self)
    int _PyBytes_Resize(PyObject **bytes, Py_ssize_t newsize) except -1
    Py_buffer *PyMemoryView_GET_BUFFER(object mview)

cdef object _aio_EventLoop = None
cdef object _aio_py_add_reader = None
cdef object _aio_py_add_writer = None
cdef object _aio_py_sock_recv = None
cdef object _aio_py_sock_recv_into = None
cdef object _aio_py_sock_sendall = None
cdef object _aio_py_sock_connect = None
cdef object _aio_py_sock_accept = None
cdef object _aio_py_accept_connection = None
cdef object _aio_base_ensure_resolved = None
cdef object _aio_ipaddr_info = None
cdef object _aio_check_ssl_socket = None
cdef object _aio_TransportSocket = None
cdef object _aio_partial = None
cdef object _aio_WeakValueDictionary = None
cdef object _aio_socket_init = None
cdef object _aio_getdefaulttimeout = None
cdef object _aio_sock_family = None
cdef object _aio_sock_type = None
cdef object _aio_sock_proto = None
cdef object _aio_fast_selectors = ()
cdef object _aio_accept_retry_delay = None
cdef object _aio_ssl_handshake_timeout = None
cdef object _aio_ssl_shutdown_timeout = None
cdef object _aio_AF_INET = None
cdef object _aio_AF_INET6 = None
cdef object _aio_SOL_SOCKET = None
cdef object _aio_SO_ERROR = None
cdef bint _aio_has_ipv6 = False
# 3.11+ servers carry ssl_shutdown_timeout through the accept path.
cdef bint _aio_ssl_shutdown = False
# 3.13 looks keys up with get_map().get(fd), older versions with get_key(fd).
cdef bint _aio_key_by_map = False
# 3.13 skips a falsy transport in _ensure_fd_no_transport.
cdef bint _aio_fd_check_truthy = False
# The accept loop's resource errors: asyncio logs these and retries later.
cdef tuple _aio_accept_resource_errnos = ()


def aio_sock_setup(base_events, selector_events, event_loop_cls, fast_selectors):
    """Bind asyncio's pieces and fastio.EventLoop; called once by fastio._aio.

    :param fast_selectors: the fastio selector classes whose key table
        (`_fd_to_key`) may be read directly.
    """
    global _aio_EventLoop, _aio_py_add_reader, _aio_py_add_writer, _aio_py_sock_recv
    global _aio_py_sock_recv_into, _aio_py_sock_sendall, _aio_py_sock_connect, _aio_py_sock_accept
    global _aio_py_accept_connection
    global _aio_base_ensure_resolved, _aio_ipaddr_info, _aio_check_ssl_socket, _aio_TransportSocket
    global _aio_partial, _aio_WeakValueDictionary, _aio_socket_init, _aio_getdefaulttimeout
    global _aio_sock_family, _aio_sock_type, _aio_sock_proto, _aio_fast_selectors
    global _aio_accept_retry_delay, _aio_ssl_handshake_timeout, _aio_ssl_shutdown_timeout
    global _aio_AF_INET, _aio_AF_INET6, _aio_SOL_SOCKET, _aio_SO_ERROR, _aio_has_ipv6
    global _aio_ssl_shutdown, _aio_key_by_map, _aio_fd_check_truthy, _aio_accept_resource_errnos
    import errno
    import functools
    import weakref
    import _socket
    from asyncio import constants, trsock
    base = selector_events.BaseSelectorEventLoop
    _aio_EventLoop = event_loop_cls
    _aio_py_add_reader = base._add_reader
    _aio_py_add_writer = base._add_writer
    _aio_py_sock_recv = base.sock_recv
    _aio_py_sock_recv_into = base.sock_recv_into
    _aio_py_sock_sendall = base.sock_sendall
    _aio_py_sock_connect = base.sock_connect
    _aio_py_sock_accept = base.sock_accept
    _aio_py_accept_connection = base._accept_connection
    _aio_base_ensure_resolved = base_events.BaseEventLoop._ensure_resolved
    _aio_ipaddr_info = base_events._ipaddr_info
    _aio_check_ssl_socket = base_events._check_ssl_socket
    _aio_has_ipv6 = base_events._HAS_IPv6
    _aio_TransportSocket = trsock.TransportSocket
    _aio_partial = functools.partial
    _aio_WeakValueDictionary = weakref.WeakValueDictionary
    _aio_socket_init = _socket.socket.__init__
    _aio_getdefaulttimeout = _socket.getdefaulttimeout
    _aio_sock_family = _socket.socket.family.__get__
    _aio_sock_type = _socket.socket.type.__get__
    _aio_sock_proto = _socket.socket.proto.__get__
    _aio_fast_selectors = tuple(fast_selectors)
    _aio_accept_retry_delay = constants.ACCEPT_RETRY_DELAY
    _aio_ssl_handshake_timeout = constants.SSL_HANDSHAKE_TIMEOUT
    _aio_ssl_shutdown_timeout = getattr(constants, "SSL_SHUTDOWN_TIMEOUT", None)
    _aio_AF_INET = socket.AF_INET
    _aio_AF_INET6 = getattr(socket, "AF_INET6", None)
    _aio_SOL_SOCKET = socket.SOL_SOCKET
    _aio_SO_ERROR = socket.SO_ERROR
    _aio_ssl_shutdown = "ssl_shutdown_timeout" in base._accept_connection.__code__.co_varnames
    _aio_key_by_map = "get_map" in base._add_reader.__code__.co_names
    _aio_fd_check_truthy = "get" in base._ensure_fd_no_transport.__code__.co_names
    _aio_accept_resource_errnos = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


# ------------------------------------------------------------------ helpers

cdef inline bint _aio_own(object self):
    # An EventLoop itself, not a subclass: its private helpers are the
    # compiled ones below, so they are called directly, not looked up.
    return type(self) is _aio_EventLoop


cdef inline object _aio_bound(object self, object func, str name):
    # self.<name>, as asyncio passes its own bound methods as callbacks.
    if _aio_own(self):
        return PyMethod_New(func, self)
    return getattr(self, name)


cdef object _aio_get_key(object selector, object fd):
    """Return the selector's key for `fd`, or None; as this asyncio looks it up."""
    if type(fd) is int and fd >= 0 and type(selector) in _aio_fast_selectors \
            and not selector.__dict__ and selector._map is not None:
        # A fastio selector with no method replaced on the instance: both
        # get_key() and get_map().get() end in this dict for an int fd.
        return (<dict>selector._fd_to_key).get(fd)
    if _aio_key_by_map:
        return selector.get_map().get(fd)
    try:
        return selector.get_key(fd)
    except KeyError:
        return None


cdef inline void _aio_cancel_handle(object handle, object loop) except *:
    # handle.cancel() of a Handle whose loop is not in debug mode.
    if type(handle) is _aio_Handle and _slot(handle, _OFF_CANCELLED) != NULL \
            and _slot(handle, _OFF_LOOP) == <PyObject *>loop and not loop._debug:
        if not <object>_slot(handle, _OFF_CANCELLED):
            _slot_set(handle, _OFF_CANCELLED, True)
            _slot_set(handle, _OFF_CALLBACK, None)
            _slot_set(handle, _OFF_ARGS, None)
        return
    handle.cancel()


cdef inline bint _aio_handle_cancelled(object handle) except -1:
    if type(handle) is _aio_Handle and _slot(handle, _OFF_CANCELLED) != NULL:
        return <object>_slot(handle, _OFF_CANCELLED)
    return handle.cancelled()


cdef object _aio_ensure_fd_no_transport(object self, object fd):
    cdef object fileno = fd
    if not isinstance(fileno, int):
        try:
            fileno = int(fileno.fileno())
        except (AttributeError, TypeError, ValueError):
            # This code matches selectors._fileobj_to_fd function.
            raise ValueError(f"Invalid file object: {fd!r}") from None
    transports = self._transports
    if type(transports) is _aio_WeakValueDictionary:
        ref = transports.data.get(fileno)
        if ref is None:
            return
        transport = ref()
        if transport is None:
            return
    elif _aio_fd_check_truthy:
        transport = transports.get(fileno)
    else:
        try:
            transport = transports[fileno]
        except KeyError:
            return
    if _aio_fd_check_truthy and not transport:
        return
    if not transport.is_closing():
        raise RuntimeError(
            f'File descriptor {fd!r} is used by transport '
            f'{transport!r}')


cdef object _aio_add_handler(object self, object fd, object callback, tuple args, int event):
    cdef object selector, key, handle, mask, reader, writer, old
    if self._debug:
        base = _aio_py_add_reader if event == 1 else _aio_py_add_writer
        return base(self, fd, callback, *args)
    if self._closed:
        raise RuntimeError('Event loop is closed')
    handle = _aio_new_handle(callback, args, self, None, _aio_Handle)
    selector = self._selector
    key = _aio_get_key(selector, fd)
    if key is None:
        selector.register(fd, event, (handle, None) if event == 1 else (None, handle))
        return handle
    mask = key.events
    reader, writer = key.data
    if event == 1:
        selector.modify(fd, mask | 1, (handle, writer))
        old = reader
    else:
        selector.modify(fd, mask | 2, (reader, handle))
        old = writer
    if old is not None:
        _aio_cancel_handle(old, self)
    return handle


cdef bint _aio_remove_handler(object self, object fd, int event) except -1:
    cdef object selector, key, mask, reader, writer, old
    if self.is_closed() if not _aio_own(self) else self._closed:
        return False
    selector = self._selector
    key = _aio_get_key(selector, fd)
    if key is None:
        return False
    mask = key.events
    reader, writer = key.data
    mask &= ~event
    if not mask:
        selector.unregister(fd)
    elif event == 1:
        selector.modify(fd, mask, (None, writer))
    else:
        selector.modify(fd, mask, (reader, None))
    old = reader if event == 1 else writer
    if old is not None:
        _aio_cancel_handle(old, self)
        return True
    return False


cdef inline object _aio_add_reader_of(object self, object fd, object callback, tuple args):
    if _aio_own(self):
        return _aio_add_handler(self, fd, callback, args, 1)
    return self._add_reader(fd, callback, *args)


cdef inline object _aio_add_writer_of(object self, object fd, object callback, tuple args):
    if _aio_own(self):
        return _aio_add_handler(self, fd, callback, args, 2)
    return self._add_writer(fd, callback, *args)


cdef inline object _aio_ensure_of(object self, object fd):
    if _aio_own(self):
        return _aio_ensure_fd_no_transport(self, fd)
    return self._ensure_fd_no_transport(fd)


cdef int _aio_raw_fd(object sock) except -2:
    """Return the fd to call recv(2)/send(2) on for `sock`, or -1.

    -1 means "call the socket's own method": a socket subclass, a blocking
    socket or one with a timeout (its methods wait), or a closed one.
    """
    if type(sock) is not _aio_socket_cls:
        return -1
    timeout = sock.gettimeout()
    if timeout is None or timeout != 0:
        return -1
    fd = sock.fileno()
    return fd if fd >= 0 else -1


# What a raw syscall returns when the socket would block.
cdef object _AIO_AGAIN = object()


cdef object _aio_raw_recv(object sock, object n):
    """sock.recv(n), or _AIO_AGAIN instead of raising BlockingIOError."""
    cdef int fd
    cdef long long got
    cdef Py_ssize_t size
    cdef int err
    cdef PyObject *data_p
    if type(n) is int and n > 0:
        fd = _aio_raw_fd(sock)
        if fd >= 0:
            size = n
            data = PyBytes_FromStringAndSize(NULL, size)
            got = fastio_recv(fd, _aio_bytes_as_string(data), size)
            if got < 0:
                err = fastio_last_error()
                if fastio_would_block(err):
                    return _AIO_AGAIN
                raise _aio_oserror(err)
            if got != size:
                data_p = <PyObject *>data
                Py_INCREF(data)
                data = None
                try:
                    _PyBytes_Resize(&data_p, got)
                finally:
                    # _PyBytes_Resize leaves the new object (or NULL) in data_p.
                    if data_p != NULL:
                        data = <object>data_p
                        Py_XDECREF(data_p)
            return data
    try:
        return sock.recv(n)
    except (BlockingIOError, InterruptedError):
        return _AIO_AGAIN


cdef object _aio_raw_recv_into(object sock, object buf):
    """sock.recv_into(buf), or _AIO_AGAIN instead of raising BlockingIOError."""
    cdef Py_buffer view
    cdef long long got = 0
    cdef int fd, err = 0
    cdef bint done = False
    fd = _aio_raw_fd(sock)
    if fd >= 0 and PyObject_CheckBuffer(buf):
        try:
            PyObject_GetBuffer(buf, &view, _AIO_BUF_WRITABLE)
        except Exception:
            pass  # the socket's method raises the error
        else:
            try:
                if view.len > 0 and PyBuffer_IsContiguous(&view, b'C'):
                    got = fastio_recv(fd, <char *>view.buf, view.len)
                    err = fastio_last_error() if got < 0 else 0
                    done = True
            finally:
                PyBuffer_Release(&view)
        if done:
            if got < 0:
                if fastio_would_block(err):
                    return _AIO_AGAIN
                raise _aio_oserror(err)
            return got
    try:
        return sock.recv_into(buf)
    except (BlockingIOError, InterruptedError):
        return _AIO_AGAIN


cdef object _aio_raw_send(object sock, object data, Py_ssize_t start):
    """sock.send(data) (from byte `start` of a byte memoryview); None if it would block."""
    cdef Py_buffer view
    cdef long long sent = 0
    cdef int fd, err = 0
    cdef bint done = False
    fd = _aio_raw_fd(sock)
    if fd >= 0 and PyObject_CheckBuffer(data):
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except Exception:
            pass
        else:
            try:
                if 0 <= start <= view.len:
                    sent = fastio_send(fd, <const char *>view.buf + start, view.len - start)
                    err = fastio_last_error() if sent < 0 else 0
                    done = True
            finally:
                PyBuffer_Release(&view)
        if done:
            if sent < 0:
                if fastio_would_block(err):
                    return None
                raise _aio_oserror(err)
            return sent
    try:
        return sock.send(data[start:] if start else data)
    except (BlockingIOError, InterruptedError):
        return None


cdef bint _aio_fast_sock(object self, object sock) except -1:
    # The compiled coroutine takes asyncio's exact steps for this call:
    # a plain socket (not an SSLSocket, which _check_ssl_socket refuses)
    # and a loop not in debug mode (which checks for a blocking socket).
    return type(sock) is _aio_socket_cls and not self._debug


# ------------------------------------------------------ readers and writers

def aio_add_reader(self, fd, callback, *args):
    """Add a reader callback."""
    _aio_ensure_of(self, fd)
    _aio_add_reader_of(self, fd, callback, args)


def aio_remove_reader(self, fd):
    """Remove a reader callback."""
    _aio_ensure_of(self, fd)
    if _aio_own(self):
        return _aio_remove_handler(self, fd, 1)
    return self._remove_reader(fd)


def aio_add_writer(self, fd, callback, *args):
    """Add a writer callback.."""
    _aio_ensure_of(self, fd)
    _aio_add_writer_of(self, fd, callback, args)


def aio_remove_writer(self, fd):
    """Remove a writer callback."""
    _aio_ensure_of(self, fd)
    if _aio_own(self):
        return _aio_remove_handler(self, fd, 2)
    return self._remove_writer(fd)


def aio__add_reader(self, fd, callback, *args):
    """Same contract as asyncio's BaseSelectorEventLoop._add_reader."""
    return _aio_add_handler(self, fd, callback, args, 1)


def aio__remove_reader(self, fd):
    """Same contract as asyncio's BaseSelectorEventLoop._remove_reader."""
    return _aio_remove_handler(self, fd, 1)


def aio__add_writer(self, fd, callback, *args):
    """Same contract as asyncio's BaseSelectorEventLoop._add_writer."""
    return _aio_add_handler(self, fd, callback, args, 2)


def aio__remove_writer(self, fd):
    """Remove a writer callback."""
    return _aio_remove_handler(self, fd, 2)


def aio__ensure_fd_no_transport(self, fd):
    """Raise if a transport that is not closing owns `fd`; as asyncio does."""
    _aio_ensure_fd_no_transport(self, fd)
