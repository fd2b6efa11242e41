"""Loop(selector=...) on each backend: fastio pollers, fastio and stdlib selectors."""

import os
import resource
import selectors
import socket
import threading

import pytest

import implementations
from conftest import drain_socket, fill_send_buffer
from fastio import _pollers
from fastio.loop import Protocol


def _uring(make):
    # io_uring exists on the compiled core only, where the kernel allows it.
    def backend(impl, core):
        if impl != "c":
            return None
        poller, _ = _pollers.uring_poller()
        if poller is None:
            return None
        poller.close()
        return make(core)
    return backend


# id -> what Loop(selector) gets, from the implementation under test: None,
# a class, or (for an instance) a factory of one.
BACKENDS = {
    "default": lambda impl, core: None,
    "stdlib-select-class": lambda impl, core: selectors.SelectSelector,
    "fastio-DefaultSelector": lambda impl, core: implementations.default_selector(impl)(),
    "core-epoll-class": lambda impl, core: core.EpollPoller if core.HAVE_EPOLL else None,
    "core-poll-class": lambda impl, core: core.PollPoller if core.HAVE_POLL else None,
    "core-select": lambda impl, core: core.SelectPoller(),
    # Readiness on io_uring polls, and with a buffer ring (what
    # Loop(backend="io_uring") makes): completion-based transports.
    "fastio-UringSelector": _uring(lambda core: implementations.selector_classes("c")["io_uring"]()),
    "core-io_uring-buffers": _uring(lambda core: core.UringPoller(nbufs=8)),
}


@pytest.fixture(params=list(BACKENDS))
def loop(request, implementation):
    core = implementations.pair(implementation, "core")
    backend = BACKENDS[request.param](implementation, core)
    if backend is None and request.param != "default":
        pytest.skip("%s: not on this platform or implementation" % request.param)
    lp = implementations.loop_class(implementation)(backend)
    yield lp
    lp.close()


class Echo(Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Client(Protocol):
    def __init__(self, loop, n):
        self.n = n
        self.data = bytearray()
        self.done = loop.create_future()

    def data_received(self, data):
        self.data += data
        if len(self.data) >= self.n:
            self.done.set_result(bytes(self.data))


def test_echo_timers_and_threadsafe_on_backend(loop):
    server = loop.create_server(Echo, "127.0.0.1", 0)
    payload = os.urandom(500_000)
    client = Client(loop, len(payload))
    tr, _ = loop.run_until_complete(
        loop.create_connection(lambda: client, "127.0.0.1", server.sockets[0].getsockname()[1]))
    tr.write(payload)
    failsafe = loop.call_later(10, client.done.cancel)
    assert loop.run_until_complete(client.done) == payload
    failsafe.cancel()

    order = []
    # Deadlines from one base time: a stall between the two calls on a
    # loaded machine must not swap them.
    base = loop.time()
    loop.call_at(base + 0.02, order.append, "late")
    loop.call_at(base + 0.01, order.append, "early")
    # Queued from another thread before the loop runs: first, whatever the load.
    thread = threading.Thread(target=loop.call_soon_threadsafe, args=(order.append, "thread"))
    thread.start()
    thread.join()
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert order == ["thread", "early", "late"]
    tr.close()
    server.close()


def test_fd_closed_without_remove_reader_can_be_reused(loop):
    a, b = socket.socketpair()
    loop.add_reader(a.fileno(), lambda: None)
    fd = a.fileno()
    a.close()
    b.close()
    c, d = socket.socketpair()
    assert c.fileno() == fd
    got = []
    loop.add_writer(c.fileno(), lambda: (got.append("w"), loop.remove_writer(c.fileno()),
                                         loop.stop()))
    loop.remove_reader(fd)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == ["w"]
    c.close()
    d.close()


def test_python_core_on_default_backend():
    lp = implementations.loop_class("py")()
    out = []
    lp.call_later(0.005, out.append, 1)
    lp.call_later(0.01, lp.stop)
    lp.run_forever()
    lp.close()
    assert out == [1]


def test_timer_beyond_any_poller_timeout_does_not_break_the_wait(loop):
    # Only a timer 300 years away: the wait is clamped (as asyncio clamps to
    # a day), not refused with OverflowError by the poller.
    never = loop.call_later(1e10, loop.stop)
    stopper = threading.Timer(0.05, loop.call_soon_threadsafe, (loop.stop,))
    stopper.start()
    try:
        loop.run_forever()
    finally:
        stopper.join()
    assert not never.cancelled()
    never.cancel()


def test_fds_above_the_dispatch_table_size_are_dispatched(loop):
    # The loop looks fds up in a flat table that grows with the fd numbers
    # it sees: a reader on a high fd must run, and stop once removed.
    # Below select()'s FD_SETSIZE (1024), above the table's first size (64:
    # src/fastio_fdtable.h).
    high = 900
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= high:
        pytest.skip("RLIMIT_NOFILE %d is too low" % soft)
    a, b = socket.socketpair()
    os.dup2(a.fileno(), high)
    fd = high
    got = []
    try:
        loop.add_reader(fd, lambda: (got.append(os.read(fd, 100)), loop.stop()))
        b.send(b"high fd")
        failsafe = loop.call_later(5, loop.stop)
        loop.run_forever()
        failsafe.cancel()
        assert got == [b"high fd"]
        assert loop.remove_reader(fd) is True
        b.send(b"not read")
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        assert got == [b"high fd"]
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        a.close()
        b.close()


def test_a_writer_on_a_half_closed_peer_that_reads_nothing_is_not_called(loop):
    # POLLRDHUP is not room to write: io_uring's polls report it on such a
    # socket, and the writer must still wait as on epoll.
    a, b = socket.socketpair()
    a.setblocking(False)
    fill_send_buffer(a)
    b.shutdown(socket.SHUT_WR)
    calls = []
    loop.add_writer(a.fileno(), lambda: calls.append(1))
    loop.call_later(0.3, loop.stop)
    loop.run_forever()
    assert calls == []
    # The peer reads: the writer runs, on every turn while there is room.
    drain_socket(b)

    def stop_after_three():
        calls.append(1)
        if len(calls) == 3:
            loop.stop()
    loop.add_writer(a.fileno(), stop_after_three)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert len(calls) == 3
    loop.remove_writer(a.fileno())
    a.close()
    b.close()
