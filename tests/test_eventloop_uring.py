"""fastio.EventLoop(backend="io_uring"): what only its completion transports have.

The EventLoop suites (tests/test_eventloop_*.py) already run every
transport and server behaviour on this loop through the "fastio-io_uring"
kind of tests/eventloop_fixtures.py. Here: what the completion path does
differently -- pause_reading() cancels a multishot recv in flight, a
completion carries a whole provided buffer, sends complete short, abort()
cancels a send in flight, closing the loop cancels what is in flight -- and
where the completions run in an iteration.
"""

import asyncio
import errno
import gc
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings

import pytest

import fastio
from eventloop_fixtures import close_loop, run
from loop_fixtures import child_exit_code, uring_unavailable, write_from_another_thread

UNAVAILABLE = uring_unavailable()

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="io_uring is Linux-only"),
]


@pytest.fixture
def loop():
    """A fastio.EventLoop on io_uring with completion transports."""
    if UNAVAILABLE is not None:
        pytest.skip("io_uring unavailable: %s" % UNAVAILABLE)
    loop = fastio.EventLoop(backend="io_uring")
    assert loop._uring is not None
    asyncio.set_event_loop(loop)
    yield loop
    close_loop(loop)


class Recorder(asyncio.Protocol):
    """Record data, EOF and loss; futures for the milestones."""

    def __init__(self, loop, keep_open=False):
        self.loop = loop
        self.keep_open = keep_open
        self.data = bytearray()
        self.transport = None
        self.calls = []
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.flow = []

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(None)

    def data_received(self, data):
        self.calls.append(len(data))
        self.data += data

    def eof_received(self):
        self.eof.set_result(bytes(self.data))
        return self.keep_open

    def pause_writing(self):
        self.flow.append("pause")

    def resume_writing(self):
        self.flow.append("resume")

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def accepted(loop, proto):
    """Return (transport, peer): `proto` on one end of a TCP connection, a plain socket on the other."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    conn = asyncio.ensure_future(loop.sock_accept(listener))
    transport, _ = await loop.create_connection(lambda: proto, "127.0.0.1", listener.getsockname()[1])
    peer, _ = await conn
    listener.close()
    peer.setblocking(False)
    return transport, peer


async def wait_for(predicate, timeout=20.0):
    """Let the loop run until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


async def read_all(loop, peer, n):
    """Read `n` bytes from non-blocking `peer` through the loop."""
    got = bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(peer, 1 << 20)
        assert chunk, "EOF after %d of %d bytes" % (len(got), n)
        got += chunk
    return bytes(got)


def test_transports_are_completion_based_and_off_the_selector(loop):
    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        fd = transport.get_extra_info("socket").fileno()
        # No readiness registration: the recv is an SQE on the ring.
        in_selector = fd in loop._selector.get_map()
        live = loop._uring.live
        await loop.sock_sendall(peer, b"ping")
        await wait_for(lambda: proto.data == b"ping")
        transport.write(b"pong")
        got = await read_all(loop, peer, 4)
        transport.close()
        await proto.lost
        await wait_for(lambda: loop._uring.live == 0)
        peer.close()
        return type(transport).__name__, in_selector, live, got

    assert run(loop, main()) == ("UringSocketTransport", False, 1, b"pong")


def test_pause_during_a_recv_in_flight_holds_the_data_until_resume(loop):
    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        await loop.sock_sendall(peer, b"first ")
        await wait_for(lambda: proto.data == b"first ")
        # The multishot recv is armed: pausing cancels it in flight, and
        # whatever it still completes with must wait for resume_reading().
        transport.pause_reading()
        peer.send(b"second ")
        calls = len(proto.calls)
        await asyncio.sleep(0.2)
        paused_calls = len(proto.calls) - calls
        peer.send(b"third")
        peer.shutdown(socket.SHUT_WR)
        await asyncio.sleep(0.1)
        eof_while_paused = proto.eof.done()
        transport.resume_reading()
        got = await proto.eof
        transport.close()
        await proto.lost
        peer.close()
        return paused_calls, eof_while_paused, got

    assert run(loop, main()) == (0, False, b"first second third")


def test_pause_and_resume_many_times_keeps_every_byte_in_order(loop):
    payload = os.urandom(4 << 20)

    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        sender = asyncio.ensure_future(loop.sock_sendall(peer, payload))
        flips = 0
        while len(proto.data) < len(payload):
            if transport.is_reading():
                transport.pause_reading()
                n = len(proto.calls)
                await asyncio.sleep(0.002)
                assert len(proto.calls) == n, "data_received() while paused"
            else:
                transport.resume_reading()
                await asyncio.sleep(0.002)
            flips += 1
        await sender
        transport.close()
        await proto.lost
        peer.close()
        return flips, bytes(proto.data) == payload

    flips, intact = run(loop, main())
    assert intact
    assert flips > 2


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_a_stream_reader_pausing_and_resuming_gets_every_byte_and_the_eof(loop, family):
    # StreamReader pauses reading above twice its limit and resumes from the
    # reading task, often while the cancelled recv is still in flight: the
    # bytes held meanwhile and the EOF that ends that recv must both come.
    payload = os.urandom(4 << 20)

    async def main():
        for _ in range(5):
            if family == "unix":
                a, b = socket.socketpair()
            else:
                listener = socket.create_server(("127.0.0.1", 0))
                a = socket.create_connection(listener.getsockname())
                b, _ = listener.accept()
                listener.close()
            _, w1 = await asyncio.open_connection(sock=a)
            w1.write(payload)
            w1.close()
            r2, w2 = await asyncio.open_connection(sock=b)
            got = await asyncio.wait_for(r2.read(), 60)
            w2.close()
            await w1.wait_closed()
            await w2.wait_closed()
            if got != payload:
                return len(got)
        return len(payload)

    assert run(loop, main()) == len(payload)


class SmallBuffers(asyncio.BufferedProtocol):
    """A BufferedProtocol whose get_buffer() is 7 bytes; pauses reading at `pause_at`."""

    def __init__(self, loop, pause_at=None):
        self.buf = bytearray(7)
        self.data = bytearray()
        self.updates = 0
        self.pause_at = pause_at
        self.paused_updates = 0
        self.lost = loop.create_future()
        self.eof = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        if not self.transport.is_reading():
            self.paused_updates += 1
        self.updates += 1
        self.data += self.buf[:nbytes]
        if self.pause_at is not None and len(self.data) >= self.pause_at:
            self.pause_at = None
            self.transport.pause_reading()

    def eof_received(self):
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_buffered_protocol_gets_a_completion_across_its_small_buffers(loop):
    payload = os.urandom(100_000)

    async def main():
        proto = SmallBuffers(loop, pause_at=5000)
        transport, peer = await accepted(loop, proto)
        await loop.sock_sendall(peer, payload)
        # Paused in the middle of a completion: the rest is held.
        await wait_for(lambda: not transport.is_reading())
        await asyncio.sleep(0.1)
        held_at = len(proto.data)
        transport.resume_reading()
        peer.shutdown(socket.SHUT_WR)
        await proto.eof
        transport.close()
        await proto.lost
        peer.close()
        return held_at, proto.paused_updates, proto.updates, bytes(proto.data) == payload

    held_at, paused_updates, updates, intact = run(loop, main())
    assert 5000 <= held_at < 5000 + 7
    assert paused_updates == 0
    assert updates >= len(payload) // 7
    assert intact


def test_short_sends_resume_where_they_stopped(loop):
    # One write far larger than the socket buffers: the kernel completes the
    # send short, again and again, while the peer drains slowly.
    payload = os.urandom(24 << 20)

    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        transport.write(payload)
        owed = [transport.get_write_buffer_size()]
        got = bytearray()
        while len(got) < len(payload):
            got += await loop.sock_recv(peer, 100_000)
            owed.append(transport.get_write_buffer_size())
        # (the last send's completion may come an iteration after its bytes)
        await wait_for(lambda: transport.get_write_buffer_size() == 0)
        owed.append(transport.get_write_buffer_size())
        transport.close()
        await proto.lost
        peer.close()
        return owed, proto.flow, bytes(got) == payload

    owed, flow, intact = run(loop, main())
    assert intact
    assert owed[0] > 0
    assert owed[-1] == 0
    assert owed == sorted(owed, reverse=True)  # owed bytes only ever go down
    assert flow == ["pause", "resume"]


def test_abort_with_a_send_in_flight_loses_the_rest_and_frees_the_slot(loop):
    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        transport.write(b"x" * (32 << 20))  # the peer never reads: most stays owed
        await asyncio.sleep(0.1)
        owed = transport.get_write_buffer_size()
        transport.abort()
        after_abort = transport.get_write_buffer_size()
        exc = await proto.lost
        await wait_for(lambda: loop._uring.live == 0)
        got = 0
        peer.setblocking(True)
        peer.settimeout(10)
        try:
            while True:
                chunk = peer.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        except ConnectionResetError:
            pass
        peer.close()
        return owed, after_abort, exc, got

    owed, after_abort, exc, got = run(loop, main())
    assert owed > 0
    assert after_abort == 0
    assert exc is None
    assert got < 32 << 20


def test_close_flushes_what_is_owed_before_connection_lost(loop):
    payload = os.urandom(8 << 20)

    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        transport.write(payload)
        transport.close()
        closing = transport.is_closing()
        await asyncio.sleep(0.1)
        lost_early = proto.lost.done()  # the peer has read nothing yet
        got = await read_all(loop, peer, len(payload))
        eof = await loop.sock_recv(peer, 10)
        exc = await proto.lost
        peer.close()
        return closing, lost_early, got == payload, eof, exc

    assert run(loop, main()) == (True, False, True, b"", None)


def test_a_client_that_never_reads_keeps_the_servers_memory_bounded(loop):
    # A streams echo server: drain() pauses the handler while the client
    # does not read, so the server stops reading (its multishot recv is
    # cancelled) and what it holds stays bounded by the flow-control marks.
    owed = []

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            owed.append(writer.transport.get_write_buffer_size())
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        client.setblocking(False)
        pushed = 0
        stalled_since = None
        chunk = b"x" * 65536
        while pushed < (256 << 20):
            try:
                pushed += client.send(chunk)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 0.5:
                    break
                await asyncio.sleep(0.01)
        client.close()
        server.close()
        await server.wait_closed()
        return pushed

    pushed = run(loop, main())
    assert pushed < 256 << 20, "the server kept reading from a client that never reads"
    # Never more than the high-water mark plus one received chunk.
    assert max(owed) <= 64 * 1024 + 65536


def test_closing_the_loop_with_ops_in_flight_cancels_them(loop):
    # A recv armed and a send in flight when the loop closes: the ring's
    # close cancels both; nothing touches the freed buffers afterwards, and
    # the transports, collected, close their sockets.
    a, b = socket.socketpair()
    b.setblocking(False)

    async def main():
        proto = Recorder(loop)
        transport, _ = await loop.connect_accepted_socket(lambda: proto, a)
        transport.write(b"y" * (16 << 20))  # b never reads during the run
        await asyncio.sleep(0.05)
        return transport.get_write_buffer_size(), loop._uring.live

    owed, live = run(loop, main())
    assert owed > 0 and live == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        loop.close()
        gc.collect()
    # The socket the loop held is closed once collected: b sees EOF after
    # whatever had been sent.
    b.setblocking(True)
    b.settimeout(10)
    total = 0
    while True:
        chunk = b.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    b.close()
    assert total < 16 << 20


def test_call_soon_threadsafe_wakes_a_loop_blocked_on_the_ring(loop):
    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        woken = loop.create_future()
        results = []

        def from_thread(i):
            time.sleep(0.2)  # the loop is blocked in io_uring_enter by now
            for j in range(100):
                loop.call_soon_threadsafe(results.append, (i, j))
            loop.call_soon_threadsafe(transport.write, b"%d;" % i)
            if i == 3:
                loop.call_soon_threadsafe(woken.set_result, time.monotonic())

        threads = [threading.Thread(target=from_thread, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        # Nothing else would wake the loop: no timer, no peer traffic.
        woke_at = await woken
        delay = time.monotonic() - woke_at
        for t in threads:
            t.join()
        got = await read_all(loop, peer, 8)
        transport.close()
        await proto.lost
        peer.close()
        return delay, sorted(results), sorted(got.decode().split(";")[:-1])

    delay, results, writes = run(loop, main())
    assert results == sorted((i, j) for i in range(4) for j in range(100))
    assert writes == ["0", "1", "2", "3"]
    assert delay < 5


def test_completions_run_after_the_io_callbacks_and_before_the_due_timers(loop):
    # One iteration finds a completion (data for the transport), a reader
    # callback and a due timer: asyncio's order is I/O, then timers.
    order = []

    async def main():
        class P(Recorder):
            def data_received(self, data):
                order.append("completion")
                super().data_received(data)

        proto = P(loop)
        transport, peer = await accepted(loop, proto)
        r, w = socket.socketpair()
        loop.add_reader(r, lambda: (order.append("reader"), r.recv(10)))
        await asyncio.sleep(0.05)  # the recv is armed

        def block():
            loop.call_later(0.01, order.append, "timer")
            peer.send(b"x")
            w.send(b"x")
            time.sleep(0.2)  # both are ready and the timer due at the next wait

        loop.call_soon(block)
        await wait_for(lambda: "timer" in order)
        loop.remove_reader(r)
        r.close()
        w.close()
        transport.close()
        await proto.lost
        peer.close()

    run(loop, main())
    assert order == ["reader", "completion", "timer"]


def test_a_turn_with_callbacks_ready_costs_about_what_it_costs_on_epoll(loop):
    # A turn with callbacks ready waits with a zero timeout. Asked for a
    # completion with a zero timespec, io_uring spends about 15 us of CPU
    # in the kernel when none is there (6.18), ten times a whole turn on
    # epoll; fastio asks for none. A guard with a wide margin, on the
    # thread's CPU time (not wall time), best of three.
    turns = 2000

    def cpu_per_turn(lp):
        left = [turns]

        def again():
            left[0] -= 1
            if left[0]:
                lp.call_soon(again)
            else:
                lp.stop()

        best = None
        for _ in range(3):
            left[0] = turns
            lp.call_soon(again)
            t0 = time.thread_time()
            lp.run_forever()
            took = time.thread_time() - t0
            best = took if best is None else min(best, took)
        return best / turns

    epoll_loop = fastio.new_event_loop()
    try:
        on_epoll = cpu_per_turn(epoll_loop)
    finally:
        epoll_loop.close()
    on_uring = cpu_per_turn(loop)
    assert on_uring < 4 * on_epoll, (on_uring, on_epoll)


def test_debug_mode_reaps_completions_too(loop):
    loop.set_debug(True)
    loop.slow_callback_duration = 10

    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        await loop.sock_sendall(peer, b"debug")
        await wait_for(lambda: proto.data == b"debug")
        transport.write(b"mode")
        got = await read_all(loop, peer, 4)
        transport.close()
        await proto.lost
        peer.close()
        return got

    assert run(loop, main()) == b"mode"


def test_debug_mode_times_each_completion_and_names_its_transport(loop, caplog):
    # asyncio times a readiness transport's reader per connection and names
    # it (`<Handle _SelectorSocketTransport._read_ready()>`). Here each
    # completion is a Handle of its transport's _io_completion: a slow
    # data_received is named, and several quick ones together are not
    # reported as one slow batch.
    import logging

    loop.set_debug(True)
    loop.slow_callback_duration = 0.2
    pause = {"slow": 0.25, "quick": 0.04}

    class Sleepy(Recorder):
        def data_received(self, data):
            super().data_received(data)
            time.sleep(pause[bytes(data).decode()])

    async def main():
        pairs = [await accepted(loop, Sleepy(loop)) for _ in range(6)]
        for _, peer in pairs:
            peer.send(b"quick")  # all arrive before the loop waits again
        await wait_for(lambda: all(t.get_protocol().data for t, _ in pairs))
        quick = [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()]
        pairs[0][1].send(b"slow")
        await wait_for(lambda: pairs[0][0].get_protocol().data == b"quickslow")
        for transport, peer in pairs:
            transport.close()
            peer.close()
        return quick

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        quick = run(loop, main())
    slow = [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()]
    assert quick == []
    assert len(slow) == 1
    assert slow[0].startswith("Executing <Handle UringSocketTransport._io_completion()> took")


def test_ssl_argument_runs_the_tls_protocol_over_the_completion_transport(loop):
    import ssl

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main():
        async def handle(reader, writer):
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                       server_hostname="localhost")
        raw = writer.transport._ssl_protocol._transport
        writer.write(b"hello tls\n")
        got = await reader.readline()
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass
        server.close()
        await server.wait_closed()
        return type(raw).__name__, got

    assert run(loop, main()) == ("UringSocketTransport", b"HELLO TLS\n")



def test_tcp_transports_disable_nagle_even_on_a_socket_made_with_proto_0(loop):
    # asyncio sets TCP_NODELAY only where sock.proto is IPPROTO_TCP; a
    # listener made as socket.socket(AF_INET, SOCK_STREAM) has proto 0, and
    # so has what it accepts. A message split across completions is echoed
    # in several writes: with Nagle on, the later ones would wait for the
    # peer's delayed ACK (tens of milliseconds per request).
    async def main():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        made = loop.create_future()

        class P(asyncio.Protocol):
            def connection_made(self, transport):
                made.set_result(transport)

        server = await loop.create_server(P, sock=listener)
        client = socket.create_connection(listener.getsockname())
        transport = await made
        sock = transport.get_extra_info("socket")
        proto, nodelay = sock.proto, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        transport.close()
        client.close()
        server.close()
        await server.wait_closed()
        return proto, nodelay

    assert run(loop, main()) == (0, 1)


def test_a_write_over_the_high_water_mark_goes_to_the_kernel_at_once(loop):
    # As asyncio's write(): what the kernel takes leaves inside write(), so
    # flow control counts only what it refused. (Queued whole, it would
    # pause the protocol where asyncio does not, and a protocol swapped in
    # later -- start_tls() -- would get a resume_writing() without a pause.)
    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        payload = os.urandom(256 * 1024)
        transport.write(payload)
        owed = transport.get_write_buffer_size()
        got = await read_all(loop, peer, len(payload))
        transport.close()
        await proto.lost
        peer.close()
        return owed, got == payload

    owed, intact = run(loop, main())
    assert owed < 256 * 1024
    assert intact


def test_a_write_in_a_callback_leaves_with_the_next_wait(loop):
    # Inside a run, a write under the high-water mark is queued as a send
    # SQE even with nothing owed (see src/uring_stream.pxi: a send(2) per
    # reply costs more than its share of the wait): owed until the loop's
    # next io_uring_enter, then at the peer byte for byte.
    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        payload = os.urandom(4096)
        transport.write(payload)
        owed = transport.get_write_buffer_size()
        early = b""
        try:
            early = peer.recv(1 << 16)
        except BlockingIOError:
            pass
        got = early + await read_all(loop, peer, len(payload) - len(early))
        left = transport.get_write_buffer_size()
        transport.close()
        await proto.lost
        peer.close()
        return owed, early, got == payload, left

    owed, early, intact, left = run(loop, main())
    assert owed == 4096 and early == b""
    assert intact and left == 0


def test_writes_queued_in_one_turn_leave_together_so_abort_keeps_them(loop):
    # A readiness transport's write() hands its bytes to the kernel at once,
    # so write(); write(); abort() delivers both. Here the second write
    # joins the first's send while that is still in the SQ: it is not left
    # behind for abort() to drop.
    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        transport.write(b"goodbye ")
        transport.write(b"and thanks")
        transport.abort()
        await proto.lost
        got = await read_all(loop, peer, len(b"goodbye and thanks"))
        peer.close()
        return got

    assert run(loop, main()) == b"goodbye and thanks"


def test_sendfile_is_native_and_refuses_writes_meanwhile(loop, tmp_path):
    data = os.urandom(3 << 20)
    path = tmp_path / "data"
    path.write_bytes(data)

    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        transport.write(b"head:")
        with open(path, "rb") as f:
            # fallback=False: only os.sendfile() will do.
            sending = asyncio.ensure_future(loop.sendfile(transport, f, fallback=False))
            await asyncio.sleep(0)
            try:
                transport.write(b"x")
            except RuntimeError as exc:
                refused = str(exc)
            else:
                refused = None
            reader = asyncio.ensure_future(read_all(loop, peer, 5 + len(data)))
            sent = await sending
        transport.write(b":tail")
        got = await reader
        tail = await read_all(loop, peer, 5)
        transport.close()
        await proto.lost
        peer.close()
        return sent, refused, got == b"head:" + data, tail

    sent, refused, intact, tail = run(loop, main())
    assert sent == len(data)
    assert refused == "unable to write; sendfile is in progress"
    assert intact
    assert tail == b":tail"


class Echo(asyncio.Protocol):
    """Write back whatever arrives."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def _in_child(body):
    """Run `body()` in a forked child; return its exit code (0: it returned True)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if body() else 2
        finally:
            os._exit(code)
    return child_exit_code(pid)


@pytest.mark.forks
@pytest.mark.parametrize("child", ["close", "run"])
def test_a_forked_child_never_touches_the_parents_ring(loop, child):
    # The ring's queues and buffers are shared mmaps: after fork() a child
    # that closed the inherited loop used to cancel every op of the parent
    # (and reap the cancellations), and one that ran it submitted on the
    # parent's queue. In the child the ring is dead; the parent goes on.
    async def setup():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        return server, reader, writer

    server, reader, writer = run(loop, setup())
    assert loop._uring.live == 2  # a recv in flight on both ends

    def close():
        loop.close()
        return True

    def run_it():
        try:
            loop.run_until_complete(asyncio.sleep(0))
        except OSError as exc:
            refused = exc.errno == errno.EBADF and "fork" in str(exc)
        else:
            refused = False
        loop.close()
        return refused

    assert _in_child(close if child == "close" else run_it) == 0

    async def echo_on():
        for i in range(20):
            writer.write(b"ping%03d" % i)
            assert await asyncio.wait_for(reader.readexactly(7), 20) == b"ping%03d" % i
        writer.close()
        server.close()
        await server.wait_closed()

    run(loop, echo_on())


class StopsAtFirstData(Recorder):
    """Close, abort or pause the transport in the first data_received."""

    def __init__(self, loop, how):
        super().__init__(loop)
        self.how = how

    def data_received(self, data):
        super().data_received(data)
        getattr(self.transport, self.how)()


@pytest.mark.parametrize("how", ["close", "abort", "pause_reading"])
def test_stopping_in_data_received_drops_the_completions_reaped_with_it(loop, how):
    # The loop is kept busy while the peer sends a megabyte, so the multishot
    # recv fills several buffers and their completions are reaped together:
    # after close/abort/pause in the first data_received, the rest of the
    # batch must not reach the protocol.
    async def main():
        proto = StopsAtFirstData(loop, how)
        transport, peer = await accepted(loop, proto)
        peer.setblocking(True)
        sender = threading.Thread(target=peer.sendall, args=(b"z" * (1 << 20),))
        sender.start()
        time.sleep(0.3)
        await wait_for(lambda: proto.calls)
        await asyncio.sleep(0.1)
        assert len(proto.calls) == 1
        if how == "pause_reading":
            transport.resume_reading()
            await wait_for(lambda: len(proto.data) > proto.calls[0])
            transport.close()
        assert await asyncio.wait_for(proto.lost, 20) is None
        await wait_for(lambda: loop._uring.live == 0)
        peer.close()
        sender.join()

    run(loop, main())


def test_a_reset_with_a_send_in_flight_reports_it_and_frees_the_slot(loop):
    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        transport.write(b"x" * (32 << 20))  # the peer never reads
        await wait_for(lambda: transport.get_write_buffer_size() < 32 << 20)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        assert isinstance(await asyncio.wait_for(proto.lost, 20), ConnectionResetError)
        await wait_for(lambda: loop._uring.live == 0)

    run(loop, main())


def test_thousands_of_connections_come_and_go_without_leaking_slots_or_fds(loop):
    # Clients that close politely, after sending, or reset: every stream's
    # slot goes back to the driver and every socket is closed.
    made = []

    class Counted(Echo):
        def connection_made(self, transport):
            super().connection_made(transport)
            made.append(None)

    async def main():
        server = await loop.create_server(Counted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        before = len(os.listdir("/proc/self/fd"))
        for i in range(1500):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if i % 3 == 0:
                writer.transport.abort()
            elif i % 3 == 1:
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
                writer.close()
            else:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
            await writer.wait_closed()
        await wait_for(lambda: len(made) == 1500)
        await wait_for(lambda: loop._uring.live == 0)
        gc.collect()
        await wait_for(lambda: len(os.listdir("/proc/self/fd")) <= before)
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.parametrize("size", [100, 8 << 20])
def test_a_write_from_another_thread_goes_out_while_the_loop_waits(loop, size):
    # Transports are not thread-safe, but as on a readiness loop (whose
    # write() calls send(2) at once) a write from another thread must not
    # sit in the submission queue until something else wakes the loop.
    async def main():
        proto = Recorder(loop)
        transport, peer = await accepted(loop, proto)
        peer.setblocking(True)
        peer.settimeout(20)
        done, thread = write_from_another_thread(loop, transport, peer, size)
        assert await done == size
        thread.join()
        transport.close()
        peer.close()

    run(loop, main())


SIGINT_SCRIPT = r"""
import asyncio, os, signal, sys, threading
import fastio
from fastio.loop import Loop

face = sys.argv[1]
loop = fastio.EventLoop(backend="io_uring") if face == "EventLoop" else Loop(backend="io_uring")
assert loop._uring is not None

def wait_on_ring(seconds):
    fut = loop.create_future()
    loop.call_later(seconds, fut.set_result, None)
    loop.run_until_complete(fut)

usr1 = []
loop.add_signal_handler(signal.SIGUSR1, usr1.append, 1)
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
fut = loop.create_future()
loop.call_later(60, fut.set_result, None)
loop.add_signal_handler(signal.SIGUSR2, fut.set_result, None)
threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGUSR2)).start()
loop.run_until_complete(fut)  # blocked on the ring until SIGUSR2
assert usr1 == [1], usr1
loop.remove_signal_handler(signal.SIGUSR2)
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    wait_on_ring(60)
except KeyboardInterrupt:
    pass
else:
    sys.exit("no KeyboardInterrupt")
wait_on_ring(0.01)  # the loop still runs afterwards
loop.close()
print("done")
"""


@pytest.mark.parametrize("face", ["EventLoop", "Loop"])
def test_signals_reach_a_loop_blocked_in_io_uring_enter(face):
    # A handler from add_signal_handler runs, and Ctrl-C interrupts the
    # blocked wait as KeyboardInterrupt; the loop goes on running after.
    if UNAVAILABLE is not None:
        pytest.skip("io_uring unavailable: %s" % UNAVAILABLE)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-c", SIGINT_SCRIPT, face], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr


def test_timers_run_no_earlier_than_on_epoll(loop):
    # epoll_wait() takes whole ms (the selector rounds up) and ends up to
    # 0.1% past its timeout (the kernel's timer slack); an io_uring wait
    # took microseconds and ended on time, so a 1 s keep-alive timer ran
    # about 1.5 ms earlier than on epoll, and a server's idle check (sanic's
    # `now - last_data > timeout`) came out the other way.
    sel = loop._selector
    a, b = socket.socketpair()
    try:
        sel.register(a, 1)
        for timeout, least in ((0.0001, 0.001), (0.0015, 0.002), (0.5, 0.5005)):
            t0 = time.monotonic()
            assert sel.select(timeout) == []
            assert time.monotonic() - t0 >= least
        sel.unregister(a)
    finally:
        a.close()
        b.close()

    async def chain():
        started = time.monotonic()
        for _ in range(2):
            done = loop.create_future()
            loop.call_later(1.0, done.set_result, None)
            await done
        return time.monotonic() - started

    assert run(loop, chain()) >= 2.002
