"""TCP and Unix-socket transports of fastio.EventLoop, beside asyncio and uvloop.

Each test drives a real connection through the loop's own server and
client and asserts what the protocol sees: bytes, callbacks and their order,
exceptions, flow-control calls.
"""

import asyncio
import contextvars
import os
import socket
import struct
import sys
import tempfile
import time
from asyncio import selector_events

import pytest

from eventloop_fixtures import aio_kind, aio_loop, make_loop, run, selector_loop  # noqa: F401 (fixtures)
from eventloop_fixtures import assert_replies_before_the_end, echo_stream, stream_round_trip


def reset(sock):
    """Close `sock` with an RST (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def lost_then_closed(proto, server):
    """Return what `proto`'s connection_lost() gets, once `server` is closed."""
    exc = await proto.lost
    server.close()
    await server.wait_closed()
    return exc


async def connected_peer(loop, proto, rcvbuf=None):
    """Serve `proto` on `loop`; return (server, peer socket) once it is
    connected (the peer's receive buffer set to `rcvbuf` bytes, if given)."""
    server = await loop.create_server(lambda: proto, "127.0.0.1", 0)
    peer = socket.create_connection(server.sockets[0].getsockname())
    if rcvbuf is not None:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await proto.made
    return server, peer


class Recorder(asyncio.Protocol):
    """Record every callback; futures for the milestones."""

    def __init__(self, loop, keep_open=False):
        self.loop = loop
        self.keep_open = keep_open
        self.events = []  # connection callbacks, in order
        self.flow = []  # pause_writing / resume_writing, in order
        self.data = bytearray()
        self.transport = None
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.want = None
        self.got = None

    def expect(self, n):
        """Return a future resolved once `n` bytes have arrived in total."""
        self.want = n
        self.got = self.loop.create_future()
        self._check()
        return self.got

    def _check(self):
        if self.got is not None and not self.got.done() and len(self.data) >= self.want:
            self.got.set_result(bytes(self.data))

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)

    def data_received(self, data):
        if "data" not in self.events:
            self.events.append("data")
        self.data += data
        self._check()

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(bytes(self.data))
        return self.keep_open

    def pause_writing(self):
        self.flow.append("pause")

    def resume_writing(self):
        self.flow.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def tcp_pair(loop, server_proto=None, client_proto=None, family="tcp"):
    """Connect a client to a one-connection server; return (server, sp, cp).

    `family` is "tcp" or "unix".
    """
    server_proto = server_proto or Recorder(loop)
    client_proto = client_proto or Recorder(loop)
    if family == "unix":
        path = os.path.join(tempfile.mkdtemp(), "s")
        server = await loop.create_unix_server(lambda: server_proto, path)
        await loop.create_unix_connection(lambda: client_proto, path)
    else:
        server = await loop.create_server(lambda: server_proto, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await loop.create_connection(lambda: client_proto, "127.0.0.1", port)
    await server_proto.made
    return server, server_proto, client_proto


async def finish(server, *protos):
    for proto in protos:
        if proto.transport is not None:
            proto.transport.close()
    for proto in protos:
        await proto.lost
    server.close()
    await server.wait_closed()


@pytest.fixture(params=["tcp", "unix"])
def family(request):
    return request.param


def test_echo_round_trip_and_callback_order(aio_loop, family):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop, server_proto=Recorder(aio_loop, keep_open=True),
                                        family=family)
        payload = os.urandom(300_000)
        cp.transport.write(payload)
        cp.transport.write_eof()
        got = await sp.eof
        sp.transport.write(got[::-1])
        sp.transport.close()
        await cp.eof
        await cp.lost
        await sp.lost
        server.close()
        await server.wait_closed()
        return got, bytes(cp.data), sp.events, cp.events

    got, back, sevents, cevents = run(aio_loop, main())
    assert got == back[::-1] and len(got) == 300_000
    assert sevents == ["made", "data", "eof", "lost"]
    assert cevents == ["made", "data", "eof", "lost"]


def test_get_extra_info_keys(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        tr = cp.transport
        sock = tr.get_extra_info("socket")
        info = (tr.get_extra_info("sockname"), tr.get_extra_info("peername"),
                sock.fileno(), sock.family, sock.type, sock.getsockname(),
                sp.transport.get_extra_info("peername"),
                tr.get_extra_info("no-such-key", "dflt"))
        await finish(server, sp, cp)
        return info

    sockname, peername, fd, fam, typ, sock_sockname, server_peer, dflt = run(aio_loop, main())
    assert sockname == sock_sockname == server_peer
    assert peername[0] == "127.0.0.1"
    assert fd >= 0 and fam == socket.AF_INET and typ == socket.SOCK_STREAM
    assert dflt == "dflt"


def test_write_buffer_limits_pause_and_resume_writing(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        tr = cp.transport
        sp.transport.pause_reading()
        tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        limits = tr.get_write_buffer_limits()
        chunk = b"x" * 65536
        sent = 0
        while "pause" not in cp.flow:
            tr.write(chunk)
            sent += len(chunk)
            assert sent < 256 * 1024 * 1024, "never paused"
        buffered = tr.get_write_buffer_size()
        assert not sp.data or len(sp.data) < sent
        sp.transport.resume_reading()
        await sp.expect(sent)
        # resume_writing ran once the buffer drained below the low mark.
        while "resume" not in cp.flow:
            await asyncio.sleep(0.01)
        size_after = tr.get_write_buffer_size()
        await finish(server, sp, cp)
        return limits, buffered, size_after, cp.flow

    limits, buffered, size_after, flow = run(aio_loop, main())
    assert limits == (16 * 1024, 64 * 1024)
    assert buffered > 64 * 1024
    assert size_after == 0
    assert flow == ["pause", "resume"]


def test_written_bytes_leave_the_buffer_size_before_a_task_they_wake_runs(aio_loop):
    # aiohttp's upload progress is output_size - get_write_buffer_size(),
    # read by a task each write wakes. asyncio's send(2) in write() empties
    # the buffer at once; io_uring's send leaves with the next wait, and the
    # size must drop then, before the task it woke reads it.
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        tr = cp.transport
        chunk = b"z" * 4096
        written = asyncio.Event()
        sampled = asyncio.Event()
        seen = []

        async def writer():
            for _ in range(8):
                tr.write(chunk)
                written.set()
                await sampled.wait()
                sampled.clear()

        async def sampler():
            for _ in range(8):
                await written.wait()
                written.clear()
                seen.append(tr.get_write_buffer_size())
                sampled.set()

        sampling = asyncio.ensure_future(sampler())
        await asyncio.sleep(0)  # the sampler waits before the first write
        await writer()
        await sampling
        await sp.expect(8 * len(chunk))
        await finish(server, sp, cp)
        return seen

    assert run(aio_loop, main()) == [0] * 8


def test_writes_within_the_high_water_mark_never_pause_an_idle_connection(selector_loop):
    # asyncio's write() sends at once: two writes that together pass the
    # mark pause nothing when the kernel takes them (io_uring queues the
    # first one; the second sends both).
    async def main():
        server, sp, cp = await tcp_pair(selector_loop)
        tr = cp.transport
        tr.set_write_buffer_limits(high=10)
        tr.write(b"12345678")
        tr.write(bytearray(b"abcdefgh"))
        tr.write(b"ABCDEFGH")
        tr.write(memoryview(b"-ijklmnop-")[1:-1])
        got = await sp.expect(32)
        await finish(server, sp, cp)
        return cp.flow, got

    assert run(selector_loop, main()) == ([], b"12345678abcdefghABCDEFGHijklmnop")


def test_writes_after_close_are_dropped_once_the_buffer_is_empty(selector_loop):
    # asyncio's close() with an empty buffer counts the connection as lost
    # at once: a later write() is dropped. What was written before close()
    # in the same callback was sent by then, on io_uring too.
    async def main():
        server, sp, cp = await tcp_pair(selector_loop)
        tr = cp.transport
        tr.write(b"bye")
        tr.close()
        size = tr.get_write_buffer_size()
        tr.write(b"MORE")
        got = await asyncio.wait_for(sp.eof, 10)
        await cp.lost
        await finish(server, sp)
        return size, got

    assert run(selector_loop, main()) == (0, b"bye")


def test_write_then_close_after_an_unseen_reset_loses_the_connection_once(selector_loop):
    # The peer's RST arrives while a callback runs; that callback writes and
    # closes. The connection is lost once, with a connection error, and no
    # callback fails (io_uring's close() sends what is queued at once).
    errors = []
    selector_loop.set_exception_handler(lambda loop, context: errors.append(context))

    async def main():
        server, sp, cp = await tcp_pair(selector_loop)
        sock = cp.transport.get_extra_info("socket")
        calls = []
        sp.connection_lost = lambda exc: calls.append(exc)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cp.transport.abort()  # closes with an RST (linger 0)
        await cp.lost
        time.sleep(0.1)  # the RST is in; the loop has not run since
        sp.transport.write(b"x")
        sp.transport.close()
        for _ in range(50):
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        return calls

    calls = run(selector_loop, main())
    assert len(calls) == 1 and isinstance(calls[0], ConnectionError), calls
    assert errors == []


def test_set_write_buffer_limits_rejects_bad_marks(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        with pytest.raises(ValueError):
            cp.transport.set_write_buffer_limits(high=1, low=2)
        await finish(server, sp, cp)

    run(aio_loop, main())


def test_pause_and_resume_reading(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        tr = sp.transport
        assert tr.is_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        tr.pause_reading()  # twice is harmless
        cp.transport.write(b"held")
        await asyncio.sleep(0.1)
        held = bytes(sp.data)
        tr.resume_reading()
        assert tr.is_reading()
        got = await sp.expect(4)
        await finish(server, sp, cp)
        return held, got, tr.is_reading()

    held, got, reading_after_close = run(aio_loop, main())
    assert held == b"" and got == b"held"
    assert reading_after_close is False


@pytest.mark.parametrize("first", [100, 5000], ids=["small-read", "hinted-read"])
def test_a_reset_while_data_received_paused_reading_is_reported_after_resume(aio_loop, first):
    # asyncio does not read a paused transport, so it sees the peer's RST
    # only once reading resumes. A read that takes the bytes before the RST
    # (after a 5000-byte one fastio's readiness transport reads the next
    # burst into an 8 KiB object, then reads on) must keep the error it got
    # until then too, and so must io_uring's receive.
    class PausingRecorder(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if len(self.data) > first:
                self.transport.pause_reading()

    async def main():
        sp = PausingRecorder(aio_loop)
        server, peer = await connected_peer(aio_loop, sp)
        peer.sendall(b"a" * first)
        await sp.expect(first)
        # The burst and the RST, both in before the server's next read.
        peer.sendall(b"b" * 8192)
        reset(peer)
        await sp.expect(first + 8192)
        assert not sp.transport.is_reading()
        await asyncio.sleep(0.3)
        lost_while_paused = sp.lost.done()
        sp.transport.resume_reading()
        exc = await sp.lost
        server.close()
        await server.wait_closed()
        return lost_while_paused, exc

    lost_while_paused, exc = run(aio_loop, main())
    assert lost_while_paused is False
    assert isinstance(exc, ConnectionResetError), exc


@pytest.mark.parametrize("end", ["eof", "reset", "reset-reply", "reset-reply-close"])
@pytest.mark.parametrize("first", [100, 5000], ids=["small-read", "hinted-read"])
def test_the_end_of_a_connection_comes_after_the_callbacks_its_last_data_queued(aio_loop, first, end):
    # A request and the peer's FIN (or RST) sent back to back: asyncio's
    # transport reads one or the other per turn, so a reply that
    # data_received() schedules with call_soon() runs on an open transport,
    # before eof_received() (which, returning None, closes it) or
    # connection_lost(). io_uring's receive completes with the bytes and the
    # end together, and after a hinted read fastio's readiness transport
    # reads on into the end; both must still report it after those
    # callbacks (uvicorn answered no half-closed request on io_uring).
    class Replying(Recorder):
        def __init__(self, loop):
            super().__init__(loop)
            self.order = []
            self.last = False  # the burst before the end was sent

        def data_received(self, data):
            super().data_received(data)
            self.order.append("data")
            self.loop.call_soon(self.reply)

        def reply(self):
            self.order.append("reply closing=%s" % self.transport.is_closing())
            if end == "eof" or self.last and end != "reset":
                # After a reset the kernel reports it to this send: the
                # error is the reset, not EPIPE, though a read took it.
                self.transport.write(b"R")
            if self.last and end == "reset-reply-close":
                self.transport.close()

        def eof_received(self):
            self.order.append("eof")
            return super().eof_received()

        def connection_lost(self, exc):
            self.order.append("lost")
            super().connection_lost(exc)

    async def main():
        sp = Replying(aio_loop)
        server, peer = await connected_peer(aio_loop, sp)
        peer.sendall(b"a" * first)
        await sp.expect(first)
        while sp.order[-1] == "data":
            await asyncio.sleep(0)
        del sp.order[:]
        sp.last = True
        peer.sendall(b"b" * 8192)
        if end == "eof":
            peer.shutdown(socket.SHUT_WR)
        else:  # reset
            reset(peer)
        exc = await sp.lost
        got = b""
        if end == "eof":
            peer.setblocking(False)
            while True:
                chunk = await aio_loop.sock_recv(peer, 100)
                if not chunk:
                    break
                got += chunk
            peer.close()
        server.close()
        await server.wait_closed()
        return sp.order, exc, got

    order, exc, got = run(aio_loop, main())
    assert_replies_before_the_end(order, end, exc)
    if end == "eof":
        assert got == b"R" * (1 + order.count("data"))


WHERE = contextvars.ContextVar("WHERE", default="unset")


class ContextRecorder(Recorder):
    """Record the WHERE each read and flow-control callback sees, and set it in data_received()."""

    def __init__(self, loop):
        super().__init__(loop, keep_open=True)
        self.seen = []

    def data_received(self, data):
        self.seen.append(("data", WHERE.get()))
        WHERE.set("set in data_received")
        super().data_received(data)

    def eof_received(self):
        self.seen.append(("eof", WHERE.get()))
        return super().eof_received()

    def resume_writing(self):
        self.seen.append(("resume", WHERE.get()))
        super().resume_writing()


def test_protocol_callbacks_run_in_the_contexts_asyncio_copies(selector_loop):
    # asyncio runs a transport's reader and writer callbacks as Handles in
    # contexts copied when they were made: reads in the context the
    # connection was made in (the server's, where it started serving) or
    # the caller's of resume_reading(), resume_writing() in the context of
    # the write() that left bytes owed. What data_received() sets stays in
    # the reader's copy and never reaches the code that runs the loop.
    async def main():
        WHERE.set("serving")
        server, sp, cp = await tcp_pair(selector_loop, server_proto=ContextRecorder(selector_loop),
                                        client_proto=ContextRecorder(selector_loop))
        WHERE.set("client")
        cp.transport.write(b"a")
        await sp.expect(1)
        cp.transport.write(b"b")
        await sp.expect(2)
        sp.transport.pause_reading()
        cp.transport.write(b"c")
        await asyncio.sleep(0.05)
        WHERE.set("resumer")
        sp.transport.resume_reading()
        await sp.expect(3)
        cp.transport.write_eof()
        await sp.eof
        # The server writes (from here, "writer") more than its high-water
        # mark to a client that does not read: resume_writing() comes once
        # the client reads again.
        WHERE.set("writer")
        sp.transport.set_write_buffer_limits(high=64 * 1024)
        cp.transport.pause_reading()
        while not sp.flow:
            sp.transport.write(b"x" * 256 * 1024)
            await asyncio.sleep(0)
        WHERE.set("after")
        cp.transport.resume_reading()
        while "resume" not in sp.flow:
            await asyncio.sleep(0.01)
        await finish(server, sp, cp)
        return sp.seen, WHERE.get()

    outer = WHERE.set("loop")
    try:
        seen, in_task = run(selector_loop, main())
        after_run = WHERE.get()
    finally:
        WHERE.reset(outer)
    assert seen == [("data", "serving"), ("data", "set in data_received"), ("data", "resumer"),
                    ("eof", "set in data_received"), ("resume", "writer")]
    assert in_task == "after"
    assert after_run == "loop"


def test_write_eof_and_can_write_eof(aio_loop, family):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop, server_proto=Recorder(aio_loop, keep_open=True),
                                        family=family)
        assert cp.transport.can_write_eof()
        cp.transport.write(b"last words")
        cp.transport.write_eof()
        with pytest.raises(RuntimeError):
            cp.transport.write(b"more")
        got = await sp.eof
        # eof_received() returned True: the server side can still write.
        sp.transport.write(b"reply")
        reply = await cp.expect(5)
        await finish(server, sp, cp)
        return got, reply, sp.events

    got, reply, sevents = run(aio_loop, main())
    assert got == b"last words" and reply == b"reply"
    assert sevents == ["made", "data", "eof", "lost"]


def test_close_flushes_buffer_then_connection_lost(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        sp.transport.pause_reading()
        # More than loopback's socket buffers take, so some stays buffered.
        payload = os.urandom(32 * 1024 * 1024)
        cp.transport.write(payload)
        buffered = cp.transport.get_write_buffer_size()
        cp.transport.close()
        assert cp.transport.is_closing()
        sp.transport.resume_reading()
        got = await sp.eof
        exc = await cp.lost
        await finish(server, sp)
        return payload, got, buffered, exc

    payload, got, buffered, exc = run(aio_loop, main())
    assert buffered > 0
    assert got == payload and exc is None


def test_abort_drops_buffer_and_reports_none(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        sp.transport.pause_reading()
        cp.transport.write(b"y" * (32 * 1024 * 1024))
        assert cp.transport.get_write_buffer_size() > 0
        cp.transport.abort()
        exc = await cp.lost
        sp.transport.resume_reading()
        await sp.lost
        await finish(server)
        return exc, len(sp.data), cp.events

    exc, got, events = run(aio_loop, main())
    assert exc is None
    assert got < 32 * 1024 * 1024
    assert events == ["made", "lost"]


def test_write_rejects_non_bytes_and_accepts_bytes_likes(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        with pytest.raises(TypeError):
            cp.transport.write("text")
        cp.transport.write(bytearray(b"ab"))
        cp.transport.write(memoryview(b"xcdx")[1:3])
        cp.transport.writelines([b"e", bytearray(b"f"), memoryview(b"g")])
        cp.transport.write(b"")
        got = await sp.expect(7)
        await finish(server, sp, cp)
        return got

    assert run(aio_loop, main()) == b"abcdefg"


# Stock asyncio's socket transport has its own scatter-gather writelines()
# since 3.12, with bugs later CPython releases fixed; fastio.EventLoop's
# transport ships the fixed writelines() on every version. Each test below
# marks the stock reference an expected failure exactly where it has the bug.
_STOCK_WRITELINES = vars(getattr(selector_events, "_SelectorSocketTransport")).get("writelines")


def expect_stock_failure(request, aio_kind, affected, reason):
    """Mark this test's stock-asyncio run a strict expected failure if `affected`."""
    if aio_kind == "asyncio" and affected:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


def test_writelines_errors_are_asyncios(selector_loop):
    # Each version's own: WriteTransport.writelines (a write() of the
    # joined bytes) before 3.12, the socket transport's own from 3.12.
    async def main():
        server, sp, cp = await tcp_pair(selector_loop)
        errors = []
        for chunks in ([b"a", "b"], [b"a", 1]):
            with pytest.raises(TypeError) as info:
                cp.transport.writelines(chunks)
            errors.append(str(info.value))
        cp.transport.write_eof()
        with pytest.raises(RuntimeError) as info:
            cp.transport.writelines([b"a"])
        errors.append(str(info.value))
        await finish(server, sp, cp)
        return errors

    if sys.version_info >= (3, 12):
        expected = ["memoryview: a bytes-like object is required, not 'str'",
                    "memoryview: a bytes-like object is required, not 'int'",
                    "Cannot call writelines() after write_eof()"]
    else:
        expected = ["sequence item 1: expected a bytes-like object, str found",
                    "sequence item 1: expected a bytes-like object, int found",
                    "Cannot call write() after write_eof()"]
    assert run(selector_loop, main()) == expected


def test_write_of_an_unreadable_buffer_is_a_fatal_error(selector_loop):
    # asyncio's write() hands a non-contiguous memoryview to send(), whose
    # BufferError goes to _fatal_error: connection_lost(BufferError), not
    # an exception out of write().
    async def main():
        server, sp, cp = await tcp_pair(selector_loop)
        selector_loop.set_exception_handler(lambda loop, context: None)
        cp.transport.write(memoryview(b"abcdef")[::2])
        lost = await asyncio.wait_for(cp.lost, 10)
        await finish(server, sp, cp)
        return type(lost), bytes(sp.data)

    assert run(selector_loop, main()) == (BufferError, b"")


def test_writelines_of_an_unreadable_buffer_is_each_versions_error(selector_loop):
    # From 3.12 asyncio buffers the memoryviews and its sendmsg() fails:
    # connection_lost(BufferError). Before, WriteTransport.writelines joins
    # them: a TypeError out of the call. Either way nothing is sent.
    async def main():
        server, sp, cp = await tcp_pair(selector_loop)
        selector_loop.set_exception_handler(lambda loop, context: None)
        chunks = [b"ab", memoryview(b"abcdef")[::2]]
        if sys.version_info < (3, 12):
            with pytest.raises(TypeError):
                cp.transport.writelines(chunks)
            cp.transport.close()
        else:
            cp.transport.writelines(chunks)
        lost = await asyncio.wait_for(cp.lost, 10)
        await finish(server, sp, cp)
        return type(lost), bytes(sp.data)

    expected = BufferError if sys.version_info >= (3, 12) else type(None)
    assert run(selector_loop, main()) == (expected, b"")


def test_transport_repr_shows_reading_and_writing_as_asyncio_does(selector_loop):
    async def main():
        server, sp, cp = await tcp_pair(selector_loop)
        tr = sp.transport
        await asyncio.sleep(0)
        reprs = [repr(tr)]
        tr.pause_reading()
        reprs.append(repr(tr))
        tr.resume_reading()
        reprs.append(repr(tr))
        tr.close()
        reprs.append(repr(tr))
        await finish(server, sp, cp)
        return [r.split(" ", 1)[1] for r in reprs], tr._sock_fd

    reprs, fd = run(selector_loop, main())
    assert reprs[0] == reprs[2] == "fd=%d read=polling write=<idle, bufsize=0>>" % fd
    assert reprs[1] == "fd=%d read=idle write=<idle, bufsize=0>>" % fd
    assert reprs[3].startswith("closing ") and "read=idle" in reprs[3]


def test_transport_repr_after_an_eof_kept_open_shows_reading_idle(selector_loop):
    # asyncio removes its reader at an EOF that eof_received() keeps the
    # transport open for: read=idle, while is_reading() stays True.
    async def main():
        server, sp, cp = await tcp_pair(selector_loop, server_proto=Recorder(selector_loop, keep_open=True))
        cp.transport.write_eof()
        await sp.eof
        await asyncio.sleep(0)
        shown, reading = repr(sp.transport), sp.transport.is_reading()
        await finish(server, sp, cp)
        return shown, reading

    shown, reading = run(selector_loop, main())
    assert " read=idle " in shown and reading is True


def test_writelines_skips_empty_chunks(request, aio_loop, aio_kind):
    expect_stock_failure(
        request, aio_kind, sys.version_info >= (3, 12),
        "CPython gh-155888: asyncio's writelines() keeps an empty chunk buffered "
        "forever, so the transport never sends its EOF")

    async def main():
        server, sp, cp = await tcp_pair(aio_loop, server_proto=Recorder(aio_loop, keep_open=True))
        cp.transport.writelines([b"", b"ab", b"", bytearray(), memoryview(b"xcdx")[1:3], b""])
        cp.transport.writelines([b""])
        cp.transport.writelines([])
        cp.transport.write_eof()
        got = await asyncio.wait_for(sp.eof, 10)
        size = cp.transport.get_write_buffer_size()
        await finish(server, sp, cp)
        return got, size

    assert run(aio_loop, main()) == (b"abcd", 0)


def test_writelines_pauses_writing_over_the_high_water_mark(request, aio_loop, aio_kind):
    expect_stock_failure(
        request, aio_kind,
        (3, 12) <= sys.version_info < (3, 12, 9) or (3, 13) <= sys.version_info < (3, 13, 2),
        "CPython gh-127655 (fixed in 3.12.9 and 3.13.2): asyncio's writelines() "
        "never pauses the protocol")

    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        tr = cp.transport
        sp.transport.pause_reading()
        tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        chunk = b"x" * 65536
        sent = 0
        while "pause" not in cp.flow and sent < 64 * 1024 * 1024:
            tr.writelines([chunk, b"y", chunk])
            sent += 2 * len(chunk) + 1
        assert cp.flow == ["pause"], "writelines() buffered %d bytes without pausing" % sent
        buffered = tr.get_write_buffer_size()
        sp.transport.resume_reading()
        got = await sp.expect(sent)
        while "resume" not in cp.flow:
            await asyncio.sleep(0.01)
        await finish(server, sp, cp)
        return buffered, got == (chunk + b"y" + chunk) * (sent // (2 * len(chunk) + 1)), cp.flow

    buffered, intact, flow = run(aio_loop, main())
    assert buffered > 64 * 1024
    assert intact
    assert flow == ["pause", "resume"]


def test_writelines_after_connection_lost_does_what_write_does(request, aio_loop, aio_kind):
    # The fix release of 3.13 is not pinned here: asyncio's own code says
    # whether its writelines() checks for a lost connection.
    expect_stock_failure(
        request, aio_kind,
        _STOCK_WRITELINES is not None and "_conn_lost" not in _STOCK_WRITELINES.__code__.co_names,
        "CPython gh-136234: asyncio's writelines() buffers and sends after the "
        "connection was lost (its loop is gone by then)")

    def outcome(call):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 (the exception is the outcome)
            return type(exc)
        return None

    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        cp.transport.abort()
        await cp.lost
        after_write = outcome(lambda: cp.transport.write(b"x"))
        after_writelines = outcome(lambda: cp.transport.writelines([b"y", b"z"]))
        await finish(server, sp)
        return after_write, after_writelines, bytes(sp.data)

    after_write, after_writelines, got = run(aio_loop, main())
    assert after_writelines == after_write
    assert got == b""


def test_data_received_exception_closes_with_error(aio_loop, aio_kind):
    class Boom(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise ZeroDivisionError("boom")

    async def main():
        handled = []
        aio_loop.set_exception_handler(lambda loop, ctx: handled.append(ctx))
        server, sp, cp = await tcp_pair(aio_loop, server_proto=Boom(aio_loop))
        cp.transport.write(b"x")
        exc = await sp.lost
        await cp.lost
        await finish(server)
        return exc, handled

    exc, handled = run(aio_loop, main())
    assert isinstance(exc, ZeroDivisionError)
    assert [type(c["exception"]) for c in handled] == [ZeroDivisionError]
    if aio_kind != "uvloop":  # uvloop words it differently
        assert handled[0]["message"] == "Fatal error: protocol.data_received() call failed."


def test_peer_reset_reports_connection_error(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        sock = sp.transport.get_extra_info("socket")
        # SO_LINGER 0: close() sends RST.
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        raw.close()
        sp.transport.abort()
        await sp.lost
        # Writing into a reset connection: connection_lost with an OSError.
        for _ in range(100):
            if cp.lost.done():
                break
            cp.transport.write(b"z" * 1024)
            await asyncio.sleep(0.01)
        exc = await cp.lost
        await finish(server)
        return exc

    exc = run(aio_loop, main())
    assert exc is None or isinstance(exc, ConnectionError)


class Buffered(asyncio.BufferedProtocol):
    """BufferedProtocol that records the buffers it handed out."""

    def __init__(self, loop, size=4096):
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.received = bytearray()
        self.hints = []
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return self.view

    def buffer_updated(self, nbytes):
        self.received += self.buf[:nbytes]

    def eof_received(self):
        self.eof.set_result(bytes(self.received))

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_buffered_protocol_reads_into_protocol_buffer(aio_loop, aio_kind, family):
    async def main():
        bp = Buffered(aio_loop)
        sp = Recorder(aio_loop)
        if family == "unix":
            path = os.path.join(tempfile.mkdtemp(), "s")
            server = await aio_loop.create_unix_server(lambda: sp, path)
            tr, _ = await aio_loop.create_unix_connection(lambda: bp, path)
        else:
            server = await aio_loop.create_server(lambda: sp, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            tr, _ = await aio_loop.create_connection(lambda: bp, "127.0.0.1", port)
        await sp.made
        payload = os.urandom(100_000)
        sp.transport.write(payload)
        sp.transport.write_eof()
        got = await bp.eof
        tr.close()
        await bp.lost
        await sp.lost
        server.close()
        await server.wait_closed()
        return payload, got, bp.hints

    payload, got, hints = run(aio_loop, main())
    assert got == payload
    # asyncio asks for "any size" (-1); uvloop passes its read size.
    assert set(hints) == ({65536} if aio_kind == "uvloop" else {-1})
    assert len(hints) >= len(payload) // 4096


def test_buffered_protocol_empty_buffer_is_an_error(aio_loop):
    class Empty(Buffered):
        def get_buffer(self, sizehint):
            return bytearray()

    async def main():
        handled = []
        aio_loop.set_exception_handler(lambda loop, ctx: handled.append(ctx))
        bp = Empty(aio_loop)
        sp = Recorder(aio_loop)
        server = await aio_loop.create_server(lambda: sp, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await aio_loop.create_connection(lambda: bp, "127.0.0.1", port)
        await sp.made
        sp.transport.write(b"data")
        exc = await bp.lost
        sp.transport.close()
        await sp.lost
        server.close()
        await server.wait_closed()
        return exc, handled

    exc, handled = run(aio_loop, main())
    assert isinstance(exc, RuntimeError)
    assert handled and isinstance(handled[0]["exception"], RuntimeError)


@pytest.mark.parametrize("kind", ["bytes", "strided", "list"])
def test_buffered_protocol_unwritable_buffer_is_a_type_error(selector_loop, kind):
    # asyncio reads with sock.recv_into(): a buffer it cannot write into is
    # recv_into's TypeError, reported as a fatal read error. (uvloop reports
    # its own errors here.)
    aio_loop = selector_loop
    bad = {"bytes": b"abcd", "strided": memoryview(bytearray(8))[::2], "list": [0] * 4}[kind]

    class Unwritable(Buffered):
        def get_buffer(self, sizehint):
            return bad

    async def main():
        handled = []
        aio_loop.set_exception_handler(lambda loop, ctx: handled.append(ctx))
        a, b = socket.socketpair()
        bp = Unwritable(aio_loop)
        await aio_loop.connect_accepted_socket(lambda: bp, a)
        b.sendall(b"data")
        exc = await bp.lost
        b.close()
        return exc, handled

    exc, handled = run(aio_loop, main())
    assert type(exc) is TypeError
    assert str(exc) == ("recv_into() argument 1 must be read-write bytes-like object, not "
                        + type(bad).__name__)
    assert exc.__traceback__ is not None  # raised, as recv_into() raises it
    assert [c["message"] for c in handled] == ["Fatal read error on socket transport"]


class _ShortBytearray(bytearray):
    """A bytearray whose len() says it is empty."""

    def __len__(self):
        return 0


def _released_view():
    view = memoryview(bytearray(8))
    view.release()
    return view


# What get_buffer() returns -> (the error asyncio reports, its message, the
# transport's fatal-error message); None: the read succeeds. fastio.EventLoop
# receives into a bytearray or a plain memoryview at its address; every other
# buffer (and a view of the wrong shape, a released, read-only or empty one)
# must meet asyncio's len() and recv_into() checks as in asyncio.
GET_BUFFER_CASES = {
    "bytearray": (lambda: bytearray(16), None),
    "view": (lambda: memoryview(bytearray(16)), None),
    "view-slice": (lambda: memoryview(bytearray(32))[8:24], None),
    "view-of-ints": (lambda: memoryview(bytearray(16)).cast("I"), None),
    "view-2d": (lambda: memoryview(bytearray(16)).cast("B", (4, 4)), None),
    "empty-bytearray": (lambda: bytearray(), (
        RuntimeError, "get_buffer() returned an empty buffer",
        "Fatal error: protocol.get_buffer() call failed.")),
    "empty-view": (lambda: memoryview(bytearray(8))[8:], (
        RuntimeError, "get_buffer() returned an empty buffer",
        "Fatal error: protocol.get_buffer() call failed.")),
    "bytearray-subclass-empty-len": (lambda: _ShortBytearray(8), (
        RuntimeError, "get_buffer() returned an empty buffer",
        "Fatal error: protocol.get_buffer() call failed.")),
    "released-view": (_released_view, (
        ValueError, "operation forbidden on released memoryview object",
        "Fatal error: protocol.get_buffer() call failed.")),
    "readonly-view": (lambda: memoryview(b"abcdefgh"), (
        TypeError, "recv_into() argument 1 must be read-write bytes-like object, not memoryview",
        "Fatal read error on socket transport")),
    "readonly-view-of-bytearray": (lambda: memoryview(bytearray(8)).toreadonly(), (
        TypeError, "recv_into() argument 1 must be read-write bytes-like object, not memoryview",
        "Fatal read error on socket transport")),
}


@pytest.mark.parametrize("case", sorted(GET_BUFFER_CASES))
def test_buffered_protocol_buffer_kinds(selector_loop, case):
    # (uvloop reports its own errors for the failing ones.)
    aio_loop = selector_loop
    make, error = GET_BUFFER_CASES[case]

    class Kind(Buffered):
        def get_buffer(self, sizehint):
            self.buf = make()
            return self.buf

        def buffer_updated(self, nbytes):
            self.received += memoryview(self.buf).cast("B")[:nbytes]
            if len(self.received) >= 64:
                self.eof.set_result(bytes(self.received))

    async def main():
        handled = []
        aio_loop.set_exception_handler(lambda loop, ctx: handled.append(ctx))
        a, b = socket.socketpair()
        bp = Kind(aio_loop)
        tr, _ = await aio_loop.connect_accepted_socket(lambda: bp, a)
        payload = bytes(range(64))
        b.sendall(payload)
        if error is None:
            got = await bp.eof
            tr.close()
            await bp.lost
            b.close()
            return got == payload, handled
        exc = await bp.lost
        b.close()
        return exc, handled

    result, handled = run(aio_loop, main())
    if error is None:
        assert result is True and handled == []
        return
    exc_type, text, message = error
    assert type(result) is exc_type and str(result) == text
    assert result.__traceback__ is not None
    assert [c["message"] for c in handled] == [message]
    assert handled[0]["exception"] is result


@pytest.mark.parametrize("method", ["get_buffer", "buffer_updated"])
@pytest.mark.parametrize("exc_type", [ValueError, KeyboardInterrupt])
def test_buffered_protocol_call_errors(selector_loop, method, exc_type):
    # An error from either protocol call is the transport's fatal error with
    # asyncio's message and the exception as raised (traceback included);
    # KeyboardInterrupt leaves run_until_complete() as in asyncio.
    aio_loop = selector_loop

    class Failing(Buffered):
        raised = False

        def get_buffer(self, sizehint):
            if method == "get_buffer":
                self.fail()
            return self.view

        def buffer_updated(self, nbytes):
            self.fail()

        def fail(self):
            # Once: the loop is closed after a KeyboardInterrupt.
            if not self.raised:
                self.raised = True
                raise exc_type("boom")

    async def main():
        handled = []
        aio_loop.set_exception_handler(lambda loop, ctx: handled.append(ctx))
        a, b = socket.socketpair()
        bp = Failing(aio_loop)
        tr, _ = await aio_loop.connect_accepted_socket(lambda: bp, a)
        transports.append(tr)
        b.sendall(b"data")
        try:
            if exc_type is KeyboardInterrupt:
                await asyncio.sleep(10)
                return None, handled
            return await bp.lost, handled
        finally:
            b.close()

    transports = []
    if exc_type is KeyboardInterrupt:
        with pytest.raises(KeyboardInterrupt, match="boom"):
            run(aio_loop, main())
        transports[0].abort()
        return
    exc, handled = run(aio_loop, main())
    assert type(exc) is ValueError and str(exc) == "boom"
    assert exc.__traceback__ is not None
    assert [c["message"] for c in handled] == [
        "Fatal error: protocol.%s() call failed." % method]


def test_set_protocol_switches_to_buffered(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        bp = Buffered(aio_loop)
        sp.transport.set_protocol(bp)
        assert sp.transport.get_protocol() is bp
        cp.transport.write(b"to the buffer")
        cp.transport.write_eof()
        got = await bp.eof
        cp.transport.close()
        sp.transport.close()
        await cp.lost
        await bp.lost
        server.close()
        await server.wait_closed()
        return got

    assert run(aio_loop, main()) == b"to the buffer"


def test_streams_echo_many_clients(aio_loop, family):
    async def main():
        if family == "unix":
            path = os.path.join(tempfile.mkdtemp(), "s")
            server = await asyncio.start_unix_server(echo_stream, path)
            connect = lambda: asyncio.open_unix_connection(path)  # noqa: E731
        else:
            server = await asyncio.start_server(echo_stream, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            connect = lambda: asyncio.open_connection("127.0.0.1", port)  # noqa: E731

        async def client(i):
            reader, writer = await connect()
            return await stream_round_trip(reader, writer, os.urandom(50_000 + i))

        async with server:
            results = await asyncio.gather(*(client(i) for i in range(20)))
        return results

    assert run(aio_loop, main()) == [True] * 20


def test_unix_transport_extra_info(aio_loop):
    async def main():
        server, sp, cp = await tcp_pair(aio_loop, family="unix")
        path = server.sockets[0].getsockname()
        info = (sp.transport.get_extra_info("sockname"),
                cp.transport.get_extra_info("peername"),
                cp.transport.get_extra_info("socket").family)
        await finish(server, sp, cp)
        return path, info

    path, (sockname, peername, fam) = run(aio_loop, main())
    assert sockname == peername == path
    assert fam == socket.AF_UNIX


@pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets")
def test_transport_over_socketpair_with_connect_accepted_socket(aio_loop):
    async def main():
        a, b = socket.socketpair()
        pa, pb = Recorder(aio_loop), Recorder(aio_loop)
        await aio_loop.connect_accepted_socket(lambda: pa, a)
        await aio_loop.connect_accepted_socket(lambda: pb, b)
        pa.transport.write(b"ping")
        got = await pb.expect(4)
        pa.transport.close()
        pb.transport.close()
        await pa.lost
        await pb.lost
        return got

    assert run(aio_loop, main()) == b"ping"


class SizeRecorder(Recorder):
    """A Recorder that also keeps every data_received() chunk and its size."""

    def __init__(self, loop):
        super().__init__(loop)
        self.sizes = []
        self.chunks = []

    def data_received(self, data):
        self.sizes.append(len(data))
        self.chunks.append(data)
        super().data_received(data)


@pytest.mark.parametrize("max_size", [3, 1 << 20])
def test_transport_max_size_bounds_each_read(selector_loop, max_size):
    # asyncio's per-transport read size (uvloop has none).
    aio_loop = selector_loop
    proto = SizeRecorder(aio_loop)
    sizes = proto.sizes

    async def main():
        server, sp, cp = await tcp_pair(aio_loop, server_proto=proto)
        sp.transport.max_size = max_size
        cp.transport.write(b"abcdefgh" * 1000)
        got = await sp.expect(8000)
        await finish(server, sp, cp)
        return got

    assert run(aio_loop, main()) == b"abcdefgh" * 1000
    assert max(sizes) <= max_size


def pattern(n, seed=0):
    """n bytes in which every position differs from its neighbours (a misplaced chunk shows)."""
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def test_each_read_takes_what_is_there_after_large_and_small_reads(request, selector_loop):
    # Reads of a few KiB and more are received straight into the bytes
    # object data_received() gets, sized from the transport's previous
    # read; a burst larger than that is still one read of up to max_size,
    # as asyncio's recv(max_size), and a short read after long ones is a
    # bytes object of its own length. Sizes and bytes as on asyncio; on
    # io_uring a read is at most one provided buffer (see the README).
    aio_loop = selector_loop
    proto = SizeRecorder(aio_loop)
    chunks = proto.chunks
    sends = [20000, 100000, 16384, 16384, 5, 70000, 4096, 3000]

    async def main():
        a, b = socket.socketpair()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        transport, _ = await aio_loop.connect_accepted_socket(lambda: proto, a)
        total = 0
        for i, n in enumerate(sends):
            b.sendall(pattern(n, i))    # all queued before the loop reads
            total += n
            await proto.expect(total)
        transport.close()
        await proto.lost
        b.close()

    run(aio_loop, main())
    if request.node.callspec.params["selector_loop"] == "fastio-io_uring":
        assert b"".join(chunks) == b"".join(pattern(n, i) for i, n in enumerate(sends))
        assert max(proto.sizes) <= 64 * 1024
    else:
        assert proto.sizes == sends
        assert [bytes(c) for c in chunks] == [pattern(n, i) for i, n in enumerate(sends)]
    for chunk in chunks:
        assert type(chunk) is bytes and hash(chunk) == hash(bytes(bytearray(chunk)))


def test_reset_right_after_a_read_filling_the_expected_size_is_reported(selector_loop):
    # A reset queued behind bytes that exactly fill fastio's next read
    # (20 KiB after a 20000-byte read): the read that goes on for more gets
    # the reset. The bytes are delivered, then the transport fails with
    # ConnectionResetError, as asyncio's next read reports it; the error is
    # not lost (a later recv would only see an EOF).
    aio_loop = selector_loop
    proto = Recorder(aio_loop)

    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        peer = socket.create_connection(lsock.getsockname())
        conn, _ = lsock.accept()
        lsock.close()
        await aio_loop.connect_accepted_socket(lambda: proto, conn)
        peer.sendall(pattern(20000))
        await proto.expect(20000)
        peer.sendall(pattern(20480, 1))
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()    # RST, queued behind the bytes
        return await proto.lost

    exc = run(aio_loop, main())
    assert isinstance(exc, ConnectionResetError)
    assert bytes(proto.data) == pattern(20000) + pattern(20480, 1)
    assert "eof" not in proto.events


def test_transport_max_size_follows_the_class(selector_loop, monkeypatch):
    # max_size changed on asyncio's transport base class after reads have
    # been made: the next read takes the new size.
    from asyncio import selector_events
    aio_loop = selector_loop
    proto = SizeRecorder(aio_loop)
    sizes = proto.sizes

    async def main():
        server, sp, cp = await tcp_pair(aio_loop, server_proto=proto)
        cp.transport.write(b"abcdefgh" * 100)
        await sp.expect(800)
        monkeypatch.setattr(selector_events._SelectorTransport, "max_size", 5, raising=True)
        del sizes[:]
        cp.transport.write(b"abcdefgh" * 100)
        got = await sp.expect(1600)
        await finish(server, sp, cp)
        return got

    assert run(aio_loop, main()) == b"abcdefgh" * 200
    assert sizes and max(sizes) <= 5


def test_socket_closed_behind_transport_never_reaches_fd_reuser(selector_loop):
    # The application closes the socket it handed to the loop; its fd number
    # then names another socket. A write must not land there: asyncio's
    # send() on the closed socket fails with EBADF. (uvloop writes to the fd
    # number it remembers, so it is not a reference here.)
    aio_loop = selector_loop

    async def main():
        a, b = socket.socketpair()
        pa = Recorder(aio_loop)
        await aio_loop.connect_accepted_socket(lambda: pa, a)
        c, d = socket.socketpair()
        old_fd = a.fileno()
        a.close()
        os.dup2(c.fileno(), old_fd)  # old_fd is now another connection
        try:
            pa.transport.write(b"secret")
            await asyncio.sleep(0.05)
            d.setblocking(False)
            with pytest.raises(BlockingIOError):
                d.recv(100)
            assert isinstance(await pa.lost, OSError)
        finally:
            pa.transport.abort()
            os.close(old_fd)
            for s in (b, c, d):
                s.close()

    run(aio_loop, main())


@pytest.mark.parametrize("buffered", [False, True], ids=["data_received", "get_buffer"])
def test_read_after_socket_closed_behind_transport_takes_no_bytes(selector_loop, buffered):
    # A read already queued when the socket object is closed: asyncio's
    # recv fails with EBADF, it never takes another socket's bytes.
    aio_loop = selector_loop

    async def main():
        a, b = socket.socketpair()
        pa = Buffered(aio_loop) if buffered else Recorder(aio_loop)
        transport, _ = await aio_loop.connect_accepted_socket(lambda: pa, a)
        c, d = socket.socketpair()
        c.setblocking(False)
        old_fd = a.fileno()
        a.close()
        os.dup2(c.fileno(), old_fd)
        try:
            d.sendall(b"not yours")
            transport._read_ready()
            assert os.read(old_fd, 100) == b"not yours"
            assert isinstance(await pa.lost, OSError)
        finally:
            transport.abort()
            os.close(old_fd)
            for s in (b, c, d):
                s.close()

    run(aio_loop, main())


class TracedSocket(socket.socket):
    """A socket subclass that records its recv/recv_into/send calls."""

    calls = None

    def recv(self, *args):
        self.calls.append("recv")
        return super().recv(*args)

    def recv_into(self, *args):
        self.calls.append("recv_into")
        return super().recv_into(*args)

    def send(self, *args):
        self.calls.append("send")
        return super().send(*args)


@pytest.mark.parametrize("buffered", [False, True], ids=["data_received", "get_buffer"])
def test_transport_calls_socket_subclass_methods(selector_loop, buffered):
    # asyncio's transport reads and writes through the socket's methods, so
    # a subclass overriding them sees every call. (uvloop uses the fd.)
    aio_loop = selector_loop

    async def main():
        a, b = socket.socketpair()
        traced = TracedSocket(a.family, a.type, fileno=a.detach())
        traced.calls = []
        proto = Buffered(aio_loop) if buffered else Recorder(aio_loop)
        transport, _ = await aio_loop.connect_accepted_socket(lambda: proto, traced)
        transport.write(b"out")
        b.setblocking(False)
        assert await aio_loop.sock_recv(b, 3) == b"out"
        await aio_loop.sock_sendall(b, b"in")
        b.shutdown(socket.SHUT_WR)
        await proto.eof
        transport.close()
        await proto.lost
        b.close()
        return traced.calls, bytes(proto.received if buffered else proto.data)

    calls, got = run(aio_loop, main())
    assert got == b"in"
    assert calls[0] == "send"
    assert calls.count("recv_into" if buffered else "recv") >= 2  # the data, then EOF


def test_a_transport_of_a_closed_loop_refuses_to_resume_reading(aio_kind):
    # asyncio's resume_reading() registers the reader again, which a closed
    # loop refuses with RuntimeError.
    loop = make_loop(aio_kind)
    a, b = socket.socketpair()
    try:
        transport, _ = loop.run_until_complete(loop.connect_accepted_socket(asyncio.Protocol, a))
        transport.pause_reading()
        loop.close()
        with pytest.raises(RuntimeError):
            transport.resume_reading()
    finally:
        loop.close()
        a.close()
        b.close()


def test_a_write_the_kernel_does_not_take_whole_on_a_closed_loop_is_not_buffered(selector_loop):
    # asyncio's write() sends what the kernel takes, then fails to register
    # its writer on the closed loop: RuntimeError, and nothing kept.
    loop = selector_loop
    a, b = socket.socketpair()
    try:
        transport, _ = loop.run_until_complete(loop.connect_accepted_socket(asyncio.Protocol, a))
        loop.close()
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            transport.write(b"x" * 20_000_000)
        assert transport.get_write_buffer_size() == 0
    finally:
        a.close()
        b.close()


def test_a_reset_meeting_a_send_in_flight_is_a_connection_reset(aio_loop):
    # The peer sends a little, then resets, while the transport has
    # megabytes to send it. The kernel reports the reset once, to the recv
    # or to the send that comes first; either way asyncio's transport
    # reports ConnectionResetError, never the EPIPE a later send gets.
    async def main():
        sp = Recorder(aio_loop)
        server, peer = await connected_peer(aio_loop, sp, rcvbuf=4096)
        sp.transport.write(b"x" * (8 << 20))
        await asyncio.sleep(0.05)  # the send in flight, blocked on the full peer
        # Reading again (on io_uring a new recv, waiting ahead of the send
        # for the socket's wake-up): the recv is the first to see the reset.
        sp.transport.pause_reading()
        await asyncio.sleep(0.05)
        sp.transport.resume_reading()
        await asyncio.sleep(0.05)
        peer.sendall(b"a" * 100)
        reset(peer)
        return await lost_then_closed(sp, server)

    exc = run(aio_loop, main())
    assert isinstance(exc, ConnectionResetError), exc


@pytest.mark.parametrize("how", ["write-in-data_received", "pause-then-write", "writes-queued-before"])
@pytest.mark.parametrize("first", [100, 5000], ids=["small-read", "hinted-read"])
def test_a_reset_after_data_fails_the_writes_around_it_as_a_reset(aio_loop, first, how):
    # The kernel reports a peer's reset once, to the first recv or send.
    # asyncio's transport reads once per turn, so a write made in the
    # data_received() of the bytes before the reset, or a send of writes
    # queued before it, gets the reset; fastio's transports read on after
    # a hinted read (readiness) or take the bytes and the reset together
    # (io_uring), so they must fail those writes with the reset they took,
    # not with the EPIPE a send gets after it.
    class Writing(Recorder):
        last = False

        def data_received(self, data):
            super().data_received(data)
            if self.last and how != "writes-queued-before":
                if how == "pause-then-write":
                    self.transport.pause_reading()
                self.transport.write(b"R")

    async def main():
        sp = Writing(aio_loop)
        server, peer = await connected_peer(aio_loop, sp, rcvbuf=4096)
        peer.sendall(b"a" * first)
        await sp.expect(first)
        if how == "writes-queued-before":
            sp.transport.write(b"x" * (8 << 20))  # the peer reads none of it
            await asyncio.sleep(0.05)
        sp.last = True
        peer.sendall(b"b" * 8192)
        reset(peer)
        if how == "pause-then-write":
            await asyncio.sleep(0.1)
            if not sp.lost.done():
                sp.transport.resume_reading()
        return await lost_then_closed(sp, server)

    exc = run(aio_loop, main())
    assert isinstance(exc, ConnectionResetError), exc


def test_a_paused_reader_takes_no_more_than_the_kernel_holds_for_it(aio_loop):
    # pause_reading() stops the reads at once: what a writer sends after it
    # stays in the kernel's buffers and then in the writer's, which pauses
    # writing. (An io_uring recv left armed until the loop's next wait took
    # all of it into the loop's buffers: no backpressure.)
    chunk, count = b"x" * 65536, 128

    async def main():
        server, sp, cp = await tcp_pair(aio_loop)
        sp.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        cp.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sp.transport.pause_reading()
        for _ in range(count):
            cp.transport.write(chunk)
        for _ in range(20):
            await asyncio.sleep(0.005)
        left = len(chunk) * count - cp.transport.get_write_buffer_size()
        flow, taken = list(cp.flow), len(sp.data)
        sp.transport.resume_reading()
        got = await sp.expect(len(chunk) * count)
        await finish(server, sp, cp)
        return left, flow, taken, got

    left, flow, taken, got = run(aio_loop, main())
    assert taken == 0
    assert flow[:1] == ["pause"]
    assert left < 2 * 1024 * 1024, left
    assert got == b"x" * (65536 * 128)


@pytest.mark.parametrize("side", ["read", "write"])
def test_a_socket_error_is_reported_as_the_exception_being_handled(selector_loop, side, caplog):
    # asyncio calls _fatal_error() from the `except` clause that caught the
    # recv()/send() error: the error has a traceback, and a debug-mode
    # loop's log of it (exc_info=True) shows it. (fastio made the OSError
    # without raising it: no traceback, and the log said "NoneType: None".)
    selector_loop.set_debug(True)
    proto = Recorder(selector_loop)

    async def main():
        server, peer = await connected_peer(selector_loop, proto)
        if side == "write":
            proto.transport.pause_reading()  # the reset is for the send to find
        peer.sendall(b"x")
        reset(peer)
        if side == "write":
            await asyncio.sleep(0.05)
            proto.transport.write(b"reply")
        return await lost_then_closed(proto, server)

    with caplog.at_level("DEBUG", logger="asyncio"):
        exc = run(selector_loop, main())
    assert isinstance(exc, ConnectionError)
    assert exc.__traceback__ is not None
    message = "Fatal %s error on socket transport" % side
    logged = [r for r in caplog.records if r.getMessage().endswith(message)]
    assert logged and logged[0].exc_info[1] is exc
