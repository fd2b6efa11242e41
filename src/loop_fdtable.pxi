# The loop's fd table: fd -> _FdEntry (a reader and a writer handle, or a
# pika handler, and the mask registered with the poller).
#
# LoopCore keeps it in a dict, `_fds`, which owns the entries; fds below
# FASTIO_FDTABLE_DIRECT_MAX are mirrored, by borrowed reference, in the flat
# array `_fdtab` (src/fastio_fdtable.h, shared with the pollers), so
# dispatching an event is an array load, not a dict lookup. LoopCore's
# _entry/_fd_set/_fd_del/_fd_get keep the two in step.


@cython.final
cdef class _FdEntry:
    cdef Handle reader
    cdef Handle writer
    cdef object handler
    cdef unsigned int handler_events
    cdef unsigned int mask
