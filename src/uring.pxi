# fastio's io_uring engine: the ring (src/fastio_uring.h) and its run-time
# feature detection.
#
# io_uring(7) is completion-based: instead of asking which sockets are ready
# (epoll) and then calling recv/send on each, fastio queues the operations
# themselves as SQEs and reaps their results as CQEs, with one
# io_uring_enter(2) per loop iteration that both submits and waits. What
# fastio uses, each detected at run time (see io_uring_setup(2),
# io_uring_register(2), io_uring_enter(2)):
#
# * SINGLE_ISSUER|DEFER_TASKRUN (6.1): completions run only when the loop
#   asks for them, in the loop's own thread, batched; else COOP_TASKRUN
#   (5.19); else plain. The ring is created by the thread that runs it.
# * A provided-buffer ring (IORING_REGISTER_PBUF_RING, 5.19) feeding
#   multishot recv (IORING_RECV_MULTISHOT, 6.0): one SQE per connection for
#   all its reads; the kernel picks a buffer per completion and fastio hands
#   it back once it has copied the bytes out.
# * Multishot accept (IORING_ACCEPT_MULTISHOT, 5.19): one SQE for all
#   connections.
# * Sends as SQEs (IORING_OP_SEND with MSG_NOSIGNAL), submitted with the
#   next io_uring_enter: no syscall per reply.
#
# Opcodes are checked with IORING_REGISTER_PROBE; multishot recv has no probe
# bit of its own, so SEND_ZC, which came in the same release (6.0), stands in
# for it. Refusals: ENOSYS (no io_uring, or seccomp), EPERM
# (kernel.io_uring_disabled), EINVAL (old kernel). FASTIO_IO_URING=0 in the
# environment disables io_uring without asking the kernel.
#
# valgrind knows the io_uring syscalls but not what the kernel does with the
# memory an SQE points at: receives into the buffer ring look uninitialised
# to it. See README "io_uring".

from libc.errno cimport EAGAIN, EBUSY, EINTR, EINVAL, ENOSYS, EPERM, ETIME
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

from fastio_uring cimport *


_URING_MODES = {3: "defer_taskrun", 2: "coop_taskrun", 1: "plain"}
_URING_MODE_NUMBERS = {name: number for number, name in _URING_MODES.items()}


cdef str uring_open(fastio_ring *ring, unsigned entries, unsigned nbufs, unsigned bufsize,
                    int best_mode=3):
    """Create `ring` with everything fastio needs, in setup mode `best_mode`
    or the best below it the kernel takes; return None, or why not (`ring`
    is then closed)."""
    cdef int err
    cdef unsigned op
    if _os.environ.get("FASTIO_IO_URING", "") == "0":
        return "disabled by FASTIO_IO_URING=0"
    if not FASTIO_HAVE_URING:
        return "io_uring is Linux-only"
    err = fastio_ring_init(ring, entries, best_mode)
    if err:
        if err == ENOSYS:
            return "io_uring_setup: %s (kernel without io_uring, or a seccomp filter)" % _os.strerror(err)
        if err == EPERM:
            return "io_uring_setup: %s (kernel.io_uring_disabled)" % _os.strerror(err)
        if err == EINVAL:
            return "io_uring_setup: %s (kernel too old: fastio needs 6.0)" % _os.strerror(err)
        return "io_uring_setup: %s" % _os.strerror(err)
    for op in (FASTIO_OP_ACCEPT, FASTIO_OP_SEND, FASTIO_OP_RECV, FASTIO_OP_ASYNC_CANCEL,
               FASTIO_OP_POLL_ADD, FASTIO_OP_SEND_ZC):
        if not fastio_ring_probe(ring, op):
            fastio_ring_close(ring)
            return "kernel too old (io_uring opcode %d missing; multishot recv needs 6.0)" % op
    err = fastio_ring_setup_buffers(ring, nbufs, bufsize)
    if err:
        fastio_ring_close(ring)
        return "IORING_REGISTER_PBUF_RING: %s" % _os.strerror(err)
    return None


_uring_probe_cache = None


def uring_status():
    """Return (mode, reason): the io_uring setup mode this kernel gives
    ("defer_taskrun", "coop_taskrun" or "plain") and None, or None and why
    io_uring is unavailable. The kernel is asked once per process."""
    global _uring_probe_cache
    cdef fastio_ring ring
    cdef str reason
    if _os.environ.get("FASTIO_IO_URING", "") == "0":
        return None, "disabled by FASTIO_IO_URING=0"
    if _uring_probe_cache is None or fastio_uring_fake_errno:
        reason = uring_open(&ring, 8, 8, 4096)
        if reason is not None:
            result = (None, reason)
        else:
            result = (_URING_MODES[ring.mode], None)
            fastio_ring_close(&ring)
        if fastio_uring_fake_errno:
            return result
        _uring_probe_cache = result
    return _uring_probe_cache


def _uring_fake_errno(int err):
    """Make io_uring_setup fail with `err` from now on (0: stop); a test hook."""
    fastio_uring_set_fake_errno(err)


def _uring_fake_files_errno(int err):
    """Make the registration of file tables fail with `err` from now on (0:
    stop); a test hook."""
    fastio_uring_set_fake_files_errno(err)
