"""At-least-once across a broker restart: nothing published is lost.

The session broker's node is stopped and started again (same data dir)
while 50,000 confirmed persistent messages are being published to a durable
queue; afterwards every id is in the queue at least once, counted by
consuming it. Duplicates are allowed (unconfirmed messages are re-sent).
"""

import threading
import time

import pytest

pika = pytest.importorskip("pika")

from rabbit_helpers import drain

from fastio.rabbitmq import Publisher

TOTAL = 50_000


@pytest.mark.timeout(180)
def test_broker_restart_mid_publish_loses_nothing(amqp_url, broker, queue):
    props = pika.BasicProperties(delivery_mode=2)
    restarted = threading.Event()
    confirmed = [0]

    def restart_when_busy():
        # Restart once a good share is confirmed and more is in flight.
        while confirmed[0] < TOTAL // 5:
            time.sleep(0.01)
        broker.restart()
        restarted.set()

    restarter = threading.Thread(target=restart_when_busy)
    with Publisher(amqp_url, max_in_flight=5000,
                   reconnect_delay=(0.2, 1.0)) as pub:
        restarter.start()
        futures = []
        for i in range(TOTAL):
            fut = pub.publish("", queue, b"%d" % i, props)
            fut.add_done_callback(lambda f: confirmed.__setitem__(0, confirmed[0] + 1))
            futures.append(fut)
        restarter.join(120)
        assert restarted.is_set()
        pub.flush(120)
        assert [f for f in futures if f.exception() is not None] == []
    ids = {int(b) for b in drain(amqp_url, queue)}
    assert ids == set(range(TOTAL))
