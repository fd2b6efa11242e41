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

#endif /* FASTIO_PYHELPERS_H */
