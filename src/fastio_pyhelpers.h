/*
 * fastio_pyhelpers.h: small CPython-API helpers for the selector core.
 */
#ifndef FASTIO_PYHELPERS_H
#define FASTIO_PYHELPERS_H

#include <Python.h>

/* Build a `selectors.SelectorKey` (a namedtuple subclass of tuple) without
 * the namedtuple's Python-level __new__: what tuple.__new__(cls, items)
 * does for a subtype, minus the intermediate tuple. */
static inline PyObject *
fastio_key_new(PyObject *cls, PyObject *fileobj, PyObject *fd, PyObject *events, PyObject *data)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *key = type->tp_alloc(type, 4);
    if (key == NULL)
        return NULL;
    Py_INCREF(fileobj);
    PyTuple_SET_ITEM(key, 0, fileobj);
    Py_INCREF(fd);
    PyTuple_SET_ITEM(key, 1, fd);
    Py_INCREF(events);
    PyTuple_SET_ITEM(key, 2, events);
    Py_INCREF(data);
    PyTuple_SET_ITEM(key, 3, data);
    return key;
}

/* Put a new reference to `item` at `i` of a list made by PyList_New(n),
 * whose slots start NULL. */
static inline void
fastio_list_fill(PyObject *list, Py_ssize_t i, PyObject *item)
{
    Py_INCREF(item);
    PyList_SET_ITEM(list, i, item);
}

/* Cut a list made by PyList_New(n) to its first `k` (filled) slots. The rest
 * are NULL, so there is nothing to release; `allocated` stays n, which a
 * list allows (ob_size <= allocated), and a later append reuses the room. */
static inline void
fastio_list_truncate(PyObject *list, Py_ssize_t k)
{
    Py_SET_SIZE(list, k);
}

/* A prefetch the compiler keeps: gcc takes __builtin_prefetch for a
 * statement without effect and drops loops and calls made only of them. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTIO_PREFETCH(p) __asm__ __volatile__("prefetcht0 %0" : : "m"(*(const char *)(p)))
#elif defined(__GNUC__) && defined(__aarch64__)
#define FASTIO_PREFETCH(p) __asm__ __volatile__("prfm pldl1keep, %0" : : "Q"(*(const char *)(p)))
#else
#define FASTIO_PREFETCH(p) ((void)(p))
#endif

/* The two cache lines from `obj`: a small object's header and slots. */
static inline void
fastio_prefetch_object(PyObject *obj)
{
    FASTIO_PREFETCH(obj);
    FASTIO_PREFETCH((char *)obj + 64);
}

/* The object in the slot at `off` of `obj` (of a type known to have it). */
static inline void
fastio_prefetch_slot(PyObject *obj, Py_ssize_t off)
{
    PyObject *item = *(PyObject **)((char *)obj + off);
    if (item != NULL)
        FASTIO_PREFETCH(item);
}

/* Heap pop's descent (heapq's _siftup) reads two children a level, items
 * scattered in memory: ask for what the next levels read while this one
 * compares. For `pos`, the float that the `_when` slot (at `when_off`) of
 * each grandchild of type `timer_type` points to, and the slot itself of
 * each great-grandchild, which the previous level asked for in turn. A hint
 * only: nothing is read but pointers already in the heap's objects. */
static inline void
fastio_heap_prefetch(PyObject **items, Py_ssize_t pos, Py_ssize_t end,
                     Py_ssize_t when_off, PyObject *timer_type)
{
    Py_ssize_t i, lo, hi;
    if (when_off <= 0)
        return;
    lo = 4 * pos + 3;
    hi = lo + 4 < end ? lo + 4 : end;
    for (i = lo; i < hi; i++) {
        PyObject *item = items[i];
        if ((PyObject *)Py_TYPE(item) == timer_type) {
            PyObject *when = *(PyObject **)((char *)item + when_off);
            if (when != NULL)
                FASTIO_PREFETCH(when);
        }
    }
    lo = 8 * pos + 7;
    hi = lo + 8 < end ? lo + 8 : end;
    for (i = lo; i < hi; i++)
        FASTIO_PREFETCH((char *)items[i] + when_off);
}

/* A dict's version tag (PEP 509): the dict gets a new one whenever its
 * contents change, so the same dict with the same tag holds what it held.
 * 0 where the tag cannot tell: from 3.13 an attribute stored into an
 * object's inline values does not renew its __dict__'s tag (`instance`
 * says the dict is an object's __dict__), and 3.14 has no tag. */
static inline unsigned long long
fastio_dict_tag(PyObject *dict, int instance)
{
#if PY_VERSION_HEX >= 0x030E0000
    (void)dict;
    (void)instance;
    return 0;
#else
    if (instance && PY_VERSION_HEX >= 0x030D0000)
        return 0;
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    return (unsigned long long)((PyDictObject *)dict)->ma_version_tag;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#endif
}

#endif /* FASTIO_PYHELPERS_H */
