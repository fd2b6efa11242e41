"""RabbitMQ on fastio: a pika adapter on the fastio loop, and a Publisher.

Needs pika (``pip install fastio[rabbitmq]``).

`FastioConnection` is a pika connection adapter on `fastio.loop.Loop`,
usable wherever `pika.SelectConnection` is. `Publisher` publishes with
pipelined confirms from any thread, reconnects, re-publishes what the
broker did not confirm, and encodes its frames in C. `AsyncPublisher` is
the same Publisher for asyncio code: awaitable confirms, no blocking.
"""

from fastio.rabbitmq.connection import FastioConnection, FastioIOServices
from fastio.rabbitmq.errors import (BackPressureError, ChannelClosedError, CloseTimeoutError,
                                    ConnectError, NackError, PublishError, PublisherClosed,
                                    UnroutableError)
from fastio.rabbitmq.publisher import Publisher
from fastio.rabbitmq.aio import AsyncPublisher

__all__ = ["FastioConnection", "FastioIOServices", "Publisher", "AsyncPublisher",
           "PublishError", "NackError", "UnroutableError", "ChannelClosedError",
           "PublisherClosed", "BackPressureError", "ConnectError", "CloseTimeoutError"]
