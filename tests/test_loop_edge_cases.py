"""Loop edge cases: odd timer values, bad arguments, a connection_made() that raises.

Each runs on both fastio cores and, where asyncio defines the behaviour, on
asyncio as the reference (in debug mode where asyncio checks only there).
"""

import math
import socket
import sys

import pytest

from fastio.loop import Protocol
from loop_fixtures import Collector


def _port(server):
    return server.sockets[0].getsockname()[1]


def _stop_soon(loop, delay=0.01):
    loop.call_later(delay, loop.stop)


# ------------------------------------------------------------- timer values


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_nan_time_is_refused_and_the_loop_keeps_its_timers(fastio_loop, method):
    loop = fastio_loop.loop
    fired = []
    with pytest.raises(ValueError, match="NaN"):
        getattr(loop, method)(math.nan, fired.append, "nan")
    # Nothing was scheduled: the next timer still fires and the loop stops
    # (before refusing NaN, the compiled core blocked forever here).
    loop.call_later(0.01, fired.append, "timer")
    _stop_soon(loop, 0.02)
    loop.run_forever()
    assert fired == ["timer"]


@pytest.mark.parametrize("value", [None, "1", b"1"])
@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_time_that_is_not_a_number_is_refused_alike_by_both_cores(fastio_loop, method, value):
    with pytest.raises(TypeError, match="^must be real number, not %s$" % type(value).__name__):
        getattr(fastio_loop.loop, method)(value, print)


@pytest.mark.parametrize("value", [math.inf, 1e300])
def test_far_timer_never_fires_and_does_not_block_others(any_loop, value):
    loop = any_loop.loop
    fired = []
    far = loop.call_later(value, fired.append, "far")
    loop.call_at(value, fired.append, "far-at")
    loop.call_later(0.01, fired.append, "near")
    _stop_soon(loop, 0.02)
    loop.run_forever()
    assert fired == ["near"]
    far.cancel()


def test_negative_infinity_runs_at_once(any_loop):
    loop = any_loop.loop
    fired = []
    loop.call_later(-math.inf, fired.append, "now")
    _stop_soon(loop)
    loop.run_forever()
    assert fired == ["now"]


def test_none_time_is_a_type_error(any_loop):
    with pytest.raises(TypeError):
        any_loop.loop.call_later(None, lambda: None)
    # asyncio before 3.11 only asserts it (TimerHandle's `assert when is not None`).
    old_asyncio = any_loop.kind == "asyncio" and sys.version_info < (3, 11)
    with pytest.raises(AssertionError if old_asyncio else TypeError):
        any_loop.loop.call_at(None, lambda: None)


@pytest.mark.parametrize("value", ["1", b"1"])
def test_text_time_is_a_type_error_in_both_cores(fastio_loop, value):
    # asyncio's call_at() takes a str and fails later, inside the loop.
    with pytest.raises(TypeError):
        fastio_loop.loop.call_later(value, lambda: None)
    with pytest.raises(TypeError):
        fastio_loop.loop.call_at(value, lambda: None)


# ---------------------------------------------------------- bad arguments


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
@pytest.mark.parametrize("callback", [42, None, "f"])
def test_non_callable_callback_is_refused_at_call_time(any_loop, method, callback):
    loop = any_loop.loop
    named = method
    if any_loop.is_asyncio:
        loop.set_debug(True)  # asyncio checks callbacks only in debug mode
        if method == "call_later":
            named = "call_at"  # which its call_later() calls
    args = (callback,) if method.startswith("call_soon") else (1, callback)
    with pytest.raises(TypeError, match=r"a callable object was expected by %s\(\), got %r"
                       % (named, callback)):
        getattr(loop, method)(*args)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_non_callable_io_callback_is_refused(fastio_loop, method):
    a, b = socket.socketpair()
    try:
        with pytest.raises(TypeError, match=r"a callable object was expected by %s\(\), got 42"
                           % method):
            getattr(fastio_loop.loop, method)(a.fileno(), 42)
        # Nothing was registered.
        assert not getattr(fastio_loop.loop, method.replace("add", "remove"))(a.fileno())
    finally:
        a.close()
        b.close()


@pytest.fixture
def connected(any_loop):
    """A (client Collector, server-side socket) pair over TCP."""
    loop = any_loop.loop
    server = any_loop.create_server(lambda: Protocol())
    peer_sock = []

    class Accept(Protocol):
        pass

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        client = Collector(loop)
        any_loop.connect(lambda: client, "127.0.0.1", listener.getsockname()[1])
        conn, _ = listener.accept()
        peer_sock.append(conn)
        yield client, conn
    finally:
        server.close()
        listener.close()
        for s in peer_sock:
            s.close()
        if client.transport is not None:
            client.transport.abort()
            any_loop.run_until(client.lost)


@pytest.mark.parametrize("data", [None, 0, "", "text", 1.5, [b"x"]])
def test_write_of_a_non_bytes_like_is_a_type_error(any_loop, connected, data):
    client, _ = connected
    with pytest.raises(TypeError, match="data argument must be a bytes-like object, not %r"
                       % type(data).__name__):
        client.transport.write(data)


def test_write_of_empty_bytes_is_a_no_op_and_writes_go_on(any_loop, connected):
    client, conn = connected
    client.transport.write(b"")
    client.transport.write(bytearray(b"ab"))
    client.transport.write(memoryview(b"cd"))
    client.transport.writelines([b"e", bytearray(b"f"), memoryview(b"g")])
    conn.settimeout(10)
    got = b""
    while len(got) < 7:
        got += conn.recv(64)
    assert got == b"abcdefg"


@pytest.mark.parametrize("items", [[None], [b"x", "y"], [0]])
def test_writelines_of_a_non_bytes_like_is_a_type_error(any_loop, connected, items):
    client, conn = connected
    with pytest.raises(TypeError):
        client.transport.writelines(items)
    client.transport.write(b"ok")
    conn.settimeout(10)
    assert conn.recv(64) == b"ok"  # nothing of the refused call was sent


# ----------------------------------------------- connection_made() raises


class Boom(Exception):
    pass


class RaisingEcho(Protocol):
    """Raise in connection_made(), then echo like a working protocol."""

    def __init__(self, loop):
        self.transport = None
        self.echoed = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        raise Boom("connection_made failed")

    def data_received(self, data):
        self.transport.write(data)
        if not self.echoed.done():
            self.echoed.set_result(data)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def _record_errors(loop):
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    return errors


def test_server_connection_made_that_raises_is_logged_and_served(any_loop):
    loop = any_loop.loop
    errors = _record_errors(loop)
    protocols = []

    def factory():
        protocols.append(RaisingEcho(loop))
        return protocols[-1]

    server = any_loop.create_server(factory)
    client = socket.create_connection(("127.0.0.1", _port(server)), timeout=10)
    try:
        client.sendall(b"ping")
        assert any_loop.run_until(_when_made(loop, protocols, "echoed")) == b"ping"
        assert client.recv(64) == b"ping"
        assert [type(c.get("exception")) for c in errors] == [Boom]
        # The connection is not orphaned: the peer's close reaches it.
        client.close()
        assert any_loop.run_until(protocols[0].lost) is None
        assert protocols[0].transport.is_closing()
    finally:
        client.close()
        server.close()


def _when_made(loop, protocols, attr):
    """A future of `protocols[0].<attr>`, once the protocol exists."""
    fut = loop.create_future()

    def poll():
        if protocols:
            getattr(protocols[0], attr).add_done_callback(
                lambda f: fut.done() or fut.set_result(f.result()))
        else:
            loop.call_later(0.005, poll)

    poll()
    return fut


def test_client_connection_made_that_raises_is_logged_and_connected(any_loop):
    loop = any_loop.loop
    errors = _record_errors(loop)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        proto = RaisingEcho(loop)
        transport, protocol = any_loop.connect(lambda: proto, "127.0.0.1",
                                               listener.getsockname()[1])
        assert protocol is proto and transport is proto.transport
        assert [type(c.get("exception")) for c in errors] == [Boom]
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"pong")
            assert any_loop.run_until(proto.echoed) == b"pong"
            conn.settimeout(10)
            assert conn.recv(64) == b"pong"
        assert any_loop.run_until(proto.lost) is None
    finally:
        listener.close()


@pytest.mark.parametrize("port", [65536, 70000, -1])
def test_port_out_of_range_is_refused_not_wrapped(any_loop, port):
    # getaddrinfo() would take 70000 as 4464; bind() and connect() refuse
    # it with OverflowError, and so does asyncio's loop.
    with pytest.raises(OverflowError):
        any_loop.create_server(Protocol, "127.0.0.1", port)
    with pytest.raises(OverflowError):
        any_loop.connect(Protocol, "127.0.0.1", port)


@pytest.mark.parametrize("selector", ["epoll", 42, object()])
def test_a_selector_that_is_not_one_is_a_clear_type_error(selector):
    from fastio.loop import Loop
    with pytest.raises(TypeError, match="backend="):
        Loop(selector)
