"""fastio._impl.core_c directly: pollers, timeouts, EINTR, the GIL, Waker; and the
poller flags as fastio.selectors exposes them.

Only meaningful with the compiled core: skipped on the pure-Python fallback.
"""

import os
import select
import signal
import socket
import sys
import threading
import time
from collections import Counter

import pytest

import fastio

if fastio.IMPLEMENTATION != "cython":
    pytest.skip(
        "fastio._impl.core_c is not built (IMPLEMENTATION=%r)" % (fastio.IMPLEMENTATION,),
        allow_module_level=True,
    )

from fastio._impl import core_c as _core  # noqa: E402
from fastio import selectors as fsel  # noqa: E402

from conftest import open_fd_count  # noqa: E402

R = fsel.EVENT_READ
W = fsel.EVENT_WRITE

POLLERS = [
    pytest.param(
        "EpollPoller",
        marks=pytest.mark.skipif(not _core.HAVE_EPOLL, reason="no epoll(7) here"),
        id="epoll",
    ),
    pytest.param(
        "PollPoller",
        marks=pytest.mark.skipif(not _core.HAVE_POLL, reason="no poll(2) here"),
        id="poll",
    ),
    pytest.param("SelectPoller", id="select"),
]
SCALABLE = POLLERS[:2]


@pytest.fixture(params=POLLERS)
def poller_cls(request):
    return getattr(_core, request.param)


@pytest.fixture
def poller(poller_cls):
    p = poller_cls()
    yield p
    p.close()


class Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise Interrupted


# --- constants ---------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux values")
def test_constants_have_linux_values():
    assert (_core.POLLIN, _core.POLLPRI, _core.POLLOUT) == (1, 2, 4)
    assert (_core.POLLERR, _core.POLLHUP, _core.POLLNVAL) == (8, 16, 32)
    assert _core.POLLRDHUP == 0x2000
    assert (_core.EPOLLIN, _core.EPOLLPRI, _core.EPOLLOUT) == (1, 2, 4)
    assert (_core.EPOLLERR, _core.EPOLLHUP, _core.EPOLLRDHUP) == (8, 16, 0x2000)
    assert _core.EPOLLET == 1 << 31
    assert _core.EPOLLONESHOT == 1 << 30
    assert _core.EPOLLEXCLUSIVE == 1 << 28
    assert _core.FD_SETSIZE == 1024


# --- register / modify / unregister / poll -----------------------------------


def test_register_twice_raises_file_exists_error(poller, socketpair):
    a, b = socketpair()
    poller.register(a.fileno(), _core.POLLIN)
    with pytest.raises(FileExistsError):
        poller.register(a.fileno(), _core.POLLIN)
    assert len(poller) == 1


def test_modify_unregistered_raises_file_not_found_error(poller, socketpair):
    a, b = socketpair()
    with pytest.raises(FileNotFoundError):
        poller.modify(a.fileno(), _core.POLLIN)


def test_unregister_unregistered_raises_file_not_found_error(poller, socketpair):
    a, b = socketpair()
    with pytest.raises(FileNotFoundError):
        poller.unregister(a.fileno())


def test_unregister_twice_raises_file_not_found_error(poller, socketpair):
    a, b = socketpair()
    poller.register(a, _core.POLLIN)
    poller.unregister(a)
    with pytest.raises(FileNotFoundError):
        poller.unregister(a)
    assert len(poller) == 0


def test_register_accepts_object_with_fileno(poller, socketpair):
    a, b = socketpair()
    poller.register(a, _core.POLLOUT)
    assert poller.poll(0) == [(a.fileno(), _core.POLLOUT)]


def test_register_default_mask_is_in_and_out(poller, socketpair):
    a, b = socketpair()
    b.send(b"x")
    poller.register(a.fileno())
    assert poller.poll(0) == [(a.fileno(), _core.POLLIN | _core.POLLOUT)]


def test_poll_reports_only_ready_fds(poller, socketpair):
    a, b = socketpair()
    poller.register(a.fileno(), _core.POLLIN)  # nothing to read
    poller.register(b.fileno(), _core.POLLOUT)  # writable
    assert poller.poll(0) == [(b.fileno(), _core.POLLOUT)]


def test_modify_changes_the_watched_events(poller, socketpair):
    a, b = socketpair()
    poller.register(a.fileno(), _core.POLLIN)
    assert poller.poll(0) == []
    poller.modify(a.fileno(), _core.POLLOUT)
    assert poller.poll(0) == [(a.fileno(), _core.POLLOUT)]


def test_unregister_stops_reports(poller, socketpair):
    a, b = socketpair()
    poller.register(a.fileno(), _core.POLLOUT)
    poller.unregister(a.fileno())
    assert poller.poll(0) == []


def test_len_counts_registered_fds(poller, socketpair):
    socks = socketpair() + socketpair()
    for s in socks:
        poller.register(s, _core.POLLIN)
    assert len(poller) == 4
    poller.unregister(socks[0])
    assert len(poller) == 3


def test_poll_maxevents_limits_the_result(poller, socketpair):
    socks = socketpair() + socketpair() + socketpair()
    for s in socks:
        poller.register(s, _core.POLLOUT)
    assert len(poller.poll(0, 2)) == 2
    assert len(poller.poll(0, -1)) == 6


def test_close_sets_closed_and_is_idempotent(poller_cls):
    p = poller_cls()
    assert p.closed is False
    p.close()
    p.close()
    assert p.closed is True


@pytest.mark.parametrize("call", ["register", "modify", "poll"])
def test_calls_after_close_raise_value_error(poller_cls, socketpair, call):
    a, b = socketpair()
    p = poller_cls()
    p.register(a, _core.POLLIN)
    p.close()
    args = {"register": (b, _core.POLLIN), "modify": (a, _core.POLLOUT), "poll": (0,)}[call]
    with pytest.raises(ValueError):
        getattr(p, call)(*args)


def test_epoll_poller_fileno_is_an_epoll_fd():
    if not _core.HAVE_EPOLL:
        pytest.skip("no epoll(7) here")
    p = _core.EpollPoller()
    try:
        assert os.readlink("/proc/self/fd/%d" % p.fileno()) == "anon_inode:[eventpoll]"
    finally:
        p.close()


def test_epoll_poller_unregister_of_closed_fd_forgets_it(socketpair):
    if not _core.HAVE_EPOLL:
        pytest.skip("no epoll(7) here")
    p = _core.EpollPoller()
    try:
        a, b = socketpair()
        fd = a.fileno()
        p.register(fd, _core.POLLIN)
        a.close()
        # EPOLL_CTL_DEL is deferred, so the kernel's EBADF is never asked for.
        p.unregister(fd)
        assert len(p) == 0
        with pytest.raises(FileNotFoundError):
            p.unregister(fd)
    finally:
        p.close()


# --- epoll: deferred EPOLL_CTL_DEL (src/epoll.pxi) ---------------------------


@pytest.fixture
def epoller():
    if not _core.HAVE_EPOLL:
        pytest.skip("no epoll(7) here")
    p = _core.EpollPoller()
    yield p
    p.close()


def kernel_fds(poller):
    """Return the fds the kernel reports ready now, read through a dup of the
    poller's epoll fd (it shares the interest list; level-triggered reports
    are not consumed)."""
    probe = select.epoll.fromfd(os.dup(poller.fileno()))
    try:
        return sorted(fd for fd, _ in probe.poll(0))
    finally:
        probe.close()


def test_epoll_reregister_after_unregister_delivers_events(epoller, socketpair):
    a, b = socketpair()
    epoller.register(a, _core.EPOLLIN)
    epoller.unregister(a)
    epoller.register(a, _core.EPOLLIN)
    b.send(b"x")
    assert epoller.poll(0) == [(a.fileno(), _core.EPOLLIN)]
    epoller.modify(a, _core.EPOLLOUT)
    assert epoller.poll(0) == [(a.fileno(), _core.EPOLLOUT)]


def test_epoll_unregistered_readable_fd_is_swallowed_and_wait_continues(epoller, socketpair):
    a, b = socketpair()
    epoller.register(a, _core.EPOLLIN)
    b.send(b"x")
    epoller.unregister(a)
    assert kernel_fds(epoller) == [a.fileno()]  # deferred: still in the kernel
    start = time.monotonic()
    assert epoller.poll(0.1) == []
    assert time.monotonic() - start >= 0.1  # woken by the stale event, waited on
    assert kernel_fds(epoller) == []  # the report removed it


def test_epoll_unregister_then_zero_timeout_returns_nothing(epoller, socketpair):
    a, b = socketpair()
    epoller.register(a, _core.EPOLLIN)
    b.send(b"x")
    epoller.unregister(a)
    assert epoller.poll(0) == []
    assert kernel_fds(epoller) == []


def test_epoll_fd_number_reused_after_close_reports_only_new_socket(epoller, socketpair):
    a, b = socketpair()
    fd = a.fileno()
    epoller.register(fd, _core.EPOLLIN)
    b.send(b"old")
    epoller.unregister(fd)
    c, d = socketpair()
    a.close()
    os.dup2(c.fileno(), fd)  # the number now names a new socket
    c.close()
    try:
        epoller.register(fd, _core.EPOLLIN)
        assert epoller.poll(0) == []  # nothing from the old one
        d.send(b"new")
        assert epoller.poll(0) == [(fd, _core.EPOLLIN)]
    finally:
        os.close(fd)


def test_epoll_stale_entry_of_closed_dup_never_reported_as_new_file(epoller, socketpair):
    a, a_peer = socketpair()
    n = a.fileno()
    epfd = epoller.fileno()
    epoller.register(n, _core.EPOLLIN)
    dup = os.dup(n)  # keeps the file, and so its kernel entry, alive
    b, b_peer = socketpair()
    try:
        a.close()
        epoller.unregister(n)
        os.dup2(b.fileno(), n)  # B now lands on number n
        b.close()
        epoller.register(n, _core.EPOLLIN)
        a_peer.send(b"x")  # A readable: its stale entry reports fd n
        assert epoller.poll(0) == []
        assert epoller.poll(0.05) == []
        assert epoller.fileno() == epfd  # rebuilt onto the same number
        assert kernel_fds(epoller) == []  # A's entry is gone for good
        b_peer.send(b"y")
        assert epoller.poll(0) == [(n, _core.EPOLLIN)]
        assert len(epoller) == 1
    finally:
        os.close(dup)
        os.close(n)


def test_epoll_oneshot_rearmed_by_register_after_unregister(epoller, socketpair):
    a, b = socketpair()
    epoller.register(a, _core.EPOLLIN | _core.EPOLLONESHOT)
    b.send(b"x")
    assert epoller.poll(0) == [(a.fileno(), _core.EPOLLIN)]
    assert epoller.poll(0) == []  # disabled
    epoller.unregister(a)
    epoller.register(a, _core.EPOLLIN | _core.EPOLLONESHOT)
    assert epoller.poll(0) == [(a.fileno(), _core.EPOLLIN)]


def test_epoll_exclusive_register_after_deferred_unregister(epoller, socketpair):
    a, b = socketpair()
    epoller.register(a, _core.EPOLLIN)
    epoller.unregister(a)
    epoller.register(a, _core.EPOLLIN | _core.EPOLLEXCLUSIVE)  # no EINVAL
    b.send(b"x")
    assert epoller.poll(0) == [(a.fileno(), _core.EPOLLIN)]
    epoller.unregister(a)  # deleted eagerly: MOD could not re-arm it
    assert kernel_fds(epoller) == []
    epoller.register(a, _core.EPOLLIN)
    assert epoller.poll(0) == [(a.fileno(), _core.EPOLLIN)]


def test_epoll_regular_file_on_deferred_number_raises_permission_error(epoller, socketpair, tmp_path):
    a, b = socketpair()
    fd = a.fileno()
    epoller.register(fd, _core.EPOLLIN)
    epoller.unregister(fd)
    with open(tmp_path / "f", "wb") as f:
        with pytest.raises(PermissionError):
            epoller.register(f, _core.EPOLLIN)  # a fresh number: ADD
        os.dup2(f.fileno(), fd)  # the deferred number (`a` closes it): MOD
        with pytest.raises(PermissionError):
            epoller.register(fd, _core.EPOLLIN)
        assert len(epoller) == 0


# --- timeouts ----------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.0001, 0.0015, 0.01])
def test_poll_timeout_never_returns_early(poller, socketpair, timeout):
    a, b = socketpair()
    poller.register(a, _core.POLLIN)
    t0 = time.monotonic()
    assert poller.poll(timeout) == []
    assert time.monotonic() - t0 >= timeout


def test_poll_timeout_rounds_up_to_whole_milliseconds(poller_cls, socketpair):
    if poller_cls is _core.SelectPoller:
        pytest.skip("select(2) has microsecond resolution")
    p = poller_cls()
    try:
        a, b = socketpair()
        p.register(a, _core.POLLIN)
        t0 = time.monotonic()
        assert p.poll(0.0001) == []
        assert time.monotonic() - t0 >= 0.001
    finally:
        p.close()


def test_poll_zero_timeout_does_not_block(poller, socketpair):
    a, b = socketpair()
    poller.register(a, _core.POLLIN)
    t0 = time.monotonic()
    assert poller.poll(0) == []
    # Generous: "at once" on a loaded machine; a poll(0) that blocks never returns.
    assert time.monotonic() - t0 < 5.0


def test_poll_negative_timeout_returns_when_ready(poller, socketpair):
    a, b = socketpair()
    poller.register(b, _core.POLLOUT)
    t0 = time.monotonic()
    assert poller.poll(-1) == [(b.fileno(), _core.POLLOUT)]
    assert time.monotonic() - t0 < 5.0


@pytest.mark.parametrize("timeout", [None, -1])
def test_poll_none_or_negative_timeout_waits(poller, socketpair, sigalrm, timeout):
    a, b = socketpair()
    poller.register(a, _core.POLLIN)
    sigalrm(_raise_interrupted, 0.3)
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        poller.poll(timeout)
    assert time.monotonic() - t0 >= 0.29


# --- EINTR (PEP 475) ---------------------------------------------------------


def test_poll_keeps_waiting_after_returning_signal_handler(poller, socketpair, sigalrm):
    a, b = socketpair()
    poller.register(a, _core.POLLIN)
    calls = []
    sigalrm(lambda signum, frame: calls.append(signum), 0.2)
    t0 = time.monotonic()
    assert poller.poll(1.0) == []
    assert time.monotonic() - t0 >= 1.0
    assert calls == [signal.SIGALRM]


def test_poll_propagates_raising_signal_handler_promptly(poller, socketpair, sigalrm):
    a, b = socketpair()
    poller.register(a, _core.POLLIN)
    sigalrm(_raise_interrupted, 0.2)
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        poller.poll(10.0)
    assert time.monotonic() - t0 < 5.0  # well before the 10 s timeout
    # The poller is usable afterwards (no "concurrent poll()" left behind).
    poller.register(b, _core.POLLOUT)
    assert poller.poll(0) == [(b.fileno(), _core.POLLOUT)]


# --- no cap on events --------------------------------------------------------


@pytest.mark.parametrize("poller_name", SCALABLE)
def test_poll_returns_3000_ready_fds_in_one_call(poller_name, fd_limit):
    pairs = 3000
    if open_fd_count() + 2 * pairs + 64 > fd_limit:
        pytest.skip("RLIMIT_NOFILE %d too low for %d socketpairs" % (fd_limit, pairs))
    p = getattr(_core, poller_name)()
    socks = []
    try:
        for _ in range(pairs):
            socks.extend(socket.socketpair())
        for s in socks[::2]:
            p.register(s.fileno(), _core.POLLOUT)
        ready = p.poll(0)
        assert len(ready) == pairs
        assert {fd for fd, _ in ready} == {s.fileno() for s in socks[::2]}
    finally:
        p.close()
        for s in socks:
            s.close()


# --- select(2) and FD_SETSIZE ------------------------------------------------


@pytest.fixture
def fd_above_setsize(socketpair, fd_limit):
    """A socket dup'ed onto fd FD_SETSIZE + 5 (writable)."""
    big = _core.FD_SETSIZE + 5
    if fd_limit <= big:
        pytest.skip("RLIMIT_NOFILE %d too low to open fd %d" % (fd_limit, big))
    try:
        os.fstat(big)
    except OSError:
        pass
    else:
        pytest.skip("fd %d is already in use" % big)
    a, b = socketpair()
    os.dup2(a.fileno(), big)
    yield big
    os.close(big)


def test_select_poller_accepts_fd_above_fd_setsize(fd_above_setsize):
    p = _core.SelectPoller()
    try:
        p.register(fd_above_setsize, _core.POLLOUT)
        assert len(p) == 1
    finally:
        p.close()


def test_select_poller_raises_value_error_at_poll_for_fd_above_fd_setsize(
    fd_above_setsize, socketpair
):
    a, b = socketpair()
    p = _core.SelectPoller()
    try:
        p.register(a, _core.POLLOUT)
        p.register(fd_above_setsize, _core.POLLOUT)
        with pytest.raises(ValueError):
            p.poll(0)
        with pytest.raises(ValueError):
            p.poll(0)
        p.unregister(fd_above_setsize)
        assert p.poll(0) == [(a.fileno(), _core.POLLOUT)]
    finally:
        p.close()


# --- the GIL -----------------------------------------------------------------


def test_poll_releases_the_gil_while_waiting(poller, socketpair):
    a, b = socketpair()
    poller.register(a, _core.POLLIN)
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        time.sleep(0.05)
        before = counter[0]
        poller.poll(0.3)
        advanced = counter[0] - before
    finally:
        stop.set()
        thread.join()
    assert advanced > 10000


# --- Waker -------------------------------------------------------------------


@pytest.fixture
def waker():
    w = _core.Waker()
    yield w
    w.close()


def test_waker_wake_from_thread_wakes_blocked_poll(poller_cls, waker):
    p = poller_cls()
    try:
        p.register(waker.fileno(), _core.POLLIN)
        timer = threading.Timer(0.1, waker.wake)
        timer.start()
        t0 = time.monotonic()
        ready = p.poll(10.0)
        elapsed = time.monotonic() - t0
        timer.join()
        assert ready == [(waker.fileno(), _core.POLLIN)]
        assert elapsed < 5.0  # well before the 10 s timeout
    finally:
        p.close()


def test_poll_from_another_thread_while_one_waits(poller_cls, waker):
    # As select.epoll and select.select allow; select.poll raises.
    p = poller_cls()
    ready = []
    t = threading.Thread(target=lambda: ready.append(p.poll(30.0)))
    try:
        p.register(waker.fileno(), _core.POLLIN)
        t.start()
        time.sleep(0.1)  # into its wait (if not, the poll below runs alone)
        if poller_cls is _core.PollPoller and t.is_alive():
            with pytest.raises(RuntimeError, match="concurrent poll"):
                p.poll(0)
        elif poller_cls is not _core.PollPoller:
            assert p.poll(0) == []
        waker.wake()
        t.join(30)
        assert ready == [[(waker.fileno(), _core.POLLIN)]]
        assert p.poll(0) == [(waker.fileno(), _core.POLLIN)]
    finally:
        waker.wake()
        t.join(30)
        p.close()


def test_waker_drain_returns_true_then_false(waker):
    waker.wake()
    assert waker.drain() is True
    assert waker.drain() is False


def test_waker_not_readable_before_wake(waker):
    assert select.select([waker.fileno()], [], [], 0)[0] == []
    waker.wake()
    assert select.select([waker.fileno()], [], [], 0)[0] == [waker.fileno()]


def test_waker_survives_wake_storm_and_drain_clears_it(waker):
    def storm():
        for _ in range(10000):
            waker.wake()

    threads = [threading.Thread(target=storm) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert waker.drain() is True
    assert waker.drain() is False
    assert select.select([waker.fileno()], [], [], 0)[0] == []


def test_waker_wake_after_drain_is_seen_again(waker):
    waker.wake()
    waker.drain()
    waker.wake()
    assert select.select([waker.fileno()], [], [], 0)[0] == [waker.fileno()]
    assert waker.drain() is True


def test_waker_close_is_idempotent():
    w = _core.Waker()
    w.close()
    w.close()
    with pytest.raises(ValueError):
        w.fileno()


def test_waker_fileno_raises_value_error_after_close():
    w = _core.Waker()
    fd = w.fileno()
    assert fd >= 0
    w.close()
    with pytest.raises(ValueError):
        w.fileno()


def test_waker_is_a_context_manager():
    with _core.Waker() as w:
        assert w.fileno() >= 0
    with pytest.raises(ValueError):
        w.fileno()


# --- poller flags through fastio.selectors -----------------------------------


@pytest.fixture
def epoll_selector():
    if not hasattr(fsel, "EpollSelector"):
        pytest.skip("no EpollSelector here")
    sel = fsel.EpollSelector()
    yield sel
    sel.close()


@pytest.fixture
def tcp_pair():
    """A connected TCP pair over 127.0.0.1: (client, server side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield client, server
    client.close()
    server.close()


def test_level_triggered_reports_again_without_read(epoll_selector, socketpair):
    rd, wr = socketpair()
    key = epoll_selector.register(rd, R)
    wr.send(b"x")
    assert epoll_selector.select(0) == [(key, R)]
    assert epoll_selector.select(0) == [(key, R)]


def test_epollet_reports_readiness_once(epoll_selector, socketpair):
    rd, wr = socketpair()
    key = epoll_selector.register(rd, R, flags=fsel.EPOLLET)
    wr.send(b"x")
    assert epoll_selector.select(0) == [(key, R)]
    assert epoll_selector.select(0) == []
    wr.send(b"y")  # a new edge
    assert epoll_selector.select(0) == [(key, R)]


def test_epolloneshot_reports_once_until_rearmed(epoll_selector, socketpair):
    rd, wr = socketpair()
    key = epoll_selector.register(rd, R, flags=fsel.EPOLLONESHOT)
    wr.send(b"x")
    assert epoll_selector.select(0) == [(key, R)]
    wr.send(b"y")
    assert epoll_selector.select(0) == []
    key2 = epoll_selector.modify(rd, R, flags=fsel.EPOLLONESHOT)
    assert epoll_selector.select(0) == [(key2, R)]
    assert epoll_selector.select(0) == []


def test_modify_without_flags_same_events_does_not_rearm(epoll_selector, socketpair):
    rd, wr = socketpair()
    epoll_selector.register(rd, R, flags=fsel.EPOLLONESHOT)
    wr.send(b"x")
    assert len(epoll_selector.select(0)) == 1
    epoll_selector.modify(rd, R, "new data")  # flags=None: no syscall
    assert epoll_selector.select(0) == []
    assert epoll_selector.get_key(rd).data == "new data"


def test_modify_without_flags_keeps_registered_flags(epoll_selector, socketpair):
    rd, wr = socketpair()
    epoll_selector.register(rd, R, flags=fsel.EPOLLONESHOT)
    wr.send(b"x")
    key = epoll_selector.modify(rd, R | W)  # events changed: re-armed, still ONESHOT
    assert epoll_selector.select(0) == [(key, R | W)]
    assert epoll_selector.select(0) == []


def test_epollrdhup_peer_shutdown_reported_as_read(epoll_selector, socketpair):
    rd, wr = socketpair()
    key = epoll_selector.register(rd, R, flags=fsel.EPOLLRDHUP)
    wr.shutdown(socket.SHUT_WR)
    assert epoll_selector.select(1) == [(key, R)]
    raw = dict(epoll_selector._selector.poll(0))
    assert raw[rd.fileno()] & _core.EPOLLRDHUP


def test_out_of_band_data_is_not_readable_without_epollpri(epoll_selector, tcp_pair):
    client, server = tcp_pair
    epoll_selector.register(server, R)
    client.send(b"!", socket.MSG_OOB)
    assert select.select([], [], [server], 2.0)[2] == [server]  # it arrived
    assert epoll_selector.select(0) == []


def test_epollpri_out_of_band_data_reported_as_read(epoll_selector, tcp_pair):
    client, server = tcp_pair
    key = epoll_selector.register(server, R, flags=fsel.EPOLLPRI)
    client.send(b"!", socket.MSG_OOB)
    assert epoll_selector.select(2.0) == [(key, R)]


def test_epollexclusive_registration_reports_events(epoll_selector, socketpair):
    rd, wr = socketpair()
    key = epoll_selector.register(rd, R, flags=fsel.EPOLLEXCLUSIVE)
    wr.send(b"x")
    assert epoll_selector.select(0) == [(key, R)]


def test_epoll_selector_never_reports_new_socket_for_closed_dup_file(epoll_selector, socketpair):
    # The stdlib's EpollSelector fails this: the kernel entry of the closed
    # fd's file (kept alive by a dup) reports fd n, which now means B.
    a, a_peer = socketpair()
    n = a.fileno()
    epfd = epoll_selector.fileno()
    epoll_selector.register(a, R)
    dup = os.dup(n)
    b, b_peer = socketpair()
    try:
        a.close()
        epoll_selector.unregister(n)
        os.dup2(b.fileno(), n)
        b.close()
        key = epoll_selector.register(n, R)
        a_peer.send(b"x")
        assert epoll_selector.select(0.05) == []
        assert epoll_selector.fileno() == epfd
        b_peer.send(b"y")
        assert epoll_selector.select(0) == [(key, R)]
    finally:
        epoll_selector.unregister(n)
        os.close(dup)
        os.close(n)


def test_pollpri_out_of_band_data_reported_as_read(tcp_pair):
    if not hasattr(fsel, "PollSelector"):
        pytest.skip("no PollSelector here")
    client, server = tcp_pair
    with fsel.PollSelector() as sel:
        key = sel.register(server, R, flags=fsel.POLLPRI)
        client.send(b"!", socket.MSG_OOB)
        assert sel.select(2.0) == [(key, R)]


def test_pollrdhup_peer_shutdown_reported_as_read(socketpair):
    if not hasattr(fsel, "PollSelector"):
        pytest.skip("no PollSelector here")
    rd, wr = socketpair()
    with fsel.PollSelector() as sel:
        key = sel.register(rd, R, flags=fsel.POLLRDHUP)
        wr.shutdown(socket.SHUT_WR)
        assert sel.select(1) == [(key, R)]


FASTIO_BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(not hasattr(fsel, name), reason="absent"))
    for name in ("EpollSelector", "PollSelector", "SelectSelector")
]


@pytest.mark.parametrize("cls_name", FASTIO_BACKENDS)
def test_select_fds_equals_select_as_multiset(cls_name, socketpair):
    sel = getattr(fsel, cls_name)()
    try:
        a, b = socketpair()
        c, d = socketpair()
        e, f = socketpair()
        b.send(b"x")
        d.send(b"y")
        sel.register(a, R | W)  # read + write
        sel.register(b, R)  # nothing
        sel.register(c, R)  # read
        sel.register(d, W)  # write
        sel.register(e, R | W)  # write
        fds = sel.select_fds(0)
        assert all(type(fd) is int and type(ev) is int for fd, ev in fds)
        expected = Counter((k.fd, ev) for k, ev in sel.select(0))
        assert Counter(fds) == expected
        assert expected == Counter(
            {(a.fileno(), R | W): 1, (c.fileno(), R): 1, (d.fileno(), W): 1, (e.fileno(), W): 1}
        )
    finally:
        sel.close()


@pytest.mark.parametrize("cls_name", FASTIO_BACKENDS)
def test_select_fds_masks_by_registered_events(cls_name, socketpair):
    sel = getattr(fsel, cls_name)()
    try:
        a, b = socketpair()
        b.send(b"x")  # a is readable and writable
        sel.register(a, W)
        assert sel.select_fds(0) == [(a.fileno(), W)]
    finally:
        sel.close()


@pytest.mark.parametrize(
    "cls_name, flags",
    [
        ("SelectSelector", 1 << 31),  # EPOLLET: select has no flags
        ("SelectSelector", 2),  # POLLPRI
        ("PollSelector", 1 << 31),  # EPOLLET is not a poll bit
        ("PollSelector", 1 << 20),
        ("EpollSelector", 1 << 20),
    ],
    ids=["select-epollet", "select-pollpri", "poll-epollet", "poll-unknown", "epoll-unknown"],
)
def test_unsupported_flags_raise_value_error(cls_name, flags, socketpair):
    if not hasattr(fsel, cls_name):
        pytest.skip("no %s here" % cls_name)
    sel = getattr(fsel, cls_name)()
    try:
        a, b = socketpair()
        with pytest.raises(ValueError):
            sel.register(a, R, flags=flags)
        assert len(sel.get_map()) == 0
        sel.register(a, R)
        with pytest.raises(ValueError):
            sel.modify(a, W, flags=flags)
    finally:
        sel.close()
