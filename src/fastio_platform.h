/*
 * fastio_platform.h: the syscalls under fastio's readiness core, one per
 * platform, behind one small set of fastio_* functions.
 *
 * Linux has epoll, poll, select and eventfd; other POSIX systems have poll,
 * select and pipes; Windows has winsock's select only. Where a syscall is
 * missing its wrapper fails with ENOSYS, so the Cython code compiles the same
 * everywhere and decides at run time (FASTIO_HAVE_* are exported as HAVE_*).
 *
 * Every descriptor is created with its flags set atomically (EPOLL_CLOEXEC,
 * EFD_CLOEXEC | EFD_NONBLOCK, pipe2 O_CLOEXEC | O_NONBLOCK): no fcntl() on
 * Linux, so wheels need nothing newer than glibc 2.17.
 */
#ifndef FASTIO_PLATFORM_H
#define FASTIO_PLATFORM_H

#if defined(_MSC_VER) && !defined(__cplusplus) && !defined(inline)
#  define inline __inline
#endif

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
/* FD_SETSIZE is raised by setup.py on the command line, before winsock2.h. */
#  include <winsock2.h>
#  define FASTIO_HAVE_EPOLL 0
#  define FASTIO_HAVE_POLL 0
#  define FASTIO_HAVE_EVENTFD 0
#  define FASTIO_WINSOCK 1
#else
#  include <fcntl.h>
#  include <poll.h>
#  include <sys/socket.h>
#  include <sys/select.h>
#  include <sys/time.h>
#  include <unistd.h>
#  define FASTIO_HAVE_POLL 1
#  define FASTIO_WINSOCK 0
#  ifdef __linux__
#    include <sys/epoll.h>
#    include <sys/eventfd.h>
#    define FASTIO_HAVE_EPOLL 1
#    define FASTIO_HAVE_EVENTFD 1
#  else
#    define FASTIO_HAVE_EPOLL 0
#    define FASTIO_HAVE_EVENTFD 0
#  endif
#endif

/* ---- event bits: Linux values; defined where the headers lack them ---- */
#ifndef POLLIN
#  define POLLIN 0x001
#  define POLLPRI 0x002
#  define POLLOUT 0x004
#  define POLLERR 0x008
#  define POLLHUP 0x010
#  define POLLNVAL 0x020
#endif
#ifndef POLLRDHUP
#  define POLLRDHUP 0 /* Linux only: a flag that asks for nothing elsewhere */
#endif
#if !FASTIO_HAVE_EPOLL
#  define EPOLLIN 0x001
#  define EPOLLPRI 0x002
#  define EPOLLOUT 0x004
#  define EPOLLERR 0x008
#  define EPOLLHUP 0x010
#  define EPOLLRDHUP 0x2000
#  define EPOLLEXCLUSIVE (1u << 28)
#  define EPOLLONESHOT (1u << 30)
#  define EPOLLET (1u << 31)
#  define EPOLL_CTL_ADD 1
#  define EPOLL_CTL_DEL 2
#  define EPOLL_CTL_MOD 3
#endif
#ifndef EPOLLEXCLUSIVE
#  define EPOLLEXCLUSIVE (1u << 28)
#endif

/* One ready descriptor, as every backend reports it. `gen` is epoll's
 * generation of the kernel entry that reported it (0 for poll and select). */
typedef struct {
    int fd;
    uint32_t events;
    uint32_t gen;
} fastio_event;

#if FASTIO_HAVE_POLL
typedef struct pollfd fastio_pollfd;
#else
typedef struct {
    int fd;
    short events;
    short revents;
} fastio_pollfd;
#endif

static inline int fastio_last_error(void)
{
#ifdef _WIN32
    int err = WSAGetLastError();
    return err == WSAEINTR ? EINTR : err;
#else
    return errno;
#endif
}

/* Monotonic clock in nanoseconds. */
static inline int64_t fastio_monotonic_ns(void)
{
#ifdef _WIN32
    static LARGE_INTEGER freq;
    LARGE_INTEGER now;
    if (freq.QuadPart == 0)
        QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (int64_t)((double)now.QuadPart * 1e9 / (double)freq.QuadPart);
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#endif
}

/* ---------------------------------------------------------------- epoll */
#if FASTIO_HAVE_EPOLL
static inline int fastio_epoll_create(void)
{
    return epoll_create1(EPOLL_CLOEXEC);
}

/* The kernel entry's data carries the fd and the generation the caller gave
 * it, so a report can be matched with the registration that asked for it. */
static inline int fastio_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint32_t gen)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = (uint64_t)(uint32_t)fd | ((uint64_t)gen << 32);
    return epoll_ctl(epfd, op, fd, &ev);
}

/* The in-place repack below needs this: each fastio_event is written at or
 * before the epoll_event it is read from. (12 bytes each on x86_64, where
 * epoll_event is packed; 12 and 16 elsewhere.) */
typedef char fastio_event_fits_epoll_event[
    sizeof(fastio_event) <= sizeof(struct epoll_event) ? 1 : -1];

/* Wait into `out`, reusing it as the kernel's buffer: epoll_event is at least
 * as large as fastio_event, so the in-place repack never overtakes its input. */
static inline int fastio_epoll_wait(int epfd, fastio_event *out, int maxevents, int timeout_ms)
{
    struct epoll_event *raw = (struct epoll_event *)out;
    int n = epoll_wait(epfd, raw, maxevents, timeout_ms);
    int i;
    for (i = 0; i < n; i++) {
        fastio_event e;
        uint64_t data = raw[i].data.u64;
        e.fd = (int)(uint32_t)data;
        e.events = raw[i].events;
        e.gen = (uint32_t)(data >> 32);
        out[i] = e;
    }
    return n;
}

/* Make `dst` name the file `src` names (closing what `dst` named), atomically. */
static inline int fastio_dup_onto(int src, int dst)
{
    return dup3(src, dst, O_CLOEXEC);
}
#define FASTIO_EPOLL_EVENT_SIZE sizeof(struct epoll_event)
#else
static inline int fastio_epoll_create(void) { errno = ENOSYS; return -1; }
static inline int fastio_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint32_t gen)
{
    (void)epfd; (void)op; (void)fd; (void)events; (void)gen;
    errno = ENOSYS;
    return -1;
}
static inline int fastio_dup_onto(int src, int dst)
{
    (void)src; (void)dst;
    errno = ENOSYS;
    return -1;
}
static inline int fastio_epoll_wait(int epfd, fastio_event *out, int maxevents, int timeout_ms)
{
    (void)epfd; (void)out; (void)maxevents; (void)timeout_ms;
    errno = ENOSYS;
    return -1;
}
#define FASTIO_EPOLL_EVENT_SIZE sizeof(fastio_event)
#endif

/* ----------------------------------------------------------------- poll */
static inline int fastio_poll(fastio_pollfd *fds, size_t n, int timeout_ms)
{
#if FASTIO_HAVE_POLL
    return poll(fds, (nfds_t)n, timeout_ms);
#else
    (void)fds; (void)n; (void)timeout_ms;
    errno = ENOSYS;
    return -1;
#endif
}

/* --------------------------------------------------------------- select */
/* Can `fd` be put in an fd_set? On POSIX an fd_set is a bitmap indexed by fd;
 * on Windows it is an array of FD_SETSIZE sockets, so any handle fits (the
 * count is checked separately). */
static inline int fastio_fd_fits_set(long long fd)
{
#if FASTIO_WINSOCK
    return fd >= 0;
#else
    return fd >= 0 && fd < FD_SETSIZE;
#endif
}

static inline int fastio_select(int maxfd, fd_set *r, fd_set *w, fd_set *x, int64_t timeout_us)
{
    struct timeval tv, *tvp = NULL;
    if (timeout_us >= 0) {
        tv.tv_sec = (long)(timeout_us / 1000000);
        tv.tv_usec = (long)(timeout_us % 1000000);
        tvp = &tv;
    }
#if FASTIO_WINSOCK
    {
        int n;
        (void)maxfd;
        /* winsock rejects three empty sets: sleep instead, as CPython does. */
        if (r->fd_count == 0 && w->fd_count == 0 && x->fd_count == 0) {
            Sleep(timeout_us < 0 ? INFINITE : (DWORD)((timeout_us + 999) / 1000));
            return 0;
        }
        n = select(0, r, w, x, tvp);
        return n == SOCKET_ERROR ? -1 : n;
    }
#else
    return select(maxfd, r, w, x, tvp);
#endif
}

/* ---------------------------------------------------------------- waker */
/* Open a waker: an eventfd (one fd, fds[0] == fds[1]) on Linux, a non-blocking
 * pipe elsewhere. Windows has neither; the caller falls back to a socketpair. */
static inline int fastio_waker_open(int fds[2])
{
#if FASTIO_HAVE_EVENTFD
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -1;
    fds[0] = fds[1] = fd;
    return 0;
#elif defined(_WIN32)
    (void)fds;
    errno = ENOSYS;
    return -1;
#elif defined(__APPLE__)
    /* macOS has no pipe2(): set the flags right after creation. */
    int i;
    if (pipe(fds) < 0)
        return -1;
    for (i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
    }
    return 0;
#else
    return pipe2(fds, O_CLOEXEC | O_NONBLOCK);
#endif
}

/* Make the waker readable. A full pipe / saturated eventfd already is. */
static inline int fastio_waker_write(int fd)
{
#ifdef _WIN32
    (void)fd;
    return 0;
#else
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(fd, &one, FASTIO_HAVE_EVENTFD ? sizeof(one) : 1);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN)
        return -1;
    return 0;
#endif
}

/* Consume every pending wake-up. Returns 1 if there was one, 0 if none. */
static inline int fastio_waker_drain(int fd)
{
#ifdef _WIN32
    (void)fd;
    return 0;
#else
    char buf[64];
    int woken = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
            woken = 1;
            if (FASTIO_HAVE_EVENTFD)
                return 1;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            return -1;
        return woken;
    }
#endif
}

/* ------------------------------------------------------- stream sockets */
/* recv()/send() on a non-blocking socket, EINTR retried. Return the byte
 * count, or -1 with fastio_last_error() set (EAGAIN: try again later).
 * MSG_NOSIGNAL: a peer that went away is EPIPE, never SIGPIPE. */
#ifndef MSG_NOSIGNAL
#  define MSG_NOSIGNAL 0
#endif

static inline long long fastio_recv(int fd, char *buf, size_t n)
{
#ifdef _WIN32
    int r = recv((SOCKET)fd, buf, (int)(n > INT_MAX ? INT_MAX : n), 0);
    return r == SOCKET_ERROR ? -1 : r;
#else
    ssize_t r;
    do {
        r = recv(fd, buf, n, 0);
    } while (r < 0 && errno == EINTR);
    return (long long)r;
#endif
}

static inline long long fastio_send(int fd, const char *buf, size_t n)
{
#ifdef _WIN32
    int r = send((SOCKET)fd, buf, (int)(n > INT_MAX ? INT_MAX : n), 0);
    return r == SOCKET_ERROR ? -1 : r;
#else
    ssize_t r;
    do {
        r = send(fd, buf, n, MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    return (long long)r;
#endif
}

/* Is `err` "would block"? */
static inline int fastio_would_block(int err)
{
#ifdef _WIN32
    return err == WSAEWOULDBLOCK;
#else
    return err == EAGAIN || err == EWOULDBLOCK;
#endif
}

static inline int fastio_close_fd(int fd)
{
#ifdef _WIN32
    return closesocket((SOCKET)fd);
#else
    return close(fd);
#endif
}

/* Atomic exchange for the waker's "pending" flag (free-threaded builds too). */
#if defined(_MSC_VER)
#  include <intrin.h>
static inline int fastio_atomic_exchange(volatile long *p, long v)
{
    return (int)_InterlockedExchange(p, v);
}
#else
static inline int fastio_atomic_exchange(volatile long *p, long v)
{
    return (int)__atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
#endif

#endif /* FASTIO_PLATFORM_H */
