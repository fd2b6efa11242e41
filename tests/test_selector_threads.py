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
import select
import selectors
import socket
import sys
import threading
import time

import pytest

import fastio._impl.core_py as py_selectors
import fastio.selectors as fastio_selectors
from conftest import STDLIB_CLASSES, open_fds
from loop_fixtures import child_exit_code

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


@pytest.mark.forks
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


def _waits_one_at_a_time(sel):
    # select.poll refuses a second poll() while one runs: the stdlib's
    # PollSelector, the pure-Python twin over it, and fastio's PollSelector.
    return isinstance(sel, (STDLIB_CLASSES["poll"], fastio_selectors.PollSelector)) or (
        getattr(py_selectors, "PollSelector", None) is not None
        and isinstance(sel, py_selectors.PollSelector))


@pytest.mark.parametrize("name", list(WITH_STDLIB))
def test_two_threads_wait_on_one_selector_at_once(name, futex_nr):
    # The stdlib's EpollSelector and SelectSelector let any number of
    # threads wait on one selector; each wait returns what became ready.
    sel = _selector_or_skip(name)
    a, peer = socket.socketpair()
    key = sel.register(a, selectors.EVENT_READ)
    first, first_results = _start_waiting(sel, 60, futex_nr)
    second = None
    try:
        if _waits_one_at_a_time(sel):
            with pytest.raises(RuntimeError, match="concurrent poll"):
                sel.select(0)
            return
        # A wait in this thread meanwhile returns at once with nothing.
        assert sel.select(0) == []
        second, second_results = _start_waiting(sel, 60, futex_nr)
        peer.send(b"x")
        first.join(30)
        second.join(30)
        assert not first.is_alive() and not second.is_alive()
        assert first_results == [[(key, selectors.EVENT_READ)]]
        assert second_results == [[(key, selectors.EVENT_READ)]]
        # The selector goes on as usual after overlapping waits.
        assert sel.select(0) == [(key, selectors.EVENT_READ)]
        a.recv(1)
        assert sel.select(0) == []
    finally:
        peer.send(b"y")
        for t in (first, second):
            if t is not None:
                t.join(60)
        sel.close()
        a.close()
        peer.close()


@pytest.mark.parametrize("name", [n for n in WITH_STDLIB if not n.endswith("-poll")])
def test_waits_that_start_and_end_while_another_waits(name, futex_nr):
    # The first wait to start is not the last to end: the waits that come
    # and go meanwhile, and the ones after it, each get their own result.
    sel = _selector_or_skip(name)
    a, peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    key_a = sel.register(a, selectors.EVENT_READ)
    key_b = sel.register(b, selectors.EVENT_READ)
    long_wait, long_results = _start_waiting(sel, 60, futex_nr)
    try:
        assert sel.select(0) == []
        assert sel.select(0.05) == []
        b_peer.send(b"x")
        assert sel.select(30) == [(key_b, selectors.EVENT_READ)]
        b.recv(1)
        peer.send(b"x")
        long_wait.join(30)
        assert not long_wait.is_alive()
        assert long_results[0] in ([(key_a, selectors.EVENT_READ)],
                                   [(key_b, selectors.EVENT_READ)])
        assert sel.select(0) == [(key_a, selectors.EVENT_READ)]
        a.recv(1)
        assert sel.select(0) == []
    finally:
        peer.send(b"y")
        long_wait.join(60)
        sel.close()
        for s in (a, peer, b, b_peer):
            s.close()


@pytest.mark.parametrize("name", [n for n in WITH_STDLIB if n.endswith("epoll")])
def test_fd_unregistered_while_two_threads_wait_then_ready(name, futex_nr):
    # fastio leaves an unregistered fd's kernel entry for later (see
    # src/epoll.pxi): its report can reach both waits. Neither returns it,
    # and neither ends early; the stdlib deletes the entry at unregister().
    sel = _selector_or_skip(name)
    a, peer = socket.socketpair()
    w, w_peer = socket.socketpair()
    sel.register(a, selectors.EVENT_READ)
    key_w = sel.register(w, selectors.EVENT_READ)
    first, first_results = _start_waiting(sel, 60, futex_nr)
    second, second_results = _start_waiting(sel, 60, futex_nr)
    try:
        sel.unregister(a)
        peer.send(b"x")
        time.sleep(0.5)
        assert first_results == [] and second_results == []
        w_peer.send(b"w")
        first.join(30)
        second.join(30)
        assert first_results == [[(key_w, selectors.EVENT_READ)]]
        assert second_results == [[(key_w, selectors.EVENT_READ)]]
    finally:
        w_peer.send(b"w")
        first.join(60)
        second.join(60)
        sel.close()
        for s in (a, peer, w, w_peer):
            s.close()


def _select_until_events(sel, empty):
    """Call sel.select() until it returns events; count the empty returns."""
    results = []

    def run():
        while True:
            ready = sel.select(60)
            if ready:
                results.append(ready)
                return
            empty.append(1)

    return threading.Thread(target=run, daemon=True), results


@pytest.mark.parametrize("edge", [False, True], ids=["level", "edge"])
@pytest.mark.parametrize("name", [n for n in WITH_STDLIB if n.endswith("epoll")])
def test_stale_kernel_entry_reported_while_two_threads_wait(name, edge, futex_nr):
    # An fd unregistered, then closed while a dup of it lives: its kernel
    # entry can no longer be deleted (see src/epoll.pxi), and its report
    # makes fastio rebuild the kernel set while two threads select() in a
    # loop. Neither returns early or spins on the stale report, and both
    # then see an fd registered after it (a wait left blocked on the old set
    # would not: an edge-triggered report wakes one wait only).
    fds_before = open_fds()
    sel = _selector_or_skip(name)
    a, peer = socket.socketpair()
    dup = a.dup()
    sel.register(a, selectors.EVENT_READ)
    if edge:
        sel._selector.modify(a.fileno(), select.EPOLLIN | select.EPOLLET)
    empty = []
    first, first_results = _select_until_events(sel, empty)
    second, second_results = _select_until_events(sel, empty)
    late, late_peer = socket.socketpair()
    try:
        for t in (first, second):
            t.start()
            while blocked_syscall(t.native_id) == futex_nr:
                pass
        sel.unregister(a)
        a.close()
        peer.send(b"x")
        time.sleep(0.5)
        key_late = sel.register(late, selectors.EVENT_READ)
        late_peer.send(b"y")
        first.join(30)
        second.join(30)
        assert not first.is_alive() and not second.is_alive(), "a wait missed a new registration"
        assert empty == [], "select() returned with nothing %d times" % len(empty)
        assert first_results == second_results == [[(key_late, selectors.EVENT_READ)]]
        assert sel.select(0) == [(key_late, selectors.EVENT_READ)]
        late.recv(1)
        assert sel.select(0) == []
    finally:
        late_peer.send(b"z")
        first.join(60)
        second.join(60)
        sel.close()
        for s in (peer, dup, late, late_peer):
            s.close()
    assert open_fds() <= fds_before, "close() left an fd open"


@pytest.mark.forks
@pytest.mark.parametrize("name", list(WITH_STDLIB))
def test_fork_in_a_signal_handler_during_select_then_select_in_the_child(name, sigalrm):
    # The child has the outer select() frame of the thread that forked: a
    # select() there nests in it (and may grow the poller's tables), and the
    # outer one then returns as usual.
    sel = _selector_or_skip(name)
    a, peer = socket.socketpair()
    key = sel.register(a, selectors.EVENT_READ)
    more = []
    status = []

    def handler(signum, frame):
        pid = os.fork()
        if pid:
            status.append(pid)
            return
        try:
            more.extend(socket.socketpair() for _ in range(40))
            for x, _ in more:
                sel.register(x, selectors.EVENT_READ)
            nested = sel.select(0)
        except RuntimeError:
            nested = "RuntimeError"
        except BaseException:
            os._exit(4)
        if nested != ("RuntimeError" if _waits_one_at_a_time(sel) else []):
            os._exit(5)
        peer.send(b"x")

    sigalrm(handler, 0.05)
    try:
        outer = sel.select(30)
        if not status:  # the child: the outer select() returned in it too
            os._exit(0 if outer == [(key, selectors.EVENT_READ)] else 6)
        # The parent's, woken by the child's send (the socket is shared).
        assert outer == [(key, selectors.EVENT_READ)]
        assert child_exit_code(status[0]) == 0
    finally:
        sel.close()
        a.close()
        peer.close()


@pytest.mark.parametrize("name", ["fastio-epoll", "fastio-select", "stdlib-epoll", "stdlib-select"])
def test_threads_select_at_once_while_registrations_churn(name):
    # Overlapping waits under register/modify/unregister/close churn: no
    # error, no key that was never registered, no event outside its mask.
    from stress.stress import select_from_threads

    cls = WITH_STDLIB[name]
    if cls is None:
        pytest.skip("%s is not available on this platform" % name)
    assert select_from_threads(cls, rounds=200) == []


@pytest.mark.parametrize("name", list(WITH_STDLIB))
def test_select_from_a_signal_handler_during_select(name, sigalrm):
    # A wait inside a wait, in one thread: epoll and select allow it.
    sel = _selector_or_skip(name)
    a, peer = socket.socketpair()
    key = sel.register(a, selectors.EVENT_READ)
    inner = []

    def select_now():
        try:
            inner.append(sel.select(0))
        except RuntimeError as exc:
            inner.append(exc)

    def handler(signum, frame):
        select_now()
        peer.send(b"x")
        select_now()

    sigalrm(handler, 0.05)
    try:
        outer = sel.select(30)
        assert outer == [(key, selectors.EVENT_READ)]
        if _waits_one_at_a_time(sel):
            assert [type(exc) for exc in inner] == [RuntimeError, RuntimeError]
        else:
            assert inner == [[], [(key, selectors.EVENT_READ)]]
    finally:
        sel.close()
        a.close()
        peer.close()


@pytest.mark.forks
@pytest.mark.parametrize("name", [n for n in WITH_STDLIB if n.endswith("epoll")])
def test_rebuild_in_the_parent_leaves_a_forked_childs_waits_quiet(name):
    # After fork() parent and child share one kernel epoll set. The parent
    # unregisters and closes a socket the child inherited (its kernel entry
    # lives on with the child's fd): fastio rebuilds the parent's set, and
    # the wake-up it leaves in the old one must not make the child's waits
    # spin there.
    sel = _selector_or_skip(name)
    a, peer = socket.socketpair()
    key = sel.register(a, selectors.EVENT_READ)
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.read(go_r, 1)
            # The stdlib's unregister() in the parent deleted the shared
            # entry: no report here. fastio's child still has one.
            first = sel.select(0.3)
            if first:
                a.recv(16)
            wall, cpu = time.monotonic(), time.process_time()
            later = [sel.select(0.3) for _ in range(3)]
            wall, cpu = time.monotonic() - wall, time.process_time() - cpu
            if first not in ([], [(key, selectors.EVENT_READ)]) or later != [[], [], []]:
                code = 2
            else:
                code = 0 if cpu < 0.1 * wall else 3
        finally:
            os._exit(code)
    try:
        sel.unregister(a)
        a.close()
        peer.send(b"x")
        assert sel.select(0.2) == []
        os.write(go_w, b"g")
        assert child_exit_code(pid) == 0
    finally:
        sel.close()
        peer.close()
        for fd in (go_r, go_w):
            os.close(fd)
