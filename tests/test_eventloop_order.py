"""The order of callbacks within one loop iteration, beside asyncio (and uvloop
where its order is the same).

asyncio's iteration: wait for I/O; queue the I/O callbacks of the events, in
event order, behind the callbacks already ready, and the timers due by then
behind those; run that many. What they schedule runs next iteration, and a
handle cancelled (remove_reader, add_reader replacing it, transport.close)
before its turn does not run. fastio.EventLoop dispatches I/O without
queueing it when it reads its own poller; "fastio-pyselect" is the same loop
over a selector whose select() is Python, which takes asyncio's queueing
path: both must give asyncio's order.
"""

import asyncio
import select

import pytest

import fastio
from fastio.selectors import DefaultSelector
from eventloop_fixtures import close_loop, make_loop


class PySelectSelector(DefaultSelector):
    """fastio's selector with a select() of its own (so not read directly)."""

    def select(self, timeout=None):
        return super().select(timeout)


class SubclassLoop(fastio.EventLoop):
    """A user's subclass of fastio's loop."""


def _loop(kind):
    if kind == "fastio-pyselect":
        return fastio.EventLoop(PySelectSelector())
    if kind == "fastio-subclass":
        return SubclassLoop()
    return make_loop(kind)


@pytest.fixture(params=["fastio", "fastio-pyselect", "fastio-subclass", "asyncio"])
def sel_loop(request):
    """fastio's loop on both paths and stock asyncio: asyncio's exact order."""
    loop = _loop(request.param)
    asyncio.set_event_loop(loop)
    yield loop
    close_loop(loop)


@pytest.fixture(params=["fastio", "fastio-pyselect", "asyncio", "uvloop"])
def any_loop(request):
    """As sel_loop, plus uvloop: for what every loop agrees on."""
    loop = _loop(request.param)
    asyncio.set_event_loop(loop)
    yield loop
    close_loop(loop)


def _readable_pair(socketpair):
    a, b = socketpair()
    a.setblocking(False)
    b.setblocking(False)
    a.send(b"x")
    assert select.select([b], [], [], 5)[0]
    return a, b


def test_ready_then_io_then_timers_then_what_they_schedule(sel_loop, socketpair):
    _, b = _readable_pair(socketpair)
    seen = []

    def note(name):
        seen.append(name)
        sel_loop.call_soon(seen.append, name + "2")

    def on_read():
        sel_loop.remove_reader(b)
        note("io")

    sel_loop.call_soon(note, "ready")
    sel_loop.add_reader(b, on_read)
    sel_loop.call_at(sel_loop.time() - 1, note, "timer")
    sel_loop.call_later(0.05, sel_loop.stop)
    sel_loop.run_forever()
    assert seen == ["ready", "io", "timer", "ready2", "io2", "timer2"]


def test_reader_removed_by_an_earlier_io_callback_does_not_run(any_loop, socketpair):
    # Both fds are readable in the same wait; whichever runs first removes
    # the other's reader, so exactly one of them runs.
    _, b1 = _readable_pair(socketpair)
    _, b2 = _readable_pair(socketpair)
    seen = []

    def on_read(mine, other):
        seen.append(mine)
        any_loop.remove_reader(mine)
        any_loop.remove_reader(other)

    any_loop.add_reader(b1, on_read, b1, b2)
    any_loop.add_reader(b2, on_read, b2, b1)
    any_loop.call_later(0.1, any_loop.stop)
    any_loop.run_forever()
    assert len(seen) == 1


def test_reader_removed_by_a_ready_callback_does_not_run(sel_loop, socketpair):
    _, b = _readable_pair(socketpair)
    seen = []
    sel_loop.add_reader(b, seen.append, "io")
    sel_loop.call_soon(sel_loop.remove_reader, b)
    sel_loop.call_later(0.05, sel_loop.stop)
    sel_loop.run_forever()
    assert seen == []


def test_reader_replaced_during_the_iteration_runs_next_iteration(sel_loop, socketpair):
    _, b = _readable_pair(socketpair)
    seen = []

    def replace():
        seen.append("ready")
        sel_loop.call_soon(seen.append, "ready2")
        sel_loop.add_reader(b, new_reader)

    def new_reader():
        seen.append("new")
        sel_loop.remove_reader(b)

    sel_loop.add_reader(b, seen.append, "old")
    sel_loop.call_soon(replace)
    sel_loop.call_at(sel_loop.time() - 1, seen.append, "timer")
    sel_loop.call_later(0.05, sel_loop.stop)
    sel_loop.run_forever()
    # The old handle was cancelled before its turn; the new one was not
    # registered when the wait returned, so it waits for the next one.
    assert seen == ["ready", "timer", "ready2", "new"]


def test_writer_removed_by_an_earlier_reader_does_not_run(sel_loop, socketpair):
    a, b = _readable_pair(socketpair)
    seen = []

    def on_read():
        seen.append("read")
        sel_loop.remove_reader(b)
        sel_loop.remove_writer(b)

    sel_loop.add_reader(b, on_read)
    sel_loop.add_writer(b, seen.append, "write")
    sel_loop.call_later(0.05, sel_loop.stop)
    sel_loop.run_forever()
    assert seen == ["read"]


def test_cancelled_reader_handle_is_removed_when_the_event_arrives(sel_loop, socketpair):
    _, b = _readable_pair(socketpair)
    seen = []
    sel_loop.add_reader(b, seen.append, "io")
    reader, _ = sel_loop._selector.get_key(b).data
    reader.cancel()
    sel_loop.call_later(0.05, sel_loop.stop)
    sel_loop.run_forever()
    assert seen == []
    with pytest.raises(KeyError):
        sel_loop._selector.get_key(b)


def test_stop_from_a_callback_finishes_the_iteration(sel_loop, socketpair):
    _, b = _readable_pair(socketpair)
    seen = []

    def on_read():
        sel_loop.remove_reader(b)
        seen.append("io")
        sel_loop.call_soon(seen.append, "io2")

    sel_loop.call_soon(lambda: (seen.append("stop"), sel_loop.stop()))
    sel_loop.add_reader(b, on_read)
    sel_loop.call_at(sel_loop.time() - 1, seen.append, "timer")
    sel_loop.run_forever()
    assert seen == ["stop", "io", "timer"]
    sel_loop.call_soon(sel_loop.stop)
    sel_loop.run_forever()
    assert seen == ["stop", "io", "timer", "io2"]


def test_keyboard_interrupt_in_io_callback_keeps_the_rest_in_order(sel_loop, socketpair):
    _, b1 = _readable_pair(socketpair)
    _, b2 = _readable_pair(socketpair)
    seen = []

    def on_read(me):
        sel_loop.remove_reader(me)
        name = "ab"[sum(1 for s in seen if s.startswith("io"))]
        seen.append("io-" + name)
        sel_loop.call_soon(seen.append, "after-" + name)
        if name == "a":
            raise KeyboardInterrupt

    sel_loop.add_reader(b1, on_read, b1)
    sel_loop.add_reader(b2, on_read, b2)
    sel_loop.call_at(sel_loop.time() - 1, seen.append, "timer")
    with pytest.raises(KeyboardInterrupt):
        sel_loop.run_forever()
    assert seen == ["io-a"]
    sel_loop.call_later(0.05, sel_loop.stop)
    sel_loop.run_forever()
    # The other reader and the timer were queued ahead of what the first
    # one scheduled, and stay so.
    assert seen == ["io-a", "io-b", "timer", "after-a", "after-b"]


def test_io_callback_exception_goes_to_the_handler_with_its_handle(sel_loop, socketpair):
    _, b = _readable_pair(socketpair)
    handled = []

    def on_read():
        sel_loop.remove_reader(b)
        raise ValueError("boom")

    sel_loop.set_exception_handler(lambda loop, ctx: handled.append(ctx))
    sel_loop.add_reader(b, on_read)
    reader, _ = sel_loop._selector.get_key(b).data
    sel_loop.call_later(0.05, sel_loop.stop)
    sel_loop.run_forever()
    assert len(handled) == 1
    assert isinstance(handled[0]["exception"], ValueError)
    assert handled[0]["handle"] is reader
    assert handled[0]["message"].startswith("Exception in callback")


def test_transport_closed_by_a_ready_callback_gets_no_data(sel_loop):
    # (uvloop reads as soon as resume_reading() is called, in the same pass.)
    events = []

    class Recorder(asyncio.Protocol):
        def connection_made(self, transport):
            events.append("made")
            self.transport = transport

        def data_received(self, data):
            events.append(("data", data))

        def connection_lost(self, exc):
            events.append(("lost", exc))

    async def main():
        made = asyncio.get_running_loop().create_future()
        proto = Recorder()

        def factory():
            made.set_result(None)
            return proto

        server = await sel_loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await made
        await asyncio.sleep(0)
        proto.transport.pause_reading()
        writer.write(b"hello")
        await writer.drain()
        sock = proto.transport.get_extra_info("socket")
        assert select.select([sock.fileno()], [], [], 5)[0]
        # The data is there before the next wait; close() runs first.
        proto.transport.resume_reading()
        sel_loop.call_soon(proto.transport.close)
        for _ in range(10):
            await asyncio.sleep(0)
        writer.close()
        server.close()
        await server.wait_closed()

    sel_loop.run_until_complete(asyncio.wait_for(main(), 30))
    assert events == ["made", ("lost", None)]


def test_time_replaced_on_the_instance_is_the_iteration_clock(sel_loop):
    seen = []
    now = sel_loop.time()
    sel_loop.call_at(now + 3600, seen.append, "timer")
    sel_loop.time = lambda: now + 7200
    sel_loop.call_soon(sel_loop.stop)
    sel_loop.run_forever()
    assert seen == ["timer"]


def _timer_order(loop, cancelled):
    import random

    rnd = random.Random(7)
    base = int(loop.time()) - 100
    seen = []
    handles = []
    for i in range(300):
        # Many equal deadlines: their order is the heap's, so it must be
        # heapq's; int and float deadlines mixed.
        when = base + rnd.randrange(20) + (0.5 if i % 3 else 0)
        handles.append(loop.call_at(when, seen.append, i))
    for i, h in enumerate(handles):
        if cancelled(i):
            h.cancel()
    scheduled = list(loop._scheduled)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    return seen, [handles.index(h) for h in scheduled]


# A few cancelled timers are popped one by one; over half of them makes the
# loop rebuild the heap.
@pytest.mark.parametrize("cancelled", [lambda i: i % 7 == 0, lambda i: i % 3 != 0], ids=["few", "most"])
def test_timers_fire_in_heapq_order(cancelled):
    results = []
    for kind in ("asyncio", "fastio", "fastio-pyselect"):
        loop = _loop(kind)
        try:
            results.append(_timer_order(loop, cancelled))
        finally:
            close_loop(loop)
    assert results[0] == results[1] == results[2]
    fired, _ = results[0]
    assert sorted(fired) == [i for i in range(300) if not cancelled(i)]
