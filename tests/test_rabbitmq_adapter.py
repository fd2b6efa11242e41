"""FastioConnection against a real broker, with pika.SelectConnection as the reference.

The scenarios of pika's own adapter tests: connection open/close/refused,
create_connection, channel open/close, publish+consume round trip,
publisher confirms, heartbeat timeout, connection.blocked/unblocked,
timers, thread-safe callbacks. Each runs on both classes (`connection_cls`).
"""

import threading

import pytest

pika = pytest.importorskip("pika")

import broker as broker_mod
from tcp_proxy import FreezableProxy

TIMEOUT = 20


def run(conn, timeout=TIMEOUT):
    """Run `conn`'s ioloop until something stops it; fail after `timeout` s."""
    expired = []

    def expire():
        expired.append(True)
        conn.ioloop.stop()

    timer = conn.ioloop.call_later(timeout, expire)
    conn.ioloop.start()
    conn.ioloop.remove_timeout(timer)
    assert not expired, "ioloop still running after %ss" % timeout


def open_and(connection_cls, params, on_open, **callbacks):
    """Connect; call ``on_open(conn)``; stop the loop when the connection closes."""
    result = {}

    def on_close(conn, exc):
        result["closed"] = exc
        conn.ioloop.stop()

    def on_error(conn, exc):
        result["open_error"] = exc
        conn.ioloop.stop()

    conn = connection_cls(params, on_open_callback=on_open,
                          on_open_error_callback=on_error, on_close_callback=on_close,
                          **callbacks)
    return conn, result


def test_open_and_close_by_client(connection_cls, amqp_params):
    opened = []

    def on_open(conn):
        opened.append(conn.is_open)
        conn.close()

    conn, result = open_and(connection_cls, amqp_params, on_open)
    run(conn)
    assert opened == [True]
    assert isinstance(result["closed"], pika.exceptions.ConnectionClosedByClient)
    assert conn.is_closed


def test_connection_refused_reports_open_error(connection_cls):
    params = pika.ConnectionParameters("127.0.0.1", broker_mod.free_port(),
                                       connection_attempts=1, socket_timeout=2)
    conn, result = open_and(connection_cls, params, lambda c: pytest.fail("opened"))
    run(conn)
    assert isinstance(result["open_error"], pika.exceptions.AMQPConnectionError)


def test_create_connection_skips_a_dead_address(connection_cls, amqp_params):
    dead = pika.ConnectionParameters("127.0.0.1", broker_mod.free_port())
    loop_owner = {}

    def on_done(conn_or_exc):
        loop_owner["result"] = conn_or_exc
        if isinstance(conn_or_exc, pika.connection.Connection):
            conn_or_exc.add_on_close_callback(lambda c, e: c.ioloop.stop())
            conn_or_exc.close()
        else:
            loop_owner["ioloop"].stop()

    ioloop = connection_cls.new_ioloop()
    loop_owner["ioloop"] = ioloop
    connection_cls.create_connection([dead, amqp_params], on_done, custom_ioloop=ioloop)
    timer = ioloop.call_later(TIMEOUT, ioloop.stop)
    ioloop.start()
    ioloop.remove_timeout(timer)
    conn = loop_owner["result"]
    assert isinstance(conn, connection_cls)
    assert conn.params.port == amqp_params.port
    assert conn.is_closed
    ioloop.close()


def test_channel_open_and_close(connection_cls, amqp_params):
    events = []

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch):
        events.append(("open", ch.channel_number, ch.is_open))
        ch.add_on_close_callback(on_channel_closed)
        ch.close()

    def on_channel_closed(ch, reason):
        events.append(("closed", type(reason).__name__))
        ch.connection.close()

    conn, _ = open_and(connection_cls, amqp_params, on_open)
    run(conn)
    assert events == [("open", 1, True), ("closed", "ChannelClosedByClient")]


def test_publish_consume_round_trip(connection_cls, amqp_params, queue):
    # Sizes around and beyond frame_max exercise body-frame splitting both ways.
    bodies = [b"", b"x", b"y" * 1000, bytes(range(256)) * 600, b"z" * 131072]
    got = []

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch):
        for i, body in enumerate(bodies):
            ch.basic_publish("", queue, body,
                             pika.BasicProperties(message_id=str(i), delivery_mode=2))
        ch.basic_consume(queue, on_message)

    def on_message(ch, method, props, body):
        got.append((props.message_id, body))
        ch.basic_ack(method.delivery_tag)
        if len(got) == len(bodies):
            ch.connection.close()

    conn, _ = open_and(connection_cls, amqp_params, on_open)
    run(conn)
    assert got == [(str(i), b) for i, b in enumerate(bodies)]


def test_publisher_confirms_ack_every_message(connection_cls, amqp_params, queue):
    total = 2000
    acked = set()
    state = {}

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch):
        state["ch"] = ch
        ch.confirm_delivery(on_confirm, callback=on_selected)

    def on_selected(frame):
        for _ in range(total):
            state["ch"].basic_publish("", queue, b"m" * 100)

    def on_confirm(frame):
        assert isinstance(frame.method, pika.spec.Basic.Ack)
        tag = frame.method.delivery_tag
        if frame.method.multiple:
            acked.update(range(1, tag + 1))
        else:
            acked.add(tag)
        if len(acked) == total:
            state["ch"].connection.close()

    conn, _ = open_and(connection_cls, amqp_params, on_open)
    run(conn)
    assert acked == set(range(1, total + 1))


def test_heartbeat_timeout_closes_the_connection(connection_cls, broker):
    proxy = FreezableProxy(("127.0.0.1", broker.port))
    try:
        params = pika.ConnectionParameters("127.0.0.1", proxy.port, heartbeat=1)
        conn, result = open_and(connection_cls, params, lambda c: proxy.freeze())
        run(conn)
    finally:
        proxy.close()
    assert isinstance(result["closed"], pika.exceptions.AMQPHeartbeatTimeout)


def test_blocked_and_unblocked(connection_cls, amqp_params, broker, queue):
    events = []

    def on_open(conn):
        conn.add_on_connection_blocked_callback(
            lambda c, frame: (events.append(type(frame.method).__name__),
                              broker.set_memory_watermark(0.4)))
        conn.add_on_connection_unblocked_callback(
            lambda c, frame: (events.append(type(frame.method).__name__), c.close()))
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch):
        broker.set_memory_watermark(0.0000001)
        ch.basic_publish("", queue, b"wakes the alarm's blocking")

    conn, _ = open_and(connection_cls, amqp_params, on_open)
    try:
        run(conn, timeout=30)
    finally:
        broker.set_memory_watermark(0.4)
    assert events == ["Blocked", "Unblocked"]


def test_timers_fire_in_order_and_removed_ones_do_not(connection_cls, amqp_params):
    fired = []

    def on_open(conn):
        loop = conn.ioloop
        loop.call_later(0.05, lambda: fired.append(2))
        loop.call_later(0.01, lambda: fired.append(1))
        loop.remove_timeout(loop.call_later(0.02, lambda: fired.append("removed")))
        loop.call_later(0.1, conn.close)

    conn, _ = open_and(connection_cls, amqp_params, on_open)
    run(conn)
    assert fired == [1, 2]


def test_threadsafe_callbacks_from_threads(connection_cls, amqp_params):
    per_thread, nthreads = 500, 4
    count = [0]

    def bump(conn):
        count[0] += 1
        if count[0] == per_thread * nthreads:
            conn.close()

    def on_open(conn):
        def worker():
            for _ in range(per_thread):
                conn.ioloop.add_callback_threadsafe(lambda: bump(conn))
        for _ in range(nthreads):
            threading.Thread(target=worker).start()

    conn, _ = open_and(connection_cls, amqp_params, on_open)
    run(conn)
    assert count[0] == per_thread * nthreads


def test_write_buffer_size_is_reported(connection_cls, broker, queue):
    # The peer stops reading, so what the kernel cannot take stays in the
    # transport; once it reads again the buffer drains to zero.
    proxy = FreezableProxy(("127.0.0.1", broker.port))
    sizes = []
    body = b"x" * 8_000_000

    def on_open(conn):
        conn.channel(on_open_callback=lambda ch: publish(conn, ch))

    def publish(conn, ch):
        proxy.stall()
        for _ in range(3):
            ch.basic_publish("", queue, body)
        conn.ioloop.call_later(0.2, lambda: poll(conn))

    def poll(conn):
        sizes.append(conn._get_write_buffer_size())
        proxy.resume()
        if sizes[-1] == 0:
            conn.close()
        else:
            conn.ioloop.call_later(0.05, lambda: poll(conn))

    try:
        params = pika.ConnectionParameters("127.0.0.1", proxy.port)
        conn, _ = open_and(connection_cls, params, on_open)
        run(conn)
    finally:
        proxy.close()
    assert sizes[0] > 1_000_000 and sizes[-1] == 0
