# Handles: the callbacks the loop runs, and the timers it holds.
#
# Handle._run is a C method: the ready queue and fd dispatch call it without
# a Python call. The transport's own reader/writer handles
# (src/loop_transport.pxi) override it to call the transport directly.


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
