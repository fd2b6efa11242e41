"""The Publisher's retry engine: failed attempts, their history, back-off and escalation.

A nack is not final. In a cluster the broker nacks while a queue has no
leader (a quorum queue whose leader just died, a classic queue whose node is
down), and a confirm channel opened on a survivor right after a leader died
can keep nacking until the dead node returns, while a new channel does not. So a nacked message goes back to
the front of the queue after a back-off (`retry_delay`, doubling with
each failed attempt of the message). Rounds of nacks without an ack in
between escalate: on the second the Publisher opens a new channel, from
the third on it moves to the next node of the list. A returned mandatory
message (a classic queue whose node is down is unroutable), a channel
closed by the broker for a transient reason (320, 506, 541: a node
going down) and a lost connection are retried too. A message fails
(`NackError`, or `UnroutableError` when it was last returned, either
carrying every failed attempt) only when it fails again after
`retry_deadline` seconds since its first failure, or after
`max_attempts` failures. A queue that rejects publishes when full
(x-overflow reject-publish) nacks as well: its messages are retried the
same way, until the bound.

Each failed attempt is recorded on the message's future (`Attempt`: when,
which node, what happened), and a final `NackError` or `UnroutableError`
carries them all. `RetryEngine` is a part of `Publisher` (its base class)
and runs on the loop thread only.
"""

import math
import random
import time
from typing import Any, List, Optional, Tuple

from fastio._log import get_logger
from fastio.rabbitmq.errors import Attempt, NackError, UnroutableError

__all__ = ["RetryEngine", "check_retry_options", "check_options", "check_timeout"]

logger = get_logger("fastio.rabbitmq")

# Rounds of nacks (without an ack in between) before the Publisher opens a
# new channel, and before it moves to the next node.
_NEW_CHANNEL_ROUND = 2
_NEW_NODE_ROUND = 3


def check_retry_options(retry_deadline: Optional[float], max_attempts: Optional[int],
                        retry_delay: Tuple[float, float]) -> None:
    """Raise ValueError for retry options no Publisher could honour.

    Shared with `AsyncPublisher`, which checks them before it connects.
    """
    if retry_deadline is not None and not retry_deadline >= 0:
        raise ValueError("retry_deadline must be None or >= 0, not %r" % (retry_deadline,))
    if max_attempts is not None and not max_attempts >= 1:
        raise ValueError("max_attempts must be None or at least 1, not %r" % (max_attempts,))
    _check_delays("retry_delay", retry_delay)


def _check_delays(name: str, delays: Tuple[float, float]) -> None:
    try:
        first, most = delays
        valid = 0 <= first <= most
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError("%s must be a pair (first, max) with 0 <= first <= max, "
                         "not %r" % (name, delays))


def check_timeout(name: str, timeout: Optional[float]) -> None:
    """Raise ValueError unless `timeout` is None (no limit) or a finite number >= 0.

    A NaN would wait for ever, a negative one not at all.
    """
    try:
        valid = timeout is None or 0 <= timeout < math.inf
    except TypeError:
        valid = False
    if not valid:
        raise ValueError("%s must be None or a finite number of seconds >= 0, not %r"
                         % (name, timeout))


def check_options(max_in_flight: int, connect_timeout: Optional[float],
                  close_timeout: Optional[float], reconnect_delay: Tuple[float, float],
                  publish_timeout: Optional[float] = None) -> None:
    """Raise ValueError for the other options no Publisher could honour.

    Shared with `AsyncPublisher`, which has no `publish_timeout`.
    """
    if not max_in_flight >= 1:
        raise ValueError("max_in_flight must be at least 1, not %r" % (max_in_flight,))
    check_timeout("connect_timeout", connect_timeout)
    check_timeout("close_timeout", close_timeout)
    check_timeout("publish_timeout", publish_timeout)
    _check_delays("reconnect_delay", reconnect_delay)


class RetryEngine:
    """Send failed messages again, within the bounds; fail them past the bounds.

    Uses the Publisher's outbox, loop, connection, channel and the
    `_returnable` / `_returned` bookkeeping of basic.return, and calls its
    `_drain` and `_wake_waiters`.
    """

    def _init_retry(self, retry_deadline: Optional[float], max_attempts: Optional[int],
                    retry_delay: Tuple[float, float]) -> None:
        """Take the (checked) retry options; start with nothing to retry."""
        self._retry_deadline = retry_deadline
        self._max_attempts = max_attempts
        self._retry_first, self._retry_max = retry_delay
        self._retry: List[Any] = []     # nacked messages waiting for _retry_timer
        self._retry_timer: Any = None
        self._retry_has_nacks = False
        self._nack_rounds = 0           # retry rounds with nacks since the last ack

    def _on_failed(self, tag, msg, nack):
        # Returns true when the message is kept for another attempt.
        returned = self._returned.pop(tag, None)
        if nack:
            self._retry_has_nacks = True
            outcome = "nack"
        else:
            outcome = "returned: %d %s" % (returned.reply_code, returned.reply_text)
        if not self._may_retry(msg, outcome, self._connection, time.time(), returned):
            return False
        self._retry.append(msg)
        if self._retry_timer is None:
            # Back-off doubles with the message's failed attempts.
            n = len(msg[0]._attempts)
            delay = min(self._retry_max, self._retry_first * (2 ** min(n - 1, 30)))
            self._retry_timer = self._loop.call_later(delay * random.uniform(0.5, 1.0),
                                                      self._retry_failed)
        return True

    def _may_retry(self, msg, outcome, connection, now, final=None):
        """Record a failed attempt of `msg`; fail it if the bound is reached.

        :param final: the exception to fail it with (default: `NackError`).
        :returns: whether the message may be sent again.
        """
        future = msg[0]
        attempts = future._attempts
        if attempts is None:
            attempts = future._attempts = []
        address = ("%s:%s" % (connection.params.host, connection.params.port)
                   if connection is not None else "?")
        attempts.append(Attempt(now, address, outcome))
        if ((self._max_attempts is not None and len(attempts) >= self._max_attempts)
                or (self._retry_deadline is not None
                    and now - attempts[0].when >= self._retry_deadline)):
            if final is not None:
                final.attempts = attempts
                future._resolve(final)
                return False
            args = msg[2]
            where = "" if args is None else " (exchange=%r routing_key=%r)" % args[:2]
            future._resolve(NackError(
                "broker did not take the message%s after %d attempts over %.1f s; last: %s"
                % (where, len(attempts), now - attempts[0].when, outcome), attempts))
            return False
        return True

    def _requeue(self, msgs, outcome=None, connection=None):
        """Put unconfirmed `msgs` (and waiting retries) back in front of the queue.

        With an `outcome`, each counts as a failed attempt and those past
        the retry bound fail instead.
        """
        self._returnable.clear()
        self._returned.clear()
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        if outcome is not None:
            now = time.time()
            conn = connection if connection is not None else self._connection
            kept = [m for m in msgs if self._may_retry(m, outcome, conn, now)]
            self._outbox.settle(len(msgs) - len(kept))
            msgs = kept
        msgs = self._retry + msgs
        self._retry = []
        self._outbox.queue.extendleft(reversed(msgs))
        self._wake_waiters()

    def _retry_failed(self):
        self._retry_timer = None
        msgs, self._retry = self._retry, []
        self._outbox.queue.extendleft(reversed(msgs))
        # Returned messages say nothing about the channel: only nacks move
        # the Publisher to a new channel or node.
        nacked, self._retry_has_nacks = self._retry_has_nacks, False
        if nacked:
            self._nack_rounds += 1
        if not self._ready or self._closing:
            return      # a new channel or connection is on its way; it drains
        if not nacked:
            self._drain()
        elif (self._nack_rounds >= _NEW_NODE_ROUND and self._connection is not None
              and self._connection.is_open):
            logger.warning("nacks persist; moving to the next node")
            self._ready = False
            self._connection.close()
        elif (self._nack_rounds == _NEW_CHANNEL_ROUND and self._channel is not None
              and self._channel.is_open):
            logger.warning("nacks persist; opening a new channel")
            self._ready = False
            self._recycling = True
            self._channel.close()
        else:
            self._drain()

    def _on_return(self, channel, method, properties, body):
        # Drop tags already confirmed, then take the oldest match: the
        # broker routes (and returns) a channel's messages in order.
        returnable = self._returnable
        unconfirmed = self._outbox.unconfirmed
        while returnable and returnable[0] not in unconfirmed:
            returnable.popleft()
        for tag in returnable:
            msg = unconfirmed.get(tag)
            if msg is None or tag in self._returned:
                continue
            exchange, routing_key, sent_body = msg[2][:3]
            if (_same(exchange, method.exchange) and _same(routing_key, method.routing_key)
                    and _as_bytes(sent_body) == body):
                self._returned[tag] = UnroutableError(
                    method.exchange, method.routing_key, method.reply_code,
                    method.reply_text)
                return
        logger.warning("basic.return matched no unconfirmed message: %r", method)


def _as_bytes(body):
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _same(a, b):
    # A name as published (str, or bytes: any bytes) against the one pika
    # decoded from the basic.return (str, or bytes where not UTF-8).
    return _as_bytes(a) == _as_bytes(b)
