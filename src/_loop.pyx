# cython: language_level=3
"""fastio._impl.loop_c: the event loop's hot path.

Handles, the ready queue, the timer heap, per-event dispatch and the TCP
transport's recv/send/flow-control path. fastio.loop builds the public Loop on
LoopCore. fastio/_impl/loop_py.py is the pure-Python twin: same classes, same
behaviour; a change here is a change there. What both transports share
(close/abort, pause/resume reading, limits...) is written once, in
fastio._transport.TransportMixin. On an io_uring poller with a buffer ring,
the transports are completion-based (src/uring_loop.pxi: compiled only).

Discussion: syscalls stay in the core (core_c). A core_c poller is driven
through the core's C API (src/fastio_capi.h): the loop reads the poller's
event buffer directly, so an iteration builds no list of tuples. Any other
poller -- a stdlib stand-in, an adapter over a selector -- goes through its
Python `poll()`. What pays off in C is what happens per event and per
callback: the fd lookup (a flat array indexed by fd), the handle call, the
heap, transports called as C methods, and compiled protocols called with
the receive buffer itself (no bytes object per chunk).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetContext, PyCapsule_GetPointer, PyCapsule_IsValid, PyCapsule_New
from libc.string cimport memcpy

from fastio_platform cimport (fastio_last_error, fastio_monotonic_ns, fastio_recv, fastio_dict_tag,
                              fastio_heap_prefetch, fastio_prefetch_object,
                              fastio_prefetch_slot,
                              fastio_send, fastio_would_block, fastio_event)
from fastio_capi cimport *
from fastio_fdtable cimport *

import os as _os
import time as _time

import collections
import socket

from fastio._impl import core_c as _core
from fastio._transport import TransportMixin

# The core's C API, and the poller class it serves (see LoopCore.__init__).
cdef fastio_core_capi *_core_api = <fastio_core_capi *>PyCapsule_GetPointer(
    _core._C_API, FASTIO_CORE_CAPI)
cdef object _CorePoller = _core.Poller

__all__ = ["Handle", "TimerHandle", "LoopCore", "TransportCore", "Transport", "UringTransportCore",
           "UringTransport", "UringDriver", "UringStream", "AioUringStream"]

cdef enum:
    POLLIN = 0x001
    POLLOUT = 0x004
    POLLERR = 0x008
    POLLHUP = 0x010
    # An error or hang-up wakes both reader and writer, as the stdlib
    # selectors do, so whoever waits learns it from recv()/send().
    READ_BITS = ~POLLOUT
    WRITE_BITS = ~POLLIN
    HANDLER_BITS = POLLIN | POLLOUT | POLLERR

# The longest single wait, as asyncio's: a timer further away than any
# poller's timeout can express just takes several waits.
cdef double MAX_WAIT = 24 * 3600.0


# One file per concept, in dependency order.
include "loop_handles.pxi"     # Handle, TimerHandle
include "loop_timers.pxi"      # the timer heap (both faces)
include "loop_fdtable.pxi"     # fd -> reader/writer/handler
include "loop_core.pxi"        # LoopCore: queues, registration, one iteration
include "loop_transport.pxi"   # the TCP transport's hot path
include "uring_stream.pxi"     # io_uring's completion engine: UringDriver, UringStream
include "uring_loop.pxi"       # Loop's transport on it
include "loop_capi.pxi"        # the C API other compiled modules call

# asyncio's face: the compiled methods fastio.EventLoop installs (fastio/_aio.py).
include "aio_state.pxi"        # EventLoop's slots, read at their offsets
include "aio_transport.pxi"
include "aio_streams.pxi"       # StreamReaderProtocol.data_received, compiled
include "aio_handles.pxi"
include "aio_loop.pxi"
include "aio_sock.pxi"         # readers/writers; setup and helpers of the next
include "aio_sock_coro.pxi"    # the sock_*() coroutines and the accept loop
include "aio_uring.pxi"        # the transport on io_uring's completion engine
