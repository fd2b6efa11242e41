"""Exceptions of fastio.rabbitmq; all derive from `PublishError`."""

import collections

__all__ = ["Attempt", "PublishError", "NackError", "UnroutableError", "ChannelClosedError",
           "PublisherClosed", "BackPressureError", "ConnectError"]


class PublishError(Exception):
    """A message was not (or may not have been) accepted by the broker."""


class Attempt(collections.namedtuple("Attempt", "when address outcome")):
    """One failed delivery attempt of a message, in `NackError.attempts`.

    :ivar when: wall-clock time (`time.time()`) the failure was seen.
    :ivar address: ``"host:port"`` of the node the message was sent to.
    :ivar outcome: what happened: ``"nack"``, ``"channel closed: ..."`` or
        ``"connection lost: ..."``.
    """

    __slots__ = ()


class NackError(PublishError):
    """The broker did not take the message within the Publisher's retry bound.

    Every attempt was nacked (e.g. a full queue with reject-publish, or a
    queue without a leader) or lost with its channel or connection, until
    `retry_deadline` passed or `max_attempts` were made.

    :ivar attempts: the failed attempts (`Attempt`), oldest first.
    """

    def __init__(self, message, attempts=()):
        super().__init__(message)
        self.attempts = list(attempts)


class UnroutableError(PublishError):
    """A mandatory message matched no queue; the broker returned it.

    :ivar reply_code: the basic.return reply code (312 NO_ROUTE).
    :ivar reply_text: the broker's reason.
    :ivar attempts: the failed attempts (`Attempt`), oldest first: a
        returned message is retried like a nacked one, since a classic
        queue whose node is down makes its messages unroutable.
    """

    attempts = ()

    def __init__(self, exchange, routing_key, reply_code, reply_text):
        super().__init__("unroutable: exchange=%r routing_key=%r: %d %s" % (
            exchange, routing_key, reply_code, reply_text))
        self.exchange = exchange
        self.routing_key = routing_key
        self.reply_code = reply_code
        self.reply_text = reply_text


class ChannelClosedError(PublishError):
    """The broker closed the channel (e.g. an unknown exchange) with messages in flight."""


class PublisherClosed(PublishError):
    """publish() on a closed Publisher, or closed before the message was confirmed."""


class BackPressureError(PublishError):
    """The confirm window stayed full longer than the publish timeout."""


class ConnectError(PublishError):
    """No broker address accepted a connection (refused, unreachable, bad login)."""
