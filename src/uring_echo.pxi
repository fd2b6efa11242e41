# The echo server on io_uring (src/uring.pxi): fastio.echo.uring's engine.
#
# Same semantics as the Loop-based server (fastio/echo/server.py), in one
# compiled loop with no Python per request:
#
# * Each connection has one multishot recv. When the connection owes
#   nothing, a chunk is sent back straight from the provided buffer it
#   arrived in (uppercased in place), which returns to the kernel with the
#   send's completion: no copy. Otherwise it is copied into the connection's
#   pending output and the buffer goes straight back. At most half the
#   buffers are held by sends, so receives always find one. The ring is
#   small (128 x 64 KiB, the epoll servers' recv size): buffers come back
#   around while still in cache, which is worth about 5% at 16 KiB requests
#   against a ring of 512 x 16 KiB.
# * At most one send per connection is in flight, from a buffer that stays
#   put until its CQE (the kernel may read it any time before); replies that
#   arrive meanwhile collect in a second buffer, sent next. A short send is
#   resubmitted from where it stopped.
# * Bounded memory: above `high_water` unsent bytes the recv is cancelled;
#   it is rearmed once the output drains below high_water / 4. The client's
#   own socket buffers then fill and it blocks.
# * EOF from the client: flush, then close. Errors: drop what is unsent and
#   close. A connection's fd is closed only when no op of its is in flight,
#   so a reused fd never receives a stale completion; user_data also carries
#   a per-slot generation as a second guard.
# * Shutdown: stop accepting, flush what is owed, SHUT_WR, discard further
#   input until the client's EOF; past `drain_timeout` the rest are aborted.
# * Registered files (5.19+): an accepted socket goes into the ring's
#   file table at the slot of its fd number and its recv and sends name it
#   there, so the kernel takes no file reference per send; the slot is
#   emptied before close(). Without a table (older kernel, refused, fd past
#   it) ops use the plain fd.
# * Accept failing with EMFILE/ENFILE/ENOBUFS/ENOMEM: counted, retried after
#   a second (new clients wait in the backlog meanwhile).
#
# Discussion: the per-connection state machine (uconn, _update) is what a
# completion-based Loop transport needs too: write() appends to the pending
# buffer, pause_reading()/resume_reading() cancel and rearm the recv (here
# driven by the unsent level), write_eof() is the draining SHUT_WR, close()
# is "flush, then close", abort() is _abort. Only the data path differs:
# here a chunk is answered in place; a transport would hand it to its
# protocol's data_received.

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport ENOBUFS

cdef extern from "<errno.h>":
    int ECANCELED
from libc.stdlib cimport free, realloc


# user_data: kind (8 bits) | fd (32 bits) | generation (24 bits)
cdef enum:
    K_ACCEPT = 1
    K_RECV = 2
    K_SEND = 3
    K_WAKE = 4
    K_CANCEL = 5

# The state of a connection's multishot recv (and of the accept).
cdef enum:
    R_OFF = 0
    R_ARMED = 1
    R_CANCELLING = 2


cdef struct uconn:
    uint32_t gen
    bint live
    int recv            # R_OFF, R_ARMED or R_CANCELLING
    bint send_busy
    bint eof            # the client sent FIN
    bint aborted
    bint draining       # shutdown: discard input, SHUT_WR once flushed
    bint shut_wr
    bint fixed          # its ops name the socket by its registered-file slot
    char *sbuf          # in flight: bytes [soff, slen) of sbuf, or of zbuf
    Py_ssize_t slen, soff, scap
    char *zbuf          # the provided buffer a reply is sent from, if any
    int zbid            # its id (-1: none; the reply is in sbuf)
    char *pbuf          # waiting for the send in flight
    Py_ssize_t plen, pcap
    long long nin, ndropped


cdef inline void _ascii_upper(char *dst, const char *src, Py_ssize_t n) noexcept:
    # bytes.upper(): ASCII letters only.
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = src[i] - 32 if b'a' <= src[i] <= b'z' else src[i]


cdef inline uint64_t _ud(int kind, int fd, uint32_t gen) noexcept nogil:
    return <uint64_t>kind | (<uint64_t><uint32_t>fd << 8) | (<uint64_t>(gen & 0xffffff) << 40)


cdef class UringEcho:
    """Serve echo on the listening socket `listen_fd` with io_uring until
    shutdown; see fastio.echo.uring.UringEchoServer for the Python side.

    :param listen_fd: a listening, non-blocking TCP socket's fd.
    :param wake_fd: the read end of a non-blocking pipe; a byte written to
        its other end wakes `run` (signals, `request_stop` from a thread).
    :param upper: reply with the ASCII uppercase.
    :param max_conns: at most this many connections at once (0: no limit).
    :param high_water: unsent bytes per connection above which it is not read.
    :param mode: the best setup mode to try ("defer_taskrun", "coop_taskrun"
        or "plain"); the kernel may give a lower one (see `mode` after setup).
    :param nbufs: provided buffers in the ring (a power of two).
    :param bufsize: bytes per provided buffer.
    """

    cdef fastio_ring ring
    cdef bint ring_open
    cdef bint ran
    cdef int listen_fd, wake_fd
    cdef bint upper
    cdef Py_ssize_t max_conns, high_water, low_water
    cdef unsigned entries, nbufs, bufsize
    cdef unsigned held          # provided buffers held by zero-copy sends
    cdef int best_mode
    cdef uconn *conns
    cdef Py_ssize_t cap
    cdef int accept_state
    cdef bint accept_multishot
    cdef bint stopping
    cdef long long drain_deadline_ns, accept_retry_ns
    cdef public double drain_timeout
    cdef public bint stop_requested
    cdef readonly Py_ssize_t nconns
    cdef readonly long long connections, bytes_in, bytes_out, accept_errors, enters
    cdef readonly long long recvs, sends, copies
    cdef readonly long long fixed_connections
    cdef readonly str mode

    def __cinit__(self, *args, **kwargs):
        self.conns = NULL
        self.ring.fd = -1

    def __init__(self, int listen_fd, int wake_fd, *, bint upper=False, Py_ssize_t max_conns=0,
                 Py_ssize_t high_water=64 * 1024, double drain_timeout=5.0,
                 str mode="defer_taskrun", unsigned entries=1024, unsigned nbufs=128,
                 unsigned bufsize=65536):
        if high_water < 1 or max_conns < 0 or entries < 8 or bufsize < 64:
            raise ValueError(
                "need high_water >= 1, max_conns >= 0, entries >= 8 and bufsize >= 64; "
                "got high_water=%d max_conns=%d entries=%d bufsize=%d"
                % (high_water, max_conns, entries, bufsize))
        if nbufs < 1 or nbufs > 32768 or nbufs & (nbufs - 1):
            raise ValueError("nbufs must be a power of two up to 32768")
        if mode not in _URING_MODE_NUMBERS:
            raise ValueError("mode must be one of %s, not %r" % (", ".join(_URING_MODE_NUMBERS), mode))
        self.best_mode = _URING_MODE_NUMBERS[mode]
        self.listen_fd = listen_fd
        self.wake_fd = wake_fd
        self.upper = upper
        self.max_conns = max_conns
        self.high_water = high_water
        self.low_water = high_water // 4
        self.drain_timeout = drain_timeout
        self.entries = entries
        self.nbufs = nbufs
        self.bufsize = bufsize
        # One accept at a time holds max_conns exactly; multishot otherwise.
        self.accept_multishot = max_conns == 0
        self.drain_deadline_ns = -1
        self.accept_retry_ns = -1

    def __dealloc__(self):
        cdef Py_ssize_t fd
        if self.ring_open:
            fastio_ring_close(&self.ring)
        if self.conns != NULL:
            for fd in range(self.cap):
                if self.conns[fd].live:
                    fastio_uring_close_fd(<int>fd)
                free(self.conns[fd].sbuf)
                free(self.conns[fd].pbuf)
            free(self.conns)

    @property
    def files(self):
        """Slots in the ring's registered-file table (0: the connections' ops
        use plain fds)."""
        return self.ring.files

    @property
    def open_bytes_in(self):
        """Bytes received on the connections still open."""
        cdef Py_ssize_t fd
        cdef long long total = 0
        for fd in range(self.cap):
            if self.conns[fd].live:
                total += self.conns[fd].nin
        return total

    def setup(self):
        """Create the ring; raise OSError if io_uring refuses.

        Call it from the thread that will call `run` (DEFER_TASKRUN binds the
        ring to it); `run` calls it if need be.
        """
        cdef str reason
        if self.ring_open or self.ran:
            return
        reason = uring_open(&self.ring, self.entries, self.nbufs, self.bufsize, self.best_mode)
        if reason is not None:
            raise OSError(reason)
        # The connections' sockets are this server's alone: their ops use
        # registered files where the kernel has them (plain fds otherwise).
        fastio_ring_setup_files(&self.ring)
        self.ring_open = True
        self.mode = _URING_MODES[self.ring.mode]

    def run(self):
        """Serve until stopped, then release the ring; raise OSError if the
        ring cannot be set up."""
        cdef int err
        cdef long long timeout
        if self.ran:
            raise RuntimeError("UringEcho.run() is already running or has run")
        self.setup()
        self.ran = True
        try:
            self._arm_wake()
            self._arm_accept()
            while True:
                if self.stop_requested and not self.stopping:
                    self._begin_shutdown()
                if self.stopping and self.nconns == 0:
                    break
                timeout = self._timeout()
                fastio_ring_recycle_flush(&self.ring)
                with nogil:
                    err = fastio_ring_enter(&self.ring, 1, timeout)
                self.enters += 1
                if err and err != EINTR and err != ETIME and err != EAGAIN and err != EBUSY:
                    raise OSError(err, "io_uring_enter: " + _os.strerror(err))
                # Python-level signal handlers (SIGINT/SIGTERM -> request_stop) run here.
                PyErr_CheckSignals()
                self._reap()
                self._timers()
        finally:
            self._release()

    def request_stop(self):
        """Begin a graceful shutdown at the loop's next turn.

        From another thread, also write a byte to the wake pipe: the loop may
        be waiting in io_uring_enter.
        """
        self.stop_requested = True

    # -- the loop's parts

    cdef long long _timeout(self):
        cdef long long now, t = -1
        if self.drain_deadline_ns < 0 and self.accept_retry_ns < 0:
            return -1  # no timer: no clock read per turn
        now = fastio_monotonic_ns()
        if self.drain_deadline_ns >= 0:
            t = max(0, self.drain_deadline_ns - now)
        if self.accept_retry_ns >= 0:
            if t < 0 or self.accept_retry_ns - now < t:
                t = max(0, self.accept_retry_ns - now)
        return t

    cdef int _timers(self) except -1:
        cdef long long now
        cdef Py_ssize_t fd
        if self.drain_deadline_ns < 0 and self.accept_retry_ns < 0:
            return 0
        now = fastio_monotonic_ns()
        if self.accept_retry_ns >= 0 and now >= self.accept_retry_ns:
            self.accept_retry_ns = -1
            self._arm_accept()
        if self.drain_deadline_ns >= 0 and now >= self.drain_deadline_ns:
            self.drain_deadline_ns = -1
            for fd in range(self.cap):
                if self.conns[fd].live:
                    self._abort(<int>fd, &self.conns[fd])
        return 0

    cdef int _reap(self) except -1:
        cdef unsigned head = fastio_ring_cq_head(&self.ring)
        cdef fastio_uring_cqe *cqe
        cdef uint64_t ud
        cdef int kind, fd, res
        cdef uint32_t flags
        try:
            while True:
                cqe = fastio_ring_peek(&self.ring, &head)
                if cqe == NULL:
                    break
                ud = cqe.user_data
                res = cqe.res
                flags = cqe.flags
                # Consume the CQE before handling it: handlers may submit,
                # and a full SQ submits (and may post CQEs) on the spot.
                fastio_ring_cq_advance(&self.ring, head)
                kind = <int>(ud & 0xff)
                # (a C cast truncates: `& 0xffffffff` would be Python int arithmetic)
                fd = <int><uint32_t>(ud >> 8)
                if kind == K_RECV:
                    self._on_recv(fd, <uint32_t>(ud >> 40), res, flags)
                elif kind == K_SEND:
                    self._on_send(fd, <uint32_t>(ud >> 40), res)
                elif kind == K_ACCEPT:
                    self._on_accept(res, flags)
                elif kind == K_WAKE:
                    fastio_uring_drain(self.wake_fd)
                    self._arm_wake()
        finally:
            fastio_ring_recycle_flush(&self.ring)
        return 0

    cdef fastio_uring_sqe *_sqe(self) except NULL:
        cdef fastio_uring_sqe *sqe = fastio_ring_get_sqe(&self.ring)
        cdef int err
        if sqe == NULL:
            # SQ full: submit what is queued (no wait) and take a fresh slot.
            fastio_ring_recycle_flush(&self.ring)
            err = fastio_ring_enter(&self.ring, 0, -1)
            if err and err != EINTR and err != EAGAIN and err != EBUSY:
                raise OSError(err, "io_uring_enter: " + _os.strerror(err))
            sqe = fastio_ring_get_sqe(&self.ring)
            if sqe == NULL:
                raise OSError(EBUSY, "io_uring submission queue stays full")
        return sqe

    cdef int _arm_wake(self) except -1:
        cdef fastio_uring_sqe *sqe = self._sqe()
        sqe.opcode = FASTIO_OP_POLL_ADD
        sqe.fd = self.wake_fd
        sqe.op_flags = POLLIN
        sqe.user_data = _ud(K_WAKE, 0, 0)
        return 0

    cdef int _arm_accept(self) except -1:
        cdef fastio_uring_sqe *sqe
        if self.accept_state != R_OFF or self.stopping or self.accept_retry_ns >= 0:
            return 0
        if self.max_conns and self.nconns >= self.max_conns:
            return 0
        sqe = self._sqe()
        sqe.opcode = FASTIO_OP_ACCEPT
        sqe.fd = self.listen_fd
        sqe.op_flags = FASTIO_SOCK_NONBLOCK | FASTIO_SOCK_CLOEXEC
        if self.accept_multishot:
            sqe.ioprio = FASTIO_ACCEPT_MULTISHOT
        sqe.user_data = _ud(K_ACCEPT, 0, 0)
        self.accept_state = R_ARMED
        return 0

    cdef int _cancel(self, uint64_t target) except -1:
        cdef fastio_uring_sqe *sqe = self._sqe()
        sqe.opcode = FASTIO_OP_ASYNC_CANCEL
        sqe.fd = -1
        sqe.addr = target
        sqe.user_data = _ud(K_CANCEL, 0, 0)
        return 0

    cdef int _arm_recv(self, int fd, uconn *c) except -1:
        cdef fastio_uring_sqe *sqe = self._sqe()
        sqe.opcode = FASTIO_OP_RECV
        sqe.ioprio = FASTIO_RECV_MULTISHOT
        sqe.flags = FASTIO_SQE_BUFFER_SELECT
        fastio_sqe_set_fd(sqe, fd, c.fixed)
        sqe.buf_group = 0
        sqe.user_data = _ud(K_RECV, fd, c.gen)
        c.recv = R_ARMED
        return 0

    cdef int _send(self, int fd, uconn *c) except -1:
        cdef fastio_uring_sqe *sqe = self._sqe()
        sqe.opcode = FASTIO_OP_SEND
        fastio_sqe_set_fd(sqe, fd, c.fixed)
        sqe.addr = <uint64_t><size_t>((c.zbuf if c.zbid >= 0 else c.sbuf) + c.soff)
        sqe.len = <uint32_t>min(c.slen - c.soff, 1 << 30)
        sqe.op_flags = FASTIO_MSG_NOSIGNAL
        sqe.user_data = _ud(K_SEND, fd, c.gen)
        c.send_busy = True
        self.sends += 1
        return 0

    # -- completions

    cdef int _on_accept(self, int res, uint32_t flags) except -1:
        cdef uconn *c
        if not flags & FASTIO_CQE_F_MORE:
            self.accept_state = R_OFF
        if res < 0:
            if res == -ECANCELED:
                return 0
            # EMFILE and friends: the client waits in the backlog; retry in
            # a second rather than spin on a failing accept.
            self.accept_errors += 1
            if self.accept_state == R_ARMED:
                self._cancel(_ud(K_ACCEPT, 0, 0))
                self.accept_state = R_CANCELLING
            self.accept_retry_ns = fastio_monotonic_ns() + 1000000000
            return 0
        self._grow(res)
        c = &self.conns[res]
        c.gen += 1
        c.live = True
        c.recv = R_OFF
        c.send_busy = c.eof = c.aborted = c.draining = c.shut_wr = False
        c.slen = c.soff = c.plen = 0
        c.zbid = -1
        c.zbuf = NULL
        c.nin = c.ndropped = 0
        self.nconns += 1
        self.connections += 1
        fastio_uring_nodelay(res)
        c.fixed = fastio_ring_file_add(&self.ring, res)
        if c.fixed:
            self.fixed_connections += 1
        if self.stopping:
            c.draining = True
        self._update(res, c)
        if self.accept_state == R_OFF:
            self._arm_accept()
        return 0

    cdef int _on_recv(self, int fd, uint32_t gen, int res, uint32_t flags) except -1:
        cdef uconn *c
        cdef unsigned bid
        cdef char *src
        if fd < 0 or fd >= self.cap:
            if flags & FASTIO_CQE_F_BUFFER:
                fastio_ring_recycle(&self.ring, flags >> FASTIO_CQE_BUFFER_SHIFT)
            return 0
        c = &self.conns[fd]
        self.recvs += 1
        if flags & FASTIO_CQE_F_BUFFER:
            bid = flags >> FASTIO_CQE_BUFFER_SHIFT
            if res > 0 and c.live and c.gen & 0xffffff == gen and not c.draining and not c.aborted:
                src = fastio_ring_buffer(&self.ring, bid)
                c.nin += res
                if (not c.send_busy and not c.plen and c.slen == c.soff
                        and self.held < self.nbufs // 2):
                    # Nothing owed: reply from the buffer itself.
                    if self.upper:
                        _ascii_upper(src, src, res)
                    c.zbuf, c.zbid, c.slen, c.soff = src, <int>bid, res, 0
                    self.held += 1
                    self._send(fd, c)
                else:
                    self._append(c, src, res)
                    self.copies += 1
                    fastio_ring_recycle(&self.ring, bid)
            else:
                fastio_ring_recycle(&self.ring, bid)
        if not c.live or c.gen & 0xffffff != gen:
            return 0
        if not flags & FASTIO_CQE_F_MORE:
            c.recv = R_OFF
            if res == 0:
                c.eof = True
            elif res < 0 and res != -ENOBUFS and res != -ECANCELED:
                self._abort(fd, c)
                return 0
        elif (c.recv == R_ARMED and not c.draining
              and c.plen + c.slen - c.soff > self.high_water):
            # The client reads slower than it sends: stop reading from it.
            self._cancel(_ud(K_RECV, fd, c.gen))
            c.recv = R_CANCELLING
        self._update(fd, c)
        return 0

    cdef int _on_send(self, int fd, uint32_t gen, int res) except -1:
        cdef uconn *c
        if fd < 0 or fd >= self.cap:
            return 0
        c = &self.conns[fd]
        if not c.live or c.gen & 0xffffff != gen:
            return 0
        c.send_busy = False
        if res < 0:
            if not c.aborted:
                self._abort(fd, c)
            else:
                self._update(fd, c)
            return 0
        c.soff += res
        if c.soff >= c.slen:
            c.soff = c.slen = 0
            self._release_zbuf(c)
        self._update(fd, c)
        return 0

    cdef inline void _release_zbuf(self, uconn *c) noexcept:
        if c.zbid >= 0:
            fastio_ring_recycle(&self.ring, <unsigned>c.zbid)
            self.held -= 1
            c.zbid = -1
            c.zbuf = NULL

    # -- per-connection state

    cdef int _append(self, uconn *c, const char *src, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap, i
        cdef char *dst
        if c.plen + n > c.pcap:
            cap = c.pcap if c.pcap else 4096
            while cap < c.plen + n:
                cap *= 2
            dst = <char *>realloc(c.pbuf, cap)
            if dst == NULL:
                raise MemoryError()
            c.pbuf = dst
            c.pcap = cap
        dst = c.pbuf + c.plen
        if self.upper:
            _ascii_upper(dst, src, n)
        else:
            memcpy(dst, src, n)
        c.plen += n
        return 0

    cdef int _update(self, int fd, uconn *c) except -1:
        """Move connection `fd` on: send, rearm, half-close or close."""
        cdef char *tmp
        cdef Py_ssize_t tcap, unsent
        if c.aborted:
            if not c.send_busy:
                c.slen = c.soff = 0
                self._release_zbuf(c)
                if c.recv == R_OFF:
                    self._close(fd, c)
            return 0
        if not c.send_busy:
            if c.slen > c.soff:
                self._send(fd, c)    # the rest of a short send
            elif c.plen:
                # Swap: the pending bytes go out, the sent buffer collects.
                tmp, tcap = c.sbuf, c.scap
                c.sbuf, c.scap, c.slen, c.soff = c.pbuf, c.pcap, c.plen, 0
                c.pbuf, c.pcap, c.plen = tmp, tcap, 0
                self._send(fd, c)
        unsent = c.plen + c.slen - c.soff
        if c.draining and not unsent and not c.send_busy and not c.shut_wr:
            fastio_uring_shutdown_wr(fd)
            c.shut_wr = True
        if c.eof:
            if not unsent and not c.send_busy and c.recv == R_OFF:
                self._close(fd, c)
            return 0
        if c.recv == R_OFF and (c.draining or unsent <= self.low_water):
            self._arm_recv(fd, c)
        return 0

    cdef int _abort(self, int fd, uconn *c) except -1:
        """Drop what connection `fd` owes; close it once its ops are done."""
        if c.aborted:
            return 0
        c.aborted = True
        c.ndropped += c.plen + c.slen - c.soff
        c.plen = 0
        if c.recv == R_ARMED:
            self._cancel(_ud(K_RECV, fd, c.gen))
            c.recv = R_CANCELLING
        if c.send_busy:
            self._cancel(_ud(K_SEND, fd, c.gen))
        else:
            c.slen = c.soff = 0
            self._release_zbuf(c)
        self._update(fd, c)
        return 0

    cdef int _close(self, int fd, uconn *c) except -1:
        if c.fixed:
            # The table's reference would keep the socket open past close().
            fastio_ring_file_remove(&self.ring, fd)
            c.fixed = False
        fastio_uring_close_fd(fd)
        c.live = False
        self.nconns -= 1
        self.bytes_in += c.nin
        self.bytes_out += c.nin - c.ndropped
        # Keep small buffers for the fd's next connection; drop big ones.
        if c.scap > 65536:
            free(c.sbuf)
            c.sbuf, c.scap = NULL, 0
        if c.pcap > 65536:
            free(c.pbuf)
            c.pbuf, c.pcap = NULL, 0
        c.slen = c.soff = c.plen = 0
        if not self.stopping:
            self._arm_accept()
        return 0

    cdef int _grow(self, int fd) except -1:
        cdef Py_ssize_t cap
        cdef uconn *conns
        if fd < self.cap:
            return 0
        cap = self.cap if self.cap else 256
        while cap <= fd:
            cap *= 2
        conns = <uconn *>realloc(self.conns, cap * sizeof(uconn))
        if conns == NULL:
            raise MemoryError()
        memset(conns + self.cap, 0, (cap - self.cap) * sizeof(uconn))
        self.conns = conns
        self.cap = cap
        return 0

    cdef int _begin_shutdown(self) except -1:
        cdef Py_ssize_t fd
        self.stopping = True
        self.accept_retry_ns = -1
        if self.accept_state == R_ARMED:
            self._cancel(_ud(K_ACCEPT, 0, 0))
            self.accept_state = R_CANCELLING
        for fd in range(self.cap):
            if self.conns[fd].live and not self.conns[fd].draining:
                self.conns[fd].draining = True
                self._update(<int>fd, &self.conns[fd])
        self.drain_deadline_ns = fastio_monotonic_ns() + <long long>(self.drain_timeout * 1e9)
        return 0

    cdef void _release(self):
        cdef Py_ssize_t fd
        # Closing the ring cancels what is in flight; the kernel is done with
        # our buffers once the ring is gone, so free them only after.
        if self.ring_open:
            fastio_ring_close(&self.ring)
            self.ring_open = False
        for fd in range(self.cap):
            if self.conns[fd].live:
                self.conns[fd].live = False
                self.nconns -= 1
                self.bytes_in += self.conns[fd].nin
                self.bytes_out += self.conns[fd].nin - self.conns[fd].ndropped - (
                    self.conns[fd].plen + self.conns[fd].slen - self.conns[fd].soff)
                fastio_uring_close_fd(<int>fd)


