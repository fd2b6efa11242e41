"""Load an echo server: a closed-loop load generator that verifies every byte.

N connections each keep `pipeline` requests of `size` bytes in flight; every
echoed byte is compared with what was sent (or its ASCII uppercase, for a
server run with `--upper`); `bench` reports req/s, MiB/s, p50/p99 latency and
errors.

Discussion: the load generator must not be what limits the server. All
connections run from one thread on one `fastio._core.EpollPoller` (or
`fastio.selectors.DefaultSelector` on the pure-Python fallback), sockets are
non-blocking, payloads are precomputed, every recv lands in one preallocated
buffer, and verification is one memcmp per recv against the expected byte
stream. The per-event path (receive, verify, time, send the next request) is
compiled (`fastio._echo.BenchCore`): in Python it cost more per request than
the fastest servers it measures, so it, not they, set the req/s.
`_PyBenchCore` is its twin for the pure-Python fallback.

The stream a connection sends is a ring of `pipeline + 3` distinct payloads, so
a reply echoed out of order, twice or from another connection's stream shows
up as a mismatch, not only a corrupted byte. The ring is stored twice over, so
any window of at most one ring length (the most a connection can have in
flight) is one contiguous slice.
"""

import collections
import itertools
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fastio import selectors as _selectors
from fastio._ext import core as _core
from fastio._ext import echo as _echo_ext

__all__ = ["bench", "format_result", "format_progress", "make_ring"]

RECV_BUFFER = 256 * 1024  # one recv drains a whole pipeline of 16 KiB replies
MAX_SIZE = 16 * 1024 * 1024
MAX_PIPELINE = 1024
MAX_ERROR_MESSAGES = 10
TICK = 0.05  # longest poll wait: how late a phase change may be noticed
PROGRESS_INTERVAL = 2.0  # seconds between progress lines
ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


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


class _PyBenchCore:
    """The load generator's per-event path without the extension:
    fastio._echo.BenchCore's twin (same methods, same behaviour)."""

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
        self.clock = time.monotonic

    def add(self, sock):
        c = self._conns[sock.fileno()] = _Conn(sock)
        self.cold += 1
        self._send(c, self._pipeline, self.clock())

    @property
    def latency_count(self):
        return len(self._lat)

    def latencies(self, start, end):
        return self._lat[start:end]

    def step(self, timeout):
        poller, conns, size, buf = self._poller, self._conns, self._size, self._buf
        IN, OUT, READ = poller.IN, poller.OUT, poller.READ
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
            self._poller.modify(c.fd, self._poller.IN | self._poller.OUT)

    def fail(self, fd, why):
        c = self._conns.pop(fd, None)
        if c is None:
            return
        self.outstanding -= len(c.sent_at)
        if not c.replied:
            self.cold -= 1
        self._drop(fd, why)

    def cold_fds(self):
        return [fd for fd, c in self._conns.items() if not c.replied]

    def pending(self):
        return [(fd, len(c.sent_at)) for fd, c in self._conns.items() if c.sent_at]


class _Poller:
    """The poller the hot loop uses, with its event bits: fastio's core, else fastio.selectors."""

    def __init__(self):
        if _core is not None:
            poller = _core.EpollPoller() if _core.HAVE_EPOLL else _core.PollPoller()
            self.name = "fastio._core.%s" % type(poller).__name__
            self.poll, self.close = poller.poll, poller.close
            self.IN, self.OUT = _core.POLLIN, _core.POLLOUT
            # Errors and hang-ups are read so that recv reports them.
            self.READ = _core.POLLIN | _core.POLLERR | _core.POLLHUP
            self.core = poller  # what fastio._echo.BenchCore drives
        else:
            poller = _selectors.DefaultSelector()
            self.name = "fastio.selectors.%s (pure-Python fallback)" % type(poller).__name__
            self.poll, self.close = poller.select_fds, poller.close
            self.IN = self.READ = _selectors.EVENT_READ
            self.OUT = _selectors.EVENT_WRITE
            self.core = None
        self.register, self.modify, self.unregister = poller.register, poller.modify, poller.unregister


def make_ring(size: int, count: int, upper: bool) -> Tuple[bytes, bytes, int]:
    """Return (send stream, expected stream, ring length): `count` payloads of `size` bytes, doubled."""
    alphabet = ALPHABET * (size // len(ALPHABET) + 2)
    ring = b"".join(alphabet[i % len(ALPHABET):][:size] for i in range(count))
    send = ring * 2
    return send, send.upper() if upper else send, len(ring)


def _percentile(ordered: Sequence[float], q: float) -> Optional[float]:
    """Return the nearest-rank `q` quantile of a sorted list, or None when empty."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench(host: str = "127.0.0.1", port: int = 10000, connections: int = 100, size: int = 1024,
          duration: float = 5.0, pipeline: int = 1, upper: bool = False, warmup: float = 0.5,
          timeout: float = 10.0, on_start: Optional[Callable[[], object]] = None,
          on_stop: Optional[Callable[[], object]] = None,
          progress: Optional[Callable[[Dict[str, Any]], object]] = None,
          progress_interval: float = PROGRESS_INTERVAL) -> Dict[str, Any]:
    """Load an echo server from one thread; verify every byte; return a JSON-able result.

    The measured window opens once every connection has had a reply and
    `warmup` seconds have passed, and lasts `duration` seconds; then no new
    request is sent and the outstanding replies are awaited (and verified) for
    up to `timeout` seconds.

    :param pipeline: requests each connection keeps in flight.
    :param upper: expect the ASCII uppercase of what was sent.
    :param on_start: called with no argument right before the window opens.
    :param on_stop: called with no argument right after it closes.
    :param progress: called every `progress_interval` seconds with a dict:
        phase ("warmup", "measure", "drain"), elapsed_s and duration_s of the
        window, requests and errors so far.
    :returns: dict with req_per_s, mib_per_s, latency_us (p50, p99, max),
        errors... KeyboardInterrupt (Ctrl-C) ends the run early: the result
        then covers what completed, with ``interrupted`` true.
    :raises OSError: when a connection cannot be made (ConnectionRefusedError...).
    """
    send_stream, expect_stream, ring_len = make_ring(size, pipeline + 3, upper)
    poller = _Poller()
    socks: Dict[int, socket.socket] = {}
    error_messages: List[str] = []
    errors = 0
    interrupted = False

    def drop(fd: int, why: str) -> None:
        nonlocal errors
        errors += 1
        if len(error_messages) < MAX_ERROR_MESSAGES:
            error_messages.append("connection (fd %d): %s" % (fd, why))
        poller.unregister(fd)
        socks.pop(fd).close()

    if _echo_ext is not None and poller.core is not None:
        core = _echo_ext.BenchCore(poller.core, size, pipeline, send_stream, expect_stream, ring_len,
                                   RECV_BUFFER, drop)
    else:
        core = _PyBenchCore(poller, size, pipeline, send_stream, expect_stream, ring_len, RECV_BUFFER, drop)
    try:
        for _ in range(connections):
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            socks[sock.fileno()] = sock
            poller.register(sock.fileno(), poller.IN)
        now = core.clock()
        for sock in list(socks.values()):
            core.add(sock)  # sends its first `pipeline` requests

        phase, phase_end = "warmup", now + warmup
        give_up = now + timeout
        t0 = t1 = now
        done0 = done1 = lat0 = lat1 = 0
        cpu0 = cpu1 = time.process_time()
        next_report = now + progress_interval
        try:
            while socks:
                now = core.step(TICK)
                if not core.sending and not core.outstanding:
                    break  # drained
                if progress is not None and now >= next_report:
                    next_report = now + progress_interval
                    measuring = phase == "measure"
                    progress({"phase": phase, "elapsed_s": now - t0 if measuring else 0.0,
                              "duration_s": duration, "errors": errors,
                              "requests": core.done - done0 if phase != "warmup" else 0})
                if now < phase_end:
                    continue
                # --- phase changes, noticed within TICK ---
                if phase == "warmup":
                    if core.cold and now < give_up:
                        phase_end = now + TICK
                        continue
                    for fd in core.cold_fds():
                        core.fail(fd, "no reply within %.1f s" % timeout)
                    if on_start:
                        on_start()
                    t0, done0, lat0, cpu0 = core.clock(), core.done, core.latency_count, time.process_time()
                    phase, phase_end = "measure", t0 + duration
                elif phase == "measure":
                    t1, done1, lat1, cpu1 = core.clock(), core.done, core.latency_count, time.process_time()
                    if on_stop:
                        on_stop()
                    core.sending = False
                    phase, phase_end = "drain", now + timeout
                else:
                    for fd, n in core.pending():
                        core.fail(fd, "%d replies missing after %.1f s" % (n, timeout))
        except KeyboardInterrupt:
            # Ctrl-C: stop here and report what completed (a window cut short).
            interrupted = True
        if phase == "measure":  # interrupted, or every connection failed inside the window
            t1, done1, lat1, cpu1 = core.clock(), core.done, core.latency_count, time.process_time()
            if on_stop:
                on_stop()
    finally:
        for sock in socks.values():
            sock.close()
        poller.close()

    elapsed = max(t1 - t0, 1e-9)
    requests = done1 - done0
    window = sorted(core.latencies(lat0, lat1))
    return {
        "host": host,
        "port": port,
        "connections": connections,
        "size": size,
        "pipeline": pipeline,
        "upper": upper,
        "poller": poller.name,
        "duration_s": round(elapsed, 4),
        "requests": requests,
        "req_per_s": round(requests / elapsed, 1),
        "mib_per_s": round(requests * size / elapsed / 2**20, 3),
        "latency_us": {
            name: None if value is None else round(value * 1e6, 1)
            for name, value in (("p50", _percentile(window, 0.50)), ("p99", _percentile(window, 0.99)),
                                ("max", window[-1] if window else None))
        },
        "client_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "errors": errors,
        "error_messages": error_messages,
        "interrupted": interrupted,
    }


def format_result(result: Dict[str, Any]) -> str:
    """Return a two-line human summary of a `bench` result."""
    lat = result["latency_us"]
    fmt = lambda us: "-" if us is None else "%.0f µs" % us
    lines = [
        "%d connections x %d B, pipeline %d, %.2f s on %s%s:" % (
            result["connections"], result["size"], result["pipeline"], result["duration_s"], result["poller"],
            " (interrupted: what completed)" if result.get("interrupted") else ""),
        "  %.0f req/s, %.2f MiB/s, latency p50 %s p99 %s, client CPU %.0f%%, %d errors" % (
            result["req_per_s"], result["mib_per_s"], fmt(lat["p50"]), fmt(lat["p99"]),
            result["client_cpu_pct"], result["errors"]),
    ]
    lines += ["  error: " + message for message in result["error_messages"]]
    return "\n".join(lines)


def format_progress(report: Dict[str, Any]) -> str:
    """Return the progress line for one `bench` progress report."""
    if report["phase"] == "warmup":
        return "fastio client: warming up (waiting for every connection's first reply)"
    if report["phase"] == "drain":
        return "fastio client: window closed, waiting for the outstanding replies"
    elapsed = report["elapsed_s"]
    return "fastio client: %.1f s of %.1f s, %d requests, %.0f req/s, %d errors" % (
        elapsed, report["duration_s"], report["requests"], report["requests"] / max(elapsed, 1e-9),
        report["errors"])
