"""AsyncPublisher against the session broker, on asyncio, uvloop and fastio's loop:
confirms as awaitables, the sync Publisher's errors, retries of nacked
and returned messages within their bound, back-pressure by awaiting,
reconnect with re-publication across cluster addresses."""

import asyncio
import time
import uuid

import pytest

pika = pytest.importorskip("pika")

from rabbit_helpers import drain, message_count
from tcp_proxy import FreezableProxy

import fastio
from fastio.rabbitmq import (AsyncPublisher, BackPressureError, ChannelClosedError,
                             CloseTimeoutError, NackError, PublisherClosed, UnroutableError)


def _uvloop():
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop()


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": _uvloop,
         "fastio": fastio.new_event_loop}


@pytest.fixture(params=list(LOOPS))
def run(request):
    """Run a coroutine to completion on a fresh loop of each kind."""
    def run(coro, timeout=60):
        loop = LOOPS[request.param]()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, timeout))
        finally:
            loop.close()
    return run


def _url(port):
    return "amqp://guest:guest@127.0.0.1:%d/%%2F" % port


def test_publish_returns_once_confirmed(run, amqp_url, admin, queue):
    async def main():
        async with AsyncPublisher(amqp_url) as pub:
            for i in range(50):
                assert await pub.publish("", queue, b"%d" % i, {"delivery_mode": 2}) is None
            futures = [pub.publish_nowait("", queue, b"n%d" % i) for i in range(2000)]
            assert all(isinstance(f, asyncio.Future) for f in futures)
            await pub.flush()
            assert pub.outstanding == 0
            assert [f.result() for f in futures] == [None] * 2000
    run(main())
    assert message_count(admin, queue) == 2050


def test_failures_are_the_sync_publishers_errors(run, amqp_url, admin, queue):
    full = "fastio-full-" + uuid.uuid4().hex[:8]
    exchange = "fastio-nobind-" + uuid.uuid4().hex[:8]
    admin.queue_declare(full, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    admin.exchange_declare(exchange, "direct")

    async def main():
        # max_attempts=1: the first nack or return is final (retries: below).
        async with AsyncPublisher(amqp_url, max_attempts=1) as pub:
            await pub.publish("", full, b"fits")
            with pytest.raises(NackError):
                await pub.publish("", full, b"rejected")
            with pytest.raises(UnroutableError) as info:
                await pub.publish(exchange, "nowhere", b"x", mandatory=True)
            assert info.value.reply_code == 312
            with pytest.raises(ChannelClosedError):
                await pub.publish("fastio-no-such-exchange", "k", b"x")
            await pub.publish("", queue, b"after")     # the channel was reopened
        with pytest.raises(PublisherClosed):
            pub.publish_nowait("", queue, b"late")
    try:
        run(main())
    finally:
        admin.queue_delete(full)
        admin.exchange_delete(exchange)


def _full_queue(admin):
    """Declare a queue that holds one message and nacks every further publish."""
    name = "fastio-full-" + uuid.uuid4().hex[:8]
    admin.queue_declare(name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    return name


async def _until(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def _close_times_out_failing(pub, fut):
    """Check that close() gives up with `fut`, the one unconfirmed message, failed."""
    with pytest.raises(CloseTimeoutError) as info:
        await pub.close()
    assert info.value.unconfirmed == 1
    with pytest.raises(PublisherClosed):
        await fut


def test_nacked_message_is_retried_until_acked(run, amqp_url, admin, caplog):
    caplog.set_level("WARNING", logger="fastio.rabbitmq")
    full = _full_queue(admin)

    def escalated():
        return any(r.getMessage().startswith("nacks persist") for r in caplog.records)

    async def main():
        async with AsyncPublisher(amqp_url, retry_delay=(0.02, 0.1)) as pub:
            await pub.publish("", full, b"first")
            second = pub.publish_nowait("", full, b"second")
            # Nacked round after round (the Publisher escalates to a new
            # channel), and still pending: only an ack settles it.
            await _until(escalated, "the broker never nacked the second message")
            assert not second.done() and pub.outstanding == 1
            assert admin.basic_get(full, auto_ack=True)[2] == b"first"
            await asyncio.wait_for(second, 30)
            assert second.result() is None and pub.outstanding == 0
    try:
        run(main())
        assert admin.basic_get(full, auto_ack=True)[2] == b"second"
    finally:
        admin.queue_delete(full)


def test_returned_message_is_retried_until_routable(run, amqp_url, admin, queue):
    exchange = "fastio-late-" + uuid.uuid4().hex[:8]
    admin.exchange_declare(exchange, "direct")

    async def main():
        async with AsyncPublisher(amqp_url, retry_delay=(0.02, 0.1), max_attempts=1000) as pub:
            fut = pub.publish_nowait(exchange, "later", b"eventually", mandatory=True)
            await asyncio.sleep(0.5)        # several returns meanwhile
            assert not fut.done()
            admin.queue_bind(queue, exchange, "later")
            await asyncio.wait_for(fut, 30)
    try:
        run(main())
        assert admin.basic_get(queue, auto_ack=True)[2] == b"eventually"
    finally:
        admin.exchange_delete(exchange)


def test_retries_stop_at_max_attempts(run, amqp_url, admin):
    full = _full_queue(admin)
    exchange = "fastio-nobind-" + uuid.uuid4().hex[:8]
    admin.exchange_declare(exchange, "direct")

    async def main():
        async with AsyncPublisher(amqp_url, max_attempts=3, retry_delay=(0.01, 0.05)) as pub:
            await pub.publish("", full, b"fits")
            with pytest.raises(NackError) as nacked:
                await pub.publish("", full, b"rejected")
            with pytest.raises(UnroutableError) as returned:
                await pub.publish(exchange, "nowhere", b"x", mandatory=True)
            assert pub.outstanding == 0
        return nacked.value, returned.value
    try:
        nacked, returned = run(main())
    finally:
        admin.queue_delete(full)
        admin.exchange_delete(exchange)
    port = pika.URLParameters(amqp_url).port
    assert [a.outcome for a in nacked.attempts] == ["nack"] * 3
    assert all(a.address.endswith(":%d" % port) for a in nacked.attempts)
    assert [a.outcome for a in returned.attempts] == ["returned: 312 NO_ROUTE"] * 3


def test_close_fails_and_counts_a_message_waiting_for_retry(run, amqp_url, admin):
    full = _full_queue(admin)

    async def main():
        pub = AsyncPublisher(amqp_url, close_timeout=0.5, retry_deadline=None,
                             retry_delay=(0.01, 0.05))
        await pub.connect()
        await pub.publish("", full, b"fits")
        fut = pub.publish_nowait("", full, b"nacked forever")
        await _close_times_out_failing(pub, fut)
        assert pub.outstanding == 0
    try:
        run(main())
    finally:
        admin.queue_delete(full)


def test_bad_retry_options_are_rejected_before_connecting():
    for options, what in [({"max_attempts": 0}, "max_attempts"),
                          ({"retry_deadline": -1.0}, "retry_deadline"),
                          ({"retry_delay": (1.0, 0.5)}, "retry_delay")]:
        with pytest.raises(ValueError, match=what):
            AsyncPublisher("amqp://guest:guest@127.0.0.1:1/%2F", **options)


def test_full_window_awaits_without_blocking_the_loop(run, broker, queue):
    proxy = FreezableProxy(("127.0.0.1", broker.port))

    async def ticker(ticks):
        while True:
            await asyncio.sleep(0.005)
            ticks[0] += 1

    async def main():
        async with AsyncPublisher(_url(proxy.port), max_in_flight=10) as pub:
            await pub.publish("", queue, b"warm-up")
            proxy.stall()           # the broker hears nothing: no confirms
            held = [pub.publish_nowait("", queue, b"held") for _ in range(10)]
            with pytest.raises(BackPressureError):
                pub.publish_nowait("", queue, b"one too many")
            waiting = asyncio.ensure_future(pub.publish("", queue, b"waits for room"))
            ticks = [0]
            tick = asyncio.ensure_future(ticker(ticks))
            t0 = time.monotonic()
            await asyncio.sleep(0.5)
            assert not waiting.done()
            # The loop kept running while publish() waited for room.
            assert ticks[0] >= 0.5 * (time.monotonic() - t0) / 0.005 / 4
            proxy.resume()
            await waiting
            await asyncio.gather(*held)
            tick.cancel()
            assert pub.outstanding == 0
    try:
        run(main())
    finally:
        proxy.close()


def test_reconnects_to_the_next_address_and_republishes(run, broker, amqp_url, queue):
    first = FreezableProxy(("127.0.0.1", broker.port))
    second = FreezableProxy(("127.0.0.1", broker.port))

    async def main():
        async with AsyncPublisher([_url(first.port), _url(second.port)],
                                  reconnect_delay=(0.05, 0.2)) as pub:
            await pub.publish("", queue, b"-1")
            first.stall()
            futures = [pub.publish_nowait("", queue, b"%d" % i) for i in range(500)]
            await asyncio.sleep(0.2)
            assert not any(f.done() for f in futures)
            first.close()           # node gone: connection cut, port refused
            await asyncio.gather(*futures)
    try:
        run(main())
    finally:
        if first._sel.get_map() is not None:
            first.close()
        second.close()
    ids = {int(b) for b in drain(amqp_url, queue)}
    assert ids == set(range(-1, 500))       # at least once: none lost


def test_close_gives_up_after_its_timeout(run, broker, queue):
    proxy = FreezableProxy(("127.0.0.1", broker.port))

    async def main():
        pub = AsyncPublisher(_url(proxy.port), close_timeout=0.5)
        await pub.connect()
        await pub.publish("", queue, b"confirmed")
        proxy.freeze()
        fut = pub.publish_nowait("", queue, b"never confirmed")
        await _close_times_out_failing(pub, fut)
        await pub.close()           # idempotent
    try:
        run(main())
    finally:
        proxy.close()


def test_flush_timeout(run, broker, queue):
    proxy = FreezableProxy(("127.0.0.1", broker.port))

    async def main():
        async with AsyncPublisher(_url(proxy.port), close_timeout=0.5) as pub:
            await pub.publish("", queue, b"confirmed")
            proxy.stall()
            pub.publish_nowait("", queue, b"stalled")
            with pytest.raises(TimeoutError, match="1 messages still unconfirmed"):
                await pub.flush(0.3)
            proxy.resume()
            await pub.flush()
    try:
        run(main())
    finally:
        proxy.close()


def test_not_connected_and_unreachable(run):
    async def main():
        pub = AsyncPublisher(_url(1), connect_timeout=1, reconnect_delay=(0.05, 0.1))
        with pytest.raises(RuntimeError, match="not connected"):
            pub.publish_nowait("", "q", b"x")
        from fastio.rabbitmq import ConnectError
        with pytest.raises(ConnectError, match="refused"):
            await pub.connect()
    run(main())
