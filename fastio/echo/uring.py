"""The echo server on io_uring: same behaviour as `EchoServer`, completion-based.

The whole per-connection path runs in fastio._impl.echo_c.UringEcho (src/uring_echo.pxi):
multishot accept, multishot recv into a provided-buffer ring, replies as
SQEs, one io_uring_enter per loop turn. This module owns the listening
socket, the wake pipe, signals and the stats, with `EchoServer`'s interface,
so `fastio.echo.server.serve` runs either.

`status()` says whether io_uring can be used here, and if not, why (no
extension, not Linux, ENOSYS, EPERM, an old kernel, FASTIO_IO_URING=0).
"""

import os
import signal
import socket
import threading

from fastio._impl import compiled

__all__ = ["UringEchoServer", "status"]

# io_uring exists compiled only.
_echo_ext = compiled("echo")


def status():
    """Return (mode, None) if io_uring is usable here, else (None, why not).

    `mode` is how the ring was set up: "defer_taskrun", "coop_taskrun" or "plain".
    """
    if _echo_ext is None:
        return None, "fastio's C extension is not available"
    return _echo_ext.uring_status()


class UringEchoServer:
    """An echo server on io_uring; same interface as `EchoServer`.

    :param backend: ignored ("io_uring"); accepted for `EchoServer`'s signature.
    :param high_water: unsent bytes per connection above which it is not read.
    :param mode: the best io_uring setup mode to try: "defer_taskrun" (the
        default), "coop_taskrun" or "plain"; the kernel may give a lower one.
    :param nbufs: provided buffers in the ring (a power of two).
    :param bufsize: bytes per provided buffer.
    :raises OSError: from `__init__` if io_uring is unavailable (see `status`).
    """

    def __init__(self, host="127.0.0.1", port=10000, *, upper=False, backend="io_uring",
                 max_conns=None, reuse_port=False, drain_timeout=5.0, high_water=64 * 1024,
                 mode="defer_taskrun", nbufs=128, bufsize=65536):
        if max_conns is not None and max_conns < 1:
            raise ValueError("max_conns must be >= 1, not %r" % (max_conns,))
        usable, reason = status()
        if usable is None:
            raise OSError("io_uring is unavailable: %s" % reason)
        self.host = host
        self.port = port
        self.upper = upper
        self.backend = "io_uring"
        self.max_conns = max_conns
        self.reuse_port = reuse_port
        self.drain_timeout = drain_timeout
        self.high_water = high_water
        self._ring_options = dict(mode=mode, nbufs=nbufs, bufsize=bufsize)
        self._sock = None
        self._core = None
        self._wake_r = self._wake_w = -1
        self._stopping = False

    def start(self):
        """Start listening; return the bound (host, port)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
            sock.listen(1024)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._core = _echo_ext.UringEcho(
            sock.fileno(), self._wake_r, upper=self.upper, max_conns=self.max_conns or 0,
            high_water=self.high_water, drain_timeout=self.drain_timeout, **self._ring_options)
        return self.host, self.port

    def shutdown(self):
        """Stop accepting, flush every owed reply, then return from serve_forever.

        Callable from a signal handler or another thread.
        """
        self._stopping = True
        if self._core is not None:
            self._core.request_stop()
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass  # a full pipe already wakes the loop; a closed one has no loop

    def serve_forever(self, ready=None):
        """Run until SIGINT/SIGTERM or shutdown(); return the stats.

        :param ready: called once the signal handlers are in place.
        """
        main = threading.current_thread() is threading.main_thread()
        old = {}
        old_wakeup = None
        if main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda signum, frame: self.shutdown())
            # A signal landing while the loop waits in io_uring_enter writes
            # here, and the ring's poll on the pipe wakes the loop.
            old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            if self._stopping:
                self._core.request_stop()
            self._core.setup()  # in this thread: the ring belongs to it
            if ready is not None:
                ready()
            self._core.run()
        finally:
            if main:
                signal.set_wakeup_fd(old_wakeup)
                for sig, handler in old.items():
                    signal.signal(sig, handler)
        return self.stats

    def close(self):
        """Release the listening socket and the wake pipe."""
        if self._sock is not None:
            self._sock.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    @property
    def stats(self):
        """Return the `EchoStats` so far (bytes in include open connections')."""
        from fastio.echo.server import EchoStats

        core = self._core
        if core is None:
            return EchoStats()
        return EchoStats(core.connections, core.bytes_in + core.open_bytes_in, core.bytes_out)

    @property
    def mode(self):
        """The io_uring setup mode in use; None until serve_forever sets the ring up."""
        return self._core.mode if self._core is not None else None

    @property
    def engine(self):
        """The compiled engine (fastio._impl.echo_c.UringEcho): its counters, e.g. `enters`."""
        return self._core
