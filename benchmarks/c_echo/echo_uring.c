/* Minimal io_uring echo server: the completion-based reference for the io_uring benchmark.
 *
 *   echo_uring [--host ADDR] [--port P] [--upper]
 *
 * The design of fastio's io_uring echo server (src/uring_echo.pxi) in plain
 * C, on the same raw-syscall ring (src/fastio_uring.h, no liburing), so the
 * benchmark can tell what fastio adds from what io_uring itself costs:
 * SINGLE_ISSUER|DEFER_TASKRUN, multishot accept, one multishot recv per
 * connection into a ring of provided buffers (128 x 64 KiB), the sockets in
 * the ring's registered-file table where the kernel has one, each reply sent
 * straight from the buffer it arrived in and that buffer handed back at the
 * send's completion, one io_uring_enter per loop turn that both submits and
 * waits. A chunk arriving while the connection's send is in flight is copied
 * to its pending buffer, sent next; above 64 KiB pending the recv is
 * cancelled and rearmed once the pending bytes are out, so a client that
 * never reads costs bounded memory (as in echo_epoll.c). A short send is
 * resubmitted from where it stopped. Prints READY once listening;
 * SIGTERM/SIGINT interrupt the wait (no SA_RESTART) and end the loop. Exits
 * with status 1 if io_uring is unavailable.
 *
 * Build: cc -O2 -I src -o echo_uring benchmarks/c_echo/echo_uring.c
 */
#define _GNU_SOURCE
#include "fastio_uring.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>

#define FASTIO_NBUFS 128
#define FASTIO_BUFSIZE 65536
#define FASTIO_HIGH_WATER 65536
#define FASTIO_LOW_WATER (FASTIO_HIGH_WATER / 4)

/* user_data: kind (8 bits) | fd (32 bits) | generation (24 bits); kind 0 is ignored. */
enum { FASTIO_K_ACCEPT = 1, FASTIO_K_RECV = 2, FASTIO_K_SEND = 3 };
enum { FASTIO_R_OFF, FASTIO_R_ARMED, FASTIO_R_CANCELLING };

struct fastio_uconn {
    unsigned gen;
    int live, recv, busy;
    int eof;      /* the recv is over for good: EOF, or an error (then `failed`) */
    int failed;   /* drop what is owed and close */
    int fixed;    /* ops name the socket by its registered-file slot */
    int bid;      /* the provided buffer the send in flight is from, or -1 */
    char *sptr;   /* the send in flight: sptr[soff:slen] */
    size_t slen, soff;
    char *sbuf, *pbuf; /* own buffers: a reply sent from a copy; bytes waiting */
    size_t scap, plen, pcap;
};

static fastio_ring fastio_r;
static struct fastio_uconn *fastio_conns;
static size_t fastio_nconns;
static int fastio_upper;
static volatile sig_atomic_t fastio_stop;

static void fastio_on_signal(int signum) { (void)signum; fastio_stop = 1; }

static uint64_t fastio_ud(int kind, int fd, unsigned gen)
{
    return (uint64_t)kind | ((uint64_t)(uint32_t)fd << 8) | ((uint64_t)(gen & 0xffffff) << 40);
}

static struct fastio_uring_sqe *fastio_sqe(void)
{
    struct fastio_uring_sqe *sqe = fastio_ring_get_sqe(&fastio_r);
    if (sqe == NULL) { /* SQ full: submit what is queued, without waiting */
        (void)fastio_ring_enter(&fastio_r, 0, -1);
        sqe = fastio_ring_get_sqe(&fastio_r);
        if (sqe == NULL) {
            fprintf(stderr, "echo_uring: submission queue stays full\n");
            exit(1);
        }
    }
    return sqe;
}

static void fastio_arm_accept(int listener)
{
    struct fastio_uring_sqe *sqe = fastio_sqe();
    sqe->opcode = FASTIO_OP_ACCEPT;
    sqe->fd = listener;
    sqe->op_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
    sqe->ioprio = FASTIO_ACCEPT_MULTISHOT;
    sqe->user_data = fastio_ud(FASTIO_K_ACCEPT, 0, 0);
}

static void fastio_arm_recv(int fd, struct fastio_uconn *c)
{
    struct fastio_uring_sqe *sqe = fastio_sqe();
    sqe->opcode = FASTIO_OP_RECV;
    sqe->ioprio = FASTIO_RECV_MULTISHOT;
    sqe->flags = FASTIO_SQE_BUFFER_SELECT;
    fastio_sqe_set_fd(sqe, fd, c->fixed);
    sqe->buf_group = 0;
    sqe->user_data = fastio_ud(FASTIO_K_RECV, fd, c->gen);
    c->recv = FASTIO_R_ARMED;
}

static void fastio_cancel_recv(int fd, struct fastio_uconn *c)
{
    struct fastio_uring_sqe *sqe = fastio_sqe();
    sqe->opcode = FASTIO_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = fastio_ud(FASTIO_K_RECV, fd, c->gen);
    sqe->user_data = 0;
    c->recv = FASTIO_R_CANCELLING;
}

static void fastio_send(int fd, struct fastio_uconn *c)
{
    struct fastio_uring_sqe *sqe = fastio_sqe();
    sqe->opcode = FASTIO_OP_SEND;
    fastio_sqe_set_fd(sqe, fd, c->fixed);
    sqe->addr = (uint64_t)(uintptr_t)(c->sptr + c->soff);
    sqe->len = (uint32_t)(c->slen - c->soff);
    sqe->op_flags = MSG_NOSIGNAL;
    sqe->user_data = fastio_ud(FASTIO_K_SEND, fd, c->gen);
    c->busy = 1;
}

static void fastio_copy(char *dst, const char *src, size_t n)
{
    if (!fastio_upper) {
        memcpy(dst, src, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i] >= 'a' && src[i] <= 'z' ? src[i] - ('a' - 'A') : src[i];
}

static int fastio_reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    char *p = realloc(*buf, n);
    if (p == NULL)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static void fastio_release_buffer(struct fastio_uconn *c)
{
    if (c->bid >= 0)
        fastio_ring_recycle(&fastio_r, (unsigned)c->bid);
    c->bid = -1;
    c->slen = c->soff = 0;
}

/* Move connection `fd` on: send what waits, rearm its recv, or close it. */
static void fastio_update(int fd, struct fastio_uconn *c)
{
    if (c->failed)
        c->plen = 0;
    if (!c->busy && c->plen) { /* the waiting bytes go out; the sent buffer collects */
        char *t = c->sbuf;
        size_t tcap = c->scap;
        c->sbuf = c->pbuf;
        c->scap = c->pcap;
        c->sptr = c->sbuf;
        c->slen = c->plen;
        c->soff = 0;
        c->pbuf = t;
        c->pcap = tcap;
        c->plen = 0;
        fastio_send(fd, c);
    }
    if (c->eof) {
        if (!c->busy && !c->plen && c->recv == FASTIO_R_OFF) {
            if (c->fixed)
                fastio_ring_file_remove(&fastio_r, fd); /* else the table keeps the socket open */
            c->fixed = 0;
            close(fd);
            c->live = 0;
        } else if (c->failed && c->recv == FASTIO_R_ARMED) {
            fastio_cancel_recv(fd, c);
        }
        return;
    }
    if (c->recv == FASTIO_R_OFF && c->plen <= FASTIO_LOW_WATER)
        fastio_arm_recv(fd, c);
}

static void fastio_on_accept(int listener, int res, unsigned flags)
{
    if (!(flags & FASTIO_CQE_F_MORE))
        fastio_arm_accept(listener);
    if (res < 0)
        return; /* EMFILE and friends: retried by the rearmed accept, as echo_epoll.c retries */
    if ((size_t)res >= fastio_nconns) {
        size_t n = fastio_nconns ? fastio_nconns : 1024;
        while (n <= (size_t)res)
            n *= 2;
        struct fastio_uconn *p = realloc(fastio_conns, n * sizeof *p);
        if (p == NULL) {
            close(res);
            return;
        }
        memset(p + fastio_nconns, 0, (n - fastio_nconns) * sizeof *p);
        fastio_conns = p;
        fastio_nconns = n;
    }
    struct fastio_uconn *c = &fastio_conns[res];
    int one = 1;
    setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->gen++;
    c->live = 1;
    c->busy = c->eof = c->failed = 0;
    c->recv = FASTIO_R_OFF;
    c->bid = -1;
    c->slen = c->soff = c->plen = 0;
    c->fixed = fastio_ring_file_add(&fastio_r, res);
    fastio_arm_recv(res, c);
}

static struct fastio_uconn *fastio_lookup(int fd, unsigned gen)
{
    if (fd < 0 || (size_t)fd >= fastio_nconns)
        return NULL;
    struct fastio_uconn *c = &fastio_conns[fd];
    return c->live && (c->gen & 0xffffff) == gen ? c : NULL;
}

static void fastio_on_recv(int fd, unsigned gen, int res, unsigned flags)
{
    struct fastio_uconn *c = fastio_lookup(fd, gen);
    if (flags & FASTIO_CQE_F_BUFFER) {
        unsigned bid = flags >> FASTIO_CQE_BUFFER_SHIFT;
        char *data = fastio_ring_buffer(&fastio_r, bid);
        if (c != NULL && res > 0 && !c->failed && !c->busy && !c->plen) {
            /* Nothing owed: reply from the buffer itself. */
            if (fastio_upper)
                fastio_copy(data, data, (size_t)res);
            c->bid = (int)bid;
            c->sptr = data;
            c->slen = (size_t)res;
            c->soff = 0;
            fastio_send(fd, c);
        } else {
            if (c != NULL && res > 0 && !c->failed) {
                if (fastio_reserve(&c->pbuf, &c->pcap, c->plen + (size_t)res) < 0) {
                    c->failed = c->eof = 1;
                } else {
                    fastio_copy(c->pbuf + c->plen, data, (size_t)res);
                    c->plen += (size_t)res;
                }
            }
            fastio_ring_recycle(&fastio_r, bid);
        }
    }
    if (c == NULL)
        return;
    if (!(flags & FASTIO_CQE_F_MORE)) {
        c->recv = FASTIO_R_OFF;
        if (res == 0)
            c->eof = 1;
        else if (res < 0 && res != -ENOBUFS && res != -ECANCELED)
            c->failed = c->eof = 1;
    } else if (c->recv == FASTIO_R_ARMED && c->plen > FASTIO_HIGH_WATER) {
        fastio_cancel_recv(fd, c); /* the client reads slower than it sends */
    }
    fastio_update(fd, c);
}

static void fastio_on_send(int fd, unsigned gen, int res)
{
    struct fastio_uconn *c = fastio_lookup(fd, gen);
    if (c == NULL)
        return;
    c->busy = 0;
    if (res < 0) {
        c->failed = c->eof = 1;
        fastio_release_buffer(c);
    } else {
        c->soff += (size_t)res;
        if (c->soff < c->slen) {
            fastio_send(fd, c); /* the rest of a short send */
            return;
        }
        fastio_release_buffer(c);
    }
    fastio_update(fd, c);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 10000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--upper"))
            fastio_upper = 1;
        else if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc)
            host = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--host ADDR] [--port P] [--upper]\n", argv[0]);
            return 2;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fastio_on_signal; /* no SA_RESTART: io_uring_enter returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int err = fastio_ring_init(&fastio_r, 1024, FASTIO_URING_DEFER_TASKRUN);
    if (!err && !fastio_ring_probe(&fastio_r, FASTIO_OP_SEND_ZC))
        err = EINVAL; /* before 6.0: no multishot recv */
    if (!err)
        err = fastio_ring_setup_buffers(&fastio_r, FASTIO_NBUFS, FASTIO_BUFSIZE);
    if (!err)
        (void)fastio_ring_setup_files(&fastio_r); /* without: plain fds */
    if (err) {
        fprintf(stderr, "echo_uring: io_uring unavailable: %s\n", strerror(err));
        return 1;
    }

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (listener < 0 || inet_pton(AF_INET, host, &addr.sin_addr) != 1
        || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 1024) < 0) {
        perror("echo_uring: listen");
        return 1;
    }
    fastio_arm_accept(listener);
    printf("READY\n");
    fflush(stdout);

    while (!fastio_stop) {
        fastio_ring_recycle_flush(&fastio_r);
        err = fastio_ring_enter(&fastio_r, 1, -1);
        if (err && err != EINTR && err != ETIME && err != EAGAIN && err != EBUSY) {
            fprintf(stderr, "echo_uring: io_uring_enter: %s\n", strerror(err));
            return 1;
        }
        unsigned head = fastio_ring_cq_head(&fastio_r);
        struct fastio_uring_cqe *cqe;
        while ((cqe = fastio_ring_peek(&fastio_r, &head)) != NULL) {
            uint64_t ud = cqe->user_data;
            int res = cqe->res;
            unsigned flags = cqe->flags;
            /* Consume the CQE first: a handler may submit, and a full SQ submits on the spot. */
            fastio_ring_cq_advance(&fastio_r, head);
            int fd = (int)((ud >> 8) & 0xffffffff);
            unsigned gen = (unsigned)(ud >> 40);
            switch (ud & 0xff) {
            case FASTIO_K_ACCEPT:
                fastio_on_accept(listener, res, flags);
                break;
            case FASTIO_K_RECV:
                fastio_on_recv(fd, gen, res, flags);
                break;
            case FASTIO_K_SEND:
                fastio_on_send(fd, gen, res);
                break;
            }
        }
    }
    fastio_ring_close(&fastio_r);
    close(listener);
    return 0;
}
