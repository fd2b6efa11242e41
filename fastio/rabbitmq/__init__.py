"""RabbitMQ on fastio: a pika adapter on the fastio loop, and a Publisher.

Needs pika (``pip install fastio[rabbitmq]``).

`FastioConnection` is a pika connection adapter on `fastio.loop.Loop`,
usable wherever `pika.SelectConnection` is. `Publisher` publishes with
pipelined confirms from any thread, reconnects (to the next node of a
cluster), re-publishes what the broker did not ack (nacked and returned
messages too, within a retry bound), and encodes its frames in compiled
code (in Python on the pure-Python fallback).
`AsyncPublisher` is the same Publisher for asyncio code: awaitable
confirms, no blocking.
"""

from fastio.rabbitmq.connection import FastioConnection, FastioIOServices
from fastio.rabbitmq.errors import (Attempt, BackPressureError, ChannelClosedError,
                                    CloseTimeoutError, ConnectError, NackError, PublishError,
                                    PublisherClosed, UnroutableError)
from fastio.rabbitmq.publisher import Publisher
from fastio.rabbitmq.aio import AsyncPublisher

__all__ = ["FastioConnection", "FastioIOServices", "Publisher", "AsyncPublisher", "Attempt",
           "PublishError", "NackError", "UnroutableError", "ChannelClosedError",
           "PublisherClosed", "BackPressureError", "ConnectError", "CloseTimeoutError"]
