"""FastioIOServices.create_streaming_connection: pika's stream-linkup contract.

pika's own services (`SelectorIOServicesAdapter` on pika's IOLoop) are the
reference; fastio's run on every Loop core. No broker: a socketpair.
"""

import socket

import pytest

pytest.importorskip("pika")
from pika.adapters.select_connection import IOLoop
from pika.adapters.utils import nbio_interface
from pika.adapters.utils.selector_ioloop_adapter import SelectorIOServicesAdapter

from fastio.rabbitmq import FastioIOServices
from loop_fixtures import FASTIO_KINDS, LoopAdapter

TIMEOUT = 10


@pytest.fixture(params=["pika"] + FASTIO_KINDS)
def nbio(request):
    if request.param == "pika":
        services = SelectorIOServicesAdapter(IOLoop())
        yield services
    else:
        adapter = LoopAdapter(request.param)
        yield FastioIOServices(adapter.loop)
        adapter.close()
    services = None


class Failed(Exception):
    pass


class StreamProtocol(nbio_interface.AbstractStreamProtocol):
    """Records the callbacks; raises Failed from the one named `fail`."""

    def __init__(self, fail=None):
        self.fail = fail
        self.events = []
        self.data = bytearray()

    def _event(self, name):
        self.events.append(name)
        if name == self.fail:
            raise Failed(name)

    def connection_made(self, transport):
        self.transport = transport
        self._event("made")

    def connection_lost(self, error):
        self._event("lost")

    def eof_received(self):
        self._event("eof")
        return False

    def data_received(self, data):
        self.data += data
        self._event("data")


def link_up(nbio, protocol, sock):
    """Return what on_done got for `sock` linked to `protocol`."""
    results = []

    def on_done(result):
        results.append(result)
        nbio.stop()

    timer = nbio.call_later(TIMEOUT, nbio.stop)
    nbio.create_streaming_connection(lambda: protocol, sock, on_done)
    nbio.run()
    timer.cancel()
    assert results, "on_done was not called within %ss" % TIMEOUT
    return results[0]


def pair():
    local, remote = socket.socketpair()
    local.setblocking(False)
    remote.settimeout(TIMEOUT)
    return local, remote


def test_linkup_gives_a_pika_transport_of_the_protocol(nbio):
    local, remote = pair()
    protocol = StreamProtocol()
    transport, proto = link_up(nbio, protocol, local)
    assert proto is protocol and protocol.events == ["made"]
    assert protocol.transport is transport
    assert isinstance(transport, nbio_interface.AbstractStreamTransport)
    assert transport.get_protocol() is protocol
    transport.write(b"ping")
    assert transport.get_write_buffer_size() in (0, 4)
    nbio.call_later(0.05, nbio.stop)  # pika's own transport writes on the next turn
    nbio.run()
    assert remote.recv(4) == b"ping"
    transport.abort()
    remote.close()


def test_a_failing_connection_made_fails_the_linkup_and_closes_the_socket(nbio):
    local, remote = pair()
    protocol = StreamProtocol(fail="made")
    result = link_up(nbio, protocol, local)
    assert isinstance(result, Failed)
    assert remote.recv(1) == b""  # the socket is closed, not served
    if isinstance(nbio, FastioIOServices):
        # No connection_lost() for a connection that never was. (pika's own
        # services leave the closed socket's reader registered: their loop
        # fails with EINVAL when run again.)
        nbio.call_later(0.05, nbio.stop)
        nbio.run()
    assert protocol.events == ["made"]
    remote.close()


def test_a_failing_protocol_factory_fails_the_linkup(nbio):
    local, remote = pair()
    results = []

    def factory():
        raise Failed("factory")

    def on_done(result):
        results.append(result)
        nbio.stop()

    nbio.create_streaming_connection(factory, local, on_done)
    nbio.run()
    assert isinstance(results[0], Failed)
    assert remote.recv(1) == b""
    remote.close()


def test_an_unconnected_socket_or_bad_callbacks_raise_at_once(nbio):
    sock = socket.socket()
    sock.setblocking(False)
    with pytest.raises(ValueError, match="getpeername"):
        nbio.create_streaming_connection(StreamProtocol, sock, lambda result: None)
    sock.close()
    local, remote = pair()
    with pytest.raises(TypeError):
        nbio.create_streaming_connection(StreamProtocol, local, None)
    with pytest.raises(TypeError):
        nbio.create_streaming_connection(None, local, lambda result: None)
    with pytest.raises(ValueError, match="server_hostname"):
        nbio.create_streaming_connection(StreamProtocol, local, lambda result: None,
                                         server_hostname="example.com")
    local.close()
    remote.close()


def test_cancel_before_linkup_closes_the_socket_and_never_calls_back(nbio):
    local, remote = pair()
    called = []
    ref = nbio.create_streaming_connection(StreamProtocol, local, called.append)
    assert ref.cancel() is True
    assert ref.cancel() is False
    nbio.call_later(0.05, nbio.stop)
    nbio.run()
    assert called == []
    assert remote.recv(1) == b""
    remote.close()


def test_data_and_eof_reach_the_protocol(nbio):
    local, remote = pair()
    protocol = StreamProtocol()
    transport, _ = link_up(nbio, protocol, local)
    remote.sendall(b"hello")
    remote.shutdown(socket.SHUT_WR)
    timer = nbio.call_later(TIMEOUT, nbio.stop)

    def check():
        if "lost" in protocol.events:
            nbio.stop()
        else:
            nbio.call_later(0.01, check)

    check()
    nbio.run()
    timer.cancel()
    # eof_received() returned False: the transport closes itself.
    assert bytes(protocol.data) == b"hello"
    assert protocol.events[0] == "made" and protocol.events[-2:] == ["eof", "lost"]
    remote.close()
