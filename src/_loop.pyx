# cython: language_level=3
"""fastio._loop: the event loop's hot path.

Handles, the ready queue, the timer heap, per-event dispatch and the TCP
transport's recv/send/flow-control path. fastio.loop builds the public Loop on
LoopCore. fastio/_pyloop.py is the pure-Python twin: same classes, same
behaviour; a change here is a change there.

Discussion: syscalls stay in fastio._core. A fastio._core poller is driven
through the core's C API (src/fastio_capi.h): the loop reads the poller's
event buffer directly, so an iteration builds no list of tuples. Any other
poller -- a stdlib stand-in, an adapter over a selector -- goes through its
Python `poll()`. What pays off in C is what happens per event and per
callback: the fd lookup (a flat array indexed by fd), the handle call, the
heap, transports called as C methods, and compiled protocols called with
the receive buffer itself (no bytes object per chunk).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetContext, PyCapsule_GetPointer, PyCapsule_IsValid, PyCapsule_New
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from fastio_platform cimport (fastio_last_error, fastio_monotonic_ns, fastio_recv,
                              fastio_send, fastio_would_block, fastio_event)
from fastio_capi cimport *

import os as _os

import collections
import socket

from fastio import _core

# The core's C API, and the poller class it serves (see LoopCore.__init__).
cdef fastio_core_capi *_core_api = <fastio_core_capi *>PyCapsule_GetPointer(
    _core._C_API, FASTIO_CORE_CAPI)
cdef object _CorePoller = _core.Poller

__all__ = ["Handle", "TimerHandle", "LoopCore", "Transport", "UringTransport", "UringDriver"]

cdef enum:
    POLLIN = 0x001
    POLLOUT = 0x004
    POLLERR = 0x008
    POLLHUP = 0x010
    # An error or hang-up wakes both reader and writer, as the stdlib
    # selectors do, so whoever waits learns it from recv()/send().
    READ_BITS = ~POLLOUT
    WRITE_BITS = ~POLLIN
    HANDLER_BITS = POLLIN | POLLOUT | POLLERR
    # fds below this are looked up in a flat array; the rest in the dict.
    FDTAB_MAX = 1 << 20

cdef object _SHUT_WR = socket.SHUT_WR
# The longest single wait, as asyncio's: a timer further away than any
# poller's timeout can express just takes several waits.
cdef double MAX_WAIT = 24 * 3600.0


cdef inline double _now() noexcept:
    # Exactly time.monotonic(): same clock, same ns -> float conversion.
    return <double>fastio_monotonic_ns() / 1e9


cdef inline int _check_callback(object callback, str method) except -1:
    # At call time, as asyncio's debug mode does: later, inside the loop,
    # the error would be far from its cause.
    if not callable(callback):
        raise TypeError("a callable object was expected by %s(), got %r" % (method, callback))
    return 0


cdef inline double _check_time(object value, str name) except? -1.0:
    """Return `value` as a float; NaN is refused (no timer could ever be due)."""
    cdef double t = value
    if t != t:
        raise ValueError("%s must not be NaN" % name)
    return t


cdef inline long long _fdtab_index(object fd) noexcept:
    """Return `fd`'s index in LoopCore._fdtab, or -1 if it lives in the dict."""
    cdef int overflow = 0
    cdef long long v
    if type(fd) is not int:
        return -1
    v = PyLong_AsLongLongAndOverflow(fd, &overflow)
    if overflow or v < 0 or v >= FDTAB_MAX:
        return -1
    return v


cdef inline object _fileno(object fd):
    if isinstance(fd, int):
        return fd
    return fd.fileno()


# ---------------------------------------------------------------- handles


@cython.freelist(256)
cdef class Handle:
    """A callback scheduled on the loop; `cancel()` keeps it from running."""

    cdef object _callback
    cdef tuple _args
    cdef object _context
    cdef bint _cancelled
    cdef LoopCore _loop

    def __cinit__(self, callback, tuple args, LoopCore loop):
        self._callback = callback
        self._args = args
        self._loop = loop

    def cancel(self):
        """Keep the callback from running; calling it again does nothing."""
        self._cancelled = True

    def cancelled(self):
        return self._cancelled

    def __repr__(self):
        state = " cancelled" if self._cancelled else ""
        return "<%s%s %r>" % (type(self).__name__, state, self._callback)

    cdef int _run(self) except -1:
        try:
            if self._context is not None:
                self._context.run(self._callback, *self._args)
            elif self._args:
                self._callback(*self._args)
            else:
                self._callback()
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": "Exception in callback %r" % (self._callback,),
                "exception": exc,
                "handle": self,
            })
        return 0


cdef class TimerHandle(Handle):
    """A callback due at loop time `when()`."""

    cdef double _when
    cdef unsigned long long _seq
    cdef bint _scheduled

    def when(self):
        """Return the loop time at which the callback is due."""
        return self._when

    def cancel(self):
        """Keep the callback from running; same contract as asyncio's."""
        if not self._cancelled:
            self._cancelled = True
            if self._scheduled:
                self._loop._timer_cancelled()


cdef inline bint _timer_lt(TimerHandle a, TimerHandle b) noexcept:
    return a._when < b._when or (a._when == b._when and a._seq < b._seq)


# A binary min-heap of TimerHandles in a Python list, ordered by
# (when, seq): equal deadlines fire in the order they were scheduled.

cdef void _sift_down(list heap, Py_ssize_t start, Py_ssize_t pos):
    cdef TimerHandle item = heap[pos]
    cdef TimerHandle parent
    cdef Py_ssize_t parentpos
    while pos > start:
        parentpos = (pos - 1) >> 1
        parent = heap[parentpos]
        if not _timer_lt(item, parent):
            break
        heap[pos] = parent
        pos = parentpos
    heap[pos] = item


cdef void _sift_up(list heap, Py_ssize_t pos):
    cdef Py_ssize_t end = PyList_GET_SIZE(heap)
    cdef Py_ssize_t start = pos
    cdef Py_ssize_t child = 2 * pos + 1
    cdef TimerHandle item = heap[pos]
    while child < end:
        if child + 1 < end and not _timer_lt(
                <TimerHandle>PyList_GET_ITEM(heap, child),
                <TimerHandle>PyList_GET_ITEM(heap, child + 1)):
            child += 1
        heap[pos] = heap[child]
        pos = child
        child = 2 * pos + 1
    heap[pos] = item
    _sift_down(heap, start, pos)


cdef void _heap_push(list heap, TimerHandle item):
    heap.append(item)
    _sift_down(heap, 0, PyList_GET_SIZE(heap) - 1)


cdef TimerHandle _heap_pop(list heap):
    cdef TimerHandle last = heap.pop()
    cdef TimerHandle top
    if not heap:
        return last
    top = heap[0]
    heap[0] = last
    _sift_up(heap, 0)
    return top


# ------------------------------------------------------------------- loop


@cython.final
cdef class _FdEntry:
    cdef Handle reader
    cdef Handle writer
    cdef object handler
    cdef unsigned int handler_events
    cdef unsigned int mask


cdef class LoopCore:
    """The loop's engine: ready queue, timer heap, fd table, one iteration.

    :param poller: a fastio poller (register/modify/unregister/poll with
        POLLIN/POLLOUT bits).
    :param waker: a fastio Waker, registered here for call_soon_threadsafe().
    """

    cdef object _poller
    cdef object _poll
    cdef object _cpoller  # the poller when it is driven through the C API
    cdef fastio_event *_events  # this iteration's events, copied out
    cdef Py_ssize_t _events_cap
    cdef object _waker
    cdef list _ready
    cdef object _threadsafe
    cdef list _timers
    cdef unsigned long long _timer_seq
    cdef Py_ssize_t _timer_cancelled_count
    # fd -> _FdEntry. `_fdtab` mirrors it for fds below FDTAB_MAX with
    # borrowed references (the dict owns them): _fd_set/_fd_del keep both.
    cdef dict _fds
    cdef PyObject **_fdtab
    cdef Py_ssize_t _fdtab_cap
    cdef public bint _stopping
    cdef public bint _closed
    cdef int _wfd
    # One receive buffer for every transport: reads happen one at a time on
    # the loop's thread, and each one is copied out into its own bytes.
    cdef char *_rbuf
    cdef Py_ssize_t _rbuf_size
    # A UringDriver when the poller is an io_uring one with buffers: its
    # transports are completion-based (src/uring_loop.pxi).
    cdef readonly object _uring
    cdef bint _in_run  # inside _run_forever_core

    def __cinit__(self, *args, **kwargs):
        self._rbuf_size = Transport.max_size
        self._rbuf = <char *>PyMem_Malloc(self._rbuf_size)
        if self._rbuf == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self._rbuf)
        PyMem_Free(self._events)
        PyMem_Free(self._fdtab)

    def __init__(self, poller, waker):
        self._poller = poller
        self._poll = poller.poll
        if isinstance(poller, _CorePoller) and type(poller).poll is _CorePoller.poll:
            self._cpoller = poller
        self._waker = waker
        self._ready = []
        self._threadsafe = collections.deque()
        self._timers = []
        self._fds = {}
        self._wfd = waker.fileno()
        poller.register(self._wfd, POLLIN)
        if isinstance(poller, _core.UringPoller) and poller.nbufs:
            self._uring = UringDriver(self, poller)

    # ----------------------------------------------------------- callbacks

    def time(self):
        """Return the loop's clock: time.monotonic()."""
        return _now()

    cdef inline int _check_closed(self) except -1:
        if self._closed:
            raise RuntimeError("Event loop is closed")
        return 0

    def call_soon(self, callback, *args, context=None):
        """Run `callback(*args)` at the next iteration; return its Handle.

        :raises RuntimeError: the loop is closed.
        """
        self._check_closed()
        _check_callback(callback, "call_soon")
        cdef Handle handle = Handle.__new__(Handle, callback, args, self)
        handle._context = context
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(self, callback, *args, context=None):
        """Like call_soon() but callable from any thread; wakes the loop."""
        self._check_closed()
        _check_callback(callback, "call_soon_threadsafe")
        cdef Handle handle = Handle.__new__(Handle, callback, args, self)
        handle._context = context
        # A deque that is never replaced: appends from other threads cannot
        # land in a list the loop has already swapped out (see _run_once).
        self._threadsafe.append(handle)
        self._waker.wake()
        return handle

    def call_at(self, when, callback, *args, context=None):
        """Run `callback(*args)` at loop time `when`; return its TimerHandle.

        :raises ValueError: `when` is NaN.
        """
        return self._call_at(_check_time(when, "when"), callback, args, context, "call_at")

    def call_later(self, delay, callback, *args, context=None):
        """Run `callback(*args)` `delay` seconds from now; return its TimerHandle.

        :raises ValueError: `delay` is NaN.
        """
        return self._call_at(_now() + _check_time(delay, "delay"), callback, args, context,
                             "call_later")

    cdef TimerHandle _call_at(self, double when, callback, tuple args, context, str method):
        self._check_closed()
        _check_callback(callback, method)
        cdef TimerHandle timer = TimerHandle.__new__(TimerHandle, callback, args, self)
        timer._context = context
        self._timer_seq += 1
        timer._when = when
        timer._seq = self._timer_seq
        timer._scheduled = True
        _heap_push(self._timers, timer)
        return timer

    cdef int _timer_cancelled(self) except -1:
        # Cancelled timers stay in the heap until due; rebuild it when they
        # are the majority so a cancel-heavy load keeps it small.
        cdef Py_ssize_t n = PyList_GET_SIZE(self._timers), i
        cdef TimerHandle t
        self._timer_cancelled_count += 1
        if n <= 64 or self._timer_cancelled_count * 2 <= n:
            return 0
        live = []
        for t in self._timers:
            if t._cancelled:
                t._scheduled = False
            else:
                live.append(t)
        for i in reversed(range(PyList_GET_SIZE(live) // 2)):
            _sift_up(live, i)
        self._timers = live
        self._timer_cancelled_count = 0
        return 0

    # ------------------------------------------------------------ fd table

    cdef _FdEntry _entry(self, object fd):
        cdef _FdEntry entry = self._fds.get(fd)
        if entry is None:
            entry = _FdEntry.__new__(_FdEntry)
            self._fd_set(fd, entry)
        return entry

    cdef int _fd_set(self, object fd, _FdEntry entry) except -1:
        cdef long long cfd = _fdtab_index(fd)
        cdef Py_ssize_t cap
        cdef PyObject **tab
        self._fds[fd] = entry
        if cfd < 0:
            return 0
        if cfd >= self._fdtab_cap:
            cap = self._fdtab_cap if self._fdtab_cap else 256
            while cap <= cfd:
                cap *= 2
            tab = <PyObject **>PyMem_Realloc(self._fdtab, cap * sizeof(PyObject *))
            if tab == NULL:
                del self._fds[fd]
                raise MemoryError()
            memset(tab + self._fdtab_cap, 0, (cap - self._fdtab_cap) * sizeof(PyObject *))
            self._fdtab = tab
            self._fdtab_cap = cap
        self._fdtab[cfd] = <PyObject *>entry
        return 0

    cdef int _fd_del(self, object fd) except -1:
        cdef long long cfd = _fdtab_index(fd)
        if 0 <= cfd < self._fdtab_cap:
            self._fdtab[cfd] = NULL
        self._fds.pop(fd, None)
        return 0

    cdef inline _FdEntry _fd_get(self, int fd):
        if 0 <= fd < self._fdtab_cap:
            if self._fdtab[fd] == NULL:
                return None
            return <_FdEntry>self._fdtab[fd]
        return self._fds.get(fd)

    cdef int _update(self, object fd, _FdEntry entry) except -1:
        cdef unsigned int mask = entry.handler_events
        if entry.reader is not None:
            mask |= POLLIN
        if entry.writer is not None:
            mask |= POLLOUT
        if mask == entry.mask:
            return 0
        if entry.mask == 0:
            self._poller.register(fd, mask)
        elif mask == 0:
            self._fd_del(fd)
            try:
                self._poller.unregister(fd)
            except OSError:
                pass  # closed before it was removed: already out of the kernel
        else:
            try:
                self._poller.modify(fd, mask)
            except FileNotFoundError:
                # The fd was closed without remove_*() and its number reused:
                # the kernel forgot it, so it is a new registration.
                self._poller.register(fd, mask)
        entry.mask = mask
        return 0

    cdef int _set_io(self, object fd, bint reader, Handle handle) except -1:
        cdef _FdEntry entry = self._entry(fd)
        cdef Handle old
        if entry.handler is not None:
            raise ValueError("fd %d has a handler; remove_handler() first" % fd)
        old = entry.reader if reader else entry.writer
        if reader:
            entry.reader = handle
        else:
            entry.writer = handle
        try:
            self._update(fd, entry)
        except BaseException:
            if reader:
                entry.reader = old
            else:
                entry.writer = old
            if entry.mask == 0:
                self._fd_del(fd)
            raise
        if old is not None and old is not handle:
            old._cancelled = True
        return 0

    cdef bint _remove_io(self, object fd, bint reader) except -1:
        cdef _FdEntry entry = self._fds.get(fd)
        cdef Handle old
        if entry is None:
            return False
        old = entry.reader if reader else entry.writer
        if old is None:
            return False
        if reader:
            entry.reader = None
        else:
            entry.writer = None
        old._cancelled = True
        self._update(fd, entry)
        return True

    def add_reader(self, fd, callback, *args):
        """Call `callback(*args)` whenever `fd` is readable."""
        _check_callback(callback, "add_reader")
        self._set_io(_fileno(fd), True, Handle.__new__(Handle, callback, args, self))

    def add_writer(self, fd, callback, *args):
        """Call `callback(*args)` whenever `fd` is writable."""
        _check_callback(callback, "add_writer")
        self._set_io(_fileno(fd), False, Handle.__new__(Handle, callback, args, self))

    def remove_reader(self, fd):
        """Stop watching `fd` for reading; return whether it was watched."""
        return self._remove_io(_fileno(fd), True)

    def remove_writer(self, fd):
        """Stop watching `fd` for writing; return whether it was watched."""
        return self._remove_io(_fileno(fd), False)

    def add_handler(self, fd, handler, unsigned int events):
        """pika: call `handler(fd, events)` on READ/WRITE/ERROR readiness."""
        fd = _fileno(fd)
        cdef _FdEntry entry = self._entry(fd)
        if entry.reader is not None or entry.writer is not None or entry.handler is not None:
            raise ValueError("fd %d is already watched" % fd)
        entry.handler = handler
        entry.handler_events = events & HANDLER_BITS
        try:
            self._update(fd, entry)
        except BaseException:
            self._fd_del(fd)
            raise

    def update_handler(self, fd, unsigned int events):
        """pika: change the events a handler added by add_handler() watches."""
        fd = _fileno(fd)
        cdef _FdEntry entry = self._fds.get(fd)
        if entry is None or entry.handler is None:
            raise ValueError("fd %r has no handler" % (fd,))
        entry.handler_events = events & HANDLER_BITS
        self._update(fd, entry)

    def remove_handler(self, fd):
        """pika: stop calling the handler of `fd`."""
        fd = _fileno(fd)
        cdef _FdEntry entry = self._fds.get(fd)
        if entry is None or entry.handler is None:
            return
        entry.handler = None
        entry.handler_events = 0
        self._update(fd, entry)

    # ----------------------------------------------------------- iteration

    def _run_once(self):
        """Wait for I/O or the first timer, then run what is due."""
        self._run_once_c()

    cdef int _run_once_c(self) except -1:
        cdef double t, now
        cdef list events, ready, timers = self._timers
        cdef Py_ssize_t i, n
        cdef tuple item
        cdef TimerHandle timer
        cdef Handle handle

        if self._ready or self._threadsafe or self._stopping:
            t = 0
        elif timers:
            t = (<TimerHandle>PyList_GET_ITEM(timers, 0))._when - _now()
            if t < 0:
                t = 0
            elif t > MAX_WAIT:
                t = MAX_WAIT
        else:
            t = -1
        if self._cpoller is not None:
            n = _core_api.wait_into(self._cpoller, t, &self._events, &self._events_cap)
            for i in range(n):
                self._dispatch(self._events[i].fd, self._events[i].events)
        else:
            events = self._poll(None if t < 0 else t)
            n = PyList_GET_SIZE(events)
            for i in range(n):
                item = <tuple>PyList_GET_ITEM(events, i)
                self._dispatch(item[0], item[1])
        if self._uring is not None:
            (<UringDriver>self._uring)._reap()

        # Callbacks queued from other threads come first: they were queued
        # before the timers below became due (asyncio queues them at once).
        while self._threadsafe:
            self._ready.append(self._threadsafe.popleft())
        # Timers due now (never early: compared with the clock, not the
        # poll timeout) join the ready queue in deadline order.
        if PyList_GET_SIZE(self._timers):
            timers = self._timers
            now = _now()
            while PyList_GET_SIZE(timers):
                timer = <TimerHandle>PyList_GET_ITEM(timers, 0)
                if timer._when > now:
                    break
                _heap_pop(timers)
                timer._scheduled = False
                if timer._cancelled:
                    self._timer_cancelled_count -= 1
                else:
                    self._ready.append(timer)

        # Run what is ready now; what those callbacks schedule runs next time.
        ready = self._ready
        self._ready = []
        i = 0
        try:
            while i < PyList_GET_SIZE(ready):
                handle = <Handle>PyList_GET_ITEM(ready, i)
                i += 1
                if not handle._cancelled:
                    handle._run()
        except BaseException:
            # KeyboardInterrupt/SystemExit leave run_forever(); the rest of
            # the batch stays queued for the next run, as in asyncio.
            self._ready[:0] = ready[i:]
            raise
        return 0

    cdef inline int _dispatch(self, int fd, unsigned int ev) except -1:
        cdef unsigned int hev
        cdef _FdEntry entry
        cdef Handle handle
        if fd == self._wfd:
            self._waker.drain()
            return 0
        entry = self._fd_get(fd)
        if entry is None:
            return 0
        if entry.handler is not None:
            hev = ev & HANDLER_BITS
            if ev & POLLHUP:
                hev |= POLLIN
            self._run_handler(entry.handler, fd, hev)
            return 0
        # Discussion: I/O callbacks run right here, not through the ready
        # queue as in asyncio: one less handle trip per event. The entry is
        # read at call time, so a reader removed by an earlier callback of
        # this batch does not run.
        # Hold the handles: a callback may replace the entry's.
        if ev & READ_BITS and entry.reader is not None:
            handle = entry.reader
            handle._run()
        if ev & WRITE_BITS and entry.writer is not None:
            handle = entry.writer
            handle._run()
        return 0

    cdef int _run_handler(self, handler, int fd, unsigned int events) except -1:
        try:
            handler(fd, events)
        except Exception as exc:
            self.call_exception_handler({
                "message": "Exception in fd handler %r" % (handler,),
                "exception": exc,
            })
        return 0

    def _run_forever_core(self):
        # As asyncio: at least one iteration, so callbacks scheduled before a
        # stop() still run; the iteration that sees stop() is the last.
        self._in_run = True
        try:
            while True:
                self._run_once_c()
                if self._stopping:
                    break
        finally:
            self._stopping = False
            self._in_run = False
            if self._uring is not None:
                # What the last iteration queued goes out now, not at the
                # next run (if any).
                (<UringDriver>self._uring)._submit()

    def _clear(self):
        self._ready = []
        self._threadsafe.clear()
        self._timers = []
        self._fds = {}
        if self._fdtab_cap:
            memset(self._fdtab, 0, self._fdtab_cap * sizeof(PyObject *))


# -------------------------------------------------------------- transport


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


# ------------------------------------------------- io_uring transports

include "uring_loop.pxi"


# ----------------------------------------------------------------- C API


cdef int capi_transport_write(object transport, const char *buf, Py_ssize_t n) except -1:
    if isinstance(transport, Transport):
        return (<Transport>transport)._write(buf, n)
    transport.write(PyBytes_FromStringAndSize(buf, n))
    return 0


cdef fastio_loop_capi _capi
_capi.transport_write = capi_transport_write
_C_API = PyCapsule_New(&_capi, FASTIO_LOOP_CAPI, NULL)


# ----------------------------------------------------------- asyncio's face

include "aio_transport.pxi"
include "aio_handles.pxi"
include "aio_loop.pxi"
