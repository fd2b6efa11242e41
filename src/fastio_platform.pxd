# Declarations of src/fastio_platform.h: the per-platform syscall wrappers.

from libc.stdint cimport int64_t, uint32_t
from cpython.object cimport PyObject


cdef extern from "fastio_platform.h" nogil:
    const int FASTIO_HAVE_EPOLL
    const int FASTIO_HAVE_POLL
    const int FASTIO_HAVE_EVENTFD
    const int FASTIO_WINSOCK
    const int FD_SETSIZE
    const size_t FASTIO_EPOLL_EVENT_SIZE

    const uint32_t POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL, POLLRDHUP
    const uint32_t EPOLLIN, EPOLLPRI, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP
    const uint32_t EPOLLET, EPOLLONESHOT, EPOLLEXCLUSIVE
    const int EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD
    const int EINTR, ENOENT, EEXIST, EBADF, ENOSYS, EPERM

    ctypedef struct fastio_event:
        int fd
        uint32_t events
        uint32_t gen

    ctypedef struct fastio_pollfd:
        int fd
        short events
        short revents

    ctypedef struct fd_set:
        pass

    void FD_ZERO(fd_set *s)
    void FD_SET(int fd, fd_set *s)
    void FD_CLR(int fd, fd_set *s)
    int FD_ISSET(int fd, fd_set *s)

    int fastio_last_error()
    int64_t fastio_monotonic_ns()

    int fastio_epoll_create()
    int fastio_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint32_t gen)
    int fastio_dup_onto(int src, int dst)
    int fastio_epoll_wait(int epfd, fastio_event *out, int maxevents, int timeout_ms)

    int fastio_poll(fastio_pollfd *fds, size_t n, int timeout_ms)

    int fastio_fd_fits_set(long long fd)
    int fastio_select(int maxfd, fd_set *r, fd_set *w, fd_set *x, int64_t timeout_us)

    int fastio_waker_open(int fds[2])
    int fastio_waker_write(int fd)
    int fastio_waker_drain(int fd)
    int fastio_close_fd(int fd)
    long long fastio_recv(int fd, char *buf, size_t n)
    long long fastio_send(int fd, const char *buf, size_t n)
    int fastio_would_block(int err)
    int fastio_atomic_exchange(long *p, long v)


cdef extern from "fastio_pyhelpers.h":
    object fastio_key_new(object cls, object fileobj, object fd, object events, object data)
    void fastio_list_fill(object list, Py_ssize_t i, object item)
    void fastio_list_truncate(object list, Py_ssize_t k)
    unsigned long long fastio_dict_tag(object dict, int instance)
    void fastio_prefetch_object(PyObject *obj)
    void fastio_prefetch_slot(PyObject *obj, Py_ssize_t off)
    void fastio_heap_prefetch(PyObject **items, Py_ssize_t pos, Py_ssize_t end,
                              Py_ssize_t when_off, PyObject *timer_type)
