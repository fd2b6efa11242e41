"""pika's SelectorIOServicesAdapter driving fastio's Loop (both cores)."""

import socket
import threading
import time

import pytest

pika_adapter = pytest.importorskip("pika.adapters.utils.selector_ioloop_adapter")


@pytest.fixture
def services(fastio_loop):
    return pika_adapter.SelectorIOServicesAdapter(fastio_loop.loop), fastio_loop.loop


def test_loop_has_pikas_event_bits(services):
    _, loop = services
    assert (loop.READ, loop.WRITE, loop.ERROR) == (0x1, 0x4, 0x8)


def test_timers_fire_in_order_and_cancel(services):
    nbio, loop = services
    out = []
    # Delays from one base time, far apart: a stall between two of these
    # calls on a loaded machine must not reorder their deadlines.
    base = loop.time()

    def after(seconds):
        return max(0.0, base + seconds - loop.time())

    nbio.call_later(after(0.2), lambda: out.append(2))
    nbio.call_later(after(0.1), lambda: out.append(1))
    nbio.call_later(after(0.15), lambda: out.append("cancelled")).cancel()
    loop.call_later(after(0.01), lambda: out.append(0))
    handle = loop.call_later(after(0.05), lambda: out.append("removed"))
    loop.remove_timeout(handle)
    nbio.call_later(after(0.3), nbio.stop)
    nbio.run()
    assert out == [0, 1, 2]


def test_stop_before_start_returns_at_once(services):
    nbio, loop = services
    out = []
    loop.add_callback(lambda: out.append("queued before start"))
    loop.stop()
    t0 = time.monotonic()
    loop.start()
    assert time.monotonic() - t0 < 5  # a loop that did not stop would block forever
    assert out == ["queued before start"]


def test_add_callback_threadsafe_from_threads(services):
    nbio, loop = services
    count = [0]
    total = 4 * 2000

    def bump():
        count[0] += 1
        if count[0] == total:
            nbio.stop()

    def worker():
        for _ in range(2000):
            nbio.add_callback_threadsafe(bump)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    nbio.call_later(0, lambda: [t.start() for t in threads])
    failsafe = nbio.call_later(30, nbio.stop)
    nbio.run()
    failsafe.cancel()
    for t in threads:
        t.join()
    assert count[0] == total


def test_reader_and_writer(services):
    nbio, loop = services
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    got = []

    def on_writable():
        b.send(b"via writer")
        assert nbio.remove_writer(b.fileno()) is True

    def on_readable():
        got.append(a.recv(100))
        nbio.remove_reader(a.fileno())
        nbio.stop()

    nbio.set_reader(a.fileno(), on_readable)
    nbio.set_writer(b.fileno(), on_writable)
    failsafe = nbio.call_later(5, nbio.stop)
    nbio.run()
    failsafe.cancel()
    assert got == [b"via writer"]
    assert nbio.remove_reader(a.fileno()) is False
    a.close()
    b.close()


def test_reader_and_writer_on_one_fd(services):
    nbio, loop = services
    a, b = socket.socketpair()
    a.setblocking(False)
    events = []

    def on_writable():
        events.append("w")
        nbio.remove_writer(a.fileno())
        b.send(b"!")

    def on_readable():
        events.append(a.recv(10))
        nbio.stop()

    nbio.set_reader(a.fileno(), on_readable)
    nbio.set_writer(a.fileno(), on_writable)
    failsafe = nbio.call_later(5, nbio.stop)
    nbio.run()
    failsafe.cancel()
    assert events == ["w", b"!"]
    nbio.remove_reader(a.fileno())
    a.close()
    b.close()


def test_connect_socket_through_the_adapter(services):
    nbio, loop = services
    listener = socket.create_server(("127.0.0.1", 0))
    sock = socket.socket()
    sock.setblocking(False)
    results = []

    def on_done(result):
        results.append(result)
        nbio.stop()

    nbio.connect_socket(sock, listener.getsockname(), on_done)
    failsafe = nbio.call_later(5, nbio.stop)
    nbio.run()
    failsafe.cancel()
    assert results == [None]  # pika reports success as None
    conn, _ = listener.accept()
    assert conn.getpeername() == sock.getsockname()
    for s in (conn, sock, listener):
        s.close()


def test_handler_exception_goes_to_exception_handler(services):
    nbio, loop = services
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    a, b = socket.socketpair()

    def handler(fd, events):
        loop.remove_handler(fd)
        raise ValueError("handler failed")

    loop.add_handler(a.fileno(), handler, loop.READ)
    b.send(b"x")
    loop.call_later(0.05, loop.stop)
    loop.start()
    assert [type(c["exception"]) for c in contexts] == [ValueError]
    a.close()
    b.close()


@pytest.fixture(params=["pika", "fastio-c", "fastio-io_uring", "fastio-py"])
def ioloop(request):
    """pika's own IOLoop (the reference) and fastio's Loop on each core."""
    from loop_fixtures import LoopAdapter

    if request.param == "pika":
        from pika.adapters.select_connection import IOLoop
        loop = IOLoop()
    else:
        loop = LoopAdapter(request.param).loop
    yield loop
    loop.close()


@pytest.mark.parametrize("source", ["call_later", "add_callback", "fd handler"])
def test_callback_exception_propagates_from_start_which_can_run_again(ioloop, source):
    # pika's IOLoop lets a callback's exception out of start(): a program
    # written for it stops with the traceback instead of running on.
    loop = ioloop
    calls = []
    a, b = socket.socketpair()

    def boom(*args):
        calls.append(source)
        raise ValueError("boom")

    if source == "call_later":
        loop.call_later(0, boom)
    elif source == "add_callback":
        loop.add_callback_threadsafe(boom)
    else:
        b.send(b"x")  # stays readable
        loop.add_handler(a.fileno(), boom, loop.READ)
    guard = loop.call_later(60, loop.stop)  # a loop that swallowed it
    try:
        with pytest.raises(ValueError, match="boom"):
            loop.start()
        assert calls == [source]
        if source == "fd handler":
            loop.remove_handler(a.fileno())
        loop.call_later(0, loop.stop)
        loop.start()
        assert calls == [source]
    finally:
        loop.remove_timeout(guard)
        a.close()
        b.close()


def test_add_callback_after_close_is_dropped_as_pikas_ioloop_does(fastio_loop):
    # pika's resolver thread calls back after a connection's loop was
    # closed; pika's IOLoop drops the callback, fastio's raised
    # RuntimeError in that thread.
    from pika.adapters.select_connection import IOLoop

    ran = []
    for loop in (IOLoop(), fastio_loop.loop):
        with pytest.raises(TypeError, match="callable"):
            loop.add_callback_threadsafe(5)
        loop.close()
        loop.add_callback_threadsafe(lambda: ran.append(loop))
        loop.add_callback(lambda: ran.append(loop))
    assert ran == []
