"""Exceptions of fastio.rabbitmq; all derive from `PublishError`."""

from typing import Iterable, List, NamedTuple, Optional, Sequence, Union

__all__ = ["Attempt", "PublishError", "NackError", "UnroutableError", "ChannelClosedError",
           "PublisherClosed", "BackPressureError", "ConnectError", "CloseTimeoutError"]


class PublishError(Exception):
    """A message was not (or may not have been) accepted by the broker."""


class Attempt(NamedTuple):
    """One failed delivery attempt of a message, in `NackError.attempts`.

    :ivar when: wall-clock time (`time.time()`) the failure was seen.
    :ivar address: ``"host:port"`` of the node the message was sent to.
    :ivar outcome: what happened: ``"nack"``, ``"returned: ..."``,
        ``"channel closed: ..."`` or ``"connection lost: ..."``.
    """

    when: float
    address: str
    outcome: str


class NackError(PublishError):
    """The broker did not take the message within the Publisher's retry bound.

    Every attempt was nacked (e.g. a full queue with reject-publish, or a
    queue without a leader) or lost with its channel or connection, until
    `retry_deadline` passed or `max_attempts` were made.

    :ivar attempts: the failed attempts (`Attempt`), oldest first.
    """

    def __init__(self, message: str, attempts: Iterable[Attempt] = ()) -> None:
        super().__init__(message)
        self.attempts: List[Attempt] = list(attempts)


class UnroutableError(PublishError):
    """A mandatory message matched no queue; the broker returned it.

    :ivar reply_code: the basic.return reply code (312 NO_ROUTE).
    :ivar reply_text: the broker's reason.
    :ivar attempts: the failed attempts (`Attempt`), oldest first: a
        returned message is retried like a nacked one, since a classic
        queue whose node is down makes its messages unroutable.
    """

    attempts: Sequence[Attempt] = ()

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
