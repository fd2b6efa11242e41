# fastio._impl.core_c._C_API: the poller wait for other fastio modules (see
# src/fastio_capi.h). fastio._impl.loop_c and echo_c drive their pollers
# through it: the events are copied out of the poller's buffer, with no list
# of tuples per iteration.

cdef Py_ssize_t capi_wait_into(object poller, double timeout, fastio_event **events,
                               Py_ssize_t *cap) except -1:
    cdef Poller p = <Poller>poller
    cdef int64_t ns
    cdef Py_ssize_t n
    cdef void *grown
    cdef fastio_event *ready
    if not timeout >= 0:  # negative or NaN: no deadline
        ns = -1
    elif timeout == 0:
        ns = 0
    else:
        ns = seconds_to_ns(timeout, p._timeout_unit())
    n = p._wait(ns, -1, &ready)
    try:
        if n > cap[0]:
            grown = PyMem_Realloc(events[0], n * sizeof(fastio_event))
            if grown == NULL:
                raise MemoryError()
            events[0] = <fastio_event *>grown
            cap[0] = n
        if n:
            memcpy(events[0], ready, n * sizeof(fastio_event))
    finally:
        p._release(ready)
    return n


cdef fastio_core_capi _capi
_capi.wait_into = capi_wait_into
_C_API = PyCapsule_New(&_capi, FASTIO_CORE_CAPI, NULL)
