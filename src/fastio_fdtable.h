/* fastio_fdtable.h: the flat, fd-indexed part of fastio's fd tables.
 *
 * Every fd table in fastio (the pollers' in core_c, the selector's result
 * cache, the loop's in loop_c, the benchmark client's in echo_c; all in
 * fastio._impl) finds a small fd's entry by indexing an array, and keeps
 * the rest in a dict or nowhere: processes really have small fds, and
 * registering fd 2**31 - 1 must cost a dict entry, not 16 GiB. The array
 * grows by doubling up to the highest fd seen and never shrinks. Each owner
 * keeps its own entry type; these functions take its size, a constant the
 * compiler folds.
 */

#ifndef FASTIO_FDTABLE_H
#define FASTIO_FDTABLE_H

#include <Python.h>
#include <string.h>

/* fds at or above this have no slot in a flat table. */
#define FASTIO_FDTABLE_DIRECT_MAX (1 << 20)

/* Grow `*items`, a PyMem array of `*cap` entries of `itemsize` bytes, so
 * that index `fd` (0 <= fd) exists. New entries are copies of `*blank`, or
 * zero bytes if `blank` is NULL. Returns 0, or -1 with MemoryError set (the
 * table is then unchanged). */
static inline int
fastio_fdtable_reserve(void **items, Py_ssize_t *cap, size_t itemsize, Py_ssize_t fd,
                       const void *blank)
{
    Py_ssize_t newcap, i;
    char *p;

    if (fd < *cap)
        return 0;
    newcap = *cap ? *cap : 64;
    while (newcap <= fd) {
        if (newcap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)itemsize) {
            PyErr_NoMemory();
            return -1;
        }
        newcap *= 2;
    }
    p = (char *)PyMem_Realloc(*items, (size_t)newcap * itemsize);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (blank == NULL)
        memset(p + (size_t)*cap * itemsize, 0, (size_t)(newcap - *cap) * itemsize);
    else
        for (i = *cap; i < newcap; i++)
            memcpy(p + (size_t)i * itemsize, blank, itemsize);
    *items = p;
    *cap = newcap;
    return 0;
}

/* Set all `cap` entries of `items` back to `*blank` (zero bytes if NULL). */
static inline void
fastio_fdtable_reset(void *items, Py_ssize_t cap, size_t itemsize, const void *blank)
{
    Py_ssize_t i;

    if (blank == NULL) {
        if (cap)
            memset(items, 0, (size_t)cap * itemsize);
        return;
    }
    for (i = 0; i < cap; i++)
        memcpy((char *)items + (size_t)i * itemsize, blank, itemsize);
}

/* Return the index of Python object `fd` in a flat table of `limit`
 * entries, or -1 if it has none there: not an exact int, negative, or not
 * below `limit`. Never raises. */
static inline long long
fastio_fdtable_index(PyObject *fd, long long limit)
{
    int overflow = 0;
    long long v;

    if (!PyLong_CheckExact(fd))
        return -1;
    v = PyLong_AsLongLongAndOverflow(fd, &overflow);
    if (overflow || v < 0 || v >= limit)
        return -1;
    return v;
}

#endif /* FASTIO_FDTABLE_H */
