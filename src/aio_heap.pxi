# asyncio's face of the loop core: the timer heap.
#
# fastio.EventLoop keeps asyncio's `_scheduled` list, a heapq heap of
# asyncio TimerHandles ordered by their `<` (TimerHandle.__lt__ compares
# `_when`). heapq calls that Python method for every comparison; these are
# heapq's push and pop, step for step as _heapqmodule.c (so the list is
# exactly what heapq would leave), comparing two TimerHandles whose `_when`
# are floats in C. Anything else is compared with `<`, as heapq does.

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.list cimport PyList_Append
from cpython.object cimport PyObject_RichCompareBool, Py_LT

cdef extern from "Python.h":
    ctypedef struct PyListObject:
        PyObject **ob_item
    int PyList_SetSlice(object list, Py_ssize_t low, Py_ssize_t high, PyObject *itemlist) except -1


cdef inline int _aio_lt(PyObject *a, PyObject *b) except -1:
    cdef PyObject *wa
    cdef PyObject *wb
    if type(<object>a) is _aio_TimerHandle and type(<object>b) is _aio_TimerHandle:
        wa = _slot(<object>a, _OFF_WHEN)
        wb = _slot(<object>b, _OFF_WHEN)
        if wa != NULL and wb != NULL and PyFloat_CheckExact(<object>wa) and PyFloat_CheckExact(<object>wb):
            return PyFloat_AS_DOUBLE(<object>wa) < PyFloat_AS_DOUBLE(<object>wb)
    return PyObject_RichCompareBool(<object>a, <object>b, Py_LT)


cdef int _aio_siftdown(list heap, Py_ssize_t startpos, Py_ssize_t pos) except -1:
    cdef Py_ssize_t size = len(heap), parentpos
    cdef PyObject **arr
    cdef PyObject *tmp
    cdef int cmp
    while pos > startpos:
        parentpos = (pos - 1) >> 1
        arr = (<PyListObject *>heap).ob_item
        cmp = _aio_lt(arr[pos], arr[parentpos])
        if size != len(heap):
            raise RuntimeError("list changed size during iteration")
        if cmp == 0:
            break
        arr = (<PyListObject *>heap).ob_item
        tmp = arr[parentpos]
        arr[parentpos] = arr[pos]
        arr[pos] = tmp
        pos = parentpos
    return 0


cdef int _aio_siftup(list heap, Py_ssize_t pos) except -1:
    cdef Py_ssize_t endpos = len(heap), startpos = pos, limit = endpos >> 1, childpos
    cdef PyObject **arr
    cdef PyObject *tmp
    cdef int cmp
    while pos < limit:
        childpos = 2 * pos + 1
        if childpos + 1 < endpos:
            arr = (<PyListObject *>heap).ob_item
            cmp = _aio_lt(arr[childpos], arr[childpos + 1])
            childpos += (cmp ^ 1)
            if endpos != len(heap):
                raise RuntimeError("list changed size during iteration")
        arr = (<PyListObject *>heap).ob_item
        tmp = arr[childpos]
        arr[childpos] = arr[pos]
        arr[pos] = tmp
        pos = childpos
    return _aio_siftdown(heap, startpos, pos)


cdef int _aio_heap_push(list heap, object item) except -1:
    """heapq.heappush(heap, item)."""
    PyList_Append(heap, item)
    return _aio_siftdown(heap, 0, len(heap) - 1)


cdef object _aio_heap_pop(list heap):
    """Return heapq.heappop(heap)."""
    cdef Py_ssize_t n = len(heap)
    cdef object last, first
    if n == 0:
        raise IndexError("index out of range")
    last = <object>PyList_GET_ITEM(heap, n - 1)
    PyList_SetSlice(heap, n - 1, n, NULL)
    n -= 1
    if n == 0:
        return last
    first = <object>PyList_GET_ITEM(heap, 0)
    heap[0] = last
    _aio_siftup(heap, 0)
    return first
