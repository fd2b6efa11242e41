# asyncio's face of the loop core: one iteration of fastio.EventLoop.
#
# fastio.EventLoop is asyncio's own selector loop; these are compiled twins
# of BaseEventLoop._run_once and BaseSelectorEventLoop._process_events,
# installed as its methods. They work on asyncio's own objects -- the
# `_ready` deque of asyncio Handles, the `_scheduled` heap of TimerHandles,
# the selector's keys -- step for step as the Python originals (identical
# in CPython 3.9-3.13), so everything else asyncio does with those objects
# stays true. Debug mode (slow-callback warnings, `_current_handle`) runs
# asyncio's own `_run_once`. The pure-Python twin of this face is asyncio
# itself: without the extension fastio.EventLoop is fastio.SelectorEventLoop.
#
# fastio._loop is imported by `import fastio`, which must not import
# asyncio: aio_setup() hands over asyncio's pieces when fastio._aio loads.

cdef object _aio_base_run_once = None
cdef object _aio_heappop = None
cdef object _aio_heapify = None
cdef object _aio_max_select_timeout = None
cdef Py_ssize_t _aio_min_scheduled = 100
cdef object _aio_min_cancelled_fraction = None


def aio_setup(base_events, selector_events, events, callback_error):
    """Bind asyncio's modules; called once by fastio._aio.

    :param callback_error: `callback_error(handle, exc)`, what asyncio's
        Handle._run does with an exception from the callback.
    """
    global _aio_base_run_once, _aio_heappop, _aio_heapify, _aio_max_select_timeout
    global _aio_min_scheduled, _aio_min_cancelled_fraction
    import heapq
    _aio_base_run_once = base_events.BaseEventLoop._run_once
    _aio_heappop = heapq.heappop
    _aio_heapify = heapq.heapify
    _aio_max_select_timeout = base_events.MAXIMUM_SELECT_TIMEOUT
    _aio_min_scheduled = base_events._MIN_SCHEDULED_TIMER_HANDLES
    _aio_min_cancelled_fraction = base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION
    _aio_transport_setup(base_events, selector_events)
    _aio_handles_setup(base_events, events, callback_error)


def aio_run_once(self):
    """Run one full iteration of the event loop; same steps as asyncio's."""
    cdef list scheduled, new_scheduled
    cdef Py_ssize_t sched_count, ntodo, i
    cdef object handle, timeout, ready, event_list, end_time

    if self._debug:
        return _aio_base_run_once(self)

    scheduled = self._scheduled
    sched_count = len(scheduled)
    if (sched_count > _aio_min_scheduled and
            self._timer_cancelled_count / sched_count > _aio_min_cancelled_fraction):
        # Drop cancelled timers when they are too many, as asyncio does.
        new_scheduled = []
        for handle in scheduled:
            if handle._cancelled:
                handle._scheduled = False
            else:
                new_scheduled.append(handle)
        _aio_heapify(new_scheduled)
        self._scheduled = scheduled = new_scheduled
        self._timer_cancelled_count = 0
    else:
        # Cancelled timers at the head of the heap go now.
        while scheduled and (<object>PyList_GET_ITEM(scheduled, 0))._cancelled:
            self._timer_cancelled_count -= 1
            handle = _aio_heappop(scheduled)
            handle._scheduled = False

    ready = self._ready
    if ready or self._stopping:
        timeout = 0
    elif scheduled:
        timeout = (<object>PyList_GET_ITEM(scheduled, 0))._when - self.time()
        if timeout > _aio_max_select_timeout:
            timeout = _aio_max_select_timeout
        elif timeout < 0:
            timeout = 0
    else:
        timeout = None

    event_list = self._selector.select(timeout)
    self._process_events(event_list)
    event_list = None

    # Timers due within the clock's resolution join the ready queue.
    end_time = self.time() + self._clock_resolution
    while scheduled:
        handle = <object>PyList_GET_ITEM(scheduled, 0)
        if handle._when >= end_time:
            break
        handle = _aio_heappop(scheduled)
        handle._scheduled = False
        ready.append(handle)

    # Run what is ready now; callbacks scheduled by these run next time.
    ntodo = len(ready)
    popleft = ready.popleft
    for i in range(ntodo):
        handle = popleft()
        _aio_run_handle(handle)
    handle = None


def aio_process_events(self, event_list):
    """Queue the I/O callbacks of `event_list`; same steps as asyncio's."""
    cdef object key, mask, reader, writer, fileobj
    cdef object ready = self._ready
    cdef long m
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
