"""RabbitMQ on fastio: a pika adapter on the fastio loop, and a Publisher.

Needs pika (``pip install fastio[rabbitmq]``).

`FastioConnection` is a pika connection adapter on `fastio.loop.Loop`,
usable wherever `pika.SelectConnection` is. `Publisher` publishes with
pipelined confirms from any thread, reconnects, re-publishes what the
broker did not confirm, and encodes its frames in C.
"""

from fastio.rabbitmq.connection import FastioConnection, FastioIOServices
from fastio.rabbitmq.errors import (Attempt, BackPressureError, ChannelClosedError, ConnectError,
                                    NackError, PublishError, PublisherClosed,
                                    UnroutableError)
from fastio.rabbitmq.publisher import Publisher

__all__ = ["FastioConnection", "FastioIOServices", "Publisher", "Attempt", "PublishError",
           "NackError", "UnroutableError", "ChannelClosedError", "PublisherClosed",
           "BackPressureError", "ConnectError"]
