# LoopCore: the loop's engine -- ready queue, timers, fd registration and
# one iteration. fastio.loop.Loop adds the public API on top of it.


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


cdef inline object _fileno(object fd):
    if isinstance(fd, int):
        return fd
    return fd.fileno()


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
    # fd -> _FdEntry. `_fdtab` mirrors it for fds below
    # FASTIO_FDTABLE_DIRECT_MAX with borrowed references (the dict owns
    # them): _fd_set/_fd_del keep both (src/loop_fdtable.pxi).
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

    def __cinit__(self, *args, **kwargs):
        self._rbuf_size = TransportCore.max_size
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
            self._uring = UringDriver(poller)

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
        cdef Py_ssize_t n = PyList_GET_SIZE(self._timers)
        self._timer_cancelled_count += 1
        if n <= 64 or self._timer_cancelled_count * 2 <= n:
            return 0
        self._timers = _heap_drop_cancelled(self._timers)
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
        cdef long long cfd = fastio_fdtable_index(fd, FASTIO_FDTABLE_DIRECT_MAX)
        if cfd >= 0:
            # Grown first: a MemoryError leaves both tables as they were.
            fastio_fdtable_reserve(<void **>&self._fdtab, &self._fdtab_cap, sizeof(PyObject *),
                                   cfd, NULL)
        self._fds[fd] = entry
        if cfd >= 0:
            self._fdtab[cfd] = <PyObject *>entry
        return 0

    cdef int _fd_del(self, object fd) except -1:
        cdef long long cfd = fastio_fdtable_index(fd, self._fdtab_cap)
        if cfd >= 0:
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
            (<UringDriver>self._uring)._reap_c()

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
                "handler": handler,
            })
        return 0

    def _run_forever_core(self):
        # As asyncio: at least one iteration, so callbacks scheduled before a
        # stop() still run; the iteration that sees stop() is the last.
        if self._uring is not None:
            (<UringDriver>self._uring)._running = True
        try:
            while True:
                self._run_once_c()
                if self._stopping:
                    break
        finally:
            self._stopping = False
            if self._uring is not None:
                (<UringDriver>self._uring)._running = False
                # What the last iteration queued goes out now, not at the
                # next run (if any).
                (<UringDriver>self._uring)._submit()

    def _clear(self):
        self._ready = []
        self._threadsafe.clear()
        self._timers = []
        self._fds = {}
        fastio_fdtable_reset(self._fdtab, self._fdtab_cap, sizeof(PyObject *), NULL)
