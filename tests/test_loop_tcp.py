"""TCP transports and servers, on fastio (both cores) and asyncio as reference."""

import hashlib
import os
import random
import resource
import socket
import struct

import pytest

from fastio.loop import Protocol
from eventloop_fixtures import assert_replies_before_the_end
from loop_fixtures import Collector


class Echo(Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def _port(server):
    return server.sockets[0].getsockname()[1]


def test_echo_round_trips_verify_bytes(any_loop):
    loop = any_loop.loop
    server = any_loop.create_server(Echo)
    rng = random.Random(3)
    payloads = [os.urandom(n) for n in (1, 100, 4096, 65537, 300_000)]
    for payload in payloads:
        client = Collector(loop, expect=len(payload))
        tr, _ = any_loop.connect(lambda: client, "127.0.0.1", _port(server))
        # several writes of random sizes, like a real client
        pos = 0
        while pos < len(payload):
            step = rng.randint(1, 70_000)
            tr.write(payload[pos:pos + step])
            pos += step
        assert any_loop.run_until(client.got_all) == payload
        tr.close()
        assert any_loop.run_until(client.lost) is None
    server.close()


def test_write_larger_than_socket_buffer_is_buffered_then_flushed(any_loop):
    loop = any_loop.loop
    size = 16 * 1024 * 1024
    payload = os.urandom(size)
    received = []

    class Sink(Collector):
        def eof_received(self):
            received.append(hashlib.sha256(self.data).hexdigest())

    server = any_loop.create_server(lambda: Sink(loop))
    client = Collector(loop)
    tr, _ = any_loop.connect(lambda: client, "127.0.0.1", _port(server))
    tr.write(payload)
    assert tr.get_write_buffer_size() > 0  # the kernel could not take it all
    tr.write_eof()
    done = loop.create_future()

    def check():
        if received:
            done.set_result(received[0])
        else:
            loop.call_later(0.005, check)

    check()
    assert any_loop.run_until(done, timeout=30) == hashlib.sha256(payload).hexdigest()
    assert tr.get_write_buffer_size() == 0
    tr.close()
    server.close()


def test_peer_that_never_reads_pauses_writer_with_bounded_buffer(any_loop):
    loop = any_loop.loop
    servers = []

    class Stubborn(Protocol):
        def connection_made(self, transport):
            transport.pause_reading()
            # asyncio before 3.10 adds its reader right after
            # connection_made(), undoing a pause made there while still
            # believing itself paused: resume and pause again on the next
            # iteration, which holds everywhere.
            loop.call_soon(lambda: (transport.resume_reading(), transport.pause_reading()))
            servers.append(transport)

    class Producer(Collector):
        chunk = b"x" * 16384

        def connection_made(self, transport):
            super().connection_made(transport)
            self.paused = False
            self.writes = 0
            self.pump()

        def pump(self):
            while not self.paused:
                self.transport.write(self.chunk)
                self.writes += 1
                self.max_buffer = self.transport.get_write_buffer_size()
                if self.writes > 10_000:  # 160 MiB: flow control is broken
                    break

        def pause_writing(self):
            super().pause_writing()
            self.paused = True
            self.loop.call_soon(self.paused_at.set_result, self.transport.get_write_buffer_size())

        def resume_writing(self):
            super().resume_writing()
            self.paused = False
            if not self.resumed.done():
                self.resumed.set_result(None)
            if self.refill:
                self.loop.call_soon(self.pump)

    def nap():
        done = loop.create_future()
        loop.call_later(0.1, done.set_result, None)
        any_loop.run_until(done)

    server = any_loop.create_server(Stubborn)
    client = Producer(loop)
    client.refill = True
    client.paused_at = loop.create_future()
    client.resumed = loop.create_future()
    tr, _ = any_loop.connect(lambda: client, "127.0.0.1", _port(server))
    buffered = any_loop.run_until(client.paused_at)
    low, high = tr.get_write_buffer_limits()
    assert (low, high) == (16 * 1024, 64 * 1024)
    assert high < buffered <= high + len(Producer.chunk)
    if any_loop.kind == "fastio-io_uring":
        # Writes go out at the next io_uring_enter, not at write(): the
        # first pause comes before the kernel's buffers are full, and
        # resumes follow until they are. Then it stays paused.
        for _ in range(100):
            pauses = client.events.count("pause")
            nap()
            if client.paused and client.events.count("pause") == pauses:
                break
        buffered = tr.get_write_buffer_size()
        # A send that completed since the last pause may have taken the
        # buffer under high-water; still paused means it is above low.
        assert client.paused and low < buffered <= high + len(Producer.chunk)
    else:
        nap()
        assert client.events.count("pause") == 1 and "resume" not in client.events
    assert client.writes < 10_000
    # a while later, still paused and still bounded
    pauses = client.events.count("pause")
    nap()
    if any_loop.kind == "fastio-io_uring":
        # (the kernel may still take a late send: another resume and pause,
        # or a short send taking the buffer under high-water, above low)
        assert client.paused and low < tr.get_write_buffer_size() <= high + len(Producer.chunk)
    else:
        assert client.events.count("pause") == pauses and client.paused
        assert tr.get_write_buffer_size() == buffered
    # the peer starts reading: the buffer drains and the writer resumes
    client.refill = False
    client.resumed = loop.create_future()
    servers[0].resume_reading()
    any_loop.run_until(client.resumed)
    assert tr.get_write_buffer_size() <= low
    tr.abort()
    server.close()


def test_set_write_buffer_limits_validates_and_applies(any_loop):
    loop = any_loop.loop
    server = any_loop.create_server(Echo)
    client = Collector(loop)
    tr, _ = any_loop.connect(lambda: client, "127.0.0.1", _port(server))
    tr.set_write_buffer_limits(high=1000, low=100)
    assert tr.get_write_buffer_limits() == (100, 1000)
    tr.set_write_buffer_limits(high=400)
    assert tr.get_write_buffer_limits() == (100, 400)
    with pytest.raises(ValueError):
        tr.set_write_buffer_limits(high=1, low=2)
    tr.close()
    any_loop.run_until(client.lost)
    server.close()


def test_half_close_keeps_transport_open_for_the_reply(any_loop):
    loop = any_loop.loop

    class Replier(Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.data = bytearray()

        def data_received(self, data):
            self.data += data

        def eof_received(self):
            self.transport.write(b"got " + bytes(self.data))
            self.transport.close()
            return True  # keep open: the reply goes out after our EOF

    server = any_loop.create_server(Replier)
    client = Collector(loop)
    tr, _ = any_loop.connect(lambda: client, "127.0.0.1", _port(server))
    tr.write(b"hello")
    tr.write_eof()
    with pytest.raises(RuntimeError):
        tr.write(b"more")
    assert any_loop.run_until(client.eof) == b"got hello"
    assert any_loop.run_until(client.lost) is None
    assert client.events == ["made", "eof", "lost"]
    server.close()


def test_reset_by_peer_ends_in_connection_lost_with_error(any_loop):
    loop = any_loop.loop
    listener = socket.create_server(("127.0.0.1", 0))
    client = Collector(loop)
    any_loop.connect(lambda: client, "127.0.0.1", listener.getsockname()[1])
    listener.settimeout(5)
    conn, _ = listener.accept()  # already in the backlog
    # SO_LINGER 0: close() sends RST instead of FIN
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    exc = any_loop.run_until(client.lost)
    assert isinstance(exc, ConnectionResetError)
    assert "eof" not in client.events
    listener.close()


@pytest.mark.parametrize("first", [100, 5000], ids=["small-read", "hinted-read"])
def test_a_reset_while_data_received_paused_reading_is_reported_after_resume(any_loop, first):
    # As asyncio, which does not read a paused transport: the RST that
    # follows the bytes of the read that paused is reported once reading
    # resumes (after a 5000-byte read the compiled transport reads the next
    # burst into an 8 KiB object and reads on, which gets the error).
    loop = any_loop.loop
    listener = socket.create_server(("127.0.0.1", 0))

    class Pausing(Collector):
        def data_received(self, data):
            super().data_received(data)
            if len(self.data) > first:
                self.transport.pause_reading()
                self.paused.set_result(None)

    client = Pausing(loop, expect=first)
    client.paused = loop.create_future()
    any_loop.connect(lambda: client, "127.0.0.1", listener.getsockname()[1])
    listener.settimeout(5)
    peer, _ = listener.accept()
    peer.sendall(b"a" * first)
    any_loop.run_until(client.got_all)
    peer.sendall(b"b" * 8192)  # the burst and the RST, in before the next read
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    any_loop.run_until(client.paused)
    nap = loop.create_future()
    loop.call_later(0.3, nap.set_result, None)
    any_loop.run_until(nap)
    assert not client.lost.done() and len(client.data) == first + 8192
    client.transport.resume_reading()
    assert isinstance(any_loop.run_until(client.lost), ConnectionResetError)
    listener.close()


@pytest.mark.parametrize("end", ["eof", "reset", "reset-reply", "reset-reply-close"])
@pytest.mark.parametrize("first", [100, 5000], ids=["small-read", "hinted-read"])
def test_the_end_of_a_connection_comes_after_the_callbacks_its_last_data_queued(any_loop, first, end):
    # Bytes and the peer's FIN (or RST) arriving together: a transport
    # reading once per turn reports the end after the callbacks
    # data_received() queued, on an open transport. io_uring's receive gets
    # both in one completion batch, and after a hinted read the readiness
    # transport reads on into the end: both must report it after those too.
    loop = any_loop.loop
    listener = socket.create_server(("127.0.0.1", 0))
    order = []
    last = False  # the burst before the end was sent

    class Replying(Collector):
        def data_received(self, data):
            super().data_received(data)
            order.append("data")
            loop.call_soon(self.reply)

        def reply(self):
            order.append("reply closing=%s" % self.transport.is_closing())
            if last and end.startswith("reset-reply"):
                # The kernel reports the reset to this send: the error is
                # the reset, not EPIPE, though a read took it.
                self.transport.write(b"R")
            if last and end == "reset-reply-close":
                self.transport.close()

        def eof_received(self):
            order.append("eof")
            return super().eof_received()

        def connection_lost(self, exc):
            order.append("lost")
            super().connection_lost(exc)

    client = Replying(loop, expect=first)
    any_loop.connect(lambda: client, "127.0.0.1", listener.getsockname()[1])
    listener.settimeout(5)
    peer, _ = listener.accept()
    peer.sendall(b"a" * first)
    any_loop.run_until(client.got_all)
    nap = loop.create_future()
    loop.call_later(0.05, nap.set_result, None)
    any_loop.run_until(nap)
    del order[:]
    last = True
    peer.sendall(b"b" * 8192)
    if end == "eof":
        peer.shutdown(socket.SHUT_WR)
    else:  # reset
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    exc = any_loop.run_until(client.lost)
    listener.close()
    assert_replies_before_the_end(order, end, exc)


@pytest.mark.parametrize("how", ["write-in-data_received", "writes-queued-before"])
@pytest.mark.parametrize("first", [100, 5000], ids=["small-read", "hinted-read"])
def test_a_reset_after_data_fails_the_writes_around_it_as_a_reset(any_loop, first, how):
    # The kernel reports a peer's reset once: a write in the data_received()
    # of the bytes before it, or a send of writes queued before it, must
    # fail with the reset the read took, not with EPIPE.
    loop = any_loop.loop
    listener = socket.create_server(("127.0.0.1", 0))
    last = False

    class Writing(Collector):
        def data_received(self, data):
            super().data_received(data)
            if last and how == "write-in-data_received":
                self.transport.write(b"R")

    client = Writing(loop, expect=first)
    tr, _ = any_loop.connect(lambda: client, "127.0.0.1", listener.getsockname()[1])
    listener.settimeout(5)
    peer, _ = listener.accept()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.sendall(b"a" * first)
    any_loop.run_until(client.got_all)
    if how == "writes-queued-before":
        tr.write(b"x" * (8 << 20))  # the peer reads none of it
    nap = loop.create_future()
    loop.call_later(0.05, nap.set_result, None)
    any_loop.run_until(nap)
    last = True
    peer.sendall(b"b" * 8192)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    exc = any_loop.run_until(client.lost)
    listener.close()
    assert isinstance(exc, ConnectionResetError), exc


def test_abort_drops_buffer_and_reports_connection_lost(any_loop):
    loop = any_loop.loop

    class Stubborn(Protocol):
        def connection_made(self, transport):
            transport.pause_reading()

    server = any_loop.create_server(Stubborn)
    client = Collector(loop)
    tr, _ = any_loop.connect(lambda: client, "127.0.0.1", _port(server))
    tr.write(b"y" * (8 * 1024 * 1024))
    assert tr.get_write_buffer_size() > 0
    tr.abort()
    assert tr.get_write_buffer_size() == 0
    assert any_loop.run_until(client.lost) is None
    assert tr.is_closing()
    server.close()


def test_extra_info_and_tcp_nodelay(any_loop):
    loop = any_loop.loop
    accepted = []

    class Keep(Protocol):
        def connection_made(self, transport):
            accepted.append(transport)

    server = any_loop.create_server(Keep)
    client = Collector(loop)
    tr, _ = any_loop.connect(lambda: client, "127.0.0.1", _port(server))
    sock = tr.get_extra_info("socket")
    assert tr.get_extra_info("peername") == ("127.0.0.1", _port(server))
    assert tr.get_extra_info("sockname") == sock.getsockname()
    assert tr.get_extra_info("nonexistent", "dflt") == "dflt"
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    nap = loop.create_future()
    loop.call_later(0.02, nap.set_result, None)
    any_loop.run_until(nap)
    srv_sock = accepted[0].get_extra_info("socket")
    assert srv_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert accepted[0].get_extra_info("peername") == sock.getsockname()
    tr.close()
    accepted[0].close()
    any_loop.run_until(client.lost)
    server.close()


def test_connection_refused(any_loop):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionRefusedError):
        any_loop.connect(Protocol, "127.0.0.1", port)


def test_server_close_stops_accepting(any_loop):
    server = any_loop.create_server(Echo)
    port = _port(server)
    assert server.is_serving() and len(server.sockets) == 1
    server.close()
    assert not server.is_serving()
    any_loop.wait_server_closed(server)
    with pytest.raises(ConnectionRefusedError):
        any_loop.connect(Protocol, "127.0.0.1", port)


def test_1000_concurrent_connections(any_loop):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, want))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    loop = any_loop.loop
    n = 1000
    server = any_loop.create_server(Echo, backlog=1024)
    port = _port(server)
    clients = [Collector(loop, expect=8) for _ in range(n)]
    futs = [any_loop.start_connection(lambda c=c: c, "127.0.0.1", port) for c in clients]
    all_done = loop.create_future()
    state = {"left": n}

    def one_done(_):
        state["left"] -= 1
        if state["left"] == 0:
            all_done.set_result(None)

    for i, c in enumerate(clients):
        c.got_all.add_done_callback(one_done)
    for i, fut in enumerate(futs):
        fut.add_done_callback(
            lambda f, i=i: f.exception() is None and f.result()[0].write(b"%08d" % i))
    any_loop.run_until(all_done, timeout=60)
    assert [bytes(c.data) for c in clients] == [b"%08d" % i for i in range(n)]
    for c in clients:
        c.transport.close()
    server.close()
    any_loop.run_until(clients[-1].lost)


class SizeCollector(Collector):
    """A Collector that keeps every chunk, and waits for a new total each time."""

    def __init__(self, loop):
        super().__init__(loop)
        self.chunks = []

    def data_received(self, data):
        self.chunks.append(data)
        super().data_received(data)

    def reach(self, total):
        """Return a future done once `total` bytes have arrived (call before they are sent)."""
        self.expect = total
        self.got_all = self.loop.create_future()
        return self.got_all


def _pattern(n, seed=0):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def _accepted_pair(any_loop, proto):
    """Return a blocking peer socket connected to `proto` on a server of the loop."""
    server = any_loop.create_server(lambda: proto)
    peer = socket.create_connection(("127.0.0.1", _port(server)))
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server, peer


def test_each_read_takes_what_is_there_after_large_and_small_reads(any_loop):
    # Reads of 4 KiB to 64 KiB size the next one, which goes straight into
    # the bytes object data_received() gets; a burst larger than that is
    # still one read (up to max_size), as on asyncio, and every chunk is a
    # proper bytes object of its length. On io_uring a read is at most one
    # provided buffer: there only the bytes are compared.
    loop = any_loop.loop
    proto = SizeCollector(loop)
    server, peer = _accepted_pair(any_loop, proto)
    sends = [20000, 40000, 16384, 16384, 5, 50000, 4096, 3000]
    total = 0
    for i, n in enumerate(sends):
        total += n
        reached = proto.reach(total)
        peer.sendall(_pattern(n, i))    # all queued before the loop reads
        any_loop.run_until(reached)
    peer.close()
    any_loop.run_until(proto.lost)
    server.close()
    want = [_pattern(n, i) for i, n in enumerate(sends)]
    if any_loop.kind == "fastio-io_uring":
        assert b"".join(proto.chunks) == b"".join(want)
    else:
        assert [len(c) for c in proto.chunks] == sends
        assert proto.chunks == want
    for chunk in proto.chunks:
        assert type(chunk) is bytes and hash(chunk) == hash(bytes(bytearray(chunk)))


def test_reset_right_after_a_read_filling_the_expected_size_is_reported(any_loop):
    # A reset queued behind bytes that exactly fill fastio's next read
    # (20 KiB after a 20000-byte read): the read that goes on for more gets
    # the reset, which recv(2) reports once. The bytes are delivered, then
    # connection_lost(ConnectionResetError), never an EOF.
    loop = any_loop.loop
    proto = SizeCollector(loop)
    server, peer = _accepted_pair(any_loop, proto)
    reached = proto.reach(20000)
    peer.sendall(_pattern(20000))
    any_loop.run_until(reached)
    peer.sendall(_pattern(20480, 1))
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()    # RST, queued behind the bytes
    exc = any_loop.run_until(proto.lost)
    server.close()
    assert isinstance(exc, ConnectionResetError)
    assert bytes(proto.data) == _pattern(20000) + _pattern(20480, 1)
    assert "eof" not in proto.events




def test_a_paused_reader_takes_no_more_than_the_kernel_holds_for_it(any_loop):
    # pause_reading() stops the reads at once: what the peer sends after it
    # fills the kernel's buffers, and then its send() would block. (An
    # io_uring recv left armed until the loop's next wait went on taking
    # whatever arrived into the loop's buffers whenever the thread made a
    # syscall: here, the peer's sends took 8 MiB.)
    loop = any_loop.loop
    chunk, most = b"x" * 65536, 256
    reader = Collector(loop)
    server, peer = _accepted_pair(any_loop, reader)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    peer.setblocking(False)
    sent = []

    def pause_then_send():
        reader.transport.pause_reading()
        total = 0
        while total < len(chunk) * most:
            try:
                total += peer.send(chunk)
            except BlockingIOError:
                break
        sent.append(total)

    while reader.transport is None:
        nap = loop.create_future()
        loop.call_later(0.005, nap.set_result, None)
        any_loop.run_until(nap)
    reader.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    done = loop.create_future()
    loop.call_soon(lambda: (pause_then_send(), done.set_result(None)))
    any_loop.run_until(done)
    assert sent[0] < 2 * 1024 * 1024, sent
    assert len(reader.data) == 0
    reader.expect = sent[0]
    reader.transport.resume_reading()
    assert any_loop.run_until(reader.got_all) == b"x" * sent[0]
    peer.close()
    server.close()
