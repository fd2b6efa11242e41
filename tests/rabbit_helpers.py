"""Helpers shared by the RabbitMQ tests: read a queue back to count what arrived."""

import pika


def drain(url, queue, idle=1.0):
    """Consume everything in `queue` (auto-ack); return the bodies in order.

    Stops once no message arrived for `idle` seconds.
    """
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=2000)
        bodies = []
        for method, _props, body in ch.consume(queue, auto_ack=True,
                                               inactivity_timeout=idle):
            if method is None:
                break
            bodies.append(body)
        ch.cancel()
        return bodies
    finally:
        conn.close()


def message_count(admin, queue):
    return admin.queue_declare(queue, passive=True).method.message_count
