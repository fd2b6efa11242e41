"""The echo server: the classic select() echo server, done properly.

It replies with what it got (with ``upper``, the ASCII uppercase of it), on
fastio's Loop. What the tutorial version leaves out:

* Partial writes: replies go through the transport, which buffers what the
  kernel does not take and flushes it on writability.
* Bounded memory: a client that sends but never reads fills its reply
  buffer; above the high-water mark the server stops reading from that
  client (pause_writing -> pause_reading) until the buffer drains, so the
  client's own socket buffers fill and it blocks. Per connection the server
  holds at most one recv (256 KiB) plus the high-water mark (64 KiB).
* ``max_conns``: past it the server stops accepting; new clients wait in
  the kernel's backlog until a connection ends.
* Graceful shutdown: stop accepting, flush every reply already owed (so no
  data the server received is lost), half-close, and discard further input
  until the client closes; clients that are not done within `drain_timeout`
  are aborted.
* ``workers``: N processes, each with its own listening socket on the same
  port (SO_REUSEPORT: the kernel spreads connections over them).
"""

import dataclasses
import os
import select
import signal
import socket
import sys
from typing import Any

from fastio import selectors as _selectors
from fastio._ext import echo as _echo_ext
from fastio.loop import Loop, Protocol

__all__ = ["EchoServer", "EchoStats", "BACKENDS", "serve"]

#: --backend name -> selector class (None: the best available).
BACKENDS = {
    "epoll": getattr(_selectors, "EpollSelector", None),
    "poll": getattr(_selectors, "PollSelector", None),
    "select": _selectors.SelectSelector,
    # Completion-based (fastio.echo.uring); where io_uring is unavailable,
    # serve() falls back to epoll, this entry's selector.
    "io_uring": getattr(_selectors, "EpollSelector", None),
}

# select(2) cannot watch fds past FD_SETSIZE (1024): keep headroom for the
# listening socket, stdio and the loop's own fds.
SELECT_MAX_CONNS = 1000


@dataclasses.dataclass
class EchoStats:
    """What a server did: connections accepted, bytes received and sent."""

    connections: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def add(self, other):
        self.connections += other.connections
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out

    def summary(self):
        """Return the one-line summary printed at shutdown."""
        return "served %d connections, %d bytes in, %d bytes out" % (
            self.connections, self.bytes_in, self.bytes_out)


class _PyEchoCore:
    """The per-chunk path without the extension: fastio._echo.EchoCore's twin."""

    def data_received(self, data):
        if self._draining:
            return  # arrived after shutdown began: read only to be discarded
        self._in += len(data)
        if self._upper:
            data = data.upper()  # bytes.upper() touches ASCII letters only
        self._transport.write(data)


# Discussion: the per-chunk path is what the server benchmark measures. With
# the extension it is compiled (fastio._echo): the loop's transport hands it
# the receive buffer, and the reply goes out through the transport's C write.
_EchoCore: Any = _echo_ext.EchoCore if _echo_ext is not None else _PyEchoCore


class _EchoProtocol(_EchoCore, Protocol):
    """One connection: echo (or uppercase) every chunk back.

    Bytes in are counted per connection as they arrive (`_in`), and added to
    the server's totals, with the bytes out, when the connection ends (the
    transport then knows what never left).
    """

    def __init__(self, server):
        self._server = server
        self._upper = server.upper
        self._transport = None
        self._in = 0
        self._draining = False

    def connection_made(self, transport):
        self._transport = transport
        self._server._opened(self)

    def eof_received(self):
        # The client is done sending: close once its replies are flushed.
        return False

    def pause_writing(self):
        # The client reads slower than it sends: stop reading from it.
        self._transport.pause_reading()

    def resume_writing(self):
        self._transport.resume_reading()

    def drain_and_close(self):
        """Flush the owed replies, send EOF, then discard input until the
        client closes.

        Closing at once would lose replies: on Linux, close() on a socket
        with unread input sends a reset and drops the unsent replies in the
        kernel's send queue. So the server half-closes after the flush and
        reads (and discards) until the client's EOF.
        """
        self._draining = True
        self._transport.write_eof()
        self._transport.resume_reading()

    def abort(self):
        self._transport.abort()

    def connection_lost(self, exc):
        # Every byte read was written back (upper() keeps the length), less
        # what a reset or an abort left unsent.
        self._server._closed(self, self._in, self._in - self._transport.get_extra_info("dropped_bytes", 0))


class EchoServer:
    """An echo server on a fastio Loop.

    :param host: address to listen on.
    :param port: TCP port (0: pick a free one; see `port` after start()).
    :param upper: reply with the ASCII uppercase of what arrived.
    :param backend: "epoll", "poll", "select" or None (the best available).
    :param max_conns: accept at most this many connections at once.
    :param reuse_port: set SO_REUSEPORT (for several processes on one port).
    :param loop: run on this Loop instead of a new one.
    :param drain_timeout: seconds a shutdown waits for clients to take their
        replies and close before the rest are aborted.
    """

    def __init__(self, host="127.0.0.1", port=10000, *, upper=False, backend=None,
                 max_conns=None, reuse_port=False, loop=None, drain_timeout=5.0):
        if backend is not None and BACKENDS.get(backend) is None:
            raise ValueError("backend %r is not available here" % (backend,))
        if backend == "io_uring":
            raise ValueError("EchoServer runs on a Loop: use fastio.echo.uring.UringEchoServer "
                             "or serve(backend='io_uring') for io_uring")
        if max_conns is not None and max_conns < 1:
            raise ValueError("max_conns must be >= 1, not %r" % (max_conns,))
        if backend == "select":
            max_conns = min(max_conns or SELECT_MAX_CONNS, SELECT_MAX_CONNS)
        self.host = host
        self.port = port
        self.upper = upper
        self.backend = backend
        self.max_conns = max_conns
        self.reuse_port = reuse_port
        self.drain_timeout = drain_timeout
        self.loop = loop if loop is not None else Loop(BACKENDS.get(backend))
        self._totals = EchoStats()  # of the connections that ended
        self._server = None
        self._conns = set()
        self._stopping = False

    def start(self):
        """Start listening; return the bound (host, port)."""
        self._server = self.loop.create_server(
            lambda: _EchoProtocol(self), self.host, self.port,
            backlog=1024, reuse_port=self.reuse_port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.host, self.port

    def shutdown(self):
        """Stop accepting, flush every owed reply, then stop the loop."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for proto in list(self._conns):
            proto.drain_and_close()
        self.loop.call_later(self.drain_timeout, self._abort_stragglers)
        self._maybe_stop()

    def serve_forever(self, ready=None):
        """Run until SIGINT/SIGTERM or shutdown(); return the stats.

        :param ready: called once SIGINT/SIGTERM lead to shutdown(), before
            the loop starts: whoever waits for the server learns it is up
            only when a signal can no longer kill it mid-start.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.shutdown)
        try:
            if ready is not None:
                ready()
            self.loop.run_forever()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.remove_signal_handler(sig)
        return self.stats

    def close(self):
        """Release the loop."""
        self.loop.close()

    @property
    def stats(self):
        """Return the `EchoStats` so far (bytes in include open connections')."""
        totals = self._totals
        return EchoStats(totals.connections,
                         totals.bytes_in + sum(proto._in for proto in self._conns),
                         totals.bytes_out)

    # -- connection bookkeeping

    def _opened(self, proto):
        self._totals.connections += 1
        self._conns.add(proto)
        if self._stopping:
            proto.drain_and_close()
        elif self.max_conns is not None and len(self._conns) >= self.max_conns:
            self._server.pause_accepting()

    def _closed(self, proto, bytes_in, bytes_out):
        self._totals.bytes_in += bytes_in
        self._totals.bytes_out += bytes_out
        self._conns.discard(proto)
        if self._stopping:
            self._maybe_stop()
        elif self.max_conns is not None and len(self._conns) < self.max_conns:
            self._server.resume_accepting()

    def _maybe_stop(self):
        if not self._conns:
            self.loop.stop()

    def _abort_stragglers(self):
        for proto in list(self._conns):
            proto.abort()


def _run_worker(options, ready_fd, stats_fd, sigmask):
    """Body of one --workers process: serve, then report stats on `stats_fd`.

    SIGINT/SIGTERM stay blocked (pending) until the server's handlers are in
    place; `sigmask` is the mask to restore then.
    """
    server = _new_server(reuse_port=True, **options)

    def ready():
        signal.pthread_sigmask(signal.SIG_SETMASK, sigmask)
        os.write(ready_fd, b"1")
        os.close(ready_fd)

    try:
        server.start()
        stats = server.serve_forever(ready)
    finally:
        server.close()
    os.write(stats_fd, ("%d %d %d\n" % (stats.connections, stats.bytes_in, stats.bytes_out)).encode())
    os.close(stats_fd)


def _serve_workers(options, workers, announce):
    """Run `workers` processes on one port; return the summed stats."""
    # Reserve the port here (port 0 must become one port for all workers):
    # a bound, non-listening SO_REUSEPORT socket takes no connections.
    probe = socket.socket(socket.AF_INET6 if ":" in options["host"] else socket.AF_INET)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    probe.bind((options["host"], options["port"]))
    options = dict(options, port=probe.getsockname()[1])
    stats_r, stats_w = os.pipe()
    children = []
    # Children install their own handlers; until then, keep signals pending.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        for _ in range(workers):
            ready_r, ready_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.close(ready_r)
                    os.close(stats_r)
                    _run_worker(options, ready_w, stats_w, old)
                except BaseException:
                    import traceback
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            os.close(ready_w)
            children.append(pid)
            if os.read(ready_r, 1) != b"1":
                raise RuntimeError("echo worker %d failed to start" % pid)
            os.close(ready_r)
    except BaseException:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        raise
    finally:
        os.close(stats_w)
        probe.close()
    # Forward SIGINT/SIGTERM to every worker, then collect their stats. The
    # wait watches a wakeup fd too: a Python handler runs only between
    # bytecodes, so a signal landing just before a blocking read would wait
    # for that read to return -- never, as the workers wait for the signal.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGINT, lambda *a: [_kill(pid) for pid in children])
    signal.signal(signal.SIGTERM, lambda *a: [_kill(pid) for pid in children])
    announce(options["host"], options["port"])
    signal.pthread_sigmask(signal.SIG_SETMASK, old)
    reports = b""
    try:
        while True:
            readable = select.select([stats_r, wake_r], [], [])[0]
            if wake_r in readable:
                os.read(wake_r, 512)  # the handler has run or runs next
            if stats_r in readable:
                chunk = os.read(stats_r, 65536)
                if not chunk:
                    break
                reports += chunk
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for fd in (wake_r, wake_w, stats_r):
            os.close(fd)
    total = EchoStats()
    failed = 0
    for line in reports.decode().splitlines():
        connections, bytes_in, bytes_out = map(int, line.split())
        total.add(EchoStats(connections, bytes_in, bytes_out))
    for pid in children:
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    if failed:
        raise RuntimeError("%d echo worker(s) exited with an error" % failed)
    return total


# -- io_uring ---------------------------------------------------------------


def _resolve_backend(backend):
    """Return `backend`, or "epoll" (with a one-line notice on stderr) when
    io_uring was asked for and is unavailable here."""
    if backend == "io_uring":
        from fastio.echo import uring

        mode, reason = uring.status()
        if mode is None:
            print("fastio echo: io_uring unavailable (%s); using epoll" % reason,
                  file=sys.stderr, flush=True)
            return "epoll" if BACKENDS.get("epoll") is not None else None
    return backend


def _new_server(**options):
    """Return an EchoServer, or a UringEchoServer for backend "io_uring"."""
    if options.get("backend") == "io_uring":
        from fastio.echo.uring import UringEchoServer

        return UringEchoServer(**options)
    return EchoServer(**options)


def _kill(pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def serve(host="127.0.0.1", port=10000, *, upper=False, backend=None, workers=1,
          max_conns=None, out=sys.stdout):
    """Serve until SIGINT/SIGTERM; print a ready line and a one-line summary.

    :returns: the `EchoStats` of all workers.
    """
    backend = _resolve_backend(backend)
    options = dict(host=host, port=port, upper=upper, backend=backend, max_conns=max_conns)

    def announce(bound_host, bound_port):
        print("fastio echo: listening on %s:%d (backend %s, %d worker%s)" % (
            bound_host, bound_port, backend or "default", workers, "s" if workers > 1 else ""),
            file=out, flush=True)

    if workers > 1:
        stats = _serve_workers(options, workers, announce)
    else:
        server = _new_server(**options)
        try:
            server.start()
            stats = server.serve_forever(lambda: announce(server.host, server.port))
        finally:
            server.close()
    print("fastio echo: " + stats.summary(), file=out, flush=True)
    return stats
