"""Load an echo server: a closed-loop load generator that verifies every byte.

N connections each keep `pipeline` requests of `size` bytes in flight; every
echoed byte is compared with what was sent (or its ASCII uppercase, for a
server run with `--upper`); `bench` reports req/s, MiB/s, p50/p99 latency and
errors.

Discussion: the load generator must not be what limits the server. All
connections run from one thread on one poller of fastio's core (epoll where
there is epoll; fastio._impl chooses compiled or pure-Python), sockets are
non-blocking, payloads are precomputed, every recv lands in one preallocated
buffer, and verification is one memcmp per recv against the expected byte
stream. The per-event path (receive, verify, time, send the next request) is
compiled (`fastio._impl.echo_c.BenchCore`): in Python it cost more per
request than the fastest servers it measures, so it, not they, set the req/s.
`fastio._impl.echo_py.BenchCore` is its twin for the pure-Python fallback.

The stream a connection sends is a ring of `pipeline + 3` distinct payloads, so
a reply echoed out of order, twice or from another connection's stream shows
up as a mismatch, not only a corrupted byte. The ring is stored twice over, so
any window of at most one ring length (the most a connection can have in
flight) is one contiguous slice.
"""

import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fastio._impl import core as _core
from fastio._impl import echo as _echo_impl

__all__ = ["bench", "format_result", "format_progress", "make_ring"]

RECV_BUFFER = 256 * 1024  # one recv drains a whole pipeline of 16 KiB replies
MAX_SIZE = 16 * 1024 * 1024
MAX_PIPELINE = 1024
MAX_ERROR_MESSAGES = 10
TICK = 0.05  # longest poll wait: how late a phase change may be noticed
PROGRESS_INTERVAL = 2.0  # seconds between progress lines
ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


class _Poller:
    """The poller the hot loop uses: the best of fastio's core, with its event bits."""

    def __init__(self):
        if _core.HAVE_EPOLL:
            poller = _core.EpollPoller()
        else:
            poller = _core.PollPoller() if _core.HAVE_POLL else _core.SelectPoller()
        self.name = "%s.%s" % (type(poller).__module__, type(poller).__name__)
        self.poll, self.close = poller.poll, poller.close
        self.IN, self.OUT = _core.POLLIN, _core.POLLOUT
        self.core = poller  # what the BenchCore drives
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

    core = _echo_impl.BenchCore(poller.core, size, pipeline, send_stream, expect_stream, ring_len,
                                RECV_BUFFER, drop)
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
