"""Handles, timers, the ready queue and context semantics of fastio.EventLoop,
beside asyncio and uvloop."""

import asyncio
import contextvars
import logging
import socket
import sys
import threading
import time

import pytest

from eventloop_fixtures import aio_kind, aio_loop, run, selector_loop  # noqa: F401 (fixtures)

var = contextvars.ContextVar("var", default="unset")


def test_call_soon_runs_in_fifo_order_with_args(aio_loop):
    seen = []
    for i in range(5):
        aio_loop.call_soon(seen.append, i)
    aio_loop.call_soon(aio_loop.stop)
    aio_loop.run_forever()
    assert seen == [0, 1, 2, 3, 4]


def test_callbacks_scheduled_by_callbacks_run_next_iteration(selector_loop):
    # asyncio's iteration boundary (uvloop drains differently).
    loop = selector_loop
    seen = []

    def first():
        seen.append("first")
        loop.call_soon(seen.append, "nested")

    loop.call_soon(first)
    loop.call_soon(seen.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # stop() ends the iteration it is in; the nested callback waits.
    assert seen == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["first", "second", "nested"]


def test_handle_cancel_and_cancelled(aio_loop):
    seen = []
    handle = aio_loop.call_soon(seen.append, "no")
    assert not handle.cancelled()
    handle.cancel()
    handle.cancel()
    assert handle.cancelled()
    aio_loop.call_soon(aio_loop.stop)
    aio_loop.run_forever()
    assert seen == []


def test_handle_get_context_and_repr(aio_loop, aio_kind):
    ctx = contextvars.copy_context()
    handle = aio_loop.call_soon(print, context=ctx)
    timer = aio_loop.call_later(10, print)
    # Handle.get_context() is 3.12+; uvloop's Handle has none.
    if sys.version_info >= (3, 12) and aio_kind != "uvloop":
        assert handle.get_context() is ctx
        assert isinstance(timer.get_context(), contextvars.Context)
    assert "print" in repr(handle)
    handle.cancel()
    timer.cancel()
    assert "cancelled" in repr(handle)


def test_timer_when_and_order(aio_loop, aio_kind):
    seen = []
    now = aio_loop.time()
    t1 = aio_loop.call_at(now + 0.05, seen.append, "c")
    t0 = aio_loop.call_later(0.01, seen.append, "a")
    aio_loop.call_at(now + 0.03, seen.append, "b")
    aio_loop.call_later(0.1, aio_loop.stop)
    after = aio_loop.time()
    if aio_kind == "uvloop":
        # uvloop keeps a deadline as a delay from its millisecond clock,
        # which may have moved on between time() and call_at() (a loaded machine).
        assert now + 0.05 - 1e-3 <= t1.when() <= after + 0.05 + 1e-3
    else:
        assert t1.when() == now + 0.05
    assert now + 0.01 - 1e-3 <= t0.when() <= after + 0.01 + 1e-3
    aio_loop.run_forever()
    assert seen == ["a", "b", "c"]


def test_timer_never_fires_early(aio_loop):
    fired = []
    start = time.monotonic()
    aio_loop.call_later(0.05, lambda: (fired.append(time.monotonic() - start), aio_loop.stop()))
    aio_loop.run_forever()
    # The clock's resolution is the only slack asyncio allows.
    assert fired[0] >= 0.05 - aio_loop._clock_resolution - 1e-3 if hasattr(
        aio_loop, "_clock_resolution") else fired[0] >= 0.049


def test_cancelled_timer_does_not_run(aio_loop):
    seen = []
    t = aio_loop.call_later(0.01, seen.append, "no")
    t.cancel()
    assert t.cancelled()
    aio_loop.call_later(0.05, aio_loop.stop)
    aio_loop.run_forever()
    assert seen == []


def test_timer_heap_drops_cancelled_timers(selector_loop):
    timers = [selector_loop.call_later(3600 + i, print) for i in range(1000)]
    for t in timers[:900]:
        t.cancel()
    selector_loop.call_soon(selector_loop.stop)
    selector_loop.run_forever()
    # asyncio's rule: more than half cancelled (of > 100) rebuilds the heap.
    assert len(selector_loop._scheduled) == 100
    assert selector_loop._timer_cancelled_count == 0
    for t in timers[900:]:
        t.cancel()


def test_call_soon_copies_current_context(aio_loop):
    seen = []

    def set_and_schedule():
        var.set("outer")
        aio_loop.call_soon(lambda: seen.append(var.get()))
        var.set("changed-after")

    ctx = contextvars.copy_context()
    ctx.run(set_and_schedule)
    aio_loop.call_soon(lambda: seen.append(var.get()))
    aio_loop.call_soon(aio_loop.stop)
    aio_loop.run_forever()
    # The copy is taken at call_soon time; the loop's own context is untouched.
    assert seen == ["outer", "unset"]


def test_callback_runs_in_given_context_and_changes_stay_there(aio_loop):
    ctx = contextvars.copy_context()

    def timer():
        var.set("timer")
        # Stop after the timer ran, not at a second deadline a loaded
        # machine may reach first.
        aio_loop.call_soon(aio_loop.stop)

    def inside():
        var.set("inside")
        # Scheduled from here: uvloop runs a due timer before the ready
        # queue, so one scheduled beside this callback may run first.
        aio_loop.call_later(0.001, timer, context=ctx)

    aio_loop.call_soon(inside, context=ctx)
    aio_loop.run_forever()
    assert ctx[var] == "timer"
    assert var.get() == "unset"


def test_task_context_isolated(aio_loop):
    async def child(value):
        var.set(value)
        await asyncio.sleep(0)
        return var.get()

    async def main():
        var.set("parent")
        got = await asyncio.gather(child("a"), child("b"))
        return got, var.get()

    assert run(aio_loop, main()) == (["a", "b"], "parent")


def test_call_soon_threadsafe_wakes_the_loop(aio_loop):
    seen = []

    def worker():
        time.sleep(0.05)
        aio_loop.call_soon_threadsafe(seen.append, threading.current_thread().name)
        aio_loop.call_soon_threadsafe(aio_loop.stop)

    t = threading.Thread(target=worker, name="w")
    t.start()
    aio_loop.run_forever()
    t.join()
    assert seen == ["w"]


def test_closed_loop_rejects_callbacks(aio_loop):
    aio_loop.close()
    with pytest.raises(RuntimeError):
        aio_loop.call_soon(print)
    with pytest.raises(RuntimeError):
        aio_loop.call_later(1, print)


def test_exception_in_callback_goes_to_handler(aio_loop):
    handled = []
    aio_loop.set_exception_handler(lambda loop, ctx: handled.append(ctx))

    def boom():
        raise KeyError("k")

    h = aio_loop.call_soon(boom)
    aio_loop.call_soon(aio_loop.stop)
    aio_loop.run_forever()
    assert len(handled) == 1
    assert isinstance(handled[0]["exception"], KeyError)
    assert handled[0]["handle"] is h
    assert "Exception in callback" in handled[0]["message"]


def test_keyboard_interrupt_leaves_run_forever_and_rest_runs_later(aio_loop):
    seen = []

    def interrupt():
        raise KeyboardInterrupt

    aio_loop.call_soon(interrupt)
    aio_loop.call_soon(seen.append, "after")
    with pytest.raises(KeyboardInterrupt):
        aio_loop.run_forever()
    aio_loop.call_soon(aio_loop.stop)
    aio_loop.run_forever()
    assert seen == ["after"]


def test_add_reader_and_writer(aio_loop, socketpair):
    a, b = socketpair()
    a.setblocking(False)
    b.setblocking(False)
    got = []

    def on_readable():
        got.append(b.recv(100))
        aio_loop.remove_reader(b)
        aio_loop.stop()

    def on_writable():
        a.send(b"ready")
        assert aio_loop.remove_writer(a.fileno())

    aio_loop.add_reader(b, on_readable)
    aio_loop.add_writer(a, on_writable)
    aio_loop.run_forever()
    assert got == [b"ready"]
    assert not aio_loop.remove_reader(b)
    assert not aio_loop.remove_writer(a)


def test_a_reader_on_a_regular_file_is_refused(aio_loop, tmp_path):
    # As asyncio's loop on epoll refuses it. On io_uring, where a poll of a
    # regular file completes at once for ever, taking it would run the
    # callback in every iteration: a spinning loop.
    seen = []
    with open(tmp_path / "data", "wb+") as f:
        f.write(b"x" * 100)
        f.seek(0)
        with pytest.raises(PermissionError):
            aio_loop.add_reader(f, seen.append, "read")
        with pytest.raises(PermissionError):
            aio_loop.add_writer(f.fileno(), seen.append, "write")
        aio_loop.call_later(0.05, aio_loop.stop)
        aio_loop.run_forever()
        assert seen == []
        assert not aio_loop.remove_reader(f)
        assert not aio_loop.remove_writer(f)


def test_add_reader_replaces_callback(aio_loop, socketpair):
    a, b = socketpair()
    seen = []
    aio_loop.add_reader(b, seen.append, "old")
    aio_loop.add_reader(b, lambda: (seen.append("new"), aio_loop.remove_reader(b), aio_loop.stop()))
    a.send(b"x")
    aio_loop.run_forever()
    assert seen == ["new"]


def test_debug_mode_warns_about_slow_callbacks(aio_loop, caplog):
    aio_loop.set_debug(True)
    aio_loop.slow_callback_duration = 0.01
    aio_loop.call_soon(time.sleep, 0.05)
    aio_loop.call_soon(aio_loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        aio_loop.run_forever()
    aio_loop.set_debug(False)
    assert any("Executing" in r.getMessage() and "took" in r.getMessage() for r in caplog.records)


def test_run_until_complete_result_and_exception(aio_loop):
    async def ok():
        await asyncio.sleep(0.001)
        return 42

    async def bad():
        raise ValueError("v")

    assert aio_loop.run_until_complete(ok()) == 42
    with pytest.raises(ValueError):
        aio_loop.run_until_complete(bad())


def test_task_factory_and_exception_handler_api(aio_loop):
    made = []

    def factory(loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    aio_loop.set_task_factory(factory)
    assert aio_loop.get_task_factory() is factory

    async def main():
        return await asyncio.create_task(asyncio.sleep(0, "r"))

    assert run(aio_loop, main()) == "r"
    assert len(made) >= 2
    handler = lambda loop, ctx: None  # noqa: E731
    aio_loop.set_exception_handler(handler)
    assert aio_loop.get_exception_handler() is handler


def _failing_callback(arg):
    raise ValueError(arg)


def test_callback_error_context_matches_asyncio():
    import fastio

    contexts = {}
    for name, loop in (("fastio", fastio.new_event_loop()), ("asyncio", asyncio.SelectorEventLoop())):
        try:
            handled = []
            loop.set_exception_handler(lambda loop, ctx: handled.append(ctx))
            handle = loop.call_soon(_failing_callback, "x")
            timer = loop.call_later(0, _failing_callback, "y")
            loop.call_later(0.01, loop.stop)
            loop.run_forever()
            assert [c["handle"] for c in handled] == [handle, timer]
            contexts[name] = [(c["message"], sorted(c), repr(c["exception"])) for c in handled]
        finally:
            loop.close()
    assert contexts["fastio"] == contexts["asyncio"]


def test_handle_objects_are_asyncio_handles(selector_loop):
    handle = selector_loop.call_soon(_failing_callback, 1)
    timer = selector_loop.call_later(5, _failing_callback, 2)
    assert type(handle) is asyncio.Handle
    assert type(timer) is asyncio.TimerHandle
    # 3.13 shows the arguments in debug mode only.
    assert repr(handle).startswith("<Handle _failing_callback(")
    assert handle._args == (1,) and handle._loop is selector_loop and not handle._cancelled
    assert timer._scheduled and timer in selector_loop._scheduled
    handle.cancel()
    timer.cancel()
    assert timer.cancelled() and selector_loop._timer_cancelled_count == 1


def test_debug_mode_handles_carry_source_traceback(selector_loop):
    selector_loop.set_debug(True)
    handle = selector_loop.call_soon(print)
    timer = selector_loop.call_later(5, print)
    here = test_debug_mode_handles_carry_source_traceback.__code__.co_name
    # The last frame is the caller's, as asyncio trims its own.
    assert handle._source_traceback[-1].name == here
    assert timer._source_traceback[-1].name == here
    handle.cancel()
    timer.cancel()
    selector_loop.set_debug(False)


def test_call_at_and_call_later_reject_none(aio_loop):
    with pytest.raises((TypeError, AssertionError)):
        aio_loop.call_later(None, print)
    with pytest.raises((TypeError, AssertionError)):
        aio_loop.call_at(None, print)


def test_handles_release_callback_args_and_context(selector_loop):
    import gc

    def callback(*args):
        pass

    arg = object()
    ctx = contextvars.copy_context()

    def cycle():
        for _ in range(1000):
            selector_loop.call_soon(callback, arg, context=ctx)
            selector_loop.call_later(0, callback, arg, context=ctx)
            selector_loop.call_at(selector_loop.time() + 100, callback, arg, context=ctx).cancel()
        selector_loop.call_soon(selector_loop.stop)
        selector_loop.run_forever()
        # The cancelled far timers leave the heap on the next iteration.
        selector_loop.call_soon(selector_loop.stop)
        selector_loop.run_forever()
        gc.collect()

    cycle()
    before = (sys.getrefcount(callback), sys.getrefcount(arg), sys.getrefcount(ctx),
              sys.getrefcount(asyncio.Handle), sys.getrefcount(asyncio.TimerHandle))
    cycle()
    after = (sys.getrefcount(callback), sys.getrefcount(arg), sys.getrefcount(ctx),
             sys.getrefcount(asyncio.Handle), sys.getrefcount(asyncio.TimerHandle))
    assert after == before
    assert selector_loop._scheduled == []


def test_handle_reprs_and_error_messages_name_asyncio_methods(selector_loop):
    # Handle reprs, "Exception in callback ..." and debug mode's slow-callback
    # warning name a loop or transport method as asyncio does (uvloop has
    # its own names).
    loop = selector_loop
    handled = []
    loop.set_exception_handler(lambda lp, ctx: handled.append(ctx["message"]))

    async def main():
        a, b = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        # (a completion-based transport, on io_uring, has no reader)
        key = loop._selector.get_map().get(a.fileno())
        reprs = [repr(key.data[0]) if key else None, repr(loop.call_soon(loop.call_soon, print)),
                 transport.write.__qualname__]
        loop.call_soon(loop.call_later, "soon", print)
        await asyncio.sleep(0)
        transport.close()
        b.close()
        return reprs

    reprs = run(loop, main())
    # 3.13 shows a callback's arguments only in debug mode (they may hold
    # secrets).
    shows_args = sys.version_info < (3, 13)
    assert reprs == [
        None if getattr(loop, "_uring", None) else "<Handle _SelectorSocketTransport._read_ready()>",
        "<Handle BaseEventLoop.call_soon(%s)>" % ("<built-in function print>" if shows_args else ""),
        "_SelectorSocketTransport.write",
    ]
    assert handled == [
        "Exception in callback BaseEventLoop.call_later(%s)"
        % ("'soon', <built-in function print>" if shows_args else "")]


def test_a_run_handle_someone_keeps_is_never_reused(selector_loop):
    # A Handle that ran stays what it was for whoever holds it, however many
    # call_soon() follow (fastio reuses only the ones nobody holds).
    loop = selector_loop
    seen = []
    kept = loop.call_soon(seen.append, "kept")
    loop.call_soon(loop.stop)
    loop.run_forever()
    for i in range(600):
        assert loop.call_soon(seen.append, i) is not kept
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["kept"] + list(range(600))
    assert kept._callback == seen.append and kept._args == ("kept",)
    # (3.13's repr shows the arguments only in debug mode)
    assert "list.append(" in repr(kept)


def test_a_weakly_referenced_handle_is_never_reused(selector_loop):
    import weakref

    loop = selector_loop
    ref = weakref.ref(loop.call_soon(print, "x"))
    loop.call_soon(loop.stop)
    loop.run_forever()
    # The run loop let go of it: only the weak reference was left.
    assert ref() is None
    fresh = [loop.call_soon(len, ()) for _ in range(300)]
    assert all(type(h) is asyncio.Handle and not h.cancelled() for h in fresh)
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_callback_and_args_are_released_once_the_handle_ran(selector_loop):
    # As in asyncio, what a Handle holds dies as the iteration moves past it,
    # not when the Handle object is next reused or freed.
    import gc
    import weakref

    class Arg:
        pass

    loop = selector_loop
    arg = Arg()
    ref = weakref.ref(arg)
    loop.call_soon(lambda a: None, arg)
    del arg
    gc.disable()
    try:
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert ref() is None
    finally:
        gc.enable()


def test_no_empty_handle_is_visible_to_the_gc(selector_loop):
    import gc

    loop = selector_loop
    for _ in range(300):
        loop.call_soon(len, ())
    loop.call_soon(loop.stop)
    loop.run_forever()
    handles = [o for o in gc.get_objects() if type(o) is asyncio.Handle]
    # Every Handle the GC knows is a whole one (repr reads every slot).
    assert all(repr(h) for h in handles)


@pytest.mark.parametrize("patch", ["time.monotonic", "base_events.time"])
def test_loop_clock_follows_a_patched_monotonic(selector_loop, monkeypatch, patch):
    # asyncio's time() evaluates `time.monotonic()` in base_events on every
    # call: patching the function or the module it is looked up in moves
    # the clock, timers included.
    import types
    from asyncio import base_events
    loop = selector_loop
    now = [1000.0]
    if patch == "time.monotonic":
        monkeypatch.setattr(time, "monotonic", lambda: now[0])
    else:
        monkeypatch.setattr(base_events, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    assert loop.time() == 1000.0
    fired = []
    loop.call_at(1000.5, fired.append, "due")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert fired == []
    now[0] = 1001.0
    assert loop.time() == 1001.0
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert fired == ["due"]
    monkeypatch.undo()
    assert abs(loop.time() - time.monotonic()) < 60


def _spin(loop, n=3):
    # A few iterations: whatever the loop learns about its own methods and
    # its clock from one iteration to the next, it has learnt by now.
    for _ in range(n):
        loop.call_soon(loop.stop)
        loop.run_forever()


def test_clock_patched_after_iterations_moves_the_clock_at_once(selector_loop, monkeypatch):
    # From a callback, between two handles of one iteration: the next
    # iteration reads the patched clock, with and without a timer.
    loop = selector_loop
    _spin(loop)
    now = [5000.0]
    reads = []

    def fake():
        reads.append(now[0])
        return now[0]

    def patch():
        monkeypatch.setattr(time, "monotonic", fake)

    loop.call_soon(patch)
    loop.call_soon(loop.stop)
    loop.run_forever()
    del reads[:]
    _spin(loop)
    # asyncio reads its clock once an iteration even with no timer.
    assert len(reads) >= 3
    fired = []
    loop.call_at(5000.5, fired.append, "due")
    _spin(loop)
    assert fired == []
    now[0] = 5001.0
    _spin(loop)
    assert fired == ["due"]
    monkeypatch.undo()
    _spin(loop)
    assert abs(loop.time() - time.monotonic()) < 60


def test_time_and_process_events_replaced_after_iterations_are_used(selector_loop):
    loop = selector_loop
    _spin(loop)
    fired, calls = [], []
    now = loop.time()
    loop.call_at(now + 3600, fired.append, "timer")
    _spin(loop)
    loop.time = lambda: now + 7200
    _spin(loop, 1)
    assert fired == ["timer"]
    del loop.time
    process_events = loop._process_events

    def spy(event_list):
        calls.append(len(event_list))
        return process_events(event_list)

    loop._process_events = spy
    _spin(loop)
    assert len(calls) == 3
    del loop._process_events
    _spin(loop)
    assert len(calls) == 3


def test_selector_select_replaced_after_iterations_is_used(selector_loop):
    loop = selector_loop
    _spin(loop)
    selector = loop._selector
    select = selector.select
    calls = []

    def spy(timeout=None):
        calls.append(timeout)
        return select(timeout)

    selector.select = spy
    _spin(loop)
    assert calls == [0, 0, 0]
    del selector.select
    _spin(loop)
    assert calls == [0, 0, 0]


def test_subclass_overrides_of_call_soon_and_call_at_helpers_are_called(selector_loop):
    # asyncio's call_soon() calls _check_closed() and _call_soon(), its
    # call_at() _check_closed(): a subclass overriding those sees each call.
    calls = []

    class Loop(type(selector_loop)):
        def _call_soon(self, callback, args, context):
            calls.append("_call_soon")
            return super()._call_soon(callback, args, context)

        def _check_closed(self):
            calls.append("_check_closed")
            return super()._check_closed()

    loop = Loop()
    try:
        del calls[:]
        loop.call_soon(len, ())
        loop.call_at(loop.time(), len, ())
        loop.call_later(0, len, ())
        seen = list(calls)
        loop.close()
        with pytest.raises(RuntimeError, match="closed"):
            loop.call_soon(len, ())
    finally:
        loop.close()
    assert seen == ["_check_closed", "_call_soon", "_check_closed", "_check_closed"]


def test_debug_turned_on_in_a_callback_applies_to_the_next_handle(selector_loop, caplog):
    # asyncio reads its debug flag per handle of the iteration.
    seen = []

    def turn_on():
        selector_loop.set_debug(True)
        selector_loop.slow_callback_duration = 0.0

    def after():
        seen.append(selector_loop._current_handle is not None)

    selector_loop.call_soon(turn_on)
    selector_loop.call_soon(after)
    selector_loop.call_soon(selector_loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        selector_loop.run_forever()
    selector_loop.set_debug(False)
    assert seen == [True]
    assert any("Executing <Handle" in r.getMessage() and "after()" in r.getMessage()
               for r in caplog.records)
