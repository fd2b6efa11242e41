"""The drop-in contract of COMPAT.md, on both of fastio's implementations and on the stdlib reference.

Every test runs once per (impl, backend): ``[fastio-c-epoll]``, ``[fastio-py-poll]``, ``[stdlib-poll]``...
Items are numbered as in COMPAT.md; the "callers rely on" list follows them.
"""

import errno
import inspect
import os
import select
import selectors
import signal
import socket
import sys
import tempfile
import time
import unittest.mock
import weakref

import pytest

from conftest import drain_socket, fill_send_buffer, open_fd_count, selector_class

R = selectors.EVENT_READ
W = selectors.EVENT_WRITE

# Linux's fd_set size; the stdlib does not export it.
FD_SETSIZE = 1024


class FilenoSpy:
    """A file object whose fileno() counts its calls (and optionally raises)."""

    def __init__(self, fd, exc=None):
        self.fd = fd
        self.exc = exc
        self.calls = 0

    def fileno(self):
        self.calls += 1
        if self.exc is not None:
            raise self.exc
        return self.fd


# --- 1. register -------------------------------------------------------------


def test_register_returns_stdlib_selector_key(selector, socketpair):
    rd, wr = socketpair()
    key = selector.register(rd, R, "data")
    assert isinstance(key, selectors.SelectorKey)
    assert (key.fileobj, key.fd, key.events, key.data) == (rd, rd.fileno(), R, "data")


def test_register_unknown_event_bits_raise_value_error(selector):
    with pytest.raises(ValueError):
        selector.register(0, 999999)


def test_register_checks_events_before_the_fd(selector):
    spy = FilenoSpy(0, exc=ZeroDivisionError())
    with pytest.raises(ValueError):
        selector.register(spy, 999999)
    assert spy.calls == 0


def test_register_negative_fd_raises_value_error(selector):
    with pytest.raises(ValueError):
        selector.register(-10, R)


def test_register_same_fileobj_twice_raises_key_error(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R)
    with pytest.raises(KeyError):
        selector.register(rd, R)


def test_register_same_fd_as_int_raises_key_error(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R)
    with pytest.raises(KeyError):
        selector.register(rd.fileno(), R)
    assert selector.get_key(rd).fileobj is rd


# --- 2. unregister -----------------------------------------------------------


def test_unregister_unknown_raises_key_error(selector):
    with pytest.raises(KeyError):
        selector.unregister(999999)


def test_unregister_twice_raises_key_error(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R)
    selector.unregister(rd)
    with pytest.raises(KeyError):
        selector.unregister(rd)


def test_a_listener_closed_after_unregister_refuses_connections(selector):
    # unregister() then close() closes the socket at once, on every backend:
    # a wait armed on it (io_uring's poll holds a file reference) must not
    # keep the port listening until the next select().
    for _ in range(20):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        selector.register(listener, R)
        selector.select(0)
        selector.unregister(listener)
        listener.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()


def test_unregister_after_fd_close_returns_key(selector, socketpair):
    rd, wr = socketpair()
    r, w = rd.fileno(), wr.fileno()
    selector.register(r, R)
    selector.register(w, W)
    rd.close()
    wr.close()
    assert selector.unregister(r).fd == r
    assert selector.unregister(w).fd == w
    assert len(selector.get_map()) == 0


def test_unregister_after_fd_number_reused_returns_key(selector, socketpair):
    rd, wr = socketpair()
    r, w = rd.fileno(), wr.fileno()
    selector.register(r, R)
    selector.register(w, W)
    rd2, wr2 = socketpair()
    rd.close()
    wr.close()
    os.dup2(rd2.fileno(), r)
    os.dup2(wr2.fileno(), w)
    try:
        assert selector.unregister(r).fd == r
        assert selector.unregister(w).fd == w
        assert len(selector.get_map()) == 0
    finally:
        os.close(r)
        os.close(w)


def test_unregister_closed_socket_object_found_by_identity(selector, socketpair):
    rd, wr = socketpair()
    rd_fd = rd.fileno()
    selector.register(rd, R)
    selector.register(wr, W)
    rd.close()
    wr.close()
    assert rd.fileno() == -1
    key = selector.unregister(rd)
    assert key.fileobj is rd and key.fd == rd_fd
    assert selector.unregister(wr).fileobj is wr
    assert len(selector.get_map()) == 0


# --- 3. modify ---------------------------------------------------------------


def test_modify_events_returns_new_key_equal_to_get_key(selector, socketpair):
    rd, wr = socketpair()
    key = selector.register(rd, R)
    key2 = selector.modify(rd, W)
    assert key2.events == W and key.events == R
    assert key2 == selector.get_key(rd)


def test_modify_data_only_updates_data(selector, socketpair):
    rd, wr = socketpair()
    d1, d2 = object(), object()
    key = selector.register(rd, R, d1)
    key2 = selector.modify(rd, R, d2)
    assert key2.events == key.events
    assert key2.data is d2
    assert selector.get_key(rd) == key2


def test_modify_data_only_does_not_call_register_or_unregister(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R, object())
    # The CPython suite replaces these on the instance: it needs a __dict__.
    selector.register = unittest.mock.Mock()
    selector.unregister = unittest.mock.Mock()
    d3 = object()
    key = selector.modify(rd, R, d3)
    assert key.data is d3
    assert selector.register.call_count == 0
    assert selector.unregister.call_count == 0


def test_modify_unknown_raises_key_error(selector):
    with pytest.raises(KeyError):
        selector.modify(999999, R)


def test_modify_failure_propagates_and_removes_fd(selector_cls, backend, socketpair):
    if backend == "select":
        pytest.skip("SelectSelector has no _selector_cls (no kernel-side modify)")
    with unittest.mock.patch.object(selector_cls, "_selector_cls") as factory:
        factory.return_value.modify = unittest.mock.Mock(side_effect=ZeroDivisionError)
        sel = selector_cls()
        try:
            rd, wr = socketpair()
            sel.register(rd, R)
            assert len(sel._map) == 1
            with pytest.raises(ZeroDivisionError):
                sel.modify(rd, W)
            assert len(sel._map) == 0
        finally:
            sel.close()


# --- 4. close ----------------------------------------------------------------


def test_get_key_after_close_raises_runtime_error(selector_cls, socketpair):
    sel = selector_cls()
    rd, wr = socketpair()
    sel.register(rd, R)
    sel.close()
    with pytest.raises(RuntimeError):
        sel.get_key(rd)


def test_map_taken_before_close_is_emptied(selector_cls, socketpair):
    sel = selector_cls()
    mapping = sel.get_map()
    rd, wr = socketpair()
    sel.register(rd, R)
    sel.register(wr, W)
    sel.close()
    with pytest.raises(KeyError):
        mapping[rd]
    with pytest.raises(KeyError):
        mapping[wr]
    assert mapping.get(rd) is None


def test_close_twice_leaves_selector_closed(selector_cls, socketpair):
    sel = selector_cls()
    rd, wr = socketpair()
    sel.register(rd, R)
    sel.close()
    sel.close()
    with pytest.raises(RuntimeError):
        sel.get_key(rd)


def test_epoll_selector_after_close_raises_as_select_epoll(epoll_cls, socketpair):
    # select.epoll's ValueError and its words: code matches on them.
    sel = epoll_cls()
    rd, wr = socketpair()
    sel.close()
    for call in (lambda: sel.select(0), lambda: sel.register(rd, R), sel.fileno):
        with pytest.raises(ValueError, match="^I/O operation on closed epoll object$"):
            call()


def test_context_manager_returns_self_and_closes(selector_cls, socketpair):
    rd, wr = socketpair()
    sel = selector_cls()
    with sel as entered:
        assert entered is sel
        entered.register(rd, R)
        entered.register(wr, W)
    with pytest.raises(RuntimeError):
        sel.get_key(rd)
    with pytest.raises(RuntimeError):
        sel.get_key(wr)


# --- 5. get_map --------------------------------------------------------------


def test_get_map_empty_is_falsy_with_len_zero(selector):
    keys = selector.get_map()
    assert not keys
    assert len(keys) == 0
    assert list(keys) == []


def test_get_map_accepts_fileobj_and_int_fd(selector, socketpair):
    rd, wr = socketpair()
    keys = selector.get_map()
    key = selector.register(rd, R, "data")
    assert rd in keys and rd.fileno() in keys
    assert keys[rd] == key
    assert keys[rd.fileno()] == key
    assert len(keys) == 1


def test_get_map_iterates_fds(selector, socketpair):
    rd, wr = socketpair()
    keys = selector.get_map()
    k1 = selector.register(rd, R)
    k2 = selector.register(wr, W)
    assert sorted(keys) == sorted([rd.fileno(), wr.fileno()])
    assert sorted(keys.values(), key=lambda k: k.fd) == sorted([k1, k2], key=lambda k: k.fd)


def test_get_map_unknown_raises_key_error(selector):
    with pytest.raises(KeyError):
        selector.get_map()[999999]


def test_get_map_is_read_only(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R)
    keys = selector.get_map()
    with pytest.raises(TypeError):
        del keys[rd]
    assert len(keys) == 1


def test_get_map_get_returns_key_or_none(selector, socketpair):
    rd, wr = socketpair()
    key = selector.register(rd, R)
    keys = selector.get_map()
    assert keys.get(rd) == key
    assert keys.get(999999) is None
    assert keys.get(999999, "dflt") == "dflt"


# --- 6. select ---------------------------------------------------------------


def test_select_returns_list_of_key_event_pairs(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R)
    wr_key = selector.register(wr, W)
    result = selector.select()
    assert isinstance(result, list)
    assert result == [(wr_key, W)]
    assert isinstance(result[0][0], selectors.SelectorKey)


def test_select_masks_events_by_key_events(selector, socketpair):
    rd, wr = socketpair()
    wr.send(b"x")  # rd is readable AND writable; only READ is registered
    key = selector.register(rd, R)
    assert selector.select(0) == [(key, R)]


def test_select_reports_read_and_write_in_one_call(selector, socketpair):
    sock1, sock2 = socketpair()
    sock2.send(b"foo")
    key = selector.register(sock1, R | W)
    result = selector.select()
    assert len(result) <= 2
    assert all(k == key for k, _ in result)
    seen = 0
    for _, events in result:
        assert not events & seen  # each event at most once
        seen |= events
    assert seen == R | W


def test_select_on_empty_selector_returns_empty_list(selector):
    assert selector.select(timeout=0) == []


# --- 7. timeouts -------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -1])
def test_select_nonpositive_timeout_never_blocks(selector, socketpair, timeout):
    rd, wr = socketpair()
    selector.register(rd, R)
    t0 = time.monotonic()
    assert selector.select(timeout) == []
    assert time.monotonic() - t0 < 0.5


def test_select_none_timeout_returns_when_ready(selector, socketpair):
    rd, wr = socketpair()
    key = selector.register(wr, W)
    t0 = time.monotonic()
    assert selector.select(None) == [(key, W)]
    assert time.monotonic() - t0 < 0.5


def test_select_one_second_with_nothing_ready_waits_about_a_second(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R)
    t0 = time.monotonic()
    assert selector.select(1) == []
    assert 0.8 <= time.monotonic() - t0 <= 2.0


def test_select_short_timeout_never_returns_early(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R)
    for timeout in (0.0001, 0.0015, 0.02):
        t0 = time.monotonic()
        assert selector.select(timeout) == []
        assert time.monotonic() - t0 >= timeout


def _unwritable_to_a_half_closed_peer(socketpair):
    # `mine` cannot write (its send buffer is full) and its peer has shut
    # down its side without reading: POLLRDHUP is set, POLLOUT is not.
    mine, peer = socketpair()
    mine.setblocking(False)
    fill_send_buffer(mine)
    peer.shutdown(socket.SHUT_WR)
    return mine, peer


def test_a_writer_waits_while_its_half_closed_peer_reads_nothing(selector, socketpair):
    # io_uring adds POLLRDHUP to every poll: a one-shot poll re-armed on
    # such a socket completes at once, for ever. Every selector waits.
    mine, peer = _unwritable_to_a_half_closed_peer(socketpair)
    selector.register(mine, W, "w")
    for _ in range(3):
        t0 = time.monotonic()
        assert selector.select(0.2) == []
        assert time.monotonic() - t0 >= 0.2
    # Once the peer reads, the socket is writable: reported, and again at
    # the next select while it stays writable (level-triggered).
    drain_socket(peer)
    for _ in range(3):
        assert [(key.data, ev) for key, ev in selector.select(5)] == [("w", W)]
    # Back to full: the wait is quiet again.
    fill_send_buffer(mine)
    assert selector.select(0.2) == []
    # Asking to read too reports the end of the peer's stream at once.
    selector.modify(mine, R | W, "rw")
    assert [(key.data, ev) for key, ev in selector.select(5)] == [("rw", R)]
    selector.modify(mine, W, "w")
    assert selector.select(0.2) == []


def test_a_quiet_half_closed_writer_unregistered_and_closed_closes_its_socket(selector, socketpair):
    # Whatever poll waits on the socket must go with unregister(), so that
    # close() closes it: the peer then reads our data and an end of stream.
    mine, peer = _unwritable_to_a_half_closed_peer(socketpair)
    selector.register(mine, W)
    assert selector.select(0.1) == []
    selector.unregister(mine)
    mine.close()
    peer.settimeout(10)
    while peer.recv(1 << 20):
        pass


# --- 8. signals (PEP 475) ----------------------------------------------------


class Interrupted(Exception):
    pass


def test_select_raising_signal_handler_interrupts_promptly(selector, socketpair, sigalrm):
    rd, wr = socketpair()
    selector.register(rd, R)

    def handler(signum, frame):
        raise Interrupted

    sigalrm(handler, 0.2)
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        selector.select(30)
    assert time.monotonic() - t0 < 5.0


def test_select_returning_signal_handler_waits_remaining_time(selector, socketpair, sigalrm):
    rd, wr = socketpair()
    selector.register(rd, R)
    calls = []
    sigalrm(lambda signum, frame: calls.append(signum), 0.2)
    t0 = time.monotonic()
    assert selector.select(0.7) == []
    assert time.monotonic() - t0 >= 0.7
    assert calls == [signal.SIGALRM]


# --- 9. many fds -------------------------------------------------------------


def test_ten_thousand_ready_socketpairs_in_one_call(selector_cls, backend, fd_limit):
    if backend == "select":
        pytest.skip("select(2) is limited to FD_SETSIZE fds")
    pairs = min(10000, (fd_limit - open_fd_count() - 64) // 2)
    if pairs < FD_SETSIZE:
        pytest.skip("RLIMIT_NOFILE too low for %d socketpairs" % (FD_SETSIZE,))
    socks = []
    sel = selector_cls()
    try:
        for _ in range(pairs):
            socks.extend(socket.socketpair())
        for sock in socks:
            sel.register(sock, W)
        ready = sel.select(0)
        assert len(ready) == 2 * pairs
        assert {key.fd for key, _ in ready} == {s.fileno() for s in socks}
        assert {events for _, events in ready} == {W}
    finally:
        sel.close()
        for sock in socks:
            sock.close()


# --- 10. epoll specifics -----------------------------------------------------


def test_epoll_register_regular_file_raises_eperm_and_drops_key(epoll_cls):
    sel = epoll_cls()
    try:
        with tempfile.NamedTemporaryFile() as f:
            with pytest.raises(OSError) as info:
                sel.register(f, R)
            assert info.value.errno == errno.EPERM
            with pytest.raises(KeyError):
                sel.get_key(f)
            assert len(sel.get_map()) == 0
    finally:
        sel.close()


def _files_epoll_judges(stack, tmp_path):
    """Yield (name, fd) of files epoll refuses (EPERM) and of files it takes."""
    import pty

    yield "regular file", stack.enter_context(open(tmp_path / "f", "wb")).fileno()
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    stack.callback(os.close, dfd)
    yield "directory", dfd
    yield "/dev/null", stack.enter_context(open(os.devnull, "rb")).fileno()
    a, b = socket.socketpair()
    stack.enter_context(a)
    stack.enter_context(b)
    yield "socket", a.fileno()
    r, w = os.pipe()
    stack.callback(os.close, r)
    stack.callback(os.close, w)
    yield "pipe", r
    master, slave = pty.openpty()
    stack.callback(os.close, master)
    stack.callback(os.close, slave)
    yield "pty", master
    if hasattr(os, "eventfd"):
        efd = os.eventfd(0)
        stack.callback(os.close, efd)
        yield "eventfd", efd


def test_uring_selector_refuses_the_files_epoll_refuses(tmp_path):
    # io_uring polls any file; on one without poll support the poll
    # completes at once, for ever, so a reader on a regular file would run
    # in every iteration. UringSelector refuses what epoll refuses, with
    # epoll's error, and keeps no key.
    import contextlib

    uring_cls = selector_class("fastio-c", "io_uring")
    with contextlib.ExitStack() as stack:
        reference = stack.enter_context(contextlib.closing(selectors.EpollSelector()))
        sel = stack.enter_context(contextlib.closing(uring_cls()))
        outcomes = {}
        for name, fd in _files_epoll_judges(stack, tmp_path):
            got = []
            for s in (reference, sel):
                try:
                    s.register(fd, R)
                except OSError as exc:
                    got.append(errno.errorcode[exc.errno])
                    assert s.get_map().get(fd) is None
                else:
                    got.append("ok")
                    s.unregister(fd)
            assert got[0] == got[1], name
            outcomes[name] = got[1]
            assert sel.select(0) == []
        assert outcomes["regular file"] == outcomes["directory"] == outcomes["/dev/null"] == "EPERM"
        assert outcomes["socket"] == outcomes["pipe"] == outcomes["pty"] == "ok"


def test_epoll_fileno_is_the_epoll_fd(epoll_cls):
    sel = epoll_cls()
    try:
        fd = sel.fileno()
        assert isinstance(fd, int) and fd >= 0
        assert os.readlink("/proc/self/fd/%d" % fd) == "anon_inode:[eventpoll]"
    finally:
        sel.close()


# --- 11. DefaultSelector -----------------------------------------------------


def test_default_selector_is_a_class(default_cls):
    assert inspect.isclass(default_cls)
    assert issubclass(default_cls, selectors.BaseSelector)


def test_default_selector_as_class_attribute_does_not_bind(default_cls):
    class Holder:
        factory = default_cls

    sel = Holder().factory()
    try:
        assert isinstance(sel, selectors.BaseSelector)
        assert sel.get_map() is not None and len(sel.get_map()) == 0
    finally:
        sel.close()


def test_default_selector_is_epoll_on_linux(impl, default_cls):
    if not sys.platform.startswith("linux"):
        pytest.skip("DefaultSelector is epoll only on Linux")
    assert default_cls is selector_class(impl, "epoll")


# --- Callers rely on ---------------------------------------------------------


def test_modify_same_events_and_data_returns_same_key_object(selector, socketpair):
    rd, wr = socketpair()
    data = object()
    key = selector.register(rd, R, data)
    assert selector.modify(rd, R, data) is key


def test_modify_without_data_resets_data_to_none(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R, "data")
    assert selector.modify(rd, W).data is None
    assert selector.get_key(rd).data is None


def test_modify_same_events_without_data_resets_data_to_none(selector, socketpair):
    rd, wr = socketpair()
    selector.register(rd, R, "data")
    assert selector.modify(rd, R).data is None
    assert selector.get_key(rd).data is None


def test_unregister_returns_the_registered_key(selector, socketpair):
    rd, wr = socketpair()
    key = selector.register(rd, R, "data")
    assert selector.unregister(rd) is key


def test_hangup_reported_as_read_and_write(selector, backend, pipe):
    r, w = pipe()
    key = selector.register(r, R | W)  # a pipe's read end is never writable
    pipe.close(w)
    # epoll/poll report POLLHUP, which the selector turns into READ|WRITE;
    # select(2) only puts a hung-up fd in the read set.
    expected = R if backend == "select" else R | W
    assert selector.select(0) == [(key, expected)]


def test_hangup_masked_by_key_events(selector, pipe):
    r, w = pipe()
    key = selector.register(r, R)
    pipe.close(w)
    assert selector.select(0) == [(key, R)]


def test_error_reported_as_read_and_write(selector, pipe):
    r, w = pipe()
    key = selector.register(w, R | W)  # a pipe's write end is never readable
    pipe.close(r)
    assert selector.select(0) == [(key, R | W)]


def test_error_masked_by_key_events(selector, pipe):
    r, w = pipe()
    key = selector.register(w, R)
    pipe.close(r)
    assert selector.select(0) == [(key, R)]


def test_register_closed_socket_raises_value_error(selector, socketpair):
    rd, wr = socketpair()
    rd.close()
    with pytest.raises(ValueError):
        selector.register(rd, R)
    assert len(selector.get_map()) == 0


def test_register_zero_events_raises_value_error(selector, socketpair):
    rd, wr = socketpair()
    with pytest.raises(ValueError):
        selector.register(rd, 0)


@pytest.mark.parametrize("events", ["1", 1.0], ids=["str", "float"])
def test_register_non_int_events_raises_type_error(selector, socketpair, events):
    rd, wr = socketpair()
    with pytest.raises(TypeError):
        selector.register(rd, events)
    assert len(selector.get_map()) == 0


def test_register_object_without_fileno_raises_value_error(selector):
    with pytest.raises(ValueError):
        selector.register(object(), R)


def test_select_selector_accepts_fd_above_fd_setsize_then_select_raises(
    select_cls, socketpair, fd_limit
):
    big = FD_SETSIZE + 5
    if fd_limit <= big:
        pytest.skip("RLIMIT_NOFILE %d too low to open fd %d" % (fd_limit, big))
    try:
        os.fstat(big)
    except OSError:
        pass
    else:
        pytest.skip("fd %d is already in use" % big)
    rd, wr = socketpair()
    os.dup2(wr.fileno(), big)
    sel = select_cls()
    try:
        key = sel.register(big, W)
        assert key.fd == big
        with pytest.raises(ValueError):
            sel.select(0)
        # The selector is still usable once the fd is gone.
        sel.unregister(big)
        key2 = sel.register(rd, W)
        assert sel.select(0) == [(key2, W)]
    finally:
        sel.close()
        os.close(big)


def test_events_for_fd_no_longer_in_map_are_dropped(selector, backend, socketpair):
    # epoll watches the open file description, not the fd number: with a dup
    # alive, closing then unregistering the fd (EBADF, ignored) leaves the
    # kernel reporting it. The selector must drop what is not in its map.
    sock, peer = socketpair()
    fd = sock.fileno()
    selector.register(sock, W)
    dup = os.dup(fd)
    try:
        sock.close()
        assert selector.unregister(sock).fd == fd
        if backend == "epoll":
            probe = select.epoll.fromfd(os.dup(selector.fileno()))
            try:
                assert [f for f, _ in probe.poll(0)] == [fd]  # the stale watch
            finally:
                probe.close()
        assert selector.select(0) == []
        if hasattr(selector, "select_fds"):
            assert selector.select_fds(0) == []
    finally:
        os.close(dup)


def test_reregister_after_unregister_delivers_events(selector, socketpair):
    # fastio's epoll defers EPOLL_CTL_DEL and re-arms the old kernel entry.
    rd, wr = socketpair()
    selector.register(rd, R)
    selector.unregister(rd)
    key = selector.register(rd, R, "again")
    wr.send(b"x")
    assert selector.select(0) == [(key, R)]
    selector.unregister(rd)
    key = selector.register(rd, W)
    assert selector.select(0) == [(key, W)]


def test_unregistered_readable_fd_does_not_end_wait_early(selector, socketpair):
    # fastio's epoll: the deferred kernel entry still reports; the report
    # must be swallowed and the wait go on for the full timeout.
    rd, wr = socketpair()
    other, _ = socketpair()
    selector.register(rd, R)
    wr.send(b"x")
    selector.unregister(rd)
    selector.register(other, R)
    t0 = time.monotonic()
    assert selector.select(0.1) == []
    assert time.monotonic() - t0 >= 0.1


def test_fd_number_reused_after_unregister_and_close_reports_new_socket(selector, socketpair):
    rd, wr = socketpair()
    fd = rd.fileno()
    selector.register(fd, R)
    wr.send(b"old")
    selector.unregister(fd)
    rd2, wr2 = socketpair()
    rd.close()
    os.dup2(rd2.fileno(), fd)
    rd2.close()
    try:
        key = selector.register(fd, R, "new")
        assert selector.select(0) == []
        wr2.send(b"new")
        assert selector.select(0) == [(key, R)]
    finally:
        selector.unregister(fd)
        os.close(fd)


def test_select_reads_fd_to_key_mutated_directly(selector, socketpair):
    # fastio caches select()'s (key, events) per fd; the dict must still rule.
    rd, wr = socketpair()
    key = selector.register(rd, R, "old")
    wr.send(b"x")
    assert selector.select(0) == [(key, R)]
    assert selector.select(0)[0][0] is key
    replaced = selectors.SelectorKey(rd, rd.fileno(), R, "replaced")
    selector._fd_to_key[rd.fileno()] = replaced
    result = selector.select(0)
    assert result == [(replaced, R)] and result[0][0] is replaced
    del selector._fd_to_key[rd.fileno()]
    assert selector.select(0) == []


def test_select_reports_changed_readiness_of_same_key(selector, socketpair):
    rd, wr = socketpair()
    key = selector.register(rd, R | W)
    assert selector.select(0) == [(key, W)]
    wr.send(b"x")
    assert sorted(ev for _, ev in selector.select(0)) in ([R | W], [R, W])
    rd.recv(1)
    assert selector.select(0) == [(key, W)]


def test_unregistered_reported_socket_is_not_kept_alive(selector, socketpair):
    rd, wr = socketpair()
    sock = socket.socket(fileno=os.dup(rd.fileno()))
    ref = weakref.ref(sock)
    key = selector.register(sock, R)
    wr.send(b"x")
    assert selector.select(0) == [(key, R)]
    selector.unregister(sock)
    sock.close()
    del sock, key
    assert ref() is None


def test_get_key_unknown_raises_key_error(selector, socketpair):
    rd, wr = socketpair()
    key = selector.register(rd, R, "data")
    assert selector.get_key(rd) == key
    with pytest.raises(KeyError):
        selector.get_key(999999)
    with pytest.raises(KeyError):
        selector.get_key(wr)


def test_subprocess_style_loop_unregisters_closed_files(selector):
    r, w = os.pipe()
    reader = os.fdopen(r, "rb", buffering=0)
    writer = os.fdopen(w, "wb", buffering=0)
    received = b""
    try:
        selector.register(writer, W)
        selector.register(reader, R)
        rounds = 0
        while selector.get_map():
            rounds += 1
            assert rounds < 20, "selector map never emptied"
            for key, events in selector.select(1):
                if key.fileobj is writer:
                    writer.write(b"payload")
                    writer.close()
                    selector.unregister(writer)  # fileno() now raises ValueError
                elif key.fileobj is reader:
                    chunk = reader.read(1024)
                    received += chunk
                    if not chunk:
                        reader.close()
                        selector.unregister(reader)
        assert received == b"payload"
        assert len(selector.get_map()) == 0
    finally:
        reader.close()
        writer.close()


def test_third_party_subclass_registers_through_private_names(selector_cls, backend, socketpair):
    if backend == "select":
        pytest.skip("SelectSelector has no kernel poller in _selector")
    if backend == "epoll":
        native = select.EPOLLIN | select.EPOLLET
    else:
        native = select.POLLIN

    class Subclass(selector_cls):
        def register(self, fileobj, events, data=None):
            key = selectors._BaseSelectorImpl.register(self, fileobj, events, data)
            self._selector.register(key.fd, native)
            return key

    sel = Subclass()
    try:
        rd, wr = socketpair()
        key = sel.register(rd, R, "data")
        assert type(sel._fd_to_key) is dict
        assert sel._fd_to_key[rd.fileno()] is key
        assert sel.select(0) == []
        wr.send(b"x")
        assert sel.select(1) == [(key, R)]
        expected_again = [] if backend == "epoll" else [(key, R)]  # EPOLLET
        assert sel.select(0) == expected_again
    finally:
        sel.close()


def test_instances_accept_attribute_assignment(selector):
    selector.custom_attribute = 42
    assert selector.custom_attribute == 42
