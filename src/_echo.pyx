# cython: language_level=3
"""fastio._echo: the echo protocol's per-chunk path, compiled.

EchoCore is the base of fastio.echo.server's protocol. On a fastio._loop
transport its data_received runs as C with the loop's receive buffer (see
src/fastio_capi.h): no bytes object, no Python frame per chunk, the reply
uppercased in place and handed to the transport's C write. Anywhere else
(another loop, a direct call) the Python data_received does the same.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New, PyCapsule_SetContext

from fastio_capi cimport *

from fastio import _loop

cdef fastio_loop_capi *_loop_api = <fastio_loop_capi *>PyCapsule_GetPointer(
    _loop._C_API, FASTIO_LOOP_CAPI)

__all__ = ["EchoCore"]


cdef int echo_data_received(object protocol, char *buf, Py_ssize_t n) except -1:
    cdef EchoCore self = <EchoCore>protocol
    cdef Py_ssize_t i
    if self._draining:
        return 0
    self._in += n
    if self._upper:
        # bytes.upper(): ASCII letters only.
        for i in range(n):
            if b'a' <= buf[i] <= b'z':
                buf[i] -= 32
    return _loop_api.transport_write(self._transport, buf, n)


cdef class EchoCore:
    """Echo every chunk back to the transport (its ASCII uppercase with
    `_upper`); count the bytes received in `_in`. Chunks arriving once
    `_draining` is set are dropped."""

    cdef public object _transport
    cdef public bint _upper
    cdef public bint _draining
    cdef public long long _in

    _fastio_data_received = PyCapsule_New(<void *>echo_data_received, FASTIO_DATA_RECEIVED, NULL)

    def data_received(self, data):
        if self._draining:
            return
        self._in += len(data)
        if self._upper:
            data = data.upper()
        self._transport.write(data)


# The capsule's context names the class whose data_received it stands for.
PyCapsule_SetContext(EchoCore._fastio_data_received, <void *>EchoCore)
