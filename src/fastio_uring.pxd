# Declarations of src/fastio_uring.h: io_uring by raw syscalls, shared by
# fastio._impl.core_c (UringPoller), fastio._impl.loop_c (completion transports) and
# fastio._impl.echo_c (UringEcho).

from libc.errno cimport EBADF
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "fastio_uring.h" nogil:
    int FASTIO_HAVE_URING
    int FASTIO_URING_DEFER_TASKRUN, FASTIO_URING_COOP_TASKRUN, FASTIO_URING_PLAIN
    int FASTIO_OP_NOP, FASTIO_OP_POLL_ADD, FASTIO_OP_POLL_REMOVE, FASTIO_OP_ACCEPT
    int FASTIO_OP_ASYNC_CANCEL, FASTIO_OP_SEND, FASTIO_OP_RECV, FASTIO_OP_SEND_ZC
    unsigned FASTIO_SQE_BUFFER_SELECT, FASTIO_RECV_MULTISHOT, FASTIO_ACCEPT_MULTISHOT
    unsigned FASTIO_CQE_F_BUFFER, FASTIO_CQE_F_MORE, FASTIO_CQE_BUFFER_SHIFT, FASTIO_CQE_F_BUF_MORE
    int FASTIO_UD_POLL, FASTIO_UD_IGNORE, FASTIO_UD_RECV, FASTIO_UD_SEND

    struct fastio_uring_sqe:
        uint8_t opcode
        uint8_t flags
        uint16_t ioprio
        int32_t fd
        uint64_t off
        uint64_t addr
        uint32_t len
        uint32_t op_flags
        uint64_t user_data
        uint16_t buf_group

    struct fastio_uring_cqe:
        uint64_t user_data
        int32_t res
        uint32_t flags

    ctypedef struct fastio_ring:
        int fd
        int mode
        uint32_t features
        unsigned sq_entries
        unsigned cq_entries
        unsigned br_size
        unsigned br_entries
        int br_inc
        unsigned files

    ctypedef struct fastio_uring_hub:
        fastio_ring ring
        int has_buffers
        fastio_uring_cqe *done
        size_t ndone
        size_t capdone
        unsigned long turn

    int fastio_uring_fake_errno
    void fastio_uring_set_fake_errno(int err)
    int fastio_uring_fake_files_errno
    void fastio_uring_set_fake_files_errno(int err)
    int fastio_ring_init(fastio_ring *r, unsigned entries, int best_mode)
    void fastio_ring_close(fastio_ring *r)
    void fastio_ring_cancel_all(fastio_ring *r)
    int fastio_ring_cancel_now(fastio_ring *r, uint64_t ud)
    int fastio_ring_inherited(const fastio_ring *r)
    int fastio_ring_probe(fastio_ring *r, unsigned op)
    int fastio_ring_setup_buffers(fastio_ring *r, unsigned entries, unsigned size)
    int fastio_ring_setup_buffers_inc(fastio_ring *r, unsigned entries, unsigned size, int incremental)
    void fastio_ring_recycle(fastio_ring *r, unsigned bid)
    void fastio_ring_recycle_flush(fastio_ring *r)
    char *fastio_ring_buffer(fastio_ring *r, unsigned bid)
    int fastio_ring_setup_files(fastio_ring *r)
    bint fastio_ring_file_add(fastio_ring *r, int fd)
    void fastio_ring_file_remove(fastio_ring *r, int fd)
    void fastio_sqe_set_fd(fastio_uring_sqe *sqe, int fd, bint fixed)
    fastio_uring_sqe *fastio_ring_get_sqe(fastio_ring *r)
    int fastio_ring_enter(fastio_ring *r, int wait, long long timeout_ns)
    int fastio_fd_poll_error(int fd)
    unsigned fastio_ring_publish(fastio_ring *r)
    unsigned fastio_ring_last_sqe_pos(const fastio_ring *r)
    bint fastio_ring_sqe_unsubmitted(const fastio_ring *r, unsigned pos)
    int fastio_ring_submit_wait(fastio_ring *r, unsigned to_submit, int wait, long long timeout_ns)
    fastio_uring_cqe *fastio_ring_peek(fastio_ring *r, unsigned *head)
    unsigned fastio_ring_cq_head(fastio_ring *r)
    void fastio_ring_cq_advance(fastio_ring *r, unsigned head)
    int fastio_hub_push(fastio_uring_hub *h, const fastio_uring_cqe *cqe)
    int fastio_uring_close_fd(int fd)
    int fastio_uring_shutdown_wr(int fd)
    void fastio_uring_nodelay(int fd)
    void fastio_uring_drain(int fd)
    void fastio_uring_poke(int fd)
    int FASTIO_MSG_NOSIGNAL, FASTIO_SOCK_NONBLOCK, FASTIO_SOCK_CLOEXEC


cdef inline int fastio_check_own_ring(const fastio_ring *ring) except -1:
    """Raise EBADF if `ring` was inherited over fork() (the parent's ring)."""
    if fastio_ring_inherited(ring):
        raise OSError(EBADF, "this io_uring ring was inherited over fork(): it is the "
                      "parent's, and unusable in the child")
    return 0
