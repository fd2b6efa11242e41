# asyncio's face of the loop core: asyncio Handles made and run from C.
#
# fastio.EventLoop's handles are asyncio's own `events.Handle` and
# `events.TimerHandle` objects, so their whole contract (cancel, cancelled,
# when, get_context, repr, `_run`, what asyncio's internals read off them)
# is asyncio's. What is compiled is making one for call_soon() and running
# one from the ready queue: both go straight to the instance's slots (the
# classes declare `__slots__`; the offsets come from their member
# descriptors), with no Python frame for `__init__` or `_run`; a timer
# goes into asyncio's `_scheduled` heap with heapq, as asyncio does. Only objects
# whose type is exactly one of those two classes are touched this way;
# anything else in the ready queue runs through its own `_run()`. Debug mode
# (source tracebacks, thread checks) takes asyncio's Python code.

from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit
from cpython.object cimport PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    object PyType_GenericAlloc(PyTypeObject *type, Py_ssize_t nitems)
    bint PyContext_CheckExact(object obj)
    PyObject *Py_False

cdef object _aio_Handle = None
cdef object _aio_TimerHandle = None
cdef object _aio_base_call_soon = None
cdef object _aio_base_private_call_soon = None
cdef object _aio_base_call_at = None
cdef object _aio_base_call_later = None
cdef object _aio_heappush = None
cdef object _aio_callback_error = None
cdef object _aio_futures = None
cdef object _aio_tasks = None
cdef object _aio_base_create_task = None
cdef object _aio_base_check_closed = None
cdef object _aio_base_events = None
cdef Py_ssize_t _OFF_CALLBACK, _OFF_ARGS, _OFF_CANCELLED, _OFF_LOOP
cdef Py_ssize_t _OFF_SOURCE_TB, _OFF_REPR, _OFF_CONTEXT, _OFF_WHEN, _OFF_SCHEDULED


# The ready queue is asyncio's collections.deque: its own C append/popleft
# (the functions behind deque.append and deque.popleft, METH_O and
# METH_NOARGS) called directly on an exact deque, with no method call.
cdef type _aio_deque = collections.deque

cdef extern from *:
    """
    typedef PyObject *(*fastio_cmeth)(PyObject *, PyObject *);
    static fastio_cmeth fastio_deque_append = NULL;
    static fastio_cmeth fastio_deque_popleft = NULL;

    /* The C function behind method descriptor `descr` if its calling
     * convention is exactly `flags`, else NULL. */
    static fastio_cmeth fastio_cmeth_of(PyObject *descr, int flags) {
        PyMethodDef *def;
        if (!PyObject_TypeCheck(descr, &PyMethodDescr_Type))
            return NULL;
        def = ((PyMethodDescrObject *)descr)->d_method;
        return (def->ml_flags & ~METH_COEXIST) == flags ? (fastio_cmeth)(void *)def->ml_meth : NULL;
    }
    static void fastio_deque_setup(PyObject *append, PyObject *popleft) {
        fastio_deque_append = fastio_cmeth_of(append, METH_O);
        fastio_deque_popleft = fastio_cmeth_of(popleft, METH_NOARGS);
    }
    static PyObject *fastio_deque_append_call(PyObject *dq, PyObject *item) {
        return fastio_deque_append(dq, item);
    }
    static PyObject *fastio_deque_popleft_call(PyObject *dq) {
        return fastio_deque_popleft(dq, NULL);
    }
    """
    void fastio_deque_setup(object append, object popleft)
    void *fastio_deque_append
    void *fastio_deque_popleft
    object fastio_deque_append_call(object dq, object item)
    object fastio_deque_popleft_call(object dq)

fastio_deque_setup(collections.deque.__dict__["append"], collections.deque.__dict__["popleft"])


cdef inline int _aio_ready_append(object ready, object handle) except -1:
    """ready.append(handle)."""
    if type(ready) is _aio_deque and fastio_deque_append != NULL:
        fastio_deque_append_call(ready, handle)
    else:
        ready.append(handle)
    return 0


cdef inline object _aio_ready_popleft(object ready):
    """Return ready.popleft()."""
    if type(ready) is _aio_deque and fastio_deque_popleft != NULL:
        return fastio_deque_popleft_call(ready)
    return ready.popleft()


cdef Py_ssize_t _slot_offset(cls, str name) except -1:
    descr = cls.__dict__[name]
    if type(descr).__name__ != "member_descriptor":
        raise TypeError("%s.%s is not a slot" % (cls.__name__, name))
    return (<PyMemberDescrObject *><PyObject *>descr).d_member.offset


cdef _aio_handles_setup(base_events, events, callback_error):
    global _aio_Handle, _aio_TimerHandle, _aio_base_call_soon, _aio_base_private_call_soon
    global _aio_callback_error, _OFF_CALLBACK, _OFF_ARGS, _OFF_CANCELLED, _OFF_LOOP
    global _OFF_SOURCE_TB, _OFF_REPR, _OFF_CONTEXT, _OFF_WHEN, _OFF_SCHEDULED
    global _aio_base_call_at, _aio_base_call_later, _aio_heappush
    import heapq
    cls = events.Handle
    _OFF_CALLBACK = _slot_offset(cls, "_callback")
    _OFF_ARGS = _slot_offset(cls, "_args")
    _OFF_CANCELLED = _slot_offset(cls, "_cancelled")
    _OFF_LOOP = _slot_offset(cls, "_loop")
    _OFF_SOURCE_TB = _slot_offset(cls, "_source_traceback")
    _OFF_REPR = _slot_offset(cls, "_repr")
    _OFF_CONTEXT = _slot_offset(cls, "_context")
    _OFF_WHEN = _slot_offset(events.TimerHandle, "_when")
    _OFF_SCHEDULED = _slot_offset(events.TimerHandle, "_scheduled")
    for i, off in enumerate(sorted((_OFF_CALLBACK, _OFF_ARGS, _OFF_CANCELLED, _OFF_LOOP,
                                    _OFF_SOURCE_TB, _OFF_REPR, _OFF_CONTEXT))):
        _aio_handle_slot_offs[i] = off
    _aio_Handle = cls
    _aio_TimerHandle = events.TimerHandle
    _aio_base_call_at = base_events.BaseEventLoop.call_at
    _aio_base_call_later = base_events.BaseEventLoop.call_later
    _aio_heappush = heapq.heappush
    _aio_base_call_soon = base_events.BaseEventLoop.call_soon
    _aio_base_private_call_soon = base_events.BaseEventLoop._call_soon
    _aio_callback_error = callback_error
    global _aio_futures, _aio_base_events
    global _aio_tasks, _aio_base_create_task, _aio_base_check_closed
    from asyncio import futures, tasks
    _aio_futures = futures
    _aio_tasks = tasks
    _aio_base_create_task = base_events.BaseEventLoop.create_task
    _aio_base_check_closed = base_events.BaseEventLoop._check_closed
    _aio_base_events = base_events


cdef inline PyObject *_slot(object obj, Py_ssize_t off) noexcept:
    # Borrowed; NULL if the slot was never set.
    return (<PyObject **>((<char *><PyObject *>obj) + off))[0]


cdef inline void _slot_set(object obj, Py_ssize_t off, object value) noexcept:
    cdef PyObject **p = <PyObject **>((<char *><PyObject *>obj) + off)
    cdef PyObject *old = p[0]
    Py_INCREF(value)
    p[0] = <PyObject *>value
    Py_XDECREF(old)


# Spent Handles kept for the next call_soon(): a request served by asyncio
# code takes a few Handles (task steps and wake-ups), each one allocated,
# GC-tracked, run and freed. A Handle whose run is over and which nothing
# else references or weakly references cannot be told from a fresh one, so
# the run loops hand it back here (_aio_handle_spent) and _aio_new_handle
# refills it. Its slots are cleared when it comes back -- what it held is
# released when asyncio would release it, as the run loop lets go of the
# handle -- and it stays untracked by the GC while pooled, so
# gc.get_objects() never shows an empty Handle.
cdef extern from *:
    """
    #define FASTIO_HANDLE_POOL 256
    static PyObject *fastio_handle_pool[FASTIO_HANDLE_POOL];
    static Py_ssize_t fastio_handle_pooled = 0;

    /* A pooled Handle (new reference, tracked again) or NULL, no error set. */
    static PyObject *fastio_handle_pool_pop(void) {
        PyObject *h;
        if (fastio_handle_pooled == 0)
            return NULL;
        h = fastio_handle_pool[--fastio_handle_pooled];
        PyObject_GC_Track(h);
        return h;
    }

    /* True if `h` is referenced only `refs` times (its holders that are
     * about to let go) and has no weak references. (A negative weaklist
     * offset, a managed one, is not read here: such a Handle is never
     * pooled.) */
    static CYTHON_INLINE int fastio_handle_unshared(PyObject *h, Py_ssize_t refs) {
        Py_ssize_t off = Py_TYPE(h)->tp_weaklistoffset;
        return Py_REFCNT(h) == refs && off >= 0 && (off == 0 || *(PyObject **)((char *)h + off) == NULL);
    }

    /* Clear the slots at `offs` (in declaration order, as its dealloc
     * would) and keep `h`; the pool takes a new reference. */
    static void fastio_handle_pool_push(PyObject *h, const Py_ssize_t *offs, int noffs) {
        int i;
        for (i = 0; i < noffs; i++) {
            PyObject **p = (PyObject **)((char *)h + offs[i]);
            Py_CLEAR(*p);
        }
        /* (Clearing ran arbitrary code: push only if it is still ours.) */
        if (fastio_handle_pooled < FASTIO_HANDLE_POOL && fastio_handle_unshared(h, 1)) {
            PyObject_GC_UnTrack(h);
            Py_INCREF(h);
            fastio_handle_pool[fastio_handle_pooled++] = h;
        }
    }
    """
    PyObject *fastio_handle_pool_pop()
    bint fastio_handle_unshared(object h, Py_ssize_t refs)
    void fastio_handle_pool_push(object h, const Py_ssize_t *offs, int noffs)
    const int FASTIO_HANDLE_POOL
    Py_ssize_t fastio_handle_pooled

# asyncio Handle's object slots in declaration order (see _aio_handles_setup).
cdef Py_ssize_t _aio_handle_slot_offs[7]


cdef inline void _aio_handle_spent(object handle) noexcept:
    """Pool `handle`, just run and popped from the ready queue, if it is a
    plain Handle nothing else holds (the caller's reference is the one)."""
    if (type(handle) is _aio_Handle and fastio_handle_pooled < FASTIO_HANDLE_POOL
            and fastio_handle_unshared(handle, 1)):
        fastio_handle_pool_push(handle, _aio_handle_slot_offs, 7)


cdef object _aio_new_handle(object callback, tuple args, object loop, object context,
                            type cls):
    """Return cls(callback, args, loop, context) of a loop not in debug mode."""
    cdef PyObject *pooled
    cdef object handle
    if cls is None:
        raise RuntimeError("fastio._impl.loop_c.aio_setup() has not been called")
    if cls is _aio_Handle and fastio_handle_pooled:
        pooled = fastio_handle_pool_pop()
        handle = <object>pooled
        Py_DECREF(handle)  # (the pool's reference, now the local's)
    else:
        handle = PyType_GenericAlloc(<PyTypeObject *>cls, 0)
    if context is None:
        context = PyContext_CopyCurrent()
    _slot_set(handle, _OFF_CONTEXT, context)
    _slot_set(handle, _OFF_LOOP, loop)
    _slot_set(handle, _OFF_CALLBACK, callback)
    _slot_set(handle, _OFF_ARGS, args)
    _slot_set(handle, _OFF_CANCELLED, False)
    _slot_set(handle, _OFF_REPR, None)
    _slot_set(handle, _OFF_SOURCE_TB, None)
    return handle


def aio_call_soon(self, callback, *args, context=None):
    """Same contract as asyncio's BaseEventLoop.call_soon."""
    cdef bint fast = _aio_fast_loop(self)
    if _tget(self, fast, _LOFF_CLOSED, "_closed"):
        raise RuntimeError('Event loop is closed')
    if _tget(self, fast, _LOFF_DEBUG, "_debug"):
        return _aio_base_call_soon(self, callback, *args, context=context)
    handle = _aio_new_handle(callback, args, self, context, _aio_Handle)
    _aio_ready_append(_tget(self, fast, _LOFF_READY, "_ready"), handle)
    return handle


def aio_call_at(self, when, callback, *args, context=None):
    """Same contract as asyncio's BaseEventLoop.call_at."""
    if when is None or self._debug:
        # None: each version's own error; debug: its checks and tracebacks.
        return _aio_base_call_at(self, when, callback, *args, context=context)
    if self._closed:
        raise RuntimeError('Event loop is closed')
    return _aio_new_timer(self, when, callback, args, context)


def aio_call_later(self, delay, callback, *args, context=None):
    """Same contract as asyncio's BaseEventLoop.call_later."""
    if delay is None or self._debug or type(self).call_at is not aio_call_at:
        return _aio_base_call_later(self, delay, callback, *args, context=context)
    when = self.time() + delay
    if self._closed:
        raise RuntimeError('Event loop is closed')
    return _aio_new_timer(self, when, callback, args, context)


cdef object _aio_new_timer(object loop, object when, object callback, tuple args, object context):
    timer = _aio_new_handle(callback, args, loop, context, _aio_TimerHandle)
    _slot_set(timer, _OFF_WHEN, when)
    _slot_set(timer, _OFF_SCHEDULED, False)
    scheduled = loop._scheduled
    if type(scheduled) is list:
        _heap_push(<list>scheduled, timer)
    else:
        _aio_heappush(scheduled, timer)
    _slot_set(timer, _OFF_SCHEDULED, True)
    return timer


def aio_private_call_soon(self, callback, args, context):
    """Same contract as asyncio's BaseEventLoop._call_soon."""
    cdef bint fast = _aio_fast_loop(self)
    if _tget(self, fast, _LOFF_DEBUG, "_debug"):
        return _aio_base_private_call_soon(self, callback, args, context)
    handle = _aio_new_handle(callback, args, self, context, _aio_Handle)
    _aio_ready_append(_tget(self, fast, _LOFF_READY, "_ready"), handle)
    return handle


cdef inline int _aio_run_handle(object handle) except -1:
    """Run one handle of the ready queue, as its `_run()` would; skip a cancelled one."""
    cdef PyObject *p
    cdef object ctx, callback, args
    cdef type t = type(handle)
    if t is not _aio_Handle and t is not _aio_TimerHandle:
        if not handle._cancelled:
            handle._run()
        return 0
    p = _slot(handle, _OFF_CANCELLED)
    if p == NULL:
        cancelled = handle._cancelled  # AttributeError, as asyncio's code raises
    elif p != Py_False and <object>p:
        return 0
    p = _slot(handle, _OFF_CONTEXT)
    ctx = <object>p if p != NULL else handle._context
    p = _slot(handle, _OFF_CALLBACK)
    callback = <object>p if p != NULL else handle._callback
    p = _slot(handle, _OFF_ARGS)
    args = <object>p if p != NULL else handle._args
    try:
        if PyContext_CheckExact(ctx) and type(args) is tuple:
            PyContext_Enter(ctx)
            try:
                # A socket transport's reader: its compiled method, no call
                # through the bound method.
                if (PyMethod_Check(callback) and PyTuple_GET_SIZE(args) == 0
                        and <object>PyMethod_GET_FUNCTION(callback) is _aio_read_ready_fn):
                    _aio_read_ready(<object>PyMethod_GET_SELF(callback))
                else:
                    callback(*<tuple>args)
            finally:
                PyContext_Exit(ctx)
        else:
            ctx.run(callback, *args)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        _aio_callback_error(handle, exc)
    return 0


# Loop methods asyncio code calls per request (a future per read awaited, the
# debug flag read by every Future made, the clock): the same one-line bodies
# as asyncio's, without a Python frame.

def aio_create_future(self):
    """Same contract as asyncio's BaseEventLoop.create_future."""
    return _aio_futures.Future(loop=self)


def aio_get_debug(self):
    """Same contract as asyncio's BaseEventLoop.get_debug."""
    return _tget(self, _aio_fast_loop(self), _LOFF_DEBUG, "_debug")


def aio_time(self):
    """Same contract as asyncio's BaseEventLoop.time: the module's time.monotonic()."""
    return _aio_monotonic()


def aio_create_task(self, coro, **kwargs):
    """Same contract as asyncio's BaseEventLoop.create_task.

    Without a name, a context, a task factory or debug mode every version's
    create_task() is `_check_closed()` then `tasks.Task(coro, loop=self)`;
    anything else is asyncio's own code.
    """
    if (kwargs or self._task_factory is not None or self._debug
            or type(self)._check_closed is not _aio_base_check_closed):
        return _aio_base_create_task(self, coro, **kwargs)
    if self._closed:
        raise RuntimeError('Event loop is closed')
    return _aio_tasks.Task(coro, loop=self)


def aio_timer_handle_cancelled(self, handle):
    """Same contract as asyncio's BaseEventLoop._timer_handle_cancelled."""
    if handle._scheduled:
        self._timer_cancelled_count += 1
