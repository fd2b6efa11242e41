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
  port (SO_REUSEPORT: the kernel spreads connections over them), supervised:
  a worker that dies is logged and replaced, with a growing delay if it
  keeps dying right after its start. A port another server already listens
  on is refused unless ``reuse_port`` asks to share it.
"""

import dataclasses
import os
import select
import signal
import socket
import sys
import time
import warnings
from typing import IO, Any, Callable, Dict, Optional, Set, Tuple, Type

from fastio import selectors as _selectors
from fastio._cli import format_address
from fastio._impl import echo as _echo_impl
from fastio.loop import Loop, Protocol, Server, Transport

__all__ = ["EchoServer", "EchoStats", "BACKENDS", "serve"]

#: --backend name -> selector class (None: the best available).
BACKENDS: Dict[str, Optional[Type[_selectors.BaseSelector]]] = {
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

    def add(self, other: "EchoStats") -> None:
        """Add the counts of `other` to these."""
        self.connections += other.connections
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out

    def summary(self) -> str:
        """Return the one-line summary printed at shutdown."""
        return "served %d connections, %d bytes in, %d bytes out" % (
            self.connections, self.bytes_in, self.bytes_out)


# Discussion: the per-chunk path is what the server benchmark measures. With
# the extension it is compiled (fastio._impl.echo_c): the loop's transport
# hands it the receive buffer, and the reply goes out through the
# transport's C write.
_EchoCore: Any = _echo_impl.EchoCore


class _EchoProtocol(_EchoCore, Protocol):
    """One connection: echo (or uppercase) every chunk back.

    Bytes in are counted per connection as they arrive (`_in`), and added to
    the server's totals, with the bytes out, when the connection ends (the
    transport then knows what never left).
    """

    def __init__(self, server: "EchoServer") -> None:
        self._server = server
        self._upper = server.upper
        self._transport: Any = None
        self._in = 0
        self._draining = False

    def connection_made(self, transport: Transport) -> None:
        self._transport = transport
        self._server._opened(self)

    def eof_received(self) -> Optional[bool]:
        # The client is done sending: close once its replies are flushed.
        return False

    def pause_writing(self) -> None:
        # The client reads slower than it sends: stop reading from it.
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._transport.resume_reading()

    def drain_and_close(self) -> None:
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

    def abort(self) -> None:
        self._transport.abort()

    def connection_lost(self, exc: Optional[Exception]) -> None:
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

    def __init__(self, host: str = "127.0.0.1", port: int = 10000, *, upper: bool = False,
                 backend: Optional[str] = None, max_conns: Optional[int] = None,
                 reuse_port: bool = False, loop: Optional[Loop] = None,
                 drain_timeout: float = 5.0) -> None:
        if backend is not None and BACKENDS.get(backend) is None:
            raise ValueError("backend %r is not available here" % (backend,))
        if backend == "io_uring":
            raise ValueError("EchoServer runs on a Loop: use fastio.echo.uring.UringEchoServer "
                             "or serve(backend='io_uring') for io_uring")
        if max_conns is not None and max_conns < 1:
            raise ValueError("max_conns must be >= 1, not %r" % (max_conns,))
        if backend == "select":
            if max_conns is not None and max_conns > SELECT_MAX_CONNS:
                warnings.warn("select() cannot watch more than %d connections here; max_conns "
                              "%d lowered to %d" % (SELECT_MAX_CONNS, max_conns, SELECT_MAX_CONNS),
                              RuntimeWarning, stacklevel=2)
            max_conns = min(max_conns or SELECT_MAX_CONNS, SELECT_MAX_CONNS)
        self.host = host
        self.port = port
        self.upper = upper
        self.backend = backend
        self.max_conns = max_conns
        self.reuse_port = reuse_port
        self.drain_timeout = drain_timeout
        self.loop = loop if loop is not None else Loop(BACKENDS[backend] if backend is not None else None)
        self._totals = EchoStats()  # of the connections that ended
        self._server: Optional[Server] = None
        self._conns: Set[_EchoProtocol] = set()
        self._stopping = False

    def start(self) -> Tuple[str, int]:
        """Start listening; return the bound (host, port)."""
        self._server = self.loop.create_server(
            lambda: _EchoProtocol(self), self.host, self.port,
            backlog=1024, reuse_port=self.reuse_port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.host, self.port

    def shutdown(self) -> None:
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

    def serve_forever(self, ready: Optional[Callable[[], object]] = None) -> EchoStats:
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

    def close(self) -> None:
        """Release the loop."""
        self.loop.close()

    @property
    def stats(self) -> EchoStats:
        """Return the `EchoStats` so far (bytes in include open connections')."""
        totals = self._totals
        return EchoStats(totals.connections,
                         totals.bytes_in + sum(proto._in for proto in self._conns),
                         totals.bytes_out)

    # -- connection bookkeeping

    def _opened(self, proto: _EchoProtocol) -> None:
        self._totals.connections += 1
        self._conns.add(proto)
        if self._stopping:
            proto.drain_and_close()
        elif self.max_conns is not None and len(self._conns) >= self.max_conns:
            assert self._server is not None
            self._server.pause_accepting()

    def _closed(self, proto: _EchoProtocol, bytes_in: int, bytes_out: int) -> None:
        self._totals.bytes_in += bytes_in
        self._totals.bytes_out += bytes_out
        self._conns.discard(proto)
        if self._stopping:
            self._maybe_stop()
        elif self.max_conns is not None and len(self._conns) < self.max_conns:
            assert self._server is not None
            self._server.resume_accepting()

    def _maybe_stop(self) -> None:
        if not self._conns:
            self.loop.stop()

    def _abort_stragglers(self) -> None:
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


def _reserve_port(host, port, share):
    """Return a bound, non-listening SO_REUSEPORT socket holding the port.

    It keeps the port for the workers (port 0 becomes one port for all, and a
    replacement worker finds it free) but takes no connections. Unless
    `share`, first bind without SO_REUSEPORT: if another server listens on
    the port, that fails with EADDRINUSE instead of silently sharing it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not share:
        with socket.socket(family) as exclusive:
            exclusive.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            exclusive.bind((host, port))
            port = exclusive.getsockname()[1]
    probe = socket.socket(family)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, port))
    except BaseException:
        probe.close()
        raise
    return probe


#: A worker that dies sooner than this after its start is crashing: its
#: replacement waits, twice as long each time (up to RESPAWN_DELAY_MAX).
RESPAWN_MIN_UPTIME = 1.0
RESPAWN_DELAY_FIRST = 0.5
RESPAWN_DELAY_MAX = 30.0


@dataclasses.dataclass
class _Worker:
    pid: int
    slot: int
    started: float
    stats_r: int
    ready_r: Any = None  # the ready pipe until the worker said it is up
    report: bytes = b""


class _Supervisor:
    """Run `workers` echo processes on one port and keep them running.

    As gunicorn's arbiter and nginx's master: a worker that dies is reaped,
    logged and replaced (after a growing delay if it keeps dying right after
    its start); SIGINT/SIGTERM are forwarded to the workers, whose stats are
    summed once they have all exited.
    """

    def __init__(self, options, workers, share, log):
        self.options = options
        self.count = workers
        self.share = share
        self.log = log
        self.live = {}  # pid -> _Worker
        self.due = {}  # slot -> monotonic time of its respawn
        self.delay = [0.0] * workers  # slot -> its next respawn delay
        self.stopping = False
        self.total = EchoStats()
        self.failed = 0
        self.sigmask = None
        self.probe = None
        self.wake = None

    # -- processes

    def _spawn(self, slot, wait_ready):
        """Fork one worker (signals blocked meanwhile); return its _Worker."""
        stats_r, stats_w = os.pipe()
        ready_r, ready_w = os.pipe()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    # Nothing of the supervisor's: its handlers, wakeup fd, fds.
                    signal.set_wakeup_fd(-1)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                        signal.signal(sig, signal.SIG_DFL)
                    for fd in [stats_r, ready_r] + self._parent_fds():
                        os.close(fd)
                    _run_worker(self.options, ready_w, stats_w, self.sigmask)
                except BaseException:
                    import traceback
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            os.close(stats_w)
            os.close(ready_w)
            worker = _Worker(pid, slot, time.monotonic(), stats_r, ready_r)
            self.live[pid] = worker
        except BaseException:
            for fd in (stats_r, ready_r):
                os.close(fd)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if wait_ready:
            ok = os.read(ready_r, 1) == b"1"
            os.close(ready_r)
            worker.ready_r = None
            if not ok:
                raise RuntimeError("echo worker %d failed to start" % pid)
        return worker

    def _parent_fds(self):
        fds = [self.probe.fileno()]
        if self.wake is not None:
            fds += list(self.wake)
        for w in self.live.values():
            fds.append(w.stats_r)
            if w.ready_r is not None:
                fds.append(w.ready_r)
        return fds

    def _reap(self):
        for pid in list(self.live):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self._exited(self.live.pop(pid), status)

    def _exited(self, worker, status):
        # The worker is gone: its pipe ends at what it wrote.
        while True:
            chunk = os.read(worker.stats_r, 65536)
            if not chunk:
                break
            worker.report += chunk
        os.close(worker.stats_r)
        if worker.ready_r is not None:
            os.close(worker.ready_r)
        for line in worker.report.decode().splitlines():
            self.total.add(EchoStats(*map(int, line.split())))
        if self.stopping:
            self.failed += status != 0
            return
        uptime = time.monotonic() - worker.started
        if uptime < RESPAWN_MIN_UPTIME:
            delay = self.delay[worker.slot]
            delay = min(max(delay * 2, RESPAWN_DELAY_FIRST), RESPAWN_DELAY_MAX)
        else:
            delay = 0.0
        self.delay[worker.slot] = delay
        self.due[worker.slot] = time.monotonic() + delay
        self.log("worker %d %s after %.1f s; starting a new one%s" % (
            worker.pid, _describe_status(status), uptime,
            " in %.1f s (it died right after its start)" % delay if delay else ""))

    def _respawn_due(self):
        now = time.monotonic()
        for slot, when in sorted(self.due.items()):
            if when <= now:
                del self.due[slot]
                worker = self._spawn(slot, wait_ready=False)
                self.log("worker %d started (replacing one that died)" % worker.pid)

    def _stop(self, *_):
        self.stopping = True
        self.due.clear()
        for pid in self.live:
            _kill(pid)

    # -- the whole run

    def run(self, announce):
        """Start the workers, supervise them until a signal; return the summed stats."""
        self.probe = _reserve_port(self.options["host"], self.options["port"], self.share)
        self.options = dict(self.options, port=self.probe.getsockname()[1])
        # Until the handlers below are in place (and, in each worker, its
        # server's), SIGINT/SIGTERM stay pending: none is lost, none kills
        # a process mid-start.
        self.sigmask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for slot in range(self.count):
                self._spawn(slot, wait_ready=True)
        except BaseException:
            for pid in self.live:
                _kill(pid)
            self.probe.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, self.sigmask)
            raise
        # The wait watches a wakeup fd: a Python handler runs only between
        # bytecodes, so a signal landing just before a blocking select
        # would wait for that select to return.
        self.wake = os.pipe()
        os.set_blocking(self.wake[1], False)
        old_wakeup = signal.set_wakeup_fd(self.wake[1])
        old_handlers = {sig: signal.signal(sig, handler) for sig, handler in (
            (signal.SIGINT, self._stop), (signal.SIGTERM, self._stop),
            (signal.SIGCHLD, lambda *_: None))}
        try:
            announce(self.options["host"], self.options["port"])
            signal.pthread_sigmask(signal.SIG_SETMASK, self.sigmask)
            self._reap()  # a worker that died before the handler was set
            while self.live or self.due:
                self._wait()
                self._reap()
                if not self.stopping:
                    self._respawn_due()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.sigmask)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_wakeup)
            for fd in self.wake:
                os.close(fd)
            self.wake = None
            self.probe.close()
            for pid in self.live:
                _kill(pid)
        if self.failed:
            raise RuntimeError("%d echo worker(s) exited with an error" % self.failed)
        return self.total

    def _wait(self):
        timeout = None
        if self.due and not self.stopping:
            timeout = max(0.0, min(self.due.values()) - time.monotonic())
        fds = [self.wake[0]]
        for w in self.live.values():
            fds.append(w.stats_r)
            if w.ready_r is not None:
                fds.append(w.ready_r)
        readable = select.select(fds, [], [], timeout)[0]
        if self.wake[0] in readable:
            os.read(self.wake[0], 512)  # the handler has run or runs next
        for w in list(self.live.values()):
            if w.ready_r is not None and w.ready_r in readable:
                os.read(w.ready_r, 1)  # EOF if it died first: reaped anyway
                os.close(w.ready_r)
                w.ready_r = None
            if w.stats_r in readable:
                w.report += os.read(w.stats_r, 65536)


def _describe_status(status):
    if os.WIFSIGNALED(status):
        try:
            name = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            name = str(os.WTERMSIG(status))
        return "was killed by %s" % name
    return "exited with status %d" % os.waitstatus_to_exitcode(status)


def _serve_workers(options, workers, announce, reuse_port=False, log=None):
    """Run `workers` supervised processes on one port; return the summed stats."""
    if log is None:
        def log(message):
            print("fastio echo: " + message, file=sys.stderr, flush=True)
    return _Supervisor(options, workers, reuse_port, log).run(announce)


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


def serve(host: str = "127.0.0.1", port: int = 10000, *, upper: bool = False,
          backend: Optional[str] = None, workers: int = 1, max_conns: Optional[int] = None,
          reuse_port: bool = False, out: Optional[IO[str]] = None) -> EchoStats:
    """Serve until SIGINT/SIGTERM; print a ready line and a one-line summary.

    :param workers: processes serving the port; one that dies is replaced.
    :param reuse_port: share the port with other servers (SO_REUSEPORT);
        otherwise a port another server listens on is refused (EADDRINUSE).
    :returns: the `EchoStats` of all workers.
    """
    if out is None:
        out = sys.stdout
    backend = _resolve_backend(backend)
    if backend == "select" and max_conns is not None and max_conns > SELECT_MAX_CONNS:
        print("fastio echo: warning: select() cannot watch more than %d connections here; "
              "--max-conns %d lowered to %d" % (SELECT_MAX_CONNS, max_conns, SELECT_MAX_CONNS),
              file=sys.stderr, flush=True)
        max_conns = SELECT_MAX_CONNS
    options: Dict[str, Any] = dict(host=host, port=port, upper=upper, backend=backend,
                                   max_conns=max_conns)

    def announce(bound_host: str, bound_port: int) -> None:
        print("fastio echo: listening on %s (backend %s, %d worker%s)" % (
            format_address(bound_host, bound_port), backend or "default", workers,
            "s" if workers > 1 else ""),
            file=out, flush=True)

    if workers > 1:
        stats = _serve_workers(options, workers, announce, reuse_port)
    else:
        server = _new_server(reuse_port=reuse_port, **options)
        try:
            server.start()
            stats = server.serve_forever(lambda: announce(server.host, server.port))
        finally:
            server.close()
    print("fastio echo: " + stats.summary(), file=out, flush=True)
    return stats
