"""Exceptions of fastio.rabbitmq; all derive from `PublishError`."""

from typing import Optional, Union

__all__ = ["PublishError", "NackError", "UnroutableError", "ChannelClosedError",
           "PublisherClosed", "BackPressureError", "ConnectError", "CloseTimeoutError"]


class PublishError(Exception):
    """A message was not (or may not have been) accepted by the broker."""


class NackError(PublishError):
    """The broker nacked the message (e.g. a full queue with reject-publish)."""


class UnroutableError(PublishError):
    """A mandatory message matched no queue; the broker returned it.

    :ivar reply_code: the basic.return reply code (312 NO_ROUTE).
    :ivar reply_text: the broker's reason.
    """

    def __init__(self, exchange: Union[str, bytes], routing_key: Union[str, bytes],
                 reply_code: int, reply_text: str) -> None:
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


class CloseTimeoutError(PublishError, TimeoutError):
    """close() ran out of time with messages the broker had not confirmed.

    Those messages' futures failed with `PublisherClosed`; none is dropped
    without a failed future.

    :ivar unconfirmed: how many messages were still unconfirmed.
    """

    def __init__(self, unconfirmed: int, timeout: Optional[float]) -> None:
        super().__init__("%d message%s still unconfirmed when close() gave up after %ss; "
                         "their futures failed with PublisherClosed" % (
                             unconfirmed, "" if unconfirmed == 1 else "s", timeout))
        self.unconfirmed = unconfirmed
        self.timeout = timeout
