"""Callbacks, timers, thread-safe calls, readers/writers, errors, signals.

Each test runs on fastio (Cython and Python cores) and on asyncio as the
reference, through the `any_loop` fixture (see conftest.py).
"""

import logging
import os
import random
import signal
import socket
import threading
import time

import pytest


def test_call_soon_runs_in_fifo_order_with_args(any_loop):
    loop = any_loop.loop
    out = []
    for i in range(100):
        loop.call_soon(out.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == list(range(100))


def test_callbacks_scheduled_by_a_callback_run_next_iteration(any_loop):
    loop = any_loop.loop
    out = []

    def first():
        out.append("first")
        loop.call_soon(out.append, "nested")

    loop.call_soon(first)
    loop.call_soon(out.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["first", "second", "nested"]


def test_timers_fire_in_deadline_order_never_early(any_loop):
    loop = any_loop.loop
    rng = random.Random(7)
    base = loop.time()
    whens = [base + rng.uniform(0, 0.05) for _ in range(200)]
    fired = []
    for i, when in enumerate(whens):
        loop.call_at(when, lambda i=i: fired.append((i, time.monotonic())))
    loop.call_later(0.08, loop.stop)
    loop.run_forever()
    assert [i for i, _ in fired] == sorted(range(200), key=whens.__getitem__)
    assert all(at >= whens[i] for i, at in fired)


@pytest.mark.parametrize("cancel", ["none", "most"])
def test_equal_deadlines_fire_in_the_order_they_were_scheduled(fastio_loop, cancel):
    # Loop's contract (asyncio leaves equal deadlines in heap order): ties
    # break by scheduling order, also after cancelling most timers makes
    # the loop rebuild its heap.
    loop = fastio_loop.loop
    rng = random.Random(11)
    base = loop.time()
    whens = [base + rng.randrange(5) * 0.002 for _ in range(300)]
    fired = []
    handles = [loop.call_at(when, fired.append, i) for i, when in enumerate(whens)]
    kept = list(range(300))
    if cancel == "most":
        kept = kept[::3]
        for i, h in enumerate(handles):
            if i % 3:
                h.cancel()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert fired == sorted(kept, key=lambda i: (whens[i], i))


def test_call_at_never_fires_before_its_deadline(any_loop):
    loop = any_loop.loop
    seen = []
    for k in range(20):
        when = loop.time() + 0.001 * k + 0.0003
        loop.call_at(when, lambda w=when: seen.append((w, time.monotonic())))
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert len(seen) == 20
    assert all(now >= when for when, now in seen)
    assert [w for w, _ in seen] == sorted(w for w, _ in seen)


def test_cancelled_timers_do_not_run(any_loop):
    loop = any_loop.loop
    out = []
    handles = [loop.call_later(0.001 * (i % 10), out.append, i) for i in range(1000)]
    for h in handles[::2]:
        h.cancel()
    assert handles[0].cancelled() and not handles[1].cancelled()
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert sorted(out) == list(range(1, 1000, 2))


def test_cancelled_call_soon_does_not_run(any_loop):
    loop = any_loop.loop
    out = []
    loop.call_soon(out.append, 1).cancel()
    loop.call_soon(out.append, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [2]


def test_time_is_monotonic_clock(any_loop):
    before = time.monotonic()
    t = any_loop.loop.time()
    assert before <= t <= time.monotonic()


def test_stop_before_run_forever_runs_one_iteration(any_loop):
    loop = any_loop.loop
    out = []
    loop.call_soon(out.append, 1)
    loop.stop()
    t0 = time.monotonic()
    loop.run_forever()
    assert out == [1]
    assert time.monotonic() - t0 < 5  # a loop that did not stop would block forever


def test_call_soon_threadsafe_from_8_threads_loses_none(any_loop):
    loop = any_loop.loop
    threads_n, per_thread = 8, 10_000
    total = threads_n * per_thread
    count = [0]
    done = loop.create_future()

    def bump():
        count[0] += 1
        if count[0] == total:
            done.set_result(None)

    def worker():
        for _ in range(per_thread):
            loop.call_soon_threadsafe(bump)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    loop.call_soon(lambda: [t.start() for t in threads])
    any_loop.run_until(done, timeout=60)
    for t in threads:
        t.join()
    assert count[0] == total


def test_call_soon_threadsafe_wakes_a_sleeping_loop(any_loop):
    loop = any_loop.loop
    woke = []

    def later():
        time.sleep(0.05)
        loop.call_soon_threadsafe(lambda: (woke.append(loop.time()), loop.stop()))

    failsafe = loop.call_later(5, loop.stop)
    t = threading.Thread(target=later)
    start = loop.time()
    t.start()
    loop.run_forever()
    t.join()
    failsafe.cancel()
    assert len(woke) == 1 and woke[0] - start < 2


def test_exception_in_callback_goes_to_handler_and_loop_continues(any_loop):
    loop = any_loop.loop
    contexts = []
    out = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def boom():
        raise ZeroDivisionError("boom")

    loop.call_soon(boom)
    loop.call_later(0.001, boom)
    loop.call_soon(out.append, "after")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["after"]
    assert [type(c["exception"]) for c in contexts] == [ZeroDivisionError] * 2
    assert all("message" in c for c in contexts)


def test_default_exception_handler_logs_traceback(any_loop, caplog):
    loop = any_loop.loop

    def boom():
        raise KeyError("logged")

    loop.call_soon(boom)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR):
        loop.run_forever()
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1
    assert records[0].exc_info[0] is KeyError
    assert records[0].levelno == logging.ERROR


def test_reader_called_on_data_and_removed(any_loop):
    loop = any_loop.loop
    a, b = socket.socketpair()
    a.setblocking(False)
    got = []

    def on_read():
        got.append(a.recv(100))
        loop.stop()

    loop.add_reader(a.fileno(), on_read)
    loop.call_soon(b.send, b"ping")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [b"ping"]
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False
    a.close()
    b.close()


def test_writer_called_when_writable_and_removed(any_loop):
    loop = any_loop.loop
    a, b = socket.socketpair()
    calls = []

    def on_write():
        calls.append(a.send(b"x"))
        loop.remove_writer(a.fileno())
        loop.call_soon(loop.stop)

    loop.add_writer(a, on_write)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert calls == [1]
    assert b.recv(10) == b"x"
    assert loop.remove_writer(a.fileno()) is False
    a.close()
    b.close()


def test_close_and_state(any_loop):
    loop = any_loop.loop
    seen = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [True]
    assert not loop.is_running() and not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    with pytest.raises(RuntimeError):
        loop.run_forever()


def test_thread_id_names_the_running_thread(fastio_loop):
    loop = fastio_loop.loop
    seen = []
    thread = threading.Thread(target=loop.run_forever)
    loop.call_soon(lambda: seen.append(loop.thread_id))
    loop.call_soon(loop.stop)
    assert loop.thread_id is None
    thread.start()
    thread.join(10)
    assert seen == [thread.ident]
    assert loop.thread_id is None
    with pytest.raises(AttributeError):
        loop.thread_id = 1


def test_transport_class_is_what_connections_get(fastio_loop):
    loop = fastio_loop.loop
    got = []
    server = fastio_loop.create_server(lambda: _Recorder(got))
    port = server.sockets[0].getsockname()[1]
    with socket.create_connection(("127.0.0.1", port)):
        fastio_loop.run_until(_until(loop, lambda: got))
    assert type(got[0]) is loop.transport_class
    server.close()


class _Recorder:
    def __init__(self, got):
        self.got = got

    def connection_made(self, transport):
        self.got.append(transport)
        transport.close()

    def connection_lost(self, exc):
        pass


def _until(loop, condition):
    """Return a future done once `condition()` is true (checked every 10 ms)."""
    fut = loop.create_future()

    def check():
        if condition():
            fut.set_result(None)
        else:
            loop.call_later(0.01, check)
    loop.call_soon(check)
    return fut


def test_signal_handler_runs_inside_the_loop(any_loop):
    loop = any_loop.loop
    got = []

    def on_signal(tag):
        got.append((tag, loop.is_running(), threading.get_ident()))
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, on_signal, "usr1")
    try:
        loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
        failsafe = loop.call_later(5, loop.stop)
        loop.run_forever()
        failsafe.cancel()
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert got == [("usr1", True, threading.get_ident())]
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_handler_refuses_sigkill(any_loop):
    with pytest.raises(RuntimeError):
        any_loop.loop.add_signal_handler(signal.SIGKILL, lambda: None)


def test_keyboard_interrupt_leaves_the_loop_and_keeps_the_rest(any_loop):
    loop = any_loop.loop
    out = []

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(out.append, 1)
    loop.call_soon(interrupt)
    loop.call_soon(out.append, 2)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert out == [1]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [1, 2]


def test_reader_removed_by_another_callback_of_the_batch_does_not_run(any_loop):
    loop = any_loop.loop
    pairs = [socket.socketpair() for _ in range(2)]
    ran = []

    def on_read(me, other):
        ran.append(me)
        loop.remove_reader(pairs[me][0].fileno())
        loop.remove_reader(pairs[other][0].fileno())

    for i, (a, b) in enumerate(pairs):
        b.send(b"x")  # both readable before the loop polls
        loop.add_reader(a.fileno(), on_read, i, 1 - i)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert len(ran) == 1
    for a, b in pairs:
        a.close()
        b.close()


def test_callback_runs_in_the_given_context(any_loop):
    import contextvars

    loop = any_loop.loop
    var = contextvars.ContextVar("var", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    seen = []
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_later(0.001, lambda: seen.append(var.get()), context=ctx)
    loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert seen == ["inner", "inner", "inner"]
    assert var.get() == "outer"
