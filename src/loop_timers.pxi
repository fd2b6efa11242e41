# The timer heap: a binary min-heap of TimerHandles in a Python list,
# ordered by (when, seq), so equal deadlines fire in the order they were
# scheduled. heapq's sift functions, with the comparison inlined in C.


cdef inline bint _timer_lt(TimerHandle a, TimerHandle b) noexcept:
    return a._when < b._when or (a._when == b._when and a._seq < b._seq)


cdef void _sift_down(list heap, Py_ssize_t start, Py_ssize_t pos):
    cdef TimerHandle item = heap[pos]
    cdef TimerHandle parent
    cdef Py_ssize_t parentpos
    while pos > start:
        parentpos = (pos - 1) >> 1
        parent = heap[parentpos]
        if not _timer_lt(item, parent):
            break
        heap[pos] = parent
        pos = parentpos
    heap[pos] = item


cdef void _sift_up(list heap, Py_ssize_t pos):
    cdef Py_ssize_t end = PyList_GET_SIZE(heap)
    cdef Py_ssize_t start = pos
    cdef Py_ssize_t child = 2 * pos + 1
    cdef TimerHandle item = heap[pos]
    while child < end:
        if child + 1 < end and not _timer_lt(
                <TimerHandle>PyList_GET_ITEM(heap, child),
                <TimerHandle>PyList_GET_ITEM(heap, child + 1)):
            child += 1
        heap[pos] = heap[child]
        pos = child
        child = 2 * pos + 1
    heap[pos] = item
    _sift_down(heap, start, pos)


cdef void _heap_push(list heap, TimerHandle item):
    heap.append(item)
    _sift_down(heap, 0, PyList_GET_SIZE(heap) - 1)


cdef TimerHandle _heap_pop(list heap):
    cdef TimerHandle last = heap.pop()
    cdef TimerHandle top
    if not heap:
        return last
    top = heap[0]
    heap[0] = last
    _sift_up(heap, 0)
    return top
