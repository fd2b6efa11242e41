/* Minimal epoll echo server: the physical-limit reference for the echo benchmark.
 *
 *   echo_epoll [--host ADDR] [--port P] [--upper]
 *
 * Level-triggered epoll, non-blocking sockets, one read then one write per
 * readable event. A reply the kernel does not take whole stays in the
 * connection's buffer; the connection then waits for EPOLLOUT instead of
 * EPOLLIN, so a client that never reads costs at most one buffer (bounded
 * memory, as in fastio's server). Prints READY once listening; SIGTERM/SIGINT
 * interrupt epoll_wait (no SA_RESTART) and end the loop.
 *
 * Build: cc -O2 -o echo_epoll echo_epoll.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define FASTIO_BUFSIZE 65536
#define FASTIO_MAXEVENTS 256

struct fastio_conn {
    int fd;
    size_t off, len; /* unsent bytes are buf[off:len] */
    char buf[FASTIO_BUFSIZE];
};

static volatile sig_atomic_t fastio_stop;

static void fastio_on_signal(int signum) { (void)signum; fastio_stop = 1; }

static void fastio_close(int ep, struct fastio_conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static void fastio_set_events(int ep, struct fastio_conn *c, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write buf[off:len]; return 0 when all is written, 1 when some is left, -1 on error. */
static int fastio_flush(struct fastio_conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
        }
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 0;
}

static void fastio_accept(int ep, int listener)
{
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN: accepted all; other errors: try again on the next event */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct fastio_conn *c = malloc(sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->off = c->len = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
        }
    }
}

static void fastio_on_event(int ep, struct fastio_conn *c, int upper)
{
    if (c->len) { /* waiting to finish a partial write */
        int r = fastio_flush(c);
        if (r < 0)
            fastio_close(ep, c);
        else if (r == 0)
            fastio_set_events(ep, c, EPOLLIN);
        return;
    }
    ssize_t n = recv(c->fd, c->buf, FASTIO_BUFSIZE, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) { /* EOF or reset */
        fastio_close(ep, c);
        return;
    }
    if (upper)
        for (ssize_t i = 0; i < n; i++)
            if (c->buf[i] >= 'a' && c->buf[i] <= 'z')
                c->buf[i] -= 'a' - 'A';
    c->len = (size_t)n;
    int r = fastio_flush(c);
    if (r < 0)
        fastio_close(ep, c);
    else if (r == 1)
        fastio_set_events(ep, c, EPOLLOUT);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 10000, upper = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--upper"))
            upper = 1;
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
    sa.sa_handler = fastio_on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (listener < 0 || inet_pton(AF_INET, host, &addr.sin_addr) != 1
        || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 1024) < 0) {
        perror("echo_epoll: listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL marks the listener */
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev);
    printf("READY\n");
    fflush(stdout);

    struct epoll_event events[FASTIO_MAXEVENTS];
    while (!fastio_stop) {
        int n = epoll_wait(ep, events, FASTIO_MAXEVENTS, -1);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL)
                fastio_accept(ep, listener);
            else
                fastio_on_event(ep, events[i].data.ptr, upper);
        }
    }
    close(ep);
    close(listener);
    return 0;
}
