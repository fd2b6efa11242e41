/*
 * fastio_uring.h: io_uring(7) by raw syscalls, with the kernel ABI spelled
 * out here. See io_uring_setup(2), io_uring_enter(2), io_uring_register(2).
 *
 * Why no liburing and no <linux/io_uring.h>: wheels build on manylinux2014
 * (kernel headers 3.10, no io_uring at all) and musllinux, and must not
 * depend on a shared library at run time. The ABI is stable by the kernel's
 * rules (structs only grow into reserved fields, numbers never change), so a
 * private copy of the few structs and constants fastio uses is safe; the
 * syscall numbers 425/426/427 are the same on every architecture (they were
 * allocated after the syscall tables were unified). Every feature is
 * detected at run time; on a kernel or platform without io_uring every entry
 * point fails with ENOSYS and the callers fall back to epoll.
 *
 * Semantics and traps this code depends on:
 *
 * - io_uring_setup() fails with ENOSYS (no io_uring: old kernel, or a
 *   seccomp filter such as Docker's default profile), EPERM
 *   (kernel.io_uring_disabled = 2, or = 1 outside io_uring_group) or EINVAL
 *   for setup flags the kernel predates: fastio retries with fewer flags
 *   (SINGLE_ISSUER|DEFER_TASKRUN, 6.1; COOP_TASKRUN, 5.19; none).
 * - With DEFER_TASKRUN, completions are only posted when the issuing task
 *   calls io_uring_enter(GETEVENTS): the ring must be created, submitted to
 *   and reaped by one thread (fastio creates it in the thread that runs it).
 * - The SQ/CQ heads and tails are shared with the kernel: the kernel's
 *   writes are read with acquire loads, ours published with release stores.
 * - A buffer handed to the kernel (a send's bytes, a provided buffer) must
 *   stay put until its completion arrives, even if the op is cancelled: the
 *   cancellation is itself only final at the op's last CQE.
 * - Multishot ops (accept, recv) post CQEs with IORING_CQE_F_MORE while they
 *   stay armed; a CQE without it is the last one (error, EOF, ENOBUFS when the
 *   buffer ring ran dry, or -ECANCELED).
 * - io_uring honours a file's O_NONBLOCK for reads (-EAGAIN instead of
 *   waiting): fastio polls its wake pipe with POLL_ADD instead of reading it.
 */
#ifndef FASTIO_URING_H
#define FASTIO_URING_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
#  include <sys/epoll.h>
#  include <sys/mman.h>
#  include <sys/resource.h>
#  include <sys/syscall.h>
#  include <fcntl.h>
#  include <pthread.h>
#  include <unistd.h>
#  include <netinet/in.h>
#  include <netinet/tcp.h>
#  include <sys/socket.h>
#  define FASTIO_HAVE_URING 1
#  define FASTIO_MSG_NOSIGNAL MSG_NOSIGNAL
#  define FASTIO_SOCK_NONBLOCK SOCK_NONBLOCK
#  define FASTIO_SOCK_CLOEXEC SOCK_CLOEXEC
#else
#  define FASTIO_HAVE_URING 0
#  define FASTIO_MSG_NOSIGNAL 0
#  define FASTIO_SOCK_NONBLOCK 0
#  define FASTIO_SOCK_CLOEXEC 0
#endif

/* ---- ABI: structs and constants (from the kernel's uapi io_uring.h) ---- */

struct fastio_uring_sqe {
    uint8_t opcode;
    uint8_t flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off;        /* or addr2 */
    uint64_t addr;
    uint32_t len;
    uint32_t op_flags;   /* msg_flags, accept_flags, poll32_events, ... */
    uint64_t user_data;
    uint16_t buf_group;  /* or buf_index */
    uint16_t personality;
    int32_t splice_fd_in;
    uint64_t addr3;
    uint64_t pad2;
};

struct fastio_uring_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct fastio_sqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t resv2;
};

struct fastio_cqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t resv2;
};

struct fastio_uring_params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle;
    uint32_t features, wq_fd, resv[3];
    struct fastio_sqring_offsets sq_off;
    struct fastio_cqring_offsets cq_off;
};

struct fastio_uring_probe_op {
    uint8_t op, resv;
    uint16_t flags;
    uint32_t resv2;
};

struct fastio_uring_probe {
    uint8_t last_op, ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    struct fastio_uring_probe_op ops[256];
};

struct fastio_uring_buf {
    uint64_t addr;
    uint32_t len;
    uint16_t bid;
    uint16_t resv;   /* entry 0's resv is the ring's tail */
};

struct fastio_uring_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid, flags;
    uint64_t resv[3];
};

struct fastio_uring_rsrc_register {
    uint32_t nr;
    uint32_t flags;
    uint64_t resv2;
    uint64_t data;
    uint64_t tags;
};

struct fastio_uring_files_update {
    uint32_t offset;
    uint32_t resv;
    uint64_t fds;
};

struct fastio_kernel_timespec {
    int64_t tv_sec;
    long long tv_nsec;
};

struct fastio_uring_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t pad;
    uint64_t ts;
};

typedef char fastio_uring_sqe_is_64_bytes[sizeof(struct fastio_uring_sqe) == 64 ? 1 : -1];
typedef char fastio_uring_params_is_120_bytes[sizeof(struct fastio_uring_params) == 120 ? 1 : -1];

#define FASTIO_NR_URING_SETUP 425
#define FASTIO_NR_URING_ENTER 426
#define FASTIO_NR_URING_REGISTER 427

#define FASTIO_SETUP_CQSIZE (1U << 3)
#define FASTIO_SETUP_SUBMIT_ALL (1U << 7)
#define FASTIO_SETUP_COOP_TASKRUN (1U << 8)
#define FASTIO_SETUP_SINGLE_ISSUER (1U << 12)
#define FASTIO_SETUP_DEFER_TASKRUN (1U << 13)

#define FASTIO_FEAT_SINGLE_MMAP (1U << 0)
#define FASTIO_FEAT_NODROP (1U << 1)
#define FASTIO_FEAT_FAST_POLL (1U << 5)
#define FASTIO_FEAT_EXT_ARG (1U << 8)

#define FASTIO_OP_NOP 0
#define FASTIO_OP_POLL_ADD 6
#define FASTIO_OP_POLL_REMOVE 7
#define FASTIO_OP_ACCEPT 13
#define FASTIO_OP_ASYNC_CANCEL 14
#define FASTIO_OP_SEND 26
#define FASTIO_OP_RECV 27
#define FASTIO_OP_SEND_ZC 47   /* not used: its presence marks a 6.0+ kernel */

#define FASTIO_SQE_BUFFER_SELECT (1U << 5)
#define FASTIO_RECV_MULTISHOT (1U << 1)
#define FASTIO_ACCEPT_MULTISHOT (1U << 0)

#define FASTIO_CQE_F_BUFFER (1U << 0)
#define FASTIO_CQE_F_MORE (1U << 1)
#define FASTIO_CQE_BUFFER_SHIFT 16
#define FASTIO_CQE_F_BUF_MORE (1U << 4)
#define FASTIO_PBUF_RING_INC 2  /* IOU_PBUF_RING_INC, 6.12 */

#define FASTIO_ENTER_GETEVENTS (1U << 0)
#define FASTIO_ENTER_EXT_ARG (1U << 3)

#define FASTIO_REGISTER_FILES_UPDATE 6
#define FASTIO_REGISTER_PROBE 8
#define FASTIO_REGISTER_FILES2 13
#define FASTIO_RSRC_REGISTER_SPARSE (1U << 0)
#define FASTIO_SQE_FIXED_FILE (1U << 0)
/* The kernel's cap on registered files (IORING_MAX_FIXED_FILES is 1 << 20);
 * fastio asks for at most this many slots: fds above run as plain fds. */
#define FASTIO_MAX_FILES 65536
#define FASTIO_REGISTER_PBUF_RING 22
#define FASTIO_REGISTER_SYNC_CANCEL 24
#define FASTIO_OP_SUPPORTED (1U << 0)

#define FASTIO_OFF_SQ_RING 0ULL
#define FASTIO_OFF_CQ_RING 0x8000000ULL
#define FASTIO_OFF_SQES 0x10000000ULL

/* ---- the ring ---- */

/* Setup modes, best first; fastio_ring.mode says which one the kernel took. */
#define FASTIO_URING_DEFER_TASKRUN 3
#define FASTIO_URING_COOP_TASKRUN 2
#define FASTIO_URING_PLAIN 1

typedef struct fastio_ring {
    int fd;
    int mode;
    uint32_t features;
    /* submission queue */
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned sq_entries, sq_local_tail, sq_submitted;
    struct fastio_uring_sqe *sqes;
    /* completion queue */
    unsigned *cq_head, *cq_tail, *cq_mask;
    unsigned cq_entries;
    struct fastio_uring_cqe *cqes;
    /* mappings */
    void *sq_map, *cq_map;
    size_t sq_map_len, cq_map_len, sqes_len;
    /* the provided-buffer ring (group 0) */
    struct fastio_uring_buf *br;
    char *br_mem;
    unsigned br_entries, br_size, br_tail;
    int br_inc;   /* buffers consumed incrementally (FASTIO_PBUF_RING_INC) */
    size_t br_map_len;
    /* registered files: slots 0..files-1, slot i for fd i (0: none) */
    unsigned files;
    /* the fork count of the module that made the ring, and its value then */
    const volatile unsigned *forks;
    unsigned forks_at_setup;
} fastio_ring;

/* A test hook: a nonzero errno makes the next setups fail with it. */
static int fastio_uring_fake_errno = 0;

static inline void fastio_uring_set_fake_errno(int err) { fastio_uring_fake_errno = err; }

/* A test hook: a nonzero errno makes the next file tables fail with it. */
static int fastio_uring_fake_files_errno = 0;

static inline void fastio_uring_set_fake_files_errno(int err) { fastio_uring_fake_files_errno = err; }

#if FASTIO_HAVE_URING

static inline int fastio_sys_uring_setup(unsigned entries, struct fastio_uring_params *p) {
    if (fastio_uring_fake_errno) {
        errno = fastio_uring_fake_errno;
        return -1;
    }
    return (int)syscall(FASTIO_NR_URING_SETUP, entries, p);
}

static inline int fastio_sys_uring_enter(int fd, unsigned to_submit, unsigned min_complete,
                                         unsigned flags, void *arg, size_t argsz) {
    return (int)syscall(FASTIO_NR_URING_ENTER, fd, to_submit, min_complete, flags, arg, argsz);
}

static inline int fastio_sys_uring_register(int fd, unsigned opcode, void *arg, unsigned nr) {
    return (int)syscall(FASTIO_NR_URING_REGISTER, fd, opcode, arg, nr);
}

/* 0 if a poll on `fd` can report readiness, else the errno epoll_ctl(2)
 * would give: EBADF (not open) or EPERM (a file without poll support:
 * regular files but for a few in procfs, sysfs and cgroupfs, directories,
 * some character devices such as /dev/null). io_uring accepts a poll on
 * any file, and on one without poll support it completes at once, for
 * ever: a reader on it would run in every iteration, where the epoll
 * selectors and asyncio's loop refuse it. A socket (the common case) costs
 * one getsockopt(); anything else is asked of a throwaway epoll instance,
 * which is exact. */
static inline int fastio_fd_poll_error(int fd) {
    int type, ep, err = 0;
    socklen_t len = sizeof type;
    struct epoll_event ev;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0)
        return 0;
    if (errno != ENOTSOCK)
        return errno;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return 0;  /* cannot tell: the poll decides */
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 && (errno == EPERM || errno == EBADF))
        err = errno;
    close(ep);
    return err;
}

/* A ring's SQ, CQ and buffer ring are MAP_SHARED: a forked child shares
 * them, and the ring fd, with its parent. A child that submitted, reaped or
 * recycled on an inherited ring would steal and cancel the parent's
 * operations (an ASYNC_CANCEL_ANY matches every op on the ring, whoever
 * submitted it), so in a child every entry point below acts as on a dead
 * ring: no SQE, no CQE, no syscall, EBADF. Only fastio_ring_close does its
 * part: the child's mappings and fd reference go, the parent's ring stays.
 * The count is per module (this header is compiled into several), which is
 * why the ring keeps a pointer to the one it was set up with. */
static volatile unsigned fastio_forks = 0;

static void fastio_count_fork(void) { fastio_forks++; }

static inline void fastio_watch_forks(void) {
    static int watching = 0;   /* (set up under the GIL) */
    if (!watching && pthread_atfork(NULL, NULL, fastio_count_fork) == 0)
        watching = 1;
}

/* Whether `r` was inherited over fork(): the parent's ring, unusable here. */
static inline int fastio_ring_inherited(const fastio_ring *r) {
    return r->forks != NULL && *r->forks != r->forks_at_setup;
}

#define fastio_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define fastio_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static inline void fastio_ring_unmap(fastio_ring *r) {
    if (r->sqes != NULL && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_len);
    if (r->cq_map != NULL && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_len);
    if (r->sq_map != NULL && r->sq_map != MAP_FAILED)
        munmap(r->sq_map, r->sq_map_len);
    if (r->br_mem != NULL)
        munmap(r->br_mem, (size_t)r->br_entries * r->br_size);
    if (r->br != NULL)
        munmap(r->br, r->br_map_len);
    r->sqes = NULL;
    r->cq_map = r->sq_map = NULL;
    r->br_mem = NULL;
    r->br = NULL;
}

/* Release the ring (closing its fd cancels and reaps every op in flight). */
static inline void fastio_ring_close(fastio_ring *r) {
    fastio_ring_unmap(r);
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

/* Create a ring of `entries` SQEs (CQ four times that), trying the setup
 * flags best first. Return 0, or an errno (ENOSYS, EPERM, ...). */
static inline int fastio_ring_init(fastio_ring *r, unsigned entries, int best_mode) {
    static const unsigned modes[3][2] = {
        {FASTIO_URING_DEFER_TASKRUN, FASTIO_SETUP_SINGLE_ISSUER | FASTIO_SETUP_DEFER_TASKRUN},
        {FASTIO_URING_COOP_TASKRUN, FASTIO_SETUP_COOP_TASKRUN},
        {FASTIO_URING_PLAIN, 0},
    };
    struct fastio_uring_params p;
    int i, fd = -1, err = ENOSYS;
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    fastio_watch_forks();
    r->forks = &fastio_forks;
    r->forks_at_setup = fastio_forks;
    for (i = 0; i < 3; i++) {
        if ((int)modes[i][0] > best_mode)
            continue;
        memset(&p, 0, sizeof(p));
        p.flags = modes[i][1] | FASTIO_SETUP_CQSIZE | FASTIO_SETUP_SUBMIT_ALL;
        p.cq_entries = entries * 4;
        fd = fastio_sys_uring_setup(entries, &p);
        if (fd >= 0) {
            r->mode = (int)modes[i][0];
            break;
        }
        err = errno;
        if (err != EINVAL)
            return err;   /* ENOSYS, EPERM, EMFILE, ENOMEM: no point retrying */
    }
    if (fd < 0)
        return err;
    r->fd = fd;
    r->features = p.features;
    if (!(p.features & FASTIO_FEAT_SINGLE_MMAP) || !(p.features & FASTIO_FEAT_EXT_ARG)) {
        fastio_ring_close(r);
        return ENOSYS;   /* before 5.11: too old for fastio's use */
    }
    r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct fastio_uring_cqe);
    if (r->cq_map_len > r->sq_map_len)
        r->sq_map_len = r->cq_map_len;
    r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                     FASTIO_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) {
        err = errno;
        r->sq_map = NULL;
        fastio_ring_close(r);
        return err;
    }
    r->cq_map = r->sq_map;
    r->cq_map_len = r->sq_map_len;
    r->sqes_len = p.sq_entries * sizeof(struct fastio_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                   FASTIO_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        err = errno;
        r->sqes = NULL;
        fastio_ring_close(r);
        return err;
    }
    {
        char *sq = (char *)r->sq_map, *cq = (char *)r->cq_map;
        unsigned k;
        r->sq_head = (unsigned *)(sq + p.sq_off.head);
        r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
        r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
        r->sq_array = (unsigned *)(sq + p.sq_off.array);
        r->sq_entries = p.sq_entries;
        r->cq_head = (unsigned *)(cq + p.cq_off.head);
        r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
        r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
        r->cqes = (struct fastio_uring_cqe *)(cq + p.cq_off.cqes);
        r->cq_entries = p.cq_entries;
        /* The indirection array maps SQ slots to SQEs one to one, once. */
        for (k = 0; k < p.sq_entries; k++)
            r->sq_array[k] = k;
        r->sq_local_tail = *r->sq_tail;
        r->sq_submitted = r->sq_local_tail;
    }
    return 0;
}

/* Return whether the kernel supports opcode `op` (IORING_REGISTER_PROBE, 5.6). */
static inline int fastio_ring_probe(fastio_ring *r, unsigned op) {
    struct fastio_uring_probe probe;
    memset(&probe, 0, sizeof(probe));
    if (fastio_sys_uring_register(r->fd, FASTIO_REGISTER_PROBE, &probe, 256) < 0)
        return 0;
    return op <= probe.last_op && op < probe.ops_len && (probe.ops[op].flags & FASTIO_OP_SUPPORTED);
}

/* Register buffer group 0: `entries` (a power of two) buffers of `size`
 * bytes, all handed to the kernel. With `incremental`, ask for incremental
 * consumption (6.12: a receive takes only the bytes it needs from a buffer,
 * and CQE_F_BUF_MORE says the kernel goes on filling it after them), and
 * register without it on older kernels; `br_inc` says which. Return 0 or an
 * errno. */
static inline int fastio_ring_setup_buffers_inc(fastio_ring *r, unsigned entries, unsigned size,
                                                int incremental) {
    struct fastio_uring_buf_reg reg;
    unsigned i;
    int err;
    r->br_map_len = entries * sizeof(struct fastio_uring_buf);
    r->br = (struct fastio_uring_buf *)mmap(NULL, r->br_map_len, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r->br == MAP_FAILED) {
        r->br = NULL;
        return errno;
    }
    r->br_mem = (char *)mmap(NULL, (size_t)entries * size, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r->br_mem == MAP_FAILED) {
        r->br_mem = NULL;
        return errno;
    }
    r->br_entries = entries;
    r->br_size = size;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)r->br;
    reg.ring_entries = entries;
    reg.bgid = 0;
    reg.flags = incremental ? FASTIO_PBUF_RING_INC : 0;
    r->br_inc = incremental;
    if (fastio_sys_uring_register(r->fd, FASTIO_REGISTER_PBUF_RING, &reg, 1) < 0) {
        err = errno;
        if (err != EINVAL || !incremental)
            return err;
        reg.flags = 0;
        r->br_inc = 0;
        if (fastio_sys_uring_register(r->fd, FASTIO_REGISTER_PBUF_RING, &reg, 1) < 0)
            return errno;
    }
    r->br_tail = 0;
    for (i = 0; i < entries; i++) {
        struct fastio_uring_buf *b = &r->br[i];
        b->addr = (uint64_t)(uintptr_t)(r->br_mem + (size_t)i * size);
        b->len = size;
        b->bid = (uint16_t)i;
        r->br_tail++;
    }
    /* The tail overlays entry 0's resv field: write it after entry 0's
     * other fields, with a release store so the kernel sees the entries. */
    fastio_store_release((uint16_t *)&r->br[0].resv, (uint16_t)r->br_tail);
    return 0;
}

static inline int fastio_ring_setup_buffers(fastio_ring *r, unsigned entries, unsigned size) {
    return fastio_ring_setup_buffers_inc(r, entries, size, 0);
}

/* Return buffer `bid` to the kernel; published at the next recycle_flush. */
static inline void fastio_ring_recycle(fastio_ring *r, unsigned bid) {
    struct fastio_uring_buf *b;
    if (fastio_ring_inherited(r))
        return;
    b = &r->br[r->br_tail & (r->br_entries - 1)];
    b->addr = (uint64_t)(uintptr_t)(r->br_mem + (size_t)bid * r->br_size);
    b->len = r->br_size;
    b->bid = (uint16_t)bid;
    r->br_tail++;
}

static inline void fastio_ring_recycle_flush(fastio_ring *r) {
    if (fastio_ring_inherited(r))
        return;
    fastio_store_release((uint16_t *)&r->br[0].resv, (uint16_t)r->br_tail);
}

static inline char *fastio_ring_buffer(fastio_ring *r, unsigned bid) {
    return r->br_mem + (size_t)bid * r->br_size;
}

/* Registered files. A sparse table with slot i for fd i lets an SQE name a
 * socket by its fd number with FASTIO_SQE_FIXED_FILE: the kernel then takes
 * the file from the table instead of looking the fd up and counting a
 * reference per operation. The table holds its own reference, so a slot must
 * be emptied before its fd is closed, or the socket outlives close(). For
 * fds a ring's owner keeps to itself: a user's socket closed behind the
 * ring's back would go on working through its slot.
 *
 * Set up a table of min(RLIMIT_NOFILE, FASTIO_MAX_FILES) empty slots (5.19+);
 * return 0 or an errno, with r->files left 0: then ops use plain fds. */
static inline int fastio_ring_setup_files(fastio_ring *r) {
    struct fastio_uring_rsrc_register reg;
    struct rlimit rl;
    unsigned n = FASTIO_MAX_FILES;
    r->files = 0;
    if (fastio_uring_fake_files_errno)
        return fastio_uring_fake_files_errno;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < n)
        n = (unsigned)rl.rlim_cur;
    if (n == 0)
        return EMFILE;
    memset(&reg, 0, sizeof(reg));
    reg.nr = n;
    reg.flags = FASTIO_RSRC_REGISTER_SPARSE;
    if (fastio_sys_uring_register(r->fd, FASTIO_REGISTER_FILES2, &reg, sizeof(reg)) < 0)
        return errno;
    r->files = n;
    return 0;
}

/* IORING_REGISTER_SYNC_CANCEL's argument (struct io_uring_sync_cancel_reg). */
struct fastio_uring_sync_cancel_reg {
    uint64_t addr;
    int32_t fd;
    uint32_t flags;
    struct fastio_kernel_timespec timeout;
    uint8_t opcode;
    uint8_t pad[7];
    uint64_t pad2[3];
};

/* IORING_REGISTER_SYNC_CANCEL (6.0) of the ops `ud` and `flags` match, as
 * an async cancel SQE's addr and op_flags would: the kernel has stopped them
 * when this returns, and their last CQEs are posted as an async cancel's
 * would be. Return 0 or an errno: ENOENT when the kernel has no such op
 * (done already, or its SQE is not submitted yet), EINVAL where the kernel
 * has no such call, EEXIST from a thread a single-issuer ring does not
 * serve, EBADF in a forked child. */
static inline int fastio_ring_sync_cancel(fastio_ring *r, uint64_t ud, uint32_t flags) {
    struct fastio_uring_sync_cancel_reg reg;
    if (fastio_ring_inherited(r))
        return EBADF;
    memset(&reg, 0, sizeof(reg));
    reg.addr = ud;
    reg.fd = -1;
    reg.flags = flags;
    reg.timeout.tv_sec = -1;   /* no time limit: wait for an op mid-run */
    reg.timeout.tv_nsec = -1;
    if (fastio_sys_uring_register(r->fd, FASTIO_REGISTER_SYNC_CANCEL, &reg, 1) < 0)
        return errno;
    return 0;
}

/* Cancel the op whose user_data is `ud` now, without an SQE (see above). */
static inline int fastio_ring_cancel_now(fastio_ring *r, uint64_t ud) {
    return fastio_ring_sync_cancel(r, ud, 0);
}

/* Set slot `fd` to `file` (`fd` itself, or -1 to empty it); return whether
 * the kernel took it. No-op (0) without a table, past it, or in a forked
 * child (the table is the parent's). */
static inline int fastio_ring_file_slot(fastio_ring *r, int fd, int32_t file) {
    struct fastio_uring_files_update up;
    if (fd < 0 || (unsigned)fd >= r->files || fastio_ring_inherited(r))
        return 0;
    memset(&up, 0, sizeof(up));
    up.offset = (uint32_t)fd;
    up.fds = (uint64_t)(uintptr_t)&file;
    return fastio_sys_uring_register(r->fd, FASTIO_REGISTER_FILES_UPDATE, &up, 1) == 1;
}

/* Put `fd` in its slot; return 1 if its ops may use FASTIO_SQE_FIXED_FILE,
 * 0 if they use the plain fd (no table, fd beyond it, or the kernel said no). */
static inline int fastio_ring_file_add(fastio_ring *r, int fd) {
    return fastio_ring_file_slot(r, fd, fd);
}

/* Empty `fd`'s slot, filled by fastio_ring_file_add; before close(fd). */
static inline void fastio_ring_file_remove(fastio_ring *r, int fd) {
    (void)fastio_ring_file_slot(r, fd, -1);
}

/* Name `fd` in `sqe`: by its slot when `fixed`, else by number. */
static inline void fastio_sqe_set_fd(struct fastio_uring_sqe *sqe, int fd, int fixed) {
    sqe->fd = fd;
    if (fixed)
        sqe->flags |= FASTIO_SQE_FIXED_FILE;
}

/* Return a zeroed SQE to fill, or NULL when the SQ is full (submit first). */
static inline struct fastio_uring_sqe *fastio_ring_get_sqe(fastio_ring *r) {
    unsigned head;
    struct fastio_uring_sqe *sqe;
    if (fastio_ring_inherited(r))
        return NULL;
    head = fastio_load_acquire(r->sq_head);
    if (r->sq_local_tail - head >= r->sq_entries)
        return NULL;
    sqe = &r->sqes[r->sq_local_tail & *r->sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    r->sq_local_tail++;
    return sqe;
}

/* Publish the queued SQEs to the kernel; return how many to submit.
 * Separate from fastio_ring_submit_wait so a caller can publish while it
 * holds the lock that serialises SQE writers (the GIL), then wait without. */
static inline unsigned fastio_ring_publish(fastio_ring *r) {
    if (fastio_ring_inherited(r))
        return 0;
    fastio_store_release(r->sq_tail, r->sq_local_tail);
    return r->sq_local_tail - __atomic_load_n(&r->sq_submitted, __ATOMIC_RELAXED);
}

/* The position of the SQE fastio_ring_get_sqe returned last. */
static inline unsigned fastio_ring_last_sqe_pos(const fastio_ring *r) {
    return r->sq_local_tail - 1;
}

/* Whether the SQE at position `pos` is still unseen by the kernel, so its
 * fields may still change. Only on a thread that holds the lock
 * serialising SQE writers (the GIL) and is not inside its own wait. */
static inline int fastio_ring_sqe_unsubmitted(const fastio_ring *r, unsigned pos) {
    unsigned done = __atomic_load_n(&r->sq_submitted, __ATOMIC_RELAXED);
    return (unsigned)(pos - done) < (unsigned)(r->sq_local_tail - done);
}

/* Submit `to_submit` published SQEs; with `wait`, also wait for one
 * completion or until `timeout_ns` (< 0: no limit) passes. Return 0 or an
 * errno (EINTR, ETIME and EAGAIN/EBUSY are for the caller to treat as
 * "look again").
 *
 * A zero timeout asks for no completion at all (GETEVENTS with
 * min_complete 0): the kernel runs the ring's task work, which posts what
 * has completed, and returns at once. Asked for one completion with a zero
 * timespec, it would arm an hrtimer and sleep on it when none is there
 * yet: about 20 us per call on 6.18, paid by every loop iteration that has
 * callbacks ready. */
static inline int fastio_ring_submit_wait(fastio_ring *r, unsigned to_submit, int wait,
                                          long long timeout_ns) {
    struct fastio_uring_getevents_arg arg;
    struct fastio_kernel_timespec ts;
    unsigned flags = 0;
    int ret;
    if (fastio_ring_inherited(r))
        return EBADF;
    memset(&arg, 0, sizeof(arg));
    if (wait) {
        flags |= FASTIO_ENTER_GETEVENTS | FASTIO_ENTER_EXT_ARG;
        if (timeout_ns > 0) {
            ts.tv_sec = timeout_ns / 1000000000LL;
            ts.tv_nsec = timeout_ns % 1000000000LL;
            arg.ts = (uint64_t)(uintptr_t)&ts;
        }
    } else if (r->mode == FASTIO_URING_DEFER_TASKRUN) {
        /* Deferred completions run only inside GETEVENTS. */
        flags |= FASTIO_ENTER_GETEVENTS | FASTIO_ENTER_EXT_ARG;
    } else if (to_submit == 0) {
        return 0;
    }
    ret = fastio_sys_uring_enter(r->fd, to_submit, wait && timeout_ns != 0 ? 1 : 0, flags,
                                 (flags & FASTIO_ENTER_EXT_ARG) ? &arg : NULL,
                                 (flags & FASTIO_ENTER_EXT_ARG) ? sizeof(arg) : 0);
    if (ret < 0)
        return errno;
    /* Atomic: a write from a thread other than the loop's submits while
     * the loop's wait may be in the kernel without the GIL; the kernel
     * serialises the two and each counts what it took. */
    __atomic_add_fetch(&r->sq_submitted, (unsigned)ret, __ATOMIC_RELAXED);
    return 0;
}

/* Submit what is queued; with `wait`, also wait (see fastio_ring_submit_wait). */
static inline int fastio_ring_enter(fastio_ring *r, int wait, long long timeout_ns) {
    return fastio_ring_submit_wait(r, fastio_ring_publish(r), wait, timeout_ns);
}

/* Return the next CQE or NULL; advance past it with fastio_ring_cq_advance. */
static inline struct fastio_uring_cqe *fastio_ring_peek(fastio_ring *r, unsigned *head) {
    unsigned tail;
    if (fastio_ring_inherited(r))
        return NULL;
    tail = fastio_load_acquire(r->cq_tail);
    if (*head == tail)
        return NULL;
    return &r->cqes[(*head)++ & *r->cq_mask];
}

static inline unsigned fastio_ring_cq_head(fastio_ring *r) {
    return *r->cq_head;
}

static inline void fastio_ring_cq_advance(fastio_ring *r, unsigned head) {
    if (fastio_ring_inherited(r))
        return;
    fastio_store_release(r->cq_head, head);
}


#define FASTIO_ASYNC_CANCEL_ANY (1U << 2)

/* Drop what the CQ holds; return how many. */
static inline int fastio_ring_cq_drop(fastio_ring *r) {
    unsigned head = *r->cq_head;
    int got = 0;
    while (fastio_load_acquire(r->cq_tail) != head) {
        head++;
        got++;
    }
    fastio_store_release(r->cq_head, head);
    return got;
}

/* Cancel every operation in flight and reap until the kernel is done with
 * them. A cancelled poll or recv completes through task work queued on the
 * thread that submitted it; left to the ring's close, that work would
 * interrupt the thread's next blocking syscall with a spurious EINTR.
 *
 * From 6.0 the cancel is synchronous (IORING_REGISTER_SYNC_CANCEL): every
 * op has stopped when it returns, and entering with nothing asked for runs
 * the task work that posts their completions, with no wait. Before, an
 * async cancel is reaped until a 1 ms wait brings nothing new: a closed
 * loop cost at least that. */
static inline void fastio_ring_cancel_all(fastio_ring *r) {
    struct fastio_uring_sqe *sqe;
    int i, err, got;
    if (fastio_ring_inherited(r))
        return;   /* the parent's operations: not this process's to cancel */
    err = fastio_ring_sync_cancel(r, 0, FASTIO_ASYNC_CANCEL_ANY);
    if (err == 0 || err == ENOENT) {
        for (i = 0; i < 64; i++) {
            err = fastio_ring_enter(r, 1, 0);
            got = fastio_ring_cq_drop(r);
            if (!got && err != EINTR && err != EAGAIN && err != EBUSY)
                return;
        }
        return;
    }
    sqe = fastio_ring_get_sqe(r);
    if (sqe == NULL) {
        (void)fastio_ring_enter(r, 0, -1);
        sqe = fastio_ring_get_sqe(r);
        if (sqe == NULL)
            return;
    }
    sqe->opcode = FASTIO_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->op_flags = FASTIO_ASYNC_CANCEL_ANY;
    sqe->user_data = 0;
    for (i = 0; i < 64; i++) {
        err = fastio_ring_enter(r, 1, 1000000LL);
        got = fastio_ring_cq_drop(r);
        if (!got && err == ETIME)
            break;
        if (err && err != ETIME && err != EINTR && err != EAGAIN && err != EBUSY)
            break;
    }
}

/* ---- small socket and pipe helpers (stubs elsewhere) ---- */

static inline int fastio_uring_close_fd(int fd) { return close(fd); }

static inline int fastio_uring_shutdown_wr(int fd) { return shutdown(fd, SHUT_WR); }

static inline void fastio_uring_nodelay(int fd) {
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Empty a non-blocking pipe; a wake-up only needs the readiness. */
static inline void fastio_uring_drain(int fd) {
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

static inline void fastio_uring_poke(int fd) {
    char b = 0;
    (void)!write(fd, &b, 1);
}

#else  /* !FASTIO_HAVE_URING: every entry point reports ENOSYS */

static inline void fastio_ring_close(fastio_ring *r) { r->fd = -1; }
static inline int fastio_ring_inherited(const fastio_ring *r) { (void)r; return 0; }
static inline int fastio_fd_poll_error(int fd) { (void)fd; return ENOSYS; }
static inline int fastio_ring_init(fastio_ring *r, unsigned entries, int best_mode) {
    (void)entries; (void)best_mode;
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    return ENOSYS;
}
static inline int fastio_ring_probe(fastio_ring *r, unsigned op) { (void)r; (void)op; return 0; }
static inline int fastio_ring_setup_buffers(fastio_ring *r, unsigned n, unsigned s) {
    (void)r; (void)n; (void)s;
    return ENOSYS;
}
static inline int fastio_ring_setup_buffers_inc(fastio_ring *r, unsigned n, unsigned s, int inc) {
    (void)r; (void)n; (void)s; (void)inc;
    return ENOSYS;
}
static inline void fastio_ring_recycle(fastio_ring *r, unsigned bid) { (void)r; (void)bid; }
static inline void fastio_ring_recycle_flush(fastio_ring *r) { (void)r; }
static inline char *fastio_ring_buffer(fastio_ring *r, unsigned bid) { (void)r; (void)bid; return NULL; }
static inline int fastio_ring_setup_files(fastio_ring *r) { r->files = 0; return ENOSYS; }
static inline int fastio_ring_file_add(fastio_ring *r, int fd) { (void)r; (void)fd; return 0; }
static inline void fastio_ring_file_remove(fastio_ring *r, int fd) { (void)r; (void)fd; }
static inline void fastio_sqe_set_fd(struct fastio_uring_sqe *sqe, int fd, int fixed) {
    (void)sqe; (void)fd; (void)fixed;
}
static inline struct fastio_uring_sqe *fastio_ring_get_sqe(fastio_ring *r) { (void)r; return NULL; }
static inline int fastio_ring_enter(fastio_ring *r, int wait, long long t) {
    (void)r; (void)wait; (void)t;
    return ENOSYS;
}
static inline unsigned fastio_ring_publish(fastio_ring *r) { (void)r; return 0; }
static inline unsigned fastio_ring_last_sqe_pos(const fastio_ring *r) { (void)r; return 0; }
static inline int fastio_ring_sqe_unsubmitted(const fastio_ring *r, unsigned p) { (void)r; (void)p; return 0; }
static inline int fastio_ring_submit_wait(fastio_ring *r, unsigned n, int wait, long long t) {
    (void)r; (void)n; (void)wait; (void)t;
    return ENOSYS;
}
static inline struct fastio_uring_cqe *fastio_ring_peek(fastio_ring *r, unsigned *head) {
    (void)r; (void)head;
    return NULL;
}
static inline unsigned fastio_ring_cq_head(fastio_ring *r) { (void)r; return 0; }
static inline void fastio_ring_cq_advance(fastio_ring *r, unsigned head) { (void)r; (void)head; }

static inline void fastio_ring_cancel_all(fastio_ring *r) { (void)r; }
static inline int fastio_uring_close_fd(int fd) { (void)fd; return -1; }
static inline int fastio_uring_shutdown_wr(int fd) { (void)fd; return -1; }
static inline void fastio_uring_nodelay(int fd) { (void)fd; }
static inline void fastio_uring_drain(int fd) { (void)fd; }
static inline void fastio_uring_poke(int fd) { (void)fd; }

#endif

/* ---- the loop's ring: readiness polls and transport completions ----
 *
 * fastio._impl.core_c.UringPoller owns one of these; fastio._impl.loop_c's completion
 * transports reach it through a capsule (UringPoller._hub_capsule). The
 * poller reaps the CQ: poll completions become readiness events, every other
 * completion is copied to `done` for the loop to handle after the wait.
 * user_data's low 8 bits say whose completion it is (FASTIO_UD_*). */

#define FASTIO_UD_POLL 16          /* a readiness poll: fd << 8 | gen << 40 */
#define FASTIO_UD_IGNORE 17        /* a poll removal or a cancellation */
#define FASTIO_UD_RECV 18          /* a transport's recv: slot << 8 | gen << 40 */
#define FASTIO_UD_SEND 19          /* a transport's send */

typedef struct fastio_uring_hub {
    fastio_ring ring;
    int has_buffers;
    struct fastio_uring_cqe *done;
    size_t ndone, capdone;
    /* Waits so far: the completions one wait brings share its number. */
    unsigned long turn;
} fastio_uring_hub;

/* Keep a completion for the loop; return 0 or ENOMEM. */
static inline int fastio_hub_push(fastio_uring_hub *h, const struct fastio_uring_cqe *cqe) {
    if (h->ndone == h->capdone) {
        size_t cap = h->capdone ? h->capdone * 2 : 256;
        struct fastio_uring_cqe *p = (struct fastio_uring_cqe *)realloc(h->done, cap * sizeof(*p));
        if (p == NULL)
            return ENOMEM;
        h->done = p;
        h->capdone = cap;
    }
    h->done[h->ndone++] = *cqe;
    return 0;
}

#endif /* FASTIO_URING_H */
