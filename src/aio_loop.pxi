# asyncio's face of the loop core: one iteration of fastio.EventLoop.
#
# fastio.EventLoop is asyncio's own selector loop; these are compiled twins
# of BaseEventLoop._run_once and BaseSelectorEventLoop._process_events,
# installed as its methods. They work on asyncio's own objects -- the
# `_ready` deque of asyncio Handles, the `_scheduled` heap of TimerHandles,
# the selector's keys -- step for step as the Python originals (identical
# in CPython 3.9-3.13), so everything else asyncio does with those objects
# stays true. Over fastio's own selector the iteration reads the poller's
# events through the core's C API (as LoopCore does) and runs the I/O
# callbacks from a list instead of the deque, in the same order (see
# _aio_run_direct). Debug mode (slow-callback warnings, `_current_handle`)
# runs asyncio's own `_run_once`. The pure-Python twin of this face is asyncio
# itself: without the extension fastio.EventLoop is fastio.SelectorEventLoop.
#
# fastio._impl.loop_c is imported by `import fastio`, which must not import
# asyncio: aio_setup() hands over asyncio's pieces when fastio._aio loads.

from cpython.dict cimport PyDict_GetItem, PyDict_GetItemWithError
from cpython.long cimport PyLong_AsLongAndOverflow
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

cdef object _aio_base_run_once = None
cdef object _aio_max_select_timeout = None
cdef object _aio_format_handle = None
cdef Py_ssize_t _aio_min_scheduled = 100
cdef object _aio_min_cancelled_fraction = None
# fastio._impl.core_c.SelectorCore.select and the stdlib's SelectorKey: an
# iteration over a selector whose select() is that one reads its poller's
# events through the core's C API instead (see _aio_core_poller).
cdef object _aio_core_select = None
cdef object _aio_SelectorKey = None
# A loop whose selector waits on this poller class may have io_uring
# completion transports: its `_uring` is then a UringDriver.
cdef object _aio_uring_poller_cls = None
# One event buffer lent to one iteration at a time; a second loop running
# in another thread meanwhile (the wait releases the GIL) gets its own.
cdef fastio_event *_aio_evbuf = NULL
cdef Py_ssize_t _aio_evcap = 0
cdef bint _aio_evbusy = False


def _aio_after_fork_in_child():
    # The thread that held the buffer, if any, is not in the child.
    global _aio_evbusy
    _aio_evbusy = False


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_aio_after_fork_in_child)


def aio_setup(base_events, selector_events, events, callback_error):
    """Bind asyncio's modules; called once by fastio._aio.

    :param callback_error: `callback_error(handle, exc)`, what asyncio's
        Handle._run does with an exception from the callback.
    """
    global _aio_base_run_once, _aio_max_select_timeout, _aio_format_handle
    global _aio_min_scheduled, _aio_min_cancelled_fraction
    _aio_base_run_once = base_events.BaseEventLoop._run_once
    _aio_format_handle = base_events._format_handle
    _aio_max_select_timeout = base_events.MAXIMUM_SELECT_TIMEOUT
    _aio_min_scheduled = base_events._MIN_SCHEDULED_TIMER_HANDLES
    _aio_min_cancelled_fraction = base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION
    global _aio_core_select, _aio_SelectorKey, _aio_uring_poller_cls
    _aio_uring_poller_cls = getattr(_core, "UringPoller", None)
    import selectors
    _aio_core_select = _core.SelectorCore.select
    _aio_SelectorKey = selectors.SelectorKey
    _aio_transport_setup(base_events, selector_events)
    _aio_handles_setup(base_events, events, callback_error)
    _aio_time_setup(base_events)
    _aio_streams_setup()


def aio_run_once(self):
    """Run one full iteration of the event loop; same steps as asyncio's."""
    cdef list scheduled
    cdef Py_ssize_t sched_count, ntodo, i
    cdef object handle, timeout, ready, event_list, end_time, selector, poller
    cdef object uring = None
    cdef bint fast = _aio_fast_loop(self)

    if _tget(self, fast, _LOFF_DEBUG, "_debug"):
        return _aio_base_run_once(self)

    scheduled = _tget(self, fast, _LOFF_SCHEDULED, "_scheduled")
    sched_count = len(scheduled)
    if (sched_count > _aio_min_scheduled and
            self._timer_cancelled_count / sched_count > _aio_min_cancelled_fraction):
        # Drop cancelled timers when they are too many, as asyncio does.
        self._scheduled = scheduled = _heap_drop_cancelled(scheduled)
        self._timer_cancelled_count = 0
    else:
        # Cancelled timers at the head of the heap go now.
        while scheduled and (<object>PyList_GET_ITEM(scheduled, 0))._cancelled:
            self._timer_cancelled_count -= 1
            handle = _heap_pop(scheduled)
            handle._scheduled = False

    ready = _tget(self, fast, _LOFF_READY, "_ready")
    if ready or _tget(self, fast, _LOFF_STOPPING, "_stopping"):
        timeout = 0
    elif scheduled:
        timeout = (<object>PyList_GET_ITEM(scheduled, 0))._when - _aio_loop_time(self)
        if timeout > _aio_max_select_timeout:
            timeout = _aio_max_select_timeout
        elif timeout < 0:
            timeout = 0
    else:
        timeout = None

    selector = _tget(self, fast, _LOFF_SELECTOR, "_selector")
    poller = _aio_core_poller(self, selector)
    if poller is not None:
        if type(poller) is _aio_uring_poller_cls:
            uring = getattr(self, "_uring", None)
        return _aio_run_direct(self, fast, selector, poller, timeout, scheduled, ready, uring)

    event_list = selector.select(timeout)
    self._process_events(event_list)
    event_list = None

    # Timers due within the clock's resolution join the ready queue.
    end_time = self.time() + self._clock_resolution
    while scheduled:
        handle = <object>PyList_GET_ITEM(scheduled, 0)
        if handle._when >= end_time:
            break
        handle = _heap_pop(scheduled)
        handle._scheduled = False
        ready.append(handle)

    # Run what is ready now; callbacks scheduled by these run next time.
    ntodo = len(ready)
    popleft = ready.popleft
    for i in range(ntodo):
        handle = popleft()
        _aio_run_ready(self, fast, handle)
        _aio_handle_spent(handle)
    handle = None


cdef inline int _aio_run_ready(object self, bint fast, object handle) except -1:
    # asyncio reads its debug flag per handle: set_debug(True) in a callback
    # applies from the next handle of the same iteration.
    if _tget(self, fast, _LOFF_DEBUG, "_debug"):
        if not _aio_cancelled(handle):
            _aio_run_debug(self, handle)
        return 0
    return _aio_run_handle(handle)


cdef int _aio_run_debug(object self, object handle) except -1:
    # The debug branch of asyncio's _run_once.
    try:
        self._current_handle = handle
        t0 = self.time()
        handle._run()
        dt = self.time() - t0
        if dt >= self.slow_callback_duration:
            _aio_logger.warning('Executing %s took %.3f seconds', _aio_format_handle(handle), dt)
    finally:
        self._current_handle = None
    return 0


cdef object _aio_core_poller(object loop, object selector):
    """Return the core poller `selector.select()` would wait on, or None.

    None unless select() is fastio._impl.core_c.SelectorCore's own (not replaced on
    the class or the instance), the selector is open, and `_process_events`
    is this module's: then reading the poller's events through the C API and
    doing what _process_events does with them is what asyncio would do.
    """
    if not _aio_own_method(selector, "select", _aio_core_select, &_aio_absent_select):
        return None
    if not _aio_own_method(loop, "_process_events", aio_process_events,
                           &_aio_absent_process_events):
        return None
    if selector._map is None:
        return None
    poller = selector._selector
    return poller if isinstance(poller, _CorePoller) else None


cdef inline bint _aio_cancelled(object handle) except -1:
    # handle._cancelled, read from the slot of asyncio's own Handle or TimerHandle.
    cdef PyObject *p
    if type(handle) is _aio_Handle or type(handle) is _aio_TimerHandle:
        p = _slot(handle, _OFF_CANCELLED)
        if p != NULL:
            return bool(<object>p)
    return bool(handle._cancelled)


cdef object _aio_run_direct(object self, bint fast, object selector, object poller, object timeout,
                            list scheduled, object ready, object uring):
    """The rest of aio_run_once over a core poller: same order, no queueing of I/O.

    asyncio queues the I/O callbacks behind what is already ready and the
    due timers behind those, then runs that many. Here the I/O handles and
    the timers are taken in the same order into lists and run from there
    after the handles that were ready when the wait returned; callbacks any
    of them schedules land behind, in the deque, for the next iteration --
    the same order. On io_uring with completion transports (`uring`, the
    loop's UringDriver) the completions are handled after the I/O
    callbacks and before the timers: they are I/O events too. What is
    taken is decided when asyncio decides it: a reader found cancelled
    right after the wait is removed then, and each handle is checked for
    cancellation again when its turn comes.
    """
    global _aio_evbuf, _aio_evcap, _aio_evbusy
    cdef fastio_event *evs = NULL
    cdef Py_ssize_t cap = 0, n, i, n0, nio, ndue, j = 0, k = 0, done = 0
    cdef bint shared = False
    cdef unsigned int revents
    cdef int sev, overflow = 0
    cdef long m, lev = 0
    cdef list io = None, due = None
    cdef dict fd_to_key
    cdef PyObject *keyp
    cdef double t = -1.0 if timeout is None else timeout

    if not _aio_evbusy:
        _aio_evbusy = shared = True
        evs, cap = _aio_evbuf, _aio_evcap
    try:
        try:
            n = _core_api.wait_into(poller, t, &evs, &cap)
        finally:
            if shared:
                _aio_evbuf, _aio_evcap = evs, cap
        # Callbacks queued by other threads during the wait are ahead of the
        # I/O ones, as in asyncio.
        n0 = len(ready)
        # BaseSelectorEventLoop._process_events over what select() returns.
        fd_to_key = selector._fd_to_key
        for i in range(n):
            revents = evs[i].events
            # selector_events() of fastio._impl.core_c: a hang-up or error wakes both.
            sev = ((2 if revents & ~POLLIN else 0) | (1 if revents & ~POLLOUT else 0))
            keyp = PyDict_GetItemWithError(fd_to_key, evs[i].fd)
            if keyp == NULL:
                continue
            key = <object>keyp
            if type(key) is _aio_SelectorKey:
                fileobj = <object>PyTuple_GET_ITEM(key, 0)
                reader, writer = <object>PyTuple_GET_ITEM(key, 3)
            elif isinstance(key, tuple) and PyTuple_GET_SIZE(key) == 4:
                fileobj = key.fileobj
                reader, writer = key.data
            else:
                continue
            kev = <object>PyTuple_GET_ITEM(key, 2)
            overflow = 1
            if type(kev) is int:
                lev = PyLong_AsLongAndOverflow(kev, &overflow)
            if not overflow:
                m = sev & lev  # sev & key.events, in C
            else:
                mask = sev & kev
                if type(mask) is int:
                    m = mask
                else:
                    m = (1 if mask & 1 else 0) | (2 if mask & 2 else 0)
            if m & 1 and reader is not None:  # selectors.EVENT_READ
                if _aio_cancelled(reader):
                    self._remove_reader(fileobj)
                elif io is None:
                    io = [reader]
                else:
                    io.append(reader)
            if m & 2 and writer is not None:  # selectors.EVENT_WRITE
                if _aio_cancelled(writer):
                    self._remove_writer(fileobj)
                elif io is None:
                    io = [writer]
                else:
                    io.append(writer)
    finally:
        if shared:
            _aio_evbusy = False
        else:
            PyMem_Free(evs)
    key = fileobj = reader = writer = None
    if uring is not None:
        # The sends the wait completed leave the write buffers now; their
        # completions are handled below, after the I/O callbacks.
        (<UringDriver>uring)._note_sent()

    # Timers due within the clock's resolution, taken as asyncio takes them;
    # asyncio reads the clock even with no timer, which only shows when
    # time() is not the plain one.
    if scheduled or not _aio_plain_time(self):
        end_time = _aio_loop_time(self) + _tget(self, fast, _LOFF_CLOCK_RES, "_clock_resolution")
    while scheduled:
        handle = <object>PyList_GET_ITEM(scheduled, 0)
        if handle._when >= end_time:
            break
        handle = _heap_pop(scheduled)
        handle._scheduled = False
        if due is None:
            due = [handle]
        else:
            due.append(handle)

    nio = 0 if io is None else len(io)
    ndue = 0 if due is None else len(due)
    try:
        while done < n0:
            handle = _aio_ready_popleft(ready)
            done += 1
            _aio_run_ready(self, fast, handle)
            _aio_handle_spent(handle)
        while j < nio:
            handle = <object>PyList_GET_ITEM(io, j)
            j += 1
            _aio_run_ready(self, fast, handle)
        if uring is not None:
            (<UringDriver>uring)._reap_c()
        while k < ndue:
            # Many timers due at once were taken from all over the heap:
            # ask for the ones a few turns ahead while this one runs, and
            # for the context of the one whose turn is nearer.
            if k + 4 < ndue:
                fastio_prefetch_object(PyList_GET_ITEM(due, k + 4))
            if k + 2 < ndue and type(<object>PyList_GET_ITEM(due, k + 2)) is _aio_TimerHandle:
                fastio_prefetch_slot(PyList_GET_ITEM(due, k + 2), _OFF_CONTEXT)
            handle = <object>PyList_GET_ITEM(due, k)
            k += 1
            _aio_run_ready(self, fast, handle)
    except BaseException:
        # KeyboardInterrupt/SystemExit leave run_forever(): what this
        # iteration has not run stays at the head of the queue, in order,
        # as in asyncio's deque.
        rest = [ready.popleft() for i in range(n0 - done)]
        if io is not None:
            rest.extend(io[j:])
        if due is not None:
            rest.extend(due[k:])
        rest.reverse()
        ready.extendleft(rest)
        raise


def aio_process_events(self, event_list):
    """Queue the I/O callbacks of `event_list`; same steps as asyncio's."""
    cdef object key, mask, reader, writer, fileobj
    cdef object ready = self._ready
    cdef long m
    cdef size_t i
    cdef object stream, callback
    for key, mask in event_list:
        fileobj = key.fileobj
        reader, writer = key.data
        m = mask
        if m & 1 and reader is not None:  # selectors.EVENT_READ
            if reader._cancelled:
                self._remove_reader(fileobj)
            else:
                ready.append(reader)
        if m & 2 and writer is not None:  # selectors.EVENT_WRITE
            if writer._cancelled:
                self._remove_writer(fileobj)
            else:
                ready.append(writer)
    uring = getattr(self, "_uring", None)
    if uring is not None:
        # The io_uring completions, as I/O events: behind the I/O callbacks,
        # ahead of the timers the iteration queues next. The sends among
        # them leave the write buffers now (see _aio_run_direct).
        (<UringDriver?>uring)._note_sent()
        if not self._debug:
            ready.append(_aio_new_handle(uring._reap, (), self, None, _aio_Handle))
            return
        # Debug mode: a Handle per completion, whose callback is its
        # transport's `_io_completion`, so asyncio's slow-callback warning
        # names the transport's method, as it names a readiness transport's
        # _read_ready() or _write_ready(), and times each on its own. (Made
        # without the source traceback asyncio's Handle() takes in debug
        # mode: it would only show this function, at a stack walk each.)
        for i in range((<UringDriver>uring)._hub.ndone):
            stream = (<UringDriver>uring)._stream_of(i)
            if type(stream) is AioUringStream and (<AioUringStream>stream)._t is not None:
                callback = (<AioUringStream>stream)._t._io_completion
            else:
                callback = uring._reap_next
            ready.append(_aio_new_handle(callback, (), self, None, _aio_Handle))
