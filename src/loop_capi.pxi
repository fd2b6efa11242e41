# The loop's C API (src/fastio_capi.h), served to other compiled modules
# through the `_C_API` capsule: fastio._impl.echo_c writes through it without a
# Python call.


cdef int capi_transport_write(object transport, const char *buf, Py_ssize_t n) except -1:
    if isinstance(transport, TransportCore):
        return (<TransportCore>transport)._write(buf, n)
    transport.write(PyBytes_FromStringAndSize(buf, n))
    return 0


cdef fastio_loop_capi _capi
_capi.transport_write = capi_transport_write
_C_API = PyCapsule_New(&_capi, FASTIO_LOOP_CAPI, NULL)
