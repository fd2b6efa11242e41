# asyncio's face of the loop core: fastio.EventLoop's own state.
#
# fastio.EventLoop keeps the attributes asyncio's loop reads every iteration
# and every call_soon() in slots (see fastio/_aio.py); the compiled methods
# read them at their offsets instead of looking them up, on that class and
# on subclasses that leave those names alone. Everything else -- and any
# other loop class these functions are called with -- goes through getattr.

from cpython.object cimport PyTypeObject

cdef extern from "Python.h":
    PyObject *_PyType_Lookup(PyTypeObject *type, object name)
    PyObject **_PyObject_GetDictPtr(object obj)

cdef tuple _AIO_LOOP_SLOTS = ("_ready", "_scheduled", "_stopping", "_debug", "_selector", "_closed",
                              "_clock_resolution")
cdef type _aio_loop_cls = None
cdef Py_ssize_t _LOFF_READY, _LOFF_SCHEDULED, _LOFF_STOPPING, _LOFF_DEBUG
cdef Py_ssize_t _LOFF_SELECTOR, _LOFF_CLOSED, _LOFF_CLOCK_RES
# type -> whether its instances keep those attributes in our slots.
cdef dict _aio_loop_types = {}


def aio_loop_class(type cls):
    """Make `cls` (fastio.EventLoop) the loop class whose slots are read directly."""
    global _aio_loop_cls, _LOFF_READY, _LOFF_SCHEDULED, _LOFF_STOPPING, _LOFF_DEBUG
    global _LOFF_SELECTOR, _LOFF_CLOSED, _LOFF_CLOCK_RES
    _LOFF_READY = _slot_offset(cls, "_ready")
    _LOFF_SCHEDULED = _slot_offset(cls, "_scheduled")
    _LOFF_STOPPING = _slot_offset(cls, "_stopping")
    _LOFF_DEBUG = _slot_offset(cls, "_debug")
    _LOFF_SELECTOR = _slot_offset(cls, "_selector")
    _LOFF_CLOSED = _slot_offset(cls, "_closed")
    _LOFF_CLOCK_RES = _slot_offset(cls, "_clock_resolution")
    _aio_loop_types.clear()
    _aio_loop_cls = cls


cdef inline bint _aio_fast_loop(object loop) except -1:
    cdef type t = type(loop)
    if t is _aio_loop_cls:
        return True
    return _aio_fast_loop_type(t)


cdef bint _aio_fast_loop_type(type t) except -1:
    cdef PyObject *p
    r = _aio_loop_types.get(t)
    if r is None:
        r = _aio_loop_cls is not None and issubclass(t, _aio_loop_cls)
        if r:
            for name in _AIO_LOOP_SLOTS:
                p = _PyType_Lookup(<PyTypeObject *>t, name)
                if p == NULL or <object>p is not _aio_loop_cls.__dict__[name]:
                    r = False
        _aio_loop_types[t] = r
    return r


# A dict last found without a name, with its version tag then: while the
# same dict has the same tag, the name is still absent and is not looked up
# again (see fastio_dict_tag; a tag of 0 says nothing). `dict` is only
# compared, never dereferenced.
cdef struct _aio_absent:
    PyObject *dict
    unsigned long long tag

# The checks every iteration makes: the loop's `_process_events` and `time`,
# the selector's `select`, not replaced on the instance.
cdef _aio_absent _aio_absent_process_events, _aio_absent_time, _aio_absent_select


cdef inline bint _aio_own_method(object obj, str name, object fn, _aio_absent *seen) except -1:
    # True if obj.<name> is `fn`, from the class, not replaced on the instance.
    cdef PyObject **dp
    cdef type t = type(obj)
    if _PyType_Lookup(<PyTypeObject *>t, name) != <PyObject *>fn:
        return False
    dp = _PyObject_GetDictPtr(obj)
    return dp == NULL or dp[0] == NULL or _aio_dict_lacks(dp[0], name, seen, 1)


cdef inline bint _aio_dict_lacks(PyObject *d, str name, _aio_absent *seen, int instance) except -1:
    cdef unsigned long long tag = fastio_dict_tag(<object>d, instance)
    if tag != 0 and seen.dict == d and seen.tag == tag:
        return True
    if PyDict_GetItemWithError(<object>d, name) != NULL:
        return False
    seen.dict = d
    seen.tag = tag
    return True


# asyncio.base_events, the time module, and their namespaces: see
# _aio_monotonic().
cdef object _aio_be_module = None
cdef dict _aio_be_dict = None
cdef object _aio_time_module = None
cdef dict _aio_time_dict = None
cdef type _aio_module_type = type(_os)


cdef _aio_time_setup(base_events):
    global _aio_be_module, _aio_be_dict, _aio_time_module, _aio_time_dict
    _aio_be_module = base_events
    _aio_be_dict = base_events.__dict__
    _aio_time_module = base_events.time
    _aio_time_dict = _aio_time_module.__dict__


# What base_events.time.monotonic resolved to, and the two namespaces'
# tags then (see _aio_monotonic_fn).
cdef object _aio_mono_fn = None
cdef unsigned long long _aio_mono_be_tag = 0, _aio_mono_time_tag = 0
cdef object _aio_real_monotonic = _time.monotonic


cdef inline object _aio_monotonic_fn():
    """Return base_events.time.monotonic, as asyncio's time() evaluates it.

    Both names are resolved on every call (a test may patch either); for
    modules of the plain module type an attribute is the entry in the
    module's namespace, read without the attribute protocol, and while
    neither namespace has changed (same version tags) the last answer holds.
    """
    global _aio_mono_fn, _aio_mono_be_tag, _aio_mono_time_tag
    cdef PyObject *p
    cdef unsigned long long be_tag, time_tag
    if type(_aio_be_module) is _aio_module_type and type(_aio_time_module) is _aio_module_type:
        be_tag = fastio_dict_tag(_aio_be_dict, 0)
        time_tag = fastio_dict_tag(_aio_time_dict, 0)
        if be_tag != 0 and be_tag == _aio_mono_be_tag and time_tag == _aio_mono_time_tag:
            return _aio_mono_fn
        p = PyDict_GetItemWithError(_aio_be_dict, "time")
        if p == <PyObject *>_aio_time_module and p != NULL:
            p = PyDict_GetItemWithError(_aio_time_dict, "monotonic")
            if p != NULL:
                _aio_mono_fn = <object>p
                _aio_mono_be_tag, _aio_mono_time_tag = be_tag, time_tag
                return _aio_mono_fn
    return _aio_base_events.time.monotonic


cdef inline object _aio_monotonic():
    """Return base_events.time.monotonic(), as asyncio's time() evaluates it."""
    return _aio_monotonic_fn()()


cdef inline object _aio_loop_time(object loop):
    """Return loop.time()."""
    if _aio_own_method(loop, "time", aio_time, &_aio_absent_time):
        return _aio_monotonic()
    return loop.time()


cdef inline bint _aio_plain_time(object loop) except -1:
    """True if loop.time() is asyncio's over the real time.monotonic: a call
    with no effect but its result, which can be left out when unused."""
    return (_aio_own_method(loop, "time", aio_time, &_aio_absent_time)
            and _aio_monotonic_fn() is _aio_real_monotonic)
