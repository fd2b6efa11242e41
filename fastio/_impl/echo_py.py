"""Pure-Python twin of src/_echo.pyx: the echo server's and load generator's per-chunk paths.

fastio._impl runs it when echo_c is absent (FASTIO_NO_EXTENSIONS=1, PyPy).
`EchoCore` is the base of fastio.echo.server's protocol; `BenchCore` is the
load generator's per-event path (receive, verify, time, send the next
request), driving a poller of fastio._impl's core. io_uring (`UringEcho`)
exists compiled only.
"""

import collections
import itertools
import time
from typing import Any

__all__ = ["EchoCore", "BenchCore"]

# poll(2)'s bits, as the core's pollers report them.
_POLLIN, _POLLOUT, _POLLERR, _POLLHUP = 0x001, 0x004, 0x008, 0x010


class EchoCore:
    """The echo protocol's per-chunk path: the base of fastio.echo.server's protocol."""

    _transport: Any
    _upper: bool
    _draining: bool
    _in: int

    def data_received(self, data: bytes) -> None:
        """Echo `data` (uppercased with `_upper`) unless the connection is draining."""
        if self._draining:
            return  # arrived after shutdown began: read only to be discarded
        self._in += len(data)
        if self._upper:
            data = data.upper()  # bytes.upper() touches ASCII letters only
        self._transport.write(data)


class _Conn:
    """One connection's state in the pure-Python load generator."""

    __slots__ = ("sock", "fd", "replied", "spos", "rpos", "partial", "sent_at", "out")

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()
        self.replied = False
        self.spos = 0  # offset in the send ring of the next request
        self.rpos = 0  # offset in the expected ring of the next reply byte
        self.partial = 0  # bytes of the oldest outstanding reply already received
        self.sent_at = collections.deque()  # send time of each outstanding request
        self.out = b""  # bytes the kernel did not take yet (a partial write)


class BenchCore:
    """The load generator's per-event path (fastio.echo.client.bench).

    Each step waits once on a poller of fastio._impl's core and, per ready
    connection, receives, checks every byte against the expected stream,
    records the latency of each completed request and sends the next ones.

    :param poller: a core poller the connections are registered with.
    :param send_ring: the request stream (a ring of `ring_len` bytes, doubled).
    :param expect_ring: the expected reply stream, likewise.
    :param drop: ``drop(fd, why)``, called when a connection fails.
    """

    def __init__(self, poller, size, pipeline, send_ring, expect_ring, ring_len, recv_size, drop):
        self._poller = poller
        self._size, self._pipeline, self._ring_len = size, pipeline, ring_len
        self._send_mv, self._expect_mv = memoryview(send_ring), memoryview(expect_ring)
        self._buf = bytearray(recv_size)
        self._drop = drop
        self._conns = {}
        self._lat = []
        self.done = self.cold = self.outstanding = 0
        self.sending = True

    def add(self, sock):
        """Track connected socket `sock` (registered for POLLIN by its fd) and
        send its first `pipeline` requests."""
        c = self._conns[sock.fileno()] = _Conn(sock)
        self.cold += 1
        self._send(c, self._pipeline, self.clock())

    def clock(self):
        """Return the clock latencies are measured with (seconds)."""
        return time.monotonic()

    @property
    def latency_count(self):
        return len(self._lat)

    def latencies(self, start, end):
        """Return the latencies (seconds) recorded between two latency_count readings."""
        return self._lat[start:end]

    def step(self, timeout):
        """Wait up to `timeout` seconds once and serve what is ready; return the clock."""
        poller, conns, size, buf = self._poller, self._conns, self._size, self._buf
        # Errors and hang-ups are read so that recv reports them.
        IN, OUT, READ = _POLLIN, _POLLOUT, _POLLIN | _POLLERR | _POLLHUP
        events = poller.poll(timeout)
        now = self.clock()
        for fd, ev in events:
            c = conns.get(fd)
            if c is None:
                continue
            if ev & OUT and c.out:
                try:
                    n = c.sock.send(c.out)
                except BlockingIOError:
                    n = 0
                except OSError as exc:
                    self.fail(fd, "send failed: %s" % exc.strerror)
                    continue
                c.out = c.out[n:]
                if not c.out:
                    poller.modify(fd, IN)
            if not ev & READ:
                continue
            try:
                n = c.sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                self.fail(fd, "recv failed: %s" % exc.strerror)
                continue
            if n == 0:
                self.fail(fd, "the server closed the connection")
                continue
            total = len(c.sent_at) * size - c.partial
            if n > total:
                self.fail(fd, "received %d bytes more than were sent" % (n - total))
                continue
            pos = c.rpos
            if not buf.startswith(self._expect_mv[pos:pos + n]):
                self.fail(fd, "echoed bytes differ from what was expected "
                              "(%d-byte recv at ring offset %d)" % (n, pos))
                continue
            c.rpos = (pos + n) % self._ring_len
            k, c.partial = divmod(c.partial + n, size)
            if k:
                popleft = c.sent_at.popleft
                for _ in range(k):
                    self._lat.append(now - popleft())
                self.outstanding -= k
                self.done += k
                if not c.replied:
                    c.replied = True
                    self.cold -= 1
                if self.sending:
                    self._send(c, k, now)
        return now

    def _send(self, c, k, now):
        """Queue the next `k` requests of `c` and write them (partial writes wait for POLLOUT)."""
        start = c.spos
        end = start + k * self._size
        c.spos = end % self._ring_len
        c.sent_at.extend(itertools.repeat(now, k))
        self.outstanding += k
        chunk = self._send_mv[start:end]
        if c.out:
            c.out += chunk
            return
        try:
            n = c.sock.send(chunk)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.fail(c.fd, "send failed: %s" % exc.strerror)
            return
        if n < len(chunk):
            c.out = bytes(chunk[n:])
            self._poller.modify(c.fd, _POLLIN | _POLLOUT)

    def fail(self, fd, why):
        """Drop connection `fd` for `why` (calls `drop`); nothing if it is gone."""
        c = self._conns.pop(fd, None)
        if c is None:
            return
        self.outstanding -= len(c.sent_at)
        if not c.replied:
            self.cold -= 1
        self._drop(fd, why)

    def cold_fds(self):
        """Return the live connections that have had no reply yet."""
        return [fd for fd, c in self._conns.items() if not c.replied]

    def pending(self):
        """Return (fd, outstanding requests) of the live connections still owed replies."""
        return [(fd, len(c.sent_at)) for fd, c in self._conns.items() if c.sent_at]
