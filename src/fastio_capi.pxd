# Declarations of src/fastio_capi.h: the C interfaces between fastio's modules.

from fastio_platform cimport fastio_event


cdef extern from "fastio_capi.h":
    const char *FASTIO_CORE_CAPI
    const char *FASTIO_LOOP_CAPI
    const char *FASTIO_DATA_RECEIVED

    ctypedef struct fastio_core_capi:
        Py_ssize_t (*wait_into)(object poller, double timeout, fastio_event **events,
                                Py_ssize_t *cap) except -1

    ctypedef struct fastio_loop_capi:
        int (*transport_write)(object transport, const char *buf, Py_ssize_t n) except -1

    ctypedef int (*fastio_data_received_fn)(object protocol, char *buf, Py_ssize_t n) except -1
