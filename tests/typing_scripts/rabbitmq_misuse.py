"""Mistakes the types of fastio.rabbitmq must catch (one per line, checked by line)."""

from fastio.rabbitmq import AsyncPublisher, Publisher


async def main() -> None:
    with Publisher("amqp://localhost/") as pub:
        pub.publish("", "q", 123)                       # line 8: body is not bytes/str
        pub.publish("", "q", b"x", properties=5)        # line 9: properties
        pub.flush("soon")                               # line 10: timeout
    async with AsyncPublisher("amqp://localhost/") as apub:
        await apub.publish("", 5, b"x")                 # line 12: routing key
        apub.publish_nowait("", "q", object())          # line 13: body
    AsyncPublisher("amqp://localhost/", max_attempts="3")  # line 14: retry option
