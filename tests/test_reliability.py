"""Reliability: fd exhaustion, 10k connections, timer signals and cross-thread
close/stop.

The loop tests run on fastio's Cython loop, its Python twin and asyncio (the
reference); the selector tests on fastio's selectors and the stdlib's. A test
failing only on a fastio param is a fastio bug; on a reference param too, a
wrong test.

Documented outcomes these tests hold fastio to:

* accept() failing with EMFILE (or ENFILE, ENOBUFS, ENOMEM): the server
  reports it to the loop's exception handler, stops watching the listening
  socket for a second, then retries (fastio/_streams.py: Server._accept).
* A selector closed from another thread while select() blocks: the blocked
  call returns normally when data or its timeout wakes it (no keys: the map
  is gone); afterwards get_key() raises RuntimeError and, for epoll, whose
  close() closes the poller, select() raises ValueError. A core poller closed
  meanwhile returns the events it waited for, then raises ValueError on every
  call (src/poller.pxi).
* Loop.stop() and call_soon_threadsafe() work from any thread; Waker.wake()
  after close() does nothing.
"""

import os
import random
import selectors
import signal
import socket
import threading
import time

import pytest

from echo_support import ServerProcess, parse_summary, socket_inodes, wait_until
import implementations
from fastio._impl import compiled
from loop_fixtures import LOOP_KINDS, LoopAdapter
from reliability_support import (EchoSwarm, EmfileServer, block_timer_signal_in_this_thread,
                                 first_difference, recv_exactly, round_trip, timer_signal,
                                 wait_until_blocked)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")

MiB = 1024 * 1024


# --- exhaustion ----------------------------------------------------------------


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_accept_emfile_keeps_serving_clients_without_spinning_then_serves_the_backlog(kind):
    if kind == "fastio-c":
        implementations.pair("c", "loop")  # skip (or fail) here, not in the child
    connected, pending_count = 3, 4
    rng = random.Random(3)
    with EmfileServer(kind, free_slots=connected) as srv:
        clients = [socket.create_connection(srv.address, timeout=5) for _ in range(connected)]
        for sock in clients:
            payload = rng.randbytes(64 * 1024)
            assert round_trip(sock, payload) == payload
        assert wait_until(lambda: srv.stats()[0] == connected)

        # Every free fd is taken: these complete in the kernel's backlog only,
        # and each accept() the server tries fails with EMFILE.
        pending = [socket.create_connection(srv.address, timeout=5) for _ in range(pending_count)]
        pending_payloads = [rng.randbytes(4096) for _ in pending]
        for sock, payload in zip(pending, pending_payloads):
            sock.sendall(payload)
        assert wait_until(lambda: srv.stats()[1] >= 1), "accept() never failed with EMFILE"

        # The connected clients are still served, byte for byte, meanwhile.
        for sock in clients:
            payload = rng.randbytes(256 * 1024)
            got = round_trip(sock, payload)
            assert got == payload, first_difference(got, payload)
        # No spinning: over a quiet window of at least 1 s that holds an
        # accept() retry (conditions, not a deadline: a loaded machine only
        # makes the window longer), the server uses little CPU.
        _, emfile0, _, cpu0 = srv.stats()
        t0 = time.monotonic()
        assert wait_until(lambda: srv.stats()[1] > emfile0, timeout=60, interval=0.1), \
            "accept() was never retried"
        while time.monotonic() - t0 < 1.0:
            time.sleep(0.1)
        accepted, emfile1, _, cpu1 = srv.stats()
        cpu_share = (cpu1 - cpu0) / (time.monotonic() - t0)
        assert cpu_share < 0.3, "the server used %.0f%% of a core while accept() failed" % (100 * cpu_share)
        # (No bound on the EMFILE reports themselves: asyncio reports one per
        # accept() of its batch, `backlog` per retry.)
        assert accepted == connected
        for sock in pending:
            sock.settimeout(0)
            with pytest.raises(BlockingIOError):
                sock.recv(1)

        assert srv.command("free").startswith("freed ")
        for sock, payload in zip(pending, pending_payloads):
            got = recv_exactly(sock, len(payload), timeout=60)
            assert got == payload, first_difference(got, payload)
        for sock in clients:
            payload = rng.randbytes(4096)
            assert round_trip(sock, payload) == payload
        accepted, _, other, _ = srv.stats()
        for sock in clients + pending:
            sock.close()
        returncode, stderr = srv.quit()
    assert (accepted, other) == (connected + pending_count, 0), stderr
    assert returncode == 0, stderr


def test_ten_thousand_concurrent_echo_connections_every_byte_verified(fd_limit):
    n = 10_000
    if fd_limit < n + 512:
        pytest.skip("RLIMIT_NOFILE's hard limit (%d) is below %d" % (fd_limit, n + 512))
    started = time.monotonic()
    # The server inherits the raised soft limit.
    with ServerProcess() as srv:
        swarm = EchoSwarm(srv.address, n, deadline=started + 30)
        try:
            swarm.open_all()
            # All n are open at once: the server holds n sockets + the listener.
            server_sockets = len(socket_inodes(srv.pid))
            swarm.exchange()
            swarm.half_close_all()
        finally:
            swarm.close()
        returncode, lines, stderr = srv.stop()
    elapsed = time.monotonic() - started
    assert swarm.wrong == [], "%d connections got wrong bytes, e.g. #%d" % (len(swarm.wrong), swarm.wrong[0])
    assert server_sockets >= n + 1
    assert returncode == 0, stderr
    assert parse_summary(lines) == (n, swarm.total_bytes, swarm.total_bytes)
    assert elapsed < 30


# --- signals ---------------------------------------------------------------------


def test_select_under_a_1ms_timer_signal_reports_every_write(selector_cls, socketpair):
    writes = 250
    a, b = socketpair()
    sel = selector_cls()
    key = sel.register(a, selectors.EVENT_READ)
    consumed = threading.Event()
    consumed.set()
    writer_errors = []

    def writer():
        block_timer_signal_in_this_thread()
        rng = random.Random(5)
        try:
            for i in range(writes):
                if not consumed.wait(5):
                    return
                consumed.clear()
                time.sleep(rng.uniform(0, 0.003))  # the reader is blocked in select() by now
                b.send(bytes([i % 256]))
        except BaseException as exc:
            writer_errors.append(exc)

    reports, received, slow = 0, bytearray(), []
    thread = threading.Thread(target=writer, daemon=True)
    try:
        with timer_signal() as signals:
            thread.start()
            for i in range(writes):
                t0 = time.monotonic()
                ready = sel.select(2.0)
                if time.monotonic() - t0 > 1.0:
                    slow.append(i)
                if ready == [(key, selectors.EVENT_READ)]:
                    reports += 1
                received += a.recv(16)
                consumed.set()
    finally:
        consumed.set()
        thread.join(5)
        sel.close()
    assert writer_errors == []
    assert (reports, slow) == (writes, [])
    assert bytes(received) == bytes(i % 256 for i in range(writes))
    assert signals.calls >= 100, "only %d timer signals: the test did not exercise EINTR" % signals.calls


class _Echo:
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        pass


class _Collector:
    def __init__(self, loop, expect):
        self.expect = expect
        self.data = bytearray()
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data
        if len(self.data) >= self.expect and not self.done.done():
            self.done.set_result(bytes(self.data))

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(AssertionError("connection lost (%r) after %d bytes" % (exc, len(self.data))))


def test_loop_echo_of_4_mib_under_a_1ms_timer_signal_is_byte_exact(any_loop):
    loop = any_loop.loop
    rng = random.Random(11)
    payload = rng.randbytes(4 * MiB)
    server = any_loop.create_server(_Echo)
    port = server.sockets[0].getsockname()[1]
    transport, proto = any_loop.connect(lambda: _Collector(loop, len(payload)), "127.0.0.1", port)
    cuts = sorted(rng.sample(range(1, len(payload)), 127))
    chunks = [payload[i:j] for i, j in zip([0] + cuts, cuts + [len(payload)])]

    def send_next():
        transport.write(chunks.pop(0))
        if chunks:  # spaced out, so the loop also sleeps between writes
            loop.call_later(rng.uniform(0, 0.002), send_next)

    try:
        with timer_signal() as signals:
            loop.call_soon(send_next)
            got = any_loop.run_until(proto.done, timeout=30)
    finally:
        transport.abort()
        server.close()
    assert got == payload, first_difference(got, payload)
    assert signals.calls >= 20, "only %d timer signals: the test did not exercise EINTR" % signals.calls


def test_call_soon_threadsafe_under_a_1ms_timer_signal_wakes_the_loop_every_time(any_loop):
    loop = any_loop.loop
    calls = 200
    ran, latencies, lost = [], [], []
    done = threading.Event()

    def on_loop(i):
        ran.append(i)
        done.set()

    def producer():
        block_timer_signal_in_this_thread()
        rng = random.Random(2)
        try:
            for i in range(calls):
                done.clear()
                time.sleep(rng.uniform(0, 0.002))  # let the loop go back to sleep
                t0 = time.monotonic()
                loop.call_soon_threadsafe(on_loop, i)
                if not done.wait(20.0):
                    lost.append(i)
                    return
                latencies.append(time.monotonic() - t0)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    guard = loop.call_later(30, loop.stop)
    thread = threading.Thread(target=producer, daemon=True)
    with timer_signal() as signals:
        thread.start()
        loop.run_forever()
    thread.join(5)
    guard.cancel()
    assert lost == []
    assert ran == list(range(calls))
    assert max(latencies) < 5.0  # a lost wake-up waits for the 30 s guard
    assert signals.calls >= 50


def test_loop_signal_handler_runs_for_a_1ms_timer_signal_while_the_loop_sleeps(any_loop):
    loop = any_loop.loop
    runs = []

    def on_signal():
        runs.append(loop.time())
        if len(runs) == 100:
            loop.stop()

    with timer_signal():
        # The loop's own handler replaces the no-op one until removed.
        loop.add_signal_handler(signal.SIGALRM, on_signal)
        try:
            # Until 100 handler runs (a condition: a loaded machine delivers
            # fewer signals per second), or the guard.
            guard = loop.call_later(60, loop.stop)
            started = loop.time()
            loop.run_forever()  # nothing else to do: each signal must wake it
            guard.cancel()
        finally:
            # Disarm first: remove_signal_handler() restores SIG_DFL, which
            # would kill the process on the next tick.
            signal.setitimer(signal.ITIMER_REAL, 0)
            loop.remove_signal_handler(signal.SIGALRM)
    assert len(runs) >= 100, "%d handler runs in 60 s of 1 ms signals" % len(runs)
    gaps = [b - a for a, b in zip([started] + runs, runs)]
    # A loop that sleeps through pending signals sleeps until the guard;
    # a busy machine only stalls it for a scheduler slice or so.
    assert max(gaps) < 5.0, "the loop slept %.3f s through pending signals" % max(gaps)


# --- closing and stopping from another thread --------------------------------------


def test_selector_closed_from_another_thread_while_select_blocks(selector_cls, socketpair):
    a, b = socketpair()
    sel = selector_cls()
    sel.register(a, selectors.EVENT_READ)
    main = threading.get_native_id()
    log = []

    def closer():
        try:
            wait_until_blocked(main)
            sel.close()
            log.append("closed")
            time.sleep(0.05)
            b.send(b"x")  # wakes the blocked select()
        except BaseException as exc:
            log.append(exc)

    thread = threading.Thread(target=closer, daemon=True)
    thread.start()
    t0 = time.monotonic()
    ready = sel.select(5)
    elapsed = time.monotonic() - t0
    thread.join(5)
    assert log == ["closed"]
    assert ready == []  # woken, and no keys left to report
    assert elapsed < 4.0, "select() slept %.1f s: the data did not wake it" % elapsed
    with pytest.raises(RuntimeError):
        sel.get_key(a)
    if selector_cls.__name__ in ("EpollSelector", "UringSelector"):  # a kernel object, as epoll's
        with pytest.raises(ValueError):
            sel.select(0)
    else:
        assert sel.select(0) == []
    if selector_cls.__name__ == "UringSelector":
        # The kernel tears a closed ring down in a worker that then queues
        # task work on this thread: its next blocking wait returns EINTR
        # once. Let a sleep take it, not the next test's select().
        time.sleep(0.2)


_core = compiled("core")


@pytest.mark.skipif(_core is None, reason="needs the compiled core")
@pytest.mark.parametrize("name", ["EpollPoller", "PollPoller", "SelectPoller", "UringPoller"])
def test_core_poller_closed_from_another_thread_returns_then_raises_value_error(name, socketpair):
    poller_cls = getattr(_core, name, None)
    if poller_cls is None:
        pytest.skip("no %s here" % name)
    a, b = socketpair()
    try:
        poller = poller_cls()
    except OSError as exc:  # io_uring refused here
        pytest.skip("%s: %s" % (name, exc))
    poller.register(a, _core.POLLIN)
    main = threading.get_native_id()
    log = []

    def closer():
        try:
            wait_until_blocked(main)
            poller.close()
            log.append("closed")
            time.sleep(0.05)
            b.send(b"x")
        except BaseException as exc:
            log.append(exc)

    thread = threading.Thread(target=closer, daemon=True)
    thread.start()
    t0 = time.monotonic()
    events = poller.poll(5)
    elapsed = time.monotonic() - t0
    thread.join(5)
    assert log == ["closed"]
    assert events == [(a.fileno(), _core.POLLIN)]
    assert elapsed < 4.0
    for call in (lambda: poller.poll(0), lambda: poller.register(b, _core.POLLIN),
                 lambda: poller.modify(a, _core.POLLOUT), lambda: poller.unregister(a)):
        with pytest.raises(ValueError):
            call()


def _stop_from_thread(loop, stop):
    """Run `loop` with a 30 s timer pending; `stop()` from another thread once
    it sleeps. Return (seconds from stop() to run_forever's return, timer fired)."""
    fired = []
    loop.call_later(30, fired.append, "timer")
    guard = loop.call_later(10, fired.append, "guard")
    guard_stop = loop.call_later(10, loop.stop)
    main = threading.get_native_id()
    stamps = {}

    def stopper():
        wait_until_blocked(main)
        stamps["stop"] = time.monotonic()
        stop()

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    loop.run_forever()
    returned = time.monotonic()
    thread.join(5)
    guard.cancel()
    guard_stop.cancel()
    assert "stop" in stamps, "the stopper thread never ran"
    return returned - stamps["stop"], fired


def test_call_soon_threadsafe_stop_ends_a_long_timer_wait_promptly(any_loop):
    loop = any_loop.loop
    delay, fired = _stop_from_thread(loop, lambda: loop.call_soon_threadsafe(loop.stop))
    assert fired == []
    assert delay < 1.0


def test_stop_from_another_thread_ends_a_long_timer_wait_promptly(fastio_loop):
    # fastio documents stop() as callable from any thread (asyncio does not).
    loop = fastio_loop.loop
    delay, fired = _stop_from_thread(loop, loop.stop)
    assert fired == []
    assert delay < 1.0


def test_waker_wake_from_8_threads_while_the_loop_closes(fastio_loop):
    loop = fastio_loop.loop
    waker = loop._waker_ref
    waker_fd = waker.fileno()
    stop = threading.Event()
    after_close = [0] * 8
    errors = []

    def hammer(i):
        try:
            while not stop.is_set():
                closed = loop.is_closed()
                waker.wake()
                if closed:
                    after_close[i] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    pipes = []
    try:
        loop.call_later(0.1, loop.stop)
        loop.run_forever()  # drains the storm meanwhile
        loop.close()
        # The waker's fd number now names a new pipe: a stray wake() would
        # write into it (or fail with EBADF on its read end).
        while len(pipes) < 64 and not any(waker_fd in p for p in pipes):
            pipes.append(os.pipe())
        wait_until(lambda: min(after_close) >= 100, timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    try:
        stray = b""
        for r, _ in pipes:
            os.set_blocking(r, False)
            try:
                stray += os.read(r, 4096)
            except BlockingIOError:
                pass
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
    assert errors == []
    assert min(after_close) >= 100, "threads stalled after close: %r" % (after_close,)
    assert waker.closed
    assert any(waker_fd in p for p in pipes)
    assert stray == b""


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_call_soon_threadsafe_from_a_thread_after_close_raises_runtime_error(kind):
    adapter = LoopAdapter(kind)
    adapter.close()
    outcome = []

    def late_caller():
        try:
            outcome.append(adapter.loop.call_soon_threadsafe(outcome.append, "ran"))
        except RuntimeError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=late_caller)
    thread.start()
    thread.join(5)
    assert outcome == ["Event loop is closed"]
