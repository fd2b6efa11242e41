"""Compiled protocols (fastio._impl.echo_c.EchoCore): the loop's transports call their
C data_received with the receive buffer; every other loop, and any subclass
that overrides data_received, gets the Python method."""

import os

import pytest

from fastio._impl import compiled
from fastio.loop import Protocol
from loop_fixtures import Collector

echo = compiled("echo")
pytestmark = pytest.mark.skipif(echo is None, reason="fastio._impl.echo_c is not built")


def _port(server):
    return server.sockets[0].getsockname()[1]


def _server_protocol(base, created):
    class Server(base, Protocol):
        def __init__(self, upper=False):
            self._upper = upper
            self._in = 0
            created.append(self)

        def connection_made(self, transport):
            self._transport = transport

    return Server


def _exchange(any_loop, factory, chunks, expect):
    server = any_loop.create_server(factory)
    client = Collector(any_loop.loop, expect)
    transport, _ = any_loop.connect(lambda: client, "127.0.0.1", _port(server))
    for chunk in chunks:
        transport.write(chunk)
    try:
        return any_loop.run_until(client.got_all)
    finally:
        transport.close()
        server.close()


@pytest.mark.parametrize("upper", [False, True], ids=["plain", "upper"])
def test_compiled_data_received_echoes_byte_exact(any_loop, upper):
    created = []
    # Every byte value, split across writes, several receive-buffer's worth.
    payload = bytes(range(256)) * 4096 + os.urandom(100_000)
    chunks = [payload[i:i + 70_001] for i in range(0, len(payload), 70_001)]
    got = _exchange(any_loop, lambda: _server_protocol(echo.EchoCore, created)(upper),
                    chunks, len(payload))
    assert got == (payload.upper() if upper else payload)
    assert created[0]._in == len(payload)


def test_python_override_of_compiled_data_received_is_called(any_loop):
    created = []
    base = _server_protocol(echo.EchoCore, created)

    class Override(base):
        def data_received(self, data):
            self._transport.write(b"<" + data + b">")

    got = _exchange(any_loop, Override, [b"abc"], 5)
    assert got == b"<abc>"
    assert created[0]._in == 0  # EchoCore's path never ran


def test_set_protocol_moves_data_to_the_new_protocol(any_loop):
    created = []
    seen = []

    class Recorder(Protocol):
        def __init__(self, transport):
            self.transport = transport

        def data_received(self, data):
            seen.append(bytes(data))
            self.transport.write(b"recorded")

    class Switching(_server_protocol(echo.EchoCore, created)):
        def connection_made(self, transport):
            self._transport = transport
            transport.set_protocol(Recorder(transport))

    got = _exchange(any_loop, Switching, [b"hello"], len(b"recorded"))
    assert got == b"recorded"
    assert b"".join(seen) == b"hello"
    assert created[0]._in == 0


def test_echo_core_drops_chunks_once_draining(any_loop):
    created = []
    base = _server_protocol(echo.EchoCore, created)

    class Draining(base):
        def connection_made(self, transport):
            self._transport = transport
            self._draining = True

        def eof_received(self):
            # EOF comes after the data: by now every chunk was seen.
            self._transport.write(b"in=%d" % self._in)

    server = any_loop.create_server(Draining)
    client = Collector(any_loop.loop, len(b"in=0"))
    transport, _ = any_loop.connect(lambda: client, "127.0.0.1", _port(server))
    transport.write(b"dropped")
    transport.write_eof()
    try:
        assert any_loop.run_until(client.got_all) == b"in=0"
    finally:
        transport.close()
        server.close()

