"""A report the kernel made while an fd was unregistered is never returned.

The thread interleaving of a gunicorn gthread worker, driven step by step:
thread A waits in select(); the main thread B unregisters a socket, the
socket becomes readable (so a backend that still watches it reports it to
A's pending wait), B reads the data and registers the socket again, and only
then does A get the GIL back. A must not return the socket: there is nothing
to read, and a worker would block in recv() on it.

B keeps the GIL through the critical steps (a huge switch interval, and libc
calls through `ctypes.PyDLL`, which do not release it), and watches A's
thread in /proc to know when A has left its wait and queued for the GIL.

The stdlib's EpollSelector is the reference (it deletes the kernel entry at
unregister(), so the report never happens). The stdlib's PollSelector and
SelectSelector fail this test: their wait works on a snapshot of the fds
taken when it began.
"""

import ctypes
import os
import selectors
import socket
import sys
import threading
import time

import pytest

import fastio._impl.core_py as py_selectors
import fastio.selectors as fastio_selectors
from conftest import STDLIB_CLASSES

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="watches threads through /proc (Linux)")

CLASSES = {
    "fastio-epoll": getattr(fastio_selectors, "EpollSelector", None),
    "fastio-poll": getattr(fastio_selectors, "PollSelector", None),
    "fastio-select": fastio_selectors.SelectSelector,
    "python-epoll": getattr(py_selectors, "EpollSelector", None),
    "python-poll": getattr(py_selectors, "PollSelector", None),
    "python-select": py_selectors.SelectSelector,
    "stdlib-epoll": STDLIB_CLASSES["epoll"],
}

# Calls through PyDLL keep the GIL: A cannot run while B makes them.
_libc = ctypes.PyDLL(None, use_errno=True)
_libc.send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
_libc.recv.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
_libc.open.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.read.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_libc.close.argtypes = (ctypes.c_int,)
for _f in (_libc.send, _libc.recv, _libc.read):
    _f.restype = ctypes.c_ssize_t
MSG_DONTWAIT = 0x40


def syscall_of(tid):
    """Return the number of the syscall thread `tid` is blocked in, or None
    if it is running; reads /proc without releasing the GIL."""
    fd = _libc.open(b"/proc/self/task/%d/syscall" % tid, os.O_RDONLY)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "cannot open /proc/self/task/%d/syscall" % tid)
    buf = ctypes.create_string_buffer(256)
    try:
        n = _libc.read(fd, buf, 255)
    finally:
        _libc.close(fd)
    head = buf.raw[:max(n, 0)].split(b" ", 1)[0].strip()
    return int(head) if head.isdigit() else None


def blocked_syscall(tid, timeout=30.0):
    """Wait (releasing the GIL) until `tid` stays blocked in one syscall; return it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        nr = syscall_of(tid)
        if nr is not None and nr == last:
            return nr
        last = nr
        time.sleep(0.02)
    raise AssertionError("thread %d never blocked in a syscall" % tid)


@pytest.fixture(scope="module")
def futex_nr():
    """The number of the syscall a thread waiting for a lock (or the GIL) is in."""
    lock = threading.Lock()
    lock.acquire()
    t = threading.Thread(target=lock.acquire)
    t.start()
    try:
        while t.native_id is None:
            time.sleep(0.001)
        return blocked_syscall(t.native_id)
    finally:
        lock.release()
        t.join()


# With the stdlib's three as references.
WITH_STDLIB = dict(CLASSES, **{"stdlib-poll": STDLIB_CLASSES["poll"],
                               "stdlib-select": STDLIB_CLASSES["select"]})


def _start_waiting(sel, timeout, futex_nr):
    """Start a thread in sel.select(timeout); return it and its results once it waits."""
    results = []
    t = threading.Thread(target=lambda: results.append(sel.select(timeout)), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while blocked_syscall(t.native_id) == futex_nr:
        assert time.monotonic() < deadline, "the selecting thread never waited"
    return t, results


def _selector_or_skip(name):
    cls = WITH_STDLIB[name]
    if cls is None:
        pytest.skip("%s is not available on this platform" % name)
    if not os.path.exists("/proc/self/task/%d/syscall" % threading.get_native_id()):
        pytest.skip("/proc/<pid>/task/<tid>/syscall is not available")
    return cls()


@pytest.mark.parametrize("name", list(CLASSES))
def test_report_made_while_unregistered_is_not_returned(name, futex_nr):
    sel = _selector_or_skip(name)
    a, peer = socket.socketpair()
    wake_r, wake_w = socket.socketpair()
    sel.register(a, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    old_interval = sys.getswitchinterval()
    # 1. A blocks in its wait (not in the futex of a lock or the GIL).
    t, results = _start_waiting(sel, 60, futex_nr)
    try:
        # From here B keeps the GIL until A's batch must be filtered.
        sys.setswitchinterval(1000)
        sel.unregister(a)
        assert _libc.send(peer.fileno(), b"x", 1, 0) == 1
        # 2. A backend that still watches `a` wakes A, which queues for the
        # GIL. One that does not (the reference) leaves A waiting: give up.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and syscall_of(t.native_id) != futex_nr:
            pass
        # 3. Drain, then register again: the report A holds means nothing now.
        buf = ctypes.create_string_buffer(16)
        assert _libc.recv(a.fileno(), buf, 16, MSG_DONTWAIT) == 1
        sel.register(a, selectors.EVENT_READ)
        assert _libc.send(wake_w.fileno(), b"w", 1, 0) == 1
        sys.setswitchinterval(old_interval)
        # 4. A runs on with its batch.
        t.join(60)
        assert not t.is_alive()
        ready = {key.fileobj: events for key, events in results[0]}
        assert a not in ready, "a readiness reported while unregistered was returned"
        assert ready == {wake_r: selectors.EVENT_READ}
        # Later data on `a` is reported as usual.
        peer.send(b"y")
        assert [key.fileobj for key, _ in sel.select(5) if key.fileobj is a] == [a]
    finally:
        sys.setswitchinterval(old_interval)
        wake_w.send(b"w")
        t.join(60)
        sel.close()
        for s in (a, peer, wake_r, wake_w):
            s.close()


@pytest.mark.parametrize("name", list(WITH_STDLIB))
def test_child_forked_while_another_thread_waits_can_select(name, futex_nr):
    # The waiting thread does not exist in the child: nothing there is busy.
    sel = _selector_or_skip(name)
    a, peer = socket.socketpair()
    sel.register(a, selectors.EVENT_READ)
    t, results = _start_waiting(sel, 60, futex_nr)
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                peer.send(b"x")
                code = 0 if [key.fileobj for key, _ in sel.select(30)] == [a] else 2
            except RuntimeError:
                code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        peer.send(b"y")
        t.join(60)
        sel.close()
        a.close()
        peer.close()
    assert not t.is_alive()
    # select.poll keeps its "poll() running" flag in the child: the stdlib's
    # PollSelector raises there, and so does the pure-Python twin over it.
    raising = (STDLIB_CLASSES["poll"], getattr(py_selectors, "PollSelector", None))
    expected = 3 if type(sel) in raising else 0
    assert os.WEXITSTATUS(status) == expected


@pytest.mark.parametrize("name", list(WITH_STDLIB))
def test_fd_unregistered_during_a_wait_that_becomes_ready(name, futex_nr):
    # poll(2) and select(2) wait on the fds registered when the wait began:
    # the stdlib's PollSelector and SelectSelector wake and return no key.
    # epoll forgets the fd at unregister(): the wait runs its course.
    sel = _selector_or_skip(name)
    epoll = name.endswith("epoll")
    a, peer = socket.socketpair()
    sel.register(a, selectors.EVENT_READ)
    t, results = _start_waiting(sel, 0.5 if epoll else 60, futex_nr)
    try:
        sel.unregister(a)
        peer.send(b"x")
        t.join(30)
        assert not t.is_alive(), "the wait did not return when its only fd was reported"
        assert results == [[]]
    finally:
        sel.close()
        a.close()
        peer.close()
        t.join(60)
