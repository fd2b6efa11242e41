/* fastio_capi.h: the C interfaces fastio's extension modules hand each other.
 *
 * Each module exports a struct of function pointers in a PyCapsule (as
 * CPython's datetime module does), so no extension links against another and
 * a hot path crossing modules costs a C call, not a Python one:
 *
 * - fastio._impl.core_c._C_API (fastio_core_capi): the loop waits on a core poller
 *   and reads its event buffer directly, instead of through poll()'s list.
 * - fastio._impl.loop_c._C_API (fastio_loop_capi): a compiled protocol writes to a
 *   loop transport from a C buffer.
 * - A protocol class whose data_received is compiled exposes it as the class
 *   attribute `_fastio_data_received`: a capsule named FASTIO_DATA_RECEIVED
 *   whose pointer is a fastio_data_received_fn and whose context is the class
 *   that defines it. The loop's transports then hand it the receive buffer
 *   itself (no bytes object) -- only for instances of that class, and not
 *   when a subclass overrides data_received.
 *
 * Functions returning int or Py_ssize_t return -1 with a Python exception
 * set on failure. */

#ifndef FASTIO_CAPI_H
#define FASTIO_CAPI_H

#include <Python.h>
#include "fastio_platform.h"

#define FASTIO_CORE_CAPI "fastio._impl.core_c._C_API"
#define FASTIO_LOOP_CAPI "fastio._impl.loop_c._C_API"
#define FASTIO_DATA_RECEIVED "fastio._impl.loop_c.data_received"

typedef struct {
    /* Wait on a fastio._impl.core_c.Poller for `timeout` seconds (< 0: forever),
     * rounded up as Poller.poll() rounds (OverflowError past the syscall's
     * range: fastio._impl.loop_c caps its waits at a day), and copy the events into the
     * caller's *events (PyMem-allocated, grown as needed; *cap is its size
     * in events). The poller is free again before the caller acts on them,
     * so callbacks may register, unregister or close. Returns the count. */
    Py_ssize_t (*wait_into)(PyObject *poller, double timeout, fastio_event **events,
                            Py_ssize_t *cap);
} fastio_core_capi;

typedef struct {
    /* Transport.write() of `n` bytes at `buf` (copied if not sent at once). */
    int (*transport_write)(PyObject *transport, const char *buf, Py_ssize_t n);
} fastio_loop_capi;

/* Called with the loop's receive buffer: `buf` is valid for this call only
 * and the protocol may modify it in place. */
typedef int (*fastio_data_received_fn)(PyObject *protocol, char *buf, Py_ssize_t n);

#endif
