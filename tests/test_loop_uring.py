"""fastio.loop.Loop and fastio.EventLoop on io_uring: what only io_uring has.

The loop, transport and EventLoop suites already run on io_uring through
their fixtures (the "fastio-io_uring" kind of tests/loop_fixtures.py and
tests/eventloop_fixtures.py). Here: test_echo's in-process server tests again
with the EchoServer on `Loop(backend="io_uring")` (its completion
transports), the SIGTERM flush in a subprocess, what the completion path
does differently (pause_reading cancels the multishot recv), and the
fallback when io_uring is refused, simulated with FASTIO_IO_URING=0 and with
io_uring_setup failing ENOSYS / EPERM through a test hook.
"""

import errno
import gc
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import echo_support
from echo_support import connect, recv_until_eof, round_trip, unread_bytes
from fastio import _pollers
from fastio._impl import compiled
from fastio.loop import Loop, Protocol
from loop_fixtures import child_exit_code, uring_unavailable, write_from_another_thread

# test_echo's in-process server tests, by name: each runs here on a Loop on io_uring.
from test_echo import (  # noqa: F401
    test_a_thousand_concurrent_clients_each_get_their_own_bytes,
    test_abrupt_resets_do_not_disturb_other_clients,
    test_half_close_after_backpressure_still_gets_every_reply_then_eof,
    test_half_close_still_gets_every_reply_then_eof,
    test_shutdown_flushes_replies_owed_to_a_client_not_reading,
)
import test_echo

core = compiled("core")  # the io_uring setup hook lives in the compiled core

UNAVAILABLE = uring_unavailable()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="io_uring is Linux-only"),
]


@pytest.fixture(autouse=True)
def _on_io_uring(request, monkeypatch):
    """Run every Loop of the test on io_uring (the fallback tests excepted)."""
    if "falls_back" not in request.node.name and "refused" not in request.node.name:
        if UNAVAILABLE is not None:
            pytest.skip("io_uring unavailable: %s" % UNAVAILABLE)
        monkeypatch.setattr(echo_support, "LOOP_BACKEND", "io_uring")


# --- the echo server on a Loop on io_uring ------------------------------------


@pytest.mark.parametrize("upper", [False, True], ids=["plain", "upper"])
def test_echo_is_byte_exact_with_messages_split_across_writes(upper):
    test_echo.test_echo_is_byte_exact_with_messages_split_across_writes(None, upper)


@pytest.mark.parametrize("upper", [False, True], ids=["plain", "upper"])
def test_large_message_in_irregular_writes_comes_back_reassembled(upper):
    test_echo.test_large_message_in_irregular_writes_comes_back_reassembled(None, upper)


def test_the_echo_server_really_runs_on_completion_transports():
    with echo_support.InProcessServer() as srv:
        with connect(srv.address) as sock:
            assert round_trip(sock, bytes(range(256))) == bytes(range(256))
            transports = [proto._transport for proto in srv.server._conns]
        assert srv.loop.backend == "io_uring"
        assert [type(t).__name__ for t in transports] == ["UringTransport"]


SIGTERM_SERVER = textwrap.dedent("""
    import sys
    from fastio.echo.server import EchoServer
    from fastio.loop import Loop

    server = EchoServer(port=0, loop=Loop(backend="io_uring"), drain_timeout=10.0)
    host, port = server.start()
    def ready():
        print("READY %d %s" % (port, server.loop.backend), flush=True)
    stats = server.serve_forever(ready)
    print("DONE %d %d %d" % (stats.connections, stats.bytes_in, stats.bytes_out), flush=True)
    server.close()
""")


def test_sigterm_flushes_every_reply_owed_to_a_client_not_reading():
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SERVER], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[:1] == ["READY"] and line[2] == "io_uring", (line, proc.stderr.read())
        port = int(line[1])
        payload = os.urandom(6 << 20)  # more than the kernel's buffers hold: the server owes replies
        with connect(("127.0.0.1", port)) as sock:
            sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
            sender.start()
            time.sleep(0.5)  # the client reads nothing meanwhile
            proc.send_signal(signal.SIGTERM)
            got, saw_eof = recv_until_eof(sock, timeout=30)
            sender.join(10)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    done = out.split()
    assert done[0] == "DONE" and int(done[1]) == 1
    read = int(done[2])
    # Every byte the server read came back, then EOF; the rest it never read.
    assert int(done[3]) == read and 0 < read <= len(payload)
    assert len(got) == read and got == payload[:read]
    assert saw_eof


# --- the completion path ---------------------------------------------------------


class Recorder(Protocol):
    def __init__(self, loop):
        self.loop = loop
        self.data = bytearray()
        self.eof = False
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof = True
        return True

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def _run_for(loop, seconds):
    fut = loop.create_future()
    loop.call_later(seconds, fut.set_result, None)
    loop.run_until_complete(fut)


def _run_until(loop, predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met within %.0f s" % timeout
        _run_for(loop, 0.01)


def _server_and_peer(loop):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    proto = Recorder(loop)
    transport, _ = loop.run_until_complete(
        loop.create_connection(lambda: proto, "127.0.0.1", listener.getsockname()[1]))
    peer, _ = listener.accept()
    listener.close()
    return transport, proto, peer


def test_pause_reading_stops_the_recv_so_the_peer_blocks_then_resume_delivers_in_order():
    loop = Loop(backend="io_uring")
    try:
        transport, proto, peer = _server_and_peer(loop)
        assert type(transport).__name__ == "UringTransport"
        peer.sendall(b"before ")
        _run_until(loop, lambda: bytes(proto.data) == b"before ")
        transport.pause_reading()
        assert not transport.is_reading()
        # The multishot recv is cancelled (at the next io_uring_enter): what
        # arrives after that stays in the kernel's receive queue.
        _run_for(loop, 0.05)
        peer.sendall(b"x" * 1000)
        _run_for(loop, 0.2)
        assert unread_bytes(transport.get_extra_info("socket")) == 1000
        # Nothing is read while paused: the peer's sends stop once the
        # kernel's buffers are full, far short of what it tries to push.
        peer.setblocking(False)
        stream = os.urandom(64 << 20)
        pushed = 0
        stalled_since = None
        while pushed < len(stream):
            try:
                pushed += peer.send(stream[pushed:pushed + 65536])
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 0.5:
                    break
                _run_for(loop, 0.01)
        assert pushed < len(stream), "the loop kept reading while paused"
        assert bytes(proto.data) == b"before "
        stream = b"x" * 1000 + stream
        peer.shutdown(socket.SHUT_WR)
        _run_for(loop, 0.1)
        assert bytes(proto.data) == b"before " and not proto.eof
        transport.resume_reading()
        _run_until(loop, lambda: proto.eof)
        assert bytes(proto.data) == b"before " + stream[:1000 + pushed]
        transport.close()
        assert loop.run_until_complete(proto.lost) is None
        peer.close()
    finally:
        loop.close()


def test_abort_with_a_send_in_flight_reports_what_never_went_out():
    loop = Loop(backend="io_uring")
    try:
        transport, proto, peer = _server_and_peer(loop)
        transport.write(b"x" * (32 << 20))  # the peer never reads: most stays owed
        _run_for(loop, 0.2)
        owed = transport.get_write_buffer_size()
        assert owed > 0
        transport.abort()
        assert loop.run_until_complete(proto.lost) is None
        assert transport.get_extra_info("dropped_bytes") == owed
        assert transport.get_write_buffer_size() == 0
        # The ops of the aborted transport end; its slot is given back.
        _run_until(loop, lambda: loop._uring.live == 0)
        peer.close()
    finally:
        loop.close()


def test_closing_the_loop_with_a_send_in_flight_lets_go_of_the_transport():
    # The ring's close cancels what was in flight; the driver must then drop
    # its hold on the transport, or the transport and its socket would live
    # as long as the closed loop.
    loop = Loop(backend="io_uring")
    transport, proto, peer = _server_and_peer(loop)
    transport.write(b"x" * (32 << 20))  # the peer never reads: a send stays in flight
    _run_for(loop, 0.2)
    assert transport.get_write_buffer_size() > 0 and loop._uring.live == 1
    loop.close()
    assert loop._uring.live == 0
    del transport, proto
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    # Collected, the transport's socket is closed: the peer reads to EOF.
    peer.settimeout(20)
    while peer.recv(1 << 20):
        pass
    peer.close()


def test_write_eof_shuts_down_after_the_owed_bytes_and_reading_goes_on():
    loop = Loop(backend="io_uring")
    try:
        transport, proto, peer = _server_and_peer(loop)
        data = os.urandom(3 << 20)
        owed = []

        def write():
            # In a callback: the bytes go out as a send SQE, owed meanwhile.
            transport.write(data)
            transport.write_eof()
            owed.append(transport.get_write_buffer_size())

        loop.call_soon(write)
        _run_until(loop, lambda: owed)
        assert owed == [len(data)]
        got = bytearray()
        peer.setblocking(False)
        while True:
            try:
                chunk = peer.recv(1 << 20)
            except BlockingIOError:
                _run_for(loop, 0.005)
                continue
            if not chunk:
                break
            got += chunk
        assert bytes(got) == data
        peer.sendall(b"still reading")
        _run_until(loop, lambda: bytes(proto.data) == b"still reading")
        transport.close()
        loop.run_until_complete(proto.lost)
        peer.close()
    finally:
        loop.close()


def test_writes_of_every_size_in_flight_and_owed_arrive_byte_exact_and_in_order():
    # Bytes written with nothing owed go out as they are, the rest from the
    # collecting buffer: mixed with writes made while a send is in flight
    # and with bytearrays changed right after write(), the peer must get
    # exactly what was written, in order.
    loop = Loop(backend="io_uring")
    try:
        transport, proto, peer = _server_and_peer(loop)
        expected = bytearray()
        sizes = [1, 100, 16 << 10, 3, 60 << 10, 64 << 10, (64 << 10) + 1, 5, 1 << 20, 32 << 10, 7]
        done = []

        def write_some(i):
            for size in sizes[i:i + 3]:
                data = os.urandom(size)
                expected.extend(data)
                if size % 2:
                    buf = bytearray(data)
                    transport.write(buf)
                    buf[:] = b"\0" * size  # write() took its bytes already
                else:
                    transport.write(data)
            if i + 3 < len(sizes):
                loop.call_soon(write_some, i + 3)
            else:
                done.append(True)

        loop.call_soon(write_some, 0)
        got = bytearray()
        peer.setblocking(False)

        def drain():
            try:
                while True:
                    chunk = peer.recv(1 << 20)
                    if not chunk:
                        break
                    got.extend(chunk)
            except BlockingIOError:
                pass
            return done and len(got) >= len(expected)

        _run_until(loop, drain)
        assert len(got) == len(expected) and got == expected
        # The last send's CQE may come an iteration after its bytes.
        _run_until(loop, lambda: transport.get_write_buffer_size() == 0)
        transport.close()
        assert loop.run_until_complete(proto.lost) is None
        peer.close()
    finally:
        loop.close()


def test_readers_timers_threadsafe_callbacks_and_signals_run_on_the_ring():
    loop = Loop(backend="io_uring")
    r, w = socket.socketpair()
    try:
        seen = []
        loop.add_reader(r.fileno(), lambda: seen.append(("read", r.recv(100))))
        loop.call_later(0.05, seen.append, ("timer",))
        threading.Timer(0.1, loop.call_soon_threadsafe, (seen.append, ("threadsafe",))).start()
        loop.add_signal_handler(signal.SIGUSR1, seen.append, ("signal",))
        w.send(b"ping")
        loop.call_later(0.15, os.kill, os.getpid(), signal.SIGUSR1)
        _run_until(loop, lambda: len(seen) == 4)
        assert sorted(seen) == sorted([("read", b"ping"), ("timer",), ("threadsafe",), ("signal",)])
        assert loop.backend == "io_uring"
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.remove_reader(r.fileno())
        r.close()
        w.close()
        loop.close()


# --- refused: the fallback ------------------------------------------------------


def _echo_once(loop):
    class Echo(Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    server = loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    result = {}

    def client():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            result["reply"] = round_trip(sock, b"fallback works")
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=client)
    thread.start()
    loop.call_later(20, loop.stop)
    loop.run_forever()
    thread.join(10)
    server.close()
    return result.get("reply")


@pytest.mark.skipif(core is None, reason="the setup hook is in the extension")
@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM], ids=["ENOSYS", "EPERM"])
def test_loop_falls_back_to_epoll_with_one_notice_when_io_uring_is_refused(err):
    core._uring_fake_errno(err)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop = Loop(backend="io_uring")
    finally:
        core._uring_fake_errno(0)
    try:
        notices = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(notices) == 1 and "\n" not in notices[0]
        assert notices[0].startswith("Loop: io_uring is unavailable (io_uring_setup: %s"
                                     % os.strerror(err))
        assert notices[0].endswith("; using %s" % _pollers.fallback_name())
        assert loop.backend == _pollers.fallback_name()
        assert loop.transport_class.__name__ == "Transport"
        assert _echo_once(loop) == b"fallback works"
    finally:
        loop.close()


def test_loop_falls_back_when_io_uring_is_disabled_by_the_environment(monkeypatch):
    monkeypatch.setenv("FASTIO_IO_URING", "0")
    # (on the pure-Python fallback the missing extension is the reason given)
    reason = "FASTIO_IO_URING=0" if core is not None else "fastio's C extension is not available"
    with pytest.warns(RuntimeWarning, match=r"io_uring is unavailable \(.*%s\)" % re.escape(reason)):
        loop = Loop(backend="io_uring")
    try:
        assert loop.backend == _pollers.fallback_name()
        assert _echo_once(loop) == b"fallback works"
    finally:
        loop.close()


def test_eventloop_falls_back_with_one_notice_when_io_uring_is_refused(monkeypatch):
    import asyncio

    import fastio

    monkeypatch.setenv("FASTIO_IO_URING", "0")
    # (without the extension EventLoop is SelectorEventLoop, and says so)
    name = fastio.EventLoop.__name__
    with pytest.warns(RuntimeWarning, match=r"^%s: io_uring is unavailable .*; using " % name):
        loop = fastio.EventLoop(backend="io_uring")
    try:
        assert type(loop._selector).__name__ != "UringSelector"
        assert loop.backend == _pollers.fallback_name()

        async def main():
            return await asyncio.sleep(0.01, "ran")

        assert loop.run_until_complete(main()) == "ran"
    finally:
        loop.close()


def test_default_loop_never_asks_for_io_uring_and_says_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop = Loop()
    try:
        assert loop.backend != "io_uring"
    finally:
        loop.close()


def test_refused_bad_backend_names_and_both_arguments_are_value_errors():
    import selectors

    import fastio

    with pytest.raises(ValueError, match="backend must be one of epoll, poll, select, io_uring"):
        Loop(backend="kqueue")
    with pytest.raises(ValueError, match="at the same time"):
        Loop(selectors.SelectSelector(), backend="epoll")
    with pytest.raises(ValueError, match="backend must be one of"):
        fastio.EventLoop(backend="kqueue")


@pytest.mark.forks
def test_a_forked_child_that_closes_the_loop_leaves_the_parents_ring_alone():
    # Loop's face of the fork guard (see test_eventloop_uring): the child's
    # close() cancels nothing of the parent's, and its run is refused.
    loop = Loop(backend="io_uring")
    try:
        transport, proto, peer = _server_and_peer(loop)
        peer.sendall(b"one")
        _run_until(loop, lambda: bytes(proto.data) == b"one")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                try:
                    _run_for(loop, 0)
                except OSError as exc:
                    code = 0 if exc.errno == errno.EBADF else 2
                else:
                    code = 3
                loop.close()
            finally:
                os._exit(code)
        assert child_exit_code(pid) == 0
        for i in range(20):
            peer.sendall(b"%03d" % i)
            _run_until(loop, lambda: bytes(proto.data).endswith(b"%03d" % i))
        transport.write(b"back")
        peer.settimeout(20)
        assert peer.recv(4) == b"back"
        transport.close()
        assert loop.run_until_complete(proto.lost) is None
        peer.close()
    finally:
        loop.close()


class CloseAtFirstData(Recorder):
    def data_received(self, data):
        super().data_received(data)
        self.calls = getattr(self, "calls", 0) + 1
        self.transport.close()


def test_close_in_data_received_drops_the_completions_reaped_with_it():
    # A busy loop lets the multishot recv fill several buffers whose
    # completions are reaped together: after close() in the first
    # data_received the rest of the batch never reaches the protocol.
    loop = Loop(backend="io_uring")
    try:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        proto = CloseAtFirstData(loop)
        loop.run_until_complete(
            loop.create_connection(lambda: proto, "127.0.0.1", listener.getsockname()[1]))
        peer, _ = listener.accept()
        listener.close()
        _run_for(loop, 0.02)
        sender = threading.Thread(target=peer.sendall, args=(b"z" * (1 << 20),))
        sender.start()
        loop.call_soon(time.sleep, 0.3)
        assert loop.run_until_complete(proto.lost) is None
        _run_for(loop, 0.1)
        assert proto.calls == 1 and len(proto.data) <= 65536
        _run_until(loop, lambda: loop._uring.live == 0)
        peer.close()
        sender.join()
    finally:
        loop.close()


def test_thousands_of_connections_come_and_go_without_leaking_slots_or_fds():
    # Clients that send and close, or reset at once: every stream's slot goes
    # back to the driver and every socket the server accepted is closed.
    made = []

    class Echo(Protocol):
        def connection_made(self, transport):
            self.transport = transport
            made.append(transport)

        def data_received(self, data):
            self.transport.write(data)

    loop = Loop(backend="io_uring")
    try:
        server = loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        before = len(os.listdir("/proc/self/fd"))
        for i in range(1500):
            client = socket.create_connection(("127.0.0.1", port))
            if i % 2:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                client.sendall(b"x")
            client.close()
            if i % 50 == 0:
                _run_for(loop, 0.001)
        _run_until(loop, lambda: len(made) == 1500)
        assert all(type(t).__name__ == "UringTransport" for t in made)
        del made[:]
        _run_until(loop, lambda: loop._uring.live == 0)
        gc.collect()
        _run_until(loop, lambda: len(os.listdir("/proc/self/fd")) <= before)
        server.close()
    finally:
        loop.close()


def test_a_burst_larger_than_the_buffer_ring_runs_it_dry_and_loses_nothing():
    # 300 connections with 40 KiB each queued before the loop reads: 12 MB
    # against a ring of 128 x 64 KiB, of which the kernel holds only what the
    # last turns used. Receives run out of buffers (ENOBUFS), are re-armed,
    # and the kernel is given more: every connection gets its bytes, in order.
    got = {}

    class Keep(Protocol):
        def connection_made(self, transport):
            self.data = bytearray()
            got[transport] = self.data

        def data_received(self, data):
            self.data += data

    n, size = 300, 40 * 1024
    loop = Loop(backend="io_uring")
    clients = []
    try:
        server = loop.create_server(Keep, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        while len(clients) < n:     # in steps the listen backlog holds
            for _ in range(min(50, n - len(clients))):
                clients.append(socket.create_connection(("127.0.0.1", port)))
            _run_until(loop, lambda: len(got) == len(clients))
        want = [struct.pack("!I", i) + bytes((j * 7 + i) & 0xFF for j in range(size - 4))
                for i in range(n)]
        for client, data in zip(clients, want):
            client.sendall(data)
        _run_until(loop, lambda: sum(len(d) for d in got.values()) >= n * size, timeout=60)
        received = sorted(bytes(d) for d in got.values())
        assert received == sorted(want)
        server.close()
    finally:
        for client in clients:
            client.close()
        loop.close()


def test_a_write_from_another_thread_goes_out_while_the_loop_waits():
    # Loop's face of the same guarantee (see test_eventloop_uring): the
    # thread's bytes reach the peer before anything else wakes the loop.
    loop = Loop(backend="io_uring")
    try:
        transport, proto, peer = _server_and_peer(loop)
        peer.settimeout(20)
        size = 4 << 20
        done, thread = write_from_another_thread(loop, transport, peer, size)
        assert loop.run_until_complete(done) == size
        thread.join()
        transport.close()
        loop.run_until_complete(proto.lost)
        peer.close()
    finally:
        loop.close()


@pytest.mark.forks
def test_a_forked_childs_readiness_poller_is_dead_and_leaves_the_parents_polls_armed():
    # The bare poller (fastio.selectors' UringSelector): in the child a wait
    # or a registration is refused, unregister() and close() submit nothing,
    # so the parent's armed poll still fires.
    poller = core.UringPoller()
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        poller.register(a.fileno(), select.POLLIN)
        assert poller.poll(0) == []  # armed, nothing to read
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                refused = 0
                for attempt in (lambda: poller.poll(0), lambda: poller.register(c.fileno(), select.POLLIN)):
                    try:
                        attempt()
                    except OSError as exc:
                        refused += exc.errno == errno.EBADF
                poller.unregister(a.fileno())
                poller.close()
                code = 0 if refused == 2 else 2
            finally:
                os._exit(code)
        assert child_exit_code(pid) == 0
        b.send(b"x")
        assert poller.poll(20) == [(a.fileno(), select.POLLIN)]
    finally:
        poller.close()
        for s in (a, b, c, d):
            s.close()
