"""Exceptions of fastio.rabbitmq; all derive from `PublishError`."""

__all__ = ["PublishError", "NackError", "UnroutableError", "ChannelClosedError",
           "PublisherClosed", "BackPressureError", "ConnectError"]


class PublishError(Exception):
    """A message was not (or may not have been) accepted by the broker."""


class NackError(PublishError):
    """The broker nacked the message (e.g. a full queue with reject-publish)."""


class UnroutableError(PublishError):
    """A mandatory message matched no queue; the broker returned it.

    :ivar reply_code: the basic.return reply code (312 NO_ROUTE).
    :ivar reply_text: the broker's reason.
    """

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
