# Declarations of src/fastio_fdtable.h: the flat, fd-indexed part of
# fastio's fd tables, shared by fastio._impl.core_c, fastio._impl.loop_c and fastio._impl.echo_c.

cdef extern from "fastio_fdtable.h":
    const long long FASTIO_FDTABLE_DIRECT_MAX

    int fastio_fdtable_reserve(void **items, Py_ssize_t *cap, size_t itemsize, Py_ssize_t fd,
                               const void *blank) except -1
    void fastio_fdtable_reset(void *items, Py_ssize_t cap, size_t itemsize,
                              const void *blank) noexcept nogil
    long long fastio_fdtable_index(object fd, long long limit) noexcept
