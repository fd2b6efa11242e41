"""Helpers for tests/test_echo.py: echo servers to test and sockets to talk to them.

`InProcessServer` runs an `EchoServer` on its own Loop in a thread (for the
tests that only need bytes on the wire); `ServerProcess` runs
``python -m fastio echo`` (for the tests that need signals, RSS, workers or
the command line). Everything here is bounded by a timeout: a broken server
makes a test fail, never hang.
"""

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from fastio.echo.server import EchoServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_RE = re.compile(r"^fastio echo: listening on (\S+):(\d+) ")
SUMMARY_RE = re.compile(r"^fastio echo: served (\d+) connections, (\d+) bytes in, (\d+) bytes out$")

#: The server backend InProcessServer and ServerProcess use when a test names
#: none (None: the default). tests/test_echo_uring.py sets "io_uring" to run
#: test_echo's server tests again on io_uring.
BACKEND = None

#: The backend of the Loop an InProcessServer's EchoServer runs on (None: the
#: Loop's default). tests/test_loop_uring.py sets "io_uring" to run
#: test_echo's in-process server tests on the Loop's io_uring transports.
LOOP_BACKEND = None


def uring_unavailable():
    """Return why io_uring cannot run here, or None if it can."""
    from fastio.echo import uring

    return uring.status()[1]


_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_upper(data):
    """Return `data` with a-z mapped to A-Z and every other byte unchanged."""
    return bytes(data).translate(_UPPER)


# --- servers ------------------------------------------------------------------


class InProcessServer:
    """An EchoServer on a fastio Loop running in a thread; a context manager.

    Errors the loop reports (its exception handler) are collected in `errors`.
    """

    def __init__(self, **options):
        options.setdefault("port", 0)
        options.setdefault("drain_timeout", 2.0)
        if BACKEND is not None and options.get("backend") is None:
            options["backend"] = BACKEND
        self.errors = []
        if options.get("backend") == "io_uring":
            # No Loop: the server runs its own ring; errors end its thread.
            from fastio.echo.uring import UringEchoServer

            self.server = UringEchoServer(**options)
            self.loop = None
            target = self._serve_uring
        else:
            if LOOP_BACKEND is not None and options.get("loop") is None:
                from fastio.loop import Loop

                options["loop"] = Loop(backend=LOOP_BACKEND)
            self.server = EchoServer(**options)
            self.loop = self.server.loop
            self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
            target = self.loop.run_forever
        self.thread = threading.Thread(target=target, name="echo-server", daemon=True)

    def _serve_uring(self):
        try:
            self.server.serve_forever()
        except BaseException as exc:
            self.errors.append({"exception": exc})

    def shutdown_threadsafe(self):
        """Begin the server's graceful shutdown (what SIGTERM does) from this thread."""
        if self.loop is None:
            self.server.shutdown()
        else:
            self.loop.call_soon_threadsafe(self.server.shutdown)

    @property
    def address(self):
        return (self.server.host, self.server.port)

    @property
    def stats(self):
        return self.server.stats

    def __enter__(self):
        self.server.start()
        self.thread.start()
        return self

    def stop(self, timeout=10.0):
        """Shut the server down gracefully; return whether its loop stopped in time."""
        if self.thread.is_alive():
            self.shutdown_threadsafe()
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def __exit__(self, *exc):
        stopped = self.stop()
        if stopped:
            self.server.close()
        assert stopped, "the echo server's loop did not stop within 10 s of shutdown()"


class ServerProcess:
    """``python -m fastio echo --port 0 ARGS...`` in a child process; a context manager.

    `port` is parsed from its ready line; `stop()` sends SIGTERM and returns
    (exit code, stdout lines after the ready line, stderr). Leaving the
    context without stop() kills the server and its workers.
    """

    def __init__(self, *args, timeout=10.0, **popen):
        self.ready_line = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastio", "echo", "--port", "0", *args,
             *(["--backend", BACKEND] if BACKEND is not None and "--backend" not in args else [])],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
        try:
            line = read_line(self.proc.stdout, timeout)
        except BaseException:
            self.kill()
            raise
        match = READY_RE.match(line)
        if match is None:
            _, err = self.kill()
            raise AssertionError("no ready line from the echo server: stdout %r, stderr %r" % (line, err))
        self.ready_line = line
        self.host, self.port = match.group(1), int(match.group(2))

    @property
    def pid(self):
        return self.proc.pid

    @property
    def address(self):
        return (self.host, self.port)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Send `sig` (None: none), wait for the exit; return (returncode, stdout lines, stderr text)."""
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the echo server did not exit within %.0f s (signal %s)" % (timeout, sig))
        return self.proc.returncode, out.decode().splitlines(), err.decode()

    def kill(self):
        """Kill the child and its workers (a failing test's cleanup); return its output."""
        for pid in child_pids(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            return self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            return b"", b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.returncode is None:
            self.kill()


def read_line(stream, timeout):
    """Read one line from a binary pipe within `timeout` seconds; return it decoded, stripped."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError("no line within %.1f s (got %r)" % (timeout, data))
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.decode().rstrip("\n")


def run_cli(*args, timeout=30.0):
    """Run ``python -m fastio ARGS...``; return the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, "-m", "fastio", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def parse_summary(lines):
    """Return (connections, bytes_in, bytes_out) from the only summary line in `lines`."""
    found = [SUMMARY_RE.match(line) for line in lines]
    found = [m for m in found if m]
    assert len(found) == 1, "expected exactly one summary line in %r" % (lines,)
    return tuple(int(g) for g in found[0].groups())


# --- /proc --------------------------------------------------------------------


def rss_kib(pid):
    """Return VmRSS of process `pid` in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def child_pids(pid):
    """Return the pids whose parent is `pid`."""
    children = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces; fields resume after ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(name))
    return children


def socket_inodes(pid):
    """Return the inodes of the sockets process `pid` has open."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def established_on_port(port):
    """Return the inodes of ESTABLISHED TCP sockets whose local port is `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":
                inodes.add(int(fields[9]))
    return inodes


def unread_bytes(sock):
    """Return how many bytes wait in `sock`'s receive queue (FIONREAD)."""
    import fcntl
    import struct
    import termios

    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def wait_until(predicate, timeout=30.0, interval=0.002):
    """Poll `predicate()` until true or `timeout`; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def peer_socket_in_this_process(sock, timeout=5.0):
    """Return a dup of the socket in this process connected to `sock` (an in-process server's end).

    Close it before the server closes its end: the dup keeps the connection open.
    """
    found = wait_until(lambda: _find_peer(sock.getsockname()), timeout)
    if found is None:
        raise AssertionError("no socket in this process is connected to %r" % (sock.getsockname(),))
    return found


def _find_peer(want):
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink("/proc/self/fd/" + name).startswith("socket:"):
                continue
            other = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if other.type == socket.SOCK_STREAM and other.getpeername() == want:
                return other
        except OSError:
            pass
        other.close()
    return None


def unsent_bytes(sock):
    """Return how many bytes `sock` has written that its peer has not acknowledged (SIOCOUTQ)."""
    import fcntl
    import struct
    import termios

    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def fill_until_server_owes(sock, server, pattern, chunk=32 * 1024, limit=64 << 20):
    """Send `pattern`... on `sock` without reading until `server` holds replies in its own memory.

    `server` is an InProcessServer. After each chunk, wait until it has read
    everything sent; stop as soon as the replies it owes exceed what the
    kernel holds on either side (the server socket's unacknowledged bytes,
    the client's unread ones): the rest is in the server's write buffer.
    Every byte sent has then been read by the server, and its buffer is
    under the high-water mark (it has not paused reading). The estimate is
    conservative: bytes both delivered and unacknowledged count twice.

    :returns: (bytes sent, bytes owed beyond the kernel's queues).
    """
    stream = memoryview(pattern * (chunk // len(pattern) + 2))
    sent = 0
    server_end = peer_socket_in_this_process(sock)
    try:
        while sent < limit:
            start = sent % len(pattern)
            sock.sendall(stream[start:start + chunk])
            sent += chunk
            if not wait_until(lambda: server.stats.bytes_in == sent, timeout=30):
                raise AssertionError("the server stopped reading after %d of %d bytes"
                                     % (server.stats.bytes_in, sent))
            time.sleep(0.001)  # the write follows the read in the same callback
            owed = sent - unread_bytes(sock) - unsent_bytes(server_end)
            if owed > 0:
                return sent, owed
    finally:
        server_end.close()
    raise AssertionError("sent %d bytes and the server still owes nothing" % sent)


def stream_prefix(pattern, n):
    """Return the first `n` bytes of `pattern` repeated."""
    return (pattern * (n // len(pattern) + 1))[:n]


# --- client sockets ----------------------------------------------------------


def connect(address, timeout=30.0):
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock, n, timeout=30.0):
    """Receive exactly `n` bytes within `timeout` seconds (fewer if EOF comes first)."""
    chunks = []
    got = 0
    deadline = time.monotonic() + timeout
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except socket.timeout:
            break
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_until_eof(sock, timeout=30.0):
    """Receive until EOF; return (data, saw_eof). saw_eof is False on timeout."""
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            return b"".join(chunks), False
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def echo_once(port, payload):
    """Send `payload` to the echo server on `port`, half-close, return all it sends back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
    return bytes(got)


def round_trip(sock, payload, timeout=30.0):
    """Send `payload`, return what comes back in the same number of bytes."""
    sock.sendall(payload)
    return recv_exactly(sock, len(payload), timeout)


def reset(sock):
    """Close `sock` with SO_LINGER 0: the kernel sends RST, not FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


class Pump:
    """A connection that sends a known stream from one thread and reads from another.

    The stream is `pattern` repeated, so the bytes received must be a prefix
    of it (`expected()`). The sender runs until an error or `join()`; the
    reader until EOF, a reset or 20 s. `sent` counts the bytes the kernel
    took, `received` holds what came back, `recv_end` says how it ended.
    """

    def __init__(self, address, pattern, chunk=16 * 1024):
        self.sock = connect(address)
        self.pattern = pattern
        self.chunk = chunk
        self.sent = 0
        self.received = bytearray()
        self.send_error = None
        self.recv_end = None  # "eof", "reset" or "timeout"
        self._stop = threading.Event()
        self._stream = pattern * (chunk // len(pattern) + 2)
        self._sender = threading.Thread(target=self._send_loop, daemon=True)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)

    def start(self):
        self._sender.start()
        self._reader.start()
        return self

    def expected(self, n):
        """The first `n` bytes of the stream sent."""
        return stream_prefix(self.pattern, n)

    def _send_loop(self):
        view = memoryview(self._stream)
        plen = len(self.pattern)
        sock = self.sock
        sock.settimeout(0.2)
        while not self._stop.is_set():
            start = self.sent % plen
            try:
                n = sock.send(view[start:start + self.chunk])
            except socket.timeout:
                continue
            except OSError as exc:
                self.send_error = exc
                return
            self.sent += n

    def _read_loop(self, timeout=20.0):
        sock = self.sock
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.recv_end = "timeout"
                return
            sock.settimeout(min(left, 0.5))
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                self.recv_end = "reset"
                return
            if not chunk:
                self.recv_end = "eof"
                return
            self.received += chunk

    def join(self, timeout=20.0):
        """Wait for the reader to finish; return whether it did."""
        self._stop.set()
        self._sender.join(timeout)
        self._reader.join(timeout)
        return not self._reader.is_alive()

    def close(self):
        self._stop.set()
        self.sock.close()


def raise_nofile(wanted):
    """Raise RLIMIT_NOFILE's soft limit to at least `wanted`; return the old limits, or None if impossible."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return (soft, hard)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        return None
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return (soft, hard)
