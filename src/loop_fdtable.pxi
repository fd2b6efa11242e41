# The fd table: fd -> _FdEntry (reader, writer or pika handler, and the
# mask registered with the poller). LoopCore keeps it in a dict, mirrored for
# fds below FDTAB_MAX by a flat array indexed by fd, so dispatching an event
# is an array load, not a dict lookup.


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


@cython.final
cdef class _FdEntry:
    cdef Handle reader
    cdef Handle writer
    cdef object handler
    cdef unsigned int handler_events
    cdef unsigned int mask
