# The timer heap, one for both faces: a binary min-heap in a Python list,
# heapq's algorithm step for step (_heapqmodule.c), so that EventLoop's
# `_scheduled`, which asyncio's own code also reads, is exactly the list
# heapq would leave. The comparison is inlined in C for the two timer types:
# Loop's TimerHandle by (when, seq), so equal deadlines fire in the order
# they were scheduled; asyncio's TimerHandle by its float `_when`, as its
# __lt__ does. Anything else is compared with `<`, as heapq does, and a
# comparison that changes the list is reported as heapq reports it.

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.list cimport PyList_Append
from cpython.object cimport PyObject_RichCompareBool, Py_LT

cdef extern from "Python.h":
    ctypedef struct PyListObject:
        PyObject **ob_item
    int PyList_SetSlice(object list, Py_ssize_t low, Py_ssize_t high, PyObject *itemlist) except -1


cdef inline int _heap_lt(PyObject *a, PyObject *b) except -1:
    cdef PyObject *wa
    cdef PyObject *wb
    cdef TimerHandle ta, tb
    if type(<object>a) is TimerHandle and type(<object>b) is TimerHandle:
        ta = <TimerHandle>a
        tb = <TimerHandle>b
        return ta._when < tb._when or (ta._when == tb._when and ta._seq < tb._seq)
    if type(<object>a) is _aio_TimerHandle and type(<object>b) is _aio_TimerHandle:
        wa = _slot(<object>a, _OFF_WHEN)
        wb = _slot(<object>b, _OFF_WHEN)
        if wa != NULL and wb != NULL and PyFloat_CheckExact(<object>wa) and PyFloat_CheckExact(<object>wb):
            return PyFloat_AS_DOUBLE(<object>wa) < PyFloat_AS_DOUBLE(<object>wb)
    return PyObject_RichCompareBool(<object>a, <object>b, Py_LT)


cdef int _sift_down(list heap, Py_ssize_t startpos, Py_ssize_t pos) except -1:
    """heapq's _siftdown: move heap[pos] up towards startpos."""
    cdef Py_ssize_t size = PyList_GET_SIZE(heap), parentpos
    cdef PyObject **arr
    cdef PyObject *tmp
    cdef int cmp
    while pos > startpos:
        parentpos = (pos - 1) >> 1
        arr = (<PyListObject *>heap).ob_item
        cmp = _heap_lt(arr[pos], arr[parentpos])
        if size != PyList_GET_SIZE(heap):
            raise RuntimeError("list changed size during iteration")
        if cmp == 0:
            break
        arr = (<PyListObject *>heap).ob_item
        tmp = arr[parentpos]
        arr[parentpos] = arr[pos]
        arr[pos] = tmp
        pos = parentpos
    return 0


cdef int _sift_up(list heap, Py_ssize_t pos) except -1:
    """heapq's _siftup: move the smaller child up until a leaf, then sift down."""
    cdef Py_ssize_t endpos = PyList_GET_SIZE(heap), startpos = pos, limit = endpos >> 1, childpos
    cdef PyObject **arr
    cdef PyObject *tmp
    cdef int cmp
    while pos < limit:
        childpos = 2 * pos + 1
        if childpos + 1 < endpos:
            arr = (<PyListObject *>heap).ob_item
            fastio_heap_prefetch(arr, pos, endpos, _OFF_WHEN, <PyObject *>_aio_TimerHandle)
            cmp = _heap_lt(arr[childpos], arr[childpos + 1])
            childpos += (cmp ^ 1)
            if endpos != PyList_GET_SIZE(heap):
                raise RuntimeError("list changed size during iteration")
        arr = (<PyListObject *>heap).ob_item
        tmp = arr[childpos]
        arr[childpos] = arr[pos]
        arr[pos] = tmp
        pos = childpos
    return _sift_down(heap, startpos, pos)


cdef int _heap_push(list heap, object item) except -1:
    """heapq.heappush(heap, item)."""
    PyList_Append(heap, item)
    return _sift_down(heap, 0, PyList_GET_SIZE(heap) - 1)


cdef object _heap_pop(list heap):
    """Return heapq.heappop(heap)."""
    cdef Py_ssize_t n = PyList_GET_SIZE(heap)
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
    _sift_up(heap, 0)
    return first


cdef int _heapify(list heap) except -1:
    """heapq.heapify(heap)."""
    cdef Py_ssize_t i
    for i in reversed(range(PyList_GET_SIZE(heap) // 2)):
        _sift_up(heap, i)
    return 0


cdef list _heap_drop_cancelled(list heap):
    """Return a new heap of heap's live timers; the cancelled ones are
    marked unscheduled. Each face calls it by its own rule of when."""
    cdef list live = []
    for timer in heap:
        if type(timer) is TimerHandle:
            if (<TimerHandle>timer)._cancelled:
                (<TimerHandle>timer)._scheduled = False
                continue
        elif _aio_cancelled(timer):
            timer._scheduled = False
            continue
        PyList_Append(live, timer)
    _heapify(live)
    return live
