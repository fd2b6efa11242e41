# cython: language_level=3
"""fastio._impl.core_c: the readiness core.

One poller per syscall (epoll, poll, select, io_uring polls) over one fd
table and one wait loop; a Waker for cross-thread wake-ups; and SelectorCore, the C half of
fastio.selectors' classes. See src/fastio_platform.h for the syscalls.
"""

from cpython.dict cimport PyDict_GetItem, PyDict_SetDefault
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from cpython.list cimport PyList_GET_ITEM, PyList_New
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_New
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.math cimport ceil
from libc.stdlib cimport free
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t
from libc.string cimport memcpy

from fastio_platform cimport *
from fastio_capi cimport *
from fastio_fdtable cimport *

import math as _math
import operator as _operator
import os as _os
import selectors as _stdlib_selectors
import sys as _sys
import warnings as _warnings

HAVE_EPOLL = bool(FASTIO_HAVE_EPOLL)
HAVE_POLL = bool(FASTIO_HAVE_POLL)
HAVE_EVENTFD = bool(FASTIO_HAVE_EVENTFD)
# The C constants, under their C names.
globals().update({
    "FD_SETSIZE": FD_SETSIZE,
    "POLLIN": POLLIN,
    "POLLPRI": POLLPRI,
    "POLLOUT": POLLOUT,
    "POLLERR": POLLERR,
    "POLLHUP": POLLHUP,
    "POLLNVAL": POLLNVAL,
    "POLLRDHUP": POLLRDHUP,
    "EPOLLIN": EPOLLIN,
    "EPOLLPRI": EPOLLPRI,
    "EPOLLOUT": EPOLLOUT,
    "EPOLLERR": EPOLLERR,
    "EPOLLHUP": EPOLLHUP,
    "EPOLLRDHUP": EPOLLRDHUP,
    "EPOLLET": EPOLLET,
    "EPOLLONESHOT": EPOLLONESHOT,
    "EPOLLEXCLUSIVE": EPOLLEXCLUSIVE,
})

include "timeout.pxi"
include "poller.pxi"
include "epoll.pxi"
include "poll.pxi"
include "select.pxi"
include "uring_poller.pxi"
include "waker.pxi"
include "selector.pxi"
include "capi.pxi"
