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

#endif /* FASTIO_PYHELPERS_H */
