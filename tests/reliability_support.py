"""Helpers for tests/test_reliability.py: timer signals, blocked threads,
an fd-starved echo server in a child process, and a 10k-connection client.

Everything here is bounded by a timeout: a broken fastio makes a test fail,
never hang. Run as a script (``python reliability_support.py emfile-server
KIND``) it is the child process of the EMFILE test.
"""

import contextlib
import errno
import os
import random
import selectors as stdlib_selectors
import signal
import socket
import subprocess
import sys
import threading
import time

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


# --- signals and threads ------------------------------------------------------


class SignalCount:
    """How many times the timer signal's (no-op) Python handler ran."""

    def __init__(self):
        self.calls = 0

    def handler(self, signum, frame):
        self.calls += 1


@contextlib.contextmanager
def timer_signal(interval=0.001):
    """Deliver SIGALRM every `interval` seconds to a no-op Python handler.

    Yields a `SignalCount`. pytest-timeout arms ITIMER_REAL/SIGALRM too: its
    timer and handler are saved and put back (minus the time spent here), so
    its per-test timeout still applies once the block ends. Inside the block
    the test must bound itself.
    """
    count = SignalCount()
    old_handler = signal.signal(signal.SIGALRM, count.handler)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, interval, interval)
    started = time.monotonic()
    try:
        yield count
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            left = old_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), old_interval)


def block_timer_signal_in_this_thread():
    """Keep SIGALRM off the calling (helper) thread: it then always lands on
    the main thread, whose waits are the ones under test."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})


_WAIT_CHANNELS = ("epoll", "poll", "select", "io_cqring_wait")


def wait_until_blocked(native_id, timeout=2.0):
    """Wait until thread `native_id` sleeps in epoll_wait/poll/select.

    Reads the kernel's wait channel (/proc/self/task/TID/wchan): a thread
    waiting for the GIL sleeps on a futex instead, and a running one shows
    "0", so this tells "blocked in the wait under test" from "about to call
    it". Without a readable wchan, or if none is seen within `timeout`,
    falls back to having slept.

    :returns: True if the wait was seen.
    """
    path = "/proc/self/task/%d/wchan" % native_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                wchan = f.read().strip()
        except OSError:
            time.sleep(0.3)
            return False
        if any(word in wchan for word in _WAIT_CHANNELS):
            return True
        time.sleep(0.001)
    return False


# --- bytes --------------------------------------------------------------------


def first_difference(got, want):
    """Describe where `got` and `want` first differ (for assertion messages)."""
    n = min(len(got), len(want))
    for i in range(0, n, 4096):
        if got[i:i + 4096] != want[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if got[j] != want[j]:
                    return "first difference at byte %d of %d (got %d bytes)" % (j, len(want), len(got))
    if len(got) != len(want):
        return "lengths differ: got %d bytes, want %d" % (len(got), len(want))
    return "equal"


def recv_exactly(sock, n, timeout=30.0):
    """Receive exactly `n` bytes within `timeout` s (fewer on EOF or timeout)."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - len(data), 1 << 20))
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def round_trip(sock, payload, timeout=30.0):
    """Send `payload` from a helper thread, return what comes back (len(payload) bytes).

    Sending from another thread lets a payload larger than both socket
    buffers flow while the echo is read here.
    """
    errors = []

    def send():
        try:
            sock.sendall(payload)
        except OSError as exc:
            errors.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    got = recv_exactly(sock, len(payload), timeout)
    sender.join(timeout)
    assert not errors, "sending failed: %r" % (errors,)
    return got


# --- the fd-starved echo server (child process) --------------------------------


class EmfileServer:
    """``reliability_support.py emfile-server KIND FREE`` in a child process.

    The child runs an echo server on loop KIND ("fastio-c", "fastio-py" or
    "asyncio"), lowers its RLIMIT_NOFILE and fills every free fd slot with
    /dev/null except FREE of them, so accept() fails with EMFILE once FREE
    clients are connected. It reads commands on stdin, one per line:

    * ``stats`` -> ``stats ACCEPTED EMFILE OTHER CPU``: connections accepted,
      EMFILE errors and other errors reported to the loop's exception
      handler, and the child's CPU time (time.process_time()) so far;
    * ``free`` -> ``freed N``: close the filler fds;
    * ``quit``: stop the loop and exit 0.
    """

    def __init__(self, kind, free_slots, timeout=10.0):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "emfile-server", kind, str(free_slots)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = self.read_line(timeout)
            if not line.startswith("ready "):
                raise AssertionError("no ready line from the EMFILE server: %r, stderr %r"
                                     % (line, self.kill()))
        except BaseException:
            self.kill()
            raise
        self.port = int(line.split()[1])
        self.address = ("127.0.0.1", self.port)

    def read_line(self, timeout=30.0):
        fd = self.proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not _readable(fd, left):
                raise AssertionError("no line from the EMFILE server within %.1f s (got %r)" % (timeout, data))
            chunk = os.read(fd, 1)
            if not chunk:
                raise AssertionError("the EMFILE server exited: %r, stderr %r" % (data, self.kill()))
            data += chunk
        return data.decode().strip()

    def command(self, text, timeout=30.0):
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read_line(timeout)

    def stats(self):
        """Return (accepted, emfile_errors, other_errors, cpu_seconds)."""
        fields = self.command("stats").split()
        assert fields[0] == "stats", fields
        return int(fields[1]), int(fields[2]), int(fields[3]), float(fields[4])

    def quit(self, timeout=10.0):
        """Stop the child; return (returncode, stderr text)."""
        self.proc.stdin.write(b"quit\n")
        self.proc.stdin.flush()
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the EMFILE server did not exit within %.0f s" % timeout)
        return self.proc.returncode, err.decode()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            return self.proc.communicate(timeout=5)[1].decode()
        except (subprocess.TimeoutExpired, ValueError):
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.returncode is None:
            self.kill()


def _readable(fd, timeout):
    sel = stdlib_selectors.DefaultSelector()
    try:
        sel.register(fd, stdlib_selectors.EVENT_READ)
        return bool(sel.select(timeout))
    finally:
        sel.close()


def _emfile_server_main(kind, free_slots):
    import asyncio
    import resource

    import implementations

    if kind == "fastio-io_uring":
        from fastio.loop import Loop

        loop = Loop(backend="io_uring")
    elif kind.startswith("fastio-"):
        loop = implementations.loop_class(kind[len("fastio-"):])()
    else:
        loop = asyncio.new_event_loop()
    state = {"accepted": 0, "emfile": 0, "other": 0}

    def on_error(loop, context):
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
            state["emfile"] += 1
        else:
            state["other"] += 1
            print("error %r" % (context,), file=sys.stderr, flush=True)

    loop.set_exception_handler(on_error)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            state["accepted"] += 1

        def data_received(self, data):
            self.transport.write(data)

    if kind == "asyncio":
        server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0, backlog=64))
    else:
        server = loop.create_server(Echo, "127.0.0.1", 0, backlog=64)
    port = server.sockets[0].getsockname()[1]

    # Starve: a low soft limit, every slot under it taken but `free_slots`.
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 32, hard))
    fillers = []
    while True:
        try:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            break
    for _ in range(free_slots):
        os.close(fillers.pop())

    def on_command():
        data = os.read(0, 4096)
        if not data:
            loop.stop()
            return
        for line in data.decode().split():
            if line == "stats":
                print("stats %d %d %d %.6f" % (state["accepted"], state["emfile"], state["other"],
                                               time.process_time()), flush=True)
            elif line == "free":
                for fd in fillers:
                    os.close(fd)
                print("freed %d" % len(fillers), flush=True)
                fillers.clear()
            elif line == "quit":
                loop.stop()

    loop.add_reader(0, on_command)
    print("ready %d" % port, flush=True)
    loop.run_forever()


# --- many connections (the test drives them) -------------------------------------


class Conn:
    __slots__ = ("sock", "index", "want", "got", "out")

    def __init__(self, sock, index):
        self.sock = sock
        self.index = index
        self.want = b""
        self.got = bytearray()
        self.out = memoryview(b"")


class EchoSwarm:
    """`n` non-blocking client connections to an echo server, driven by one selector.

    `open_all()` connects them all (at most `window` not yet confirmed at a
    time, so the server's backlog never overflows), each sending a first
    message and reading its echo; they then all stay open. `exchange()` sends
    a second message on every connection at once and reads every echo;
    `half_close_all()` sends EOF on each and waits for the server's.
    Every byte is checked: `wrong` lists the connections whose echo differed.
    """

    def __init__(self, address, n, deadline, seed=7, window=500):
        self.address = address
        self.n = n
        self.deadline = deadline
        self.window = window
        self.rng = random.Random(seed)
        self.conns = []
        self.wrong = []
        self.total_bytes = 0  # sent (and so expected back) over all rounds
        self.sel = stdlib_selectors.DefaultSelector()

    def _check_time(self, what):
        if time.monotonic() > self.deadline:
            done = sum(1 for c in self.conns if len(c.got) >= len(c.want))
            raise AssertionError("out of time while %s: %d of %d connections done"
                                 % (what, done, len(self.conns)))

    def _message(self, conn, size):
        message = b"#%05d:" % conn.index + self.rng.randbytes(size)
        self.total_bytes += len(message)
        return message

    def _send(self, conn):
        # Fresh sockets take a small message whole; keep the rest otherwise.
        n = conn.sock.send(conn.out)
        conn.out = conn.out[n:]

    def _on_readable(self, conn):
        chunk = conn.sock.recv(65536)
        if not chunk:
            raise AssertionError("connection #%d got EOF after %d of %d bytes"
                                 % (conn.index, len(conn.got), len(conn.want)))
        conn.got += chunk
        if len(conn.got) < len(conn.want):
            return False
        if conn.got != conn.want:
            self.wrong.append(conn.index)
        self.sel.unregister(conn.sock)
        return True

    def open_all(self, size=48):
        waiting = 0
        opened = 0
        while opened < self.n or waiting:
            self._check_time("opening connections")
            while opened < self.n and waiting < self.window:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                conn = Conn(sock, opened)
                self.conns.append(conn)
                err = sock.connect_ex(self.address)
                if err not in (0, errno.EINPROGRESS):
                    raise AssertionError("connect #%d failed at once: %s" % (opened, os.strerror(err)))
                self.sel.register(sock, stdlib_selectors.EVENT_WRITE, conn)
                opened += 1
                waiting += 1
            for key, _ in self.sel.select(0.5):
                conn = key.data
                if not conn.want:
                    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise AssertionError("connect #%d failed: %s" % (conn.index, os.strerror(err)))
                    conn.want = self._message(conn, size)
                    conn.out = memoryview(conn.want)
                    self._send(conn)
                    self.sel.modify(conn.sock, stdlib_selectors.EVENT_READ, conn)
                elif self._on_readable(conn):
                    waiting -= 1

    def exchange(self, size=512):
        pending = 0
        for conn in self.conns:
            conn.want = self._message(conn, size)
            conn.got = bytearray()
            conn.out = memoryview(conn.want)
            self._send(conn)
            events = stdlib_selectors.EVENT_READ | (stdlib_selectors.EVENT_WRITE if conn.out else 0)
            self.sel.register(conn.sock, events, conn)
            pending += 1
        while pending:
            self._check_time("exchanging")
            for key, events in self.sel.select(0.5):
                conn = key.data
                if events & stdlib_selectors.EVENT_WRITE and conn.out:
                    self._send(conn)
                    if not conn.out:
                        self.sel.modify(conn.sock, stdlib_selectors.EVENT_READ, conn)
                if events & stdlib_selectors.EVENT_READ and self._on_readable(conn):
                    pending -= 1

    def half_close_all(self):
        """Shut down every connection's sending side; wait for each server's EOF.

        The server closes first, so the TIME_WAIT states are its, not 10k
        of this host's ephemeral ports.
        """
        for conn in self.conns:
            conn.sock.shutdown(socket.SHUT_WR)
            self.sel.register(conn.sock, stdlib_selectors.EVENT_READ, conn)
        pending = len(self.conns)
        while pending:
            self._check_time("waiting for the server's EOFs")
            for key, _ in self.sel.select(0.5):
                conn = key.data
                if conn.sock.recv(4096):
                    raise AssertionError("connection #%d got bytes after its echo" % conn.index)
                self.sel.unregister(conn.sock)
                pending -= 1

    def close(self):
        self.sel.close()
        for conn in self.conns:
            conn.sock.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["emfile-server"]:
        _emfile_server_main(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: reliability_support.py emfile-server KIND FREE_SLOTS")
