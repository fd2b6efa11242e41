"""Publisher: confirmed, thread-safe, reconnecting publishing on fastio.

Design (why it is fast and what it guarantees):

* pika does the talking that is not hot: FastioConnection opens the
  connection, channel 1, confirm.select, and decodes the rare frames
  (basic.return, connection.blocked, close, heartbeats). The hot paths
  are ours, in C (fastio._amqp, twin fastio._pyamqp): `publish()` is
  `Outbox.submit`, which encodes basic.publish + header + body frames in
  the calling thread and queues them; the loop thread writes every queued
  message with ONE transport write (`Outbox.take`); basic.ack/nack frames
  are cut out of the received bytes before pika parses anything
  (`split_confirms`) and settle their futures in `Outbox.confirm`.
  pika's channel never sees those publishes or confirms, which is safe
  because pika keeps no per-publish state on a plain channel; delivery
  tags are counted here (per channel, from 1 after confirm.select, as the
  broker counts). Futures are `PublishFuture`s (see _future.py).
* Confirms are pipelined in a bounded window of `max_in_flight` messages
  (queued + unconfirmed). Back-pressure policy: when the window is full,
  `publish()` BLOCKS the calling thread until confirms free a slot, at
  most `publish_timeout` seconds (None: no limit), then raises
  `BackPressureError`. On the loop thread itself (attached mode) blocking
  would deadlock, so there a full window raises `BackPressureError` at
  once. Memory is thus bounded by max_in_flight messages.
* At-least-once: every message is kept (as its encoded frames, which carry
  no delivery tag) until the broker acks it, and a future resolves only on
  an ack. When the connection drops, the Publisher reconnects with
  exponential back-off, cycling through the given broker addresses, and
  re-publishes every unconfirmed message before new ones.
* Retry, for clusters: a nack is not final. In a cluster the broker nacks
  while a queue has no leader (a quorum queue whose leader just died, a
  classic queue whose node is down), and a confirm channel opened on a
  survivor right after a leader died can keep nacking until the dead node
  returns, while a new channel does not. So a nacked message goes back to
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
* Duplicates: a message whose ack was lost with its channel or connection,
  or that the broker enqueued on some members before nacking, is sent
  again; consumers must tolerate (or de-duplicate) repeats. Nothing acked
  is lost as long as the queue survives (a quorum queue with a majority of
  its members alive; a classic durable queue's node, restarted).
* connection.blocked: nothing is written until connection.unblocked;
  messages wait in the (bounded) queue.
* Unroutable: a mandatory message that matches no queue comes back as
  basic.return before its basic.ack; the return is matched to the oldest
  unconfirmed mandatory message with the same exchange, routing key and
  body (the broker routes a channel's publishes in order), and its future
  fails with `UnroutableError` when the ack arrives.
* A channel error (e.g. an unknown exchange) closes the channel; the broker
  does not say which message caused it, so every unconfirmed message fails
  with `ChannelClosedError`, and a new channel is opened.
"""

import collections
import concurrent.futures
import logging
import random
import threading
import time

import pika
import pika.exceptions

from fastio import _pyamqp
from fastio._ext import amqp as _amqp
from fastio.rabbitmq._future import new_future
from fastio.rabbitmq.connection import FastioConnection
from fastio.rabbitmq.errors import (Attempt, BackPressureError, ChannelClosedError,
                                    ConnectError, NackError, PublisherClosed,
                                    UnroutableError)

__all__ = ["Publisher"]

logger = logging.getLogger("fastio.rabbitmq")

# The C hot path (fastio._amqp) or its pure-Python twin.
_frames = _amqp if _amqp is not None else _pyamqp
split_confirms = _frames.split_confirms
Outbox = _frames.Outbox

CHANNEL = 1
# Channel-close reply codes that say something about the node, not about
# the message: CONNECTION_FORCED (node shutting down), RESOURCE_ERROR,
# INTERNAL_ERROR (e.g. a queue process gone with its node). The others
# (NOT_FOUND, ACCESS_REFUSED, PRECONDITION_FAILED, ...) would fail again.
_TRANSIENT_CLOSE = frozenset((320, 506, 541))
# Rounds of nacks (without an ack in between) before the Publisher opens a
# new channel, and before it moves to the next node.
_NEW_CHANNEL_ROUND = 2
_NEW_NODE_ROUND = 3
_AUTH_ERRORS = (pika.exceptions.ProbableAuthenticationError,
                pika.exceptions.AuthenticationError,
                pika.exceptions.ProbableAccessDeniedError)

# A message, until it is confirmed, is a tuple (future, frames, args): the
# encoded frames are what goes on the wire (again, after a reconnect);
# args = (exchange, routing_key, body, properties, mandatory, frame_max)
# is kept only when needed: to match a basic.return (mandatory), or to
# re-encode a body longer than the smallest frame_max should the broker
# negotiate a smaller frame_max than assumed. Tuples: cheapest to build.


class _ConfirmingConnection(FastioConnection):
    """FastioConnection that takes basic.ack/nack out of the stream itself.

    pika would decode every confirm into objects and dispatch it through
    its callback registry; at tens of thousands of messages a second that
    is most of the client's CPU. The bytes go through `split_confirms`
    (C) first: confirms on the Publisher's channel go to `confirm_sink`,
    every other frame reaches pika whole and in order, so pika's own frame
    buffer never holds a partial frame.
    """

    confirm_sink = None
    # A partial frame waits in _rx_parts until _rx_need bytes are there:
    # joining on every read would copy a large frame over and over.
    _rx_parts = None
    _rx_have = 0
    _rx_need = 0

    def _proto_data_received(self, data):
        if self._rx_parts is not None:
            self._rx_parts.append(data)
            self._rx_have += len(data)
            if self._rx_have < self._rx_need:
                return
            data = b"".join(self._rx_parts)
            self._rx_parts = None
        if data[:4] == b"AMQP":
            # Protocol-version refusal: not frames; pika reports it.
            self.confirm_sink = None
        sink = self.confirm_sink
        if sink is None:
            super()._proto_data_received(data)
            return
        consumed, events = split_confirms(data, CHANNEL)
        if consumed < len(data):
            tail = data[consumed:]
            self._rx_parts = [tail]
            self._rx_have = len(tail)
            # Frame header (7 bytes) + payload + frame-end; until the header
            # is complete, wait for the header.
            self._rx_need = (8 + int.from_bytes(tail[3:7], "big")) if len(tail) >= 7 else 7
        for event in events:
            if type(event) is tuple:
                self.bytes_received += 21   # pika's heartbeat checker counts bytes
                sink(*event)
            else:
                super()._proto_data_received(event)
                if self.is_closed:
                    return


def _parameters_list(url_or_parameters):
    items = url_or_parameters
    if isinstance(items, (str, pika.connection.Parameters)):
        items = [items]
    out = [pika.URLParameters(p) if isinstance(p, str) else p for p in items]
    if not out:
        raise ValueError("no broker address given")
    return out


class Publisher:
    """Publish to RabbitMQ with confirms, from any thread; reconnect on failure.

    Use it as a context manager from synchronous code (the loop then runs
    in a background thread), or pass ``loop=`` to run on a fastio Loop you
    already run (the constructor then does not wait for the connection).

    :param url_or_parameters: an AMQP URL, pika connection parameters, or a
        list of either (several brokers of a cluster: tried in turn).
    :param confirms: use publisher confirms; False resolves each future as
        soon as its message is handed to the socket (no redelivery then).
    :param max_in_flight: the window: messages queued or awaiting a
        confirm; see the module docstring for the back-pressure policy.
    :param publish_timeout: how long a full window blocks publish()
        before `BackPressureError` (None: until there is room).
    :param connect_timeout: how long the constructor (background-thread
        mode) waits for the first connection before `ConnectError`.
    :param reconnect_delay: (first, max) back-off between attempts, seconds.
    :param retry_deadline: seconds, from a message's first failed attempt
        (nacked, returned, or lost with a channel the broker closed or with
        the connection), after which its next failure is final (`NackError`
        or `UnroutableError`); None: no time bound. close() without a
        timeout waits for messages being retried.
    :param max_attempts: failed attempts after which a message fails;
        None (the default): no count bound. With both bounds None a
        message is retried until it is acked or close() gives up on it.
    :param retry_delay: (first, max) back-off before re-publishing a
        nacked or returned message, seconds; doubles with each of its
        failed attempts.
    :param loop: a fastio Loop to attach to instead of a background thread.
    :raises ConnectError: (background-thread mode) no broker could be
        reached within `connect_timeout`, or the login was refused.
    """

    def __init__(self, url_or_parameters, *, confirms=True, max_in_flight=20000,
                 publish_timeout=None, connect_timeout=15.0,
                 reconnect_delay=(0.1, 5.0), retry_deadline=120.0, max_attempts=None,
                 retry_delay=(0.05, 2.0), loop=None):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if retry_deadline is not None and not retry_deadline >= 0:
            raise ValueError("retry_deadline must be None or >= 0, not %r" % (retry_deadline,))
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be None or at least 1, not %r" % (max_attempts,))
        self._retry_deadline = retry_deadline
        self._max_attempts = max_attempts
        self._retry_first, self._retry_max = retry_delay
        self._params = _parameters_list(url_or_parameters)
        self._confirms = confirms
        self._max_in_flight = max_in_flight
        # Blocked publishers wake only once a quarter of the window is free:
        # waking them for every confirm batch would cost more than the rest.
        self._low_water = max_in_flight - max(1, max_in_flight // 4)
        self._publish_timeout = publish_timeout
        self._delay_first, self._delay_max = reconnect_delay
        self._cond = threading.Condition(threading.Lock())
        self._room_waiters = 0
        self._flush_waiters = 0
        self._closing = False
        self._fatal = None
        self._returnable = collections.deque()
        self._returned = {}
        self._loop = loop if loop is not None else _new_loop()
        self._outbox = Outbox(CHANNEL, self._params[0].frame_max, max_in_flight,
                              new_future, self._wake, self._wait_for_room,
                              self._returnable, self._returned)
        # Loop-thread state.
        self._connection = None
        self._channel = None
        self._transport = None
        self._ready = False
        self._recycling = False     # closing the channel to open a fresh one
        self._retry = []            # nacked messages waiting for _retry_timer
        self._retry_timer = None
        self._retry_has_nacks = False
        self._nack_rounds = 0       # retry rounds with nacks since the last ack
        self._blocked = False
        self._attempt = 0
        self._address = 0
        self._reconnect_timer = None
        self._first_open = concurrent.futures.Future()
        self._closed = concurrent.futures.Future()
        self._thread = None
        self._owns_loop = loop is None
        if self._owns_loop:
            self._thread = threading.Thread(target=self._loop.run_forever,
                                            name="fastio-publisher", daemon=True)
            self._thread.start()
        self._loop.call_soon_threadsafe(self._connect)
        if self._owns_loop:
            try:
                self._first_open.result(connect_timeout)
            except BaseException as exc:
                self._closing = True
                self._loop.call_soon_threadsafe(self._close_on_loop)
                self._shutdown_thread()
                if isinstance(exc, concurrent.futures.TimeoutError):
                    raise ConnectError("no broker reachable within %ss at %s" % (
                        connect_timeout, self._addresses())) from None
                raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ------------------------------------------------------------ public

    def publish(self, exchange, routing_key, body, properties=None, mandatory=False):
        """Queue one message; return a future resolved by the broker's ack.

        Thread-safe. The future (a `concurrent.futures.Future`) resolves to
        None; it fails with `NackError`, `UnroutableError` (mandatory and
        no queue matched), `ChannelClosedError` or `PublisherClosed`.
        The work is done by `Outbox.submit` in C.

        :param exchange: exchange name ('' is the default exchange).
        :param routing_key: the routing key (the queue, on the default exchange).
        :param body: bytes (or str, sent UTF-8 encoded).
        :param properties: a `pika.BasicProperties`, or None.
        :param mandatory: ask the broker to return the message if unroutable.
        :raises BackPressureError: the window stayed full (see the module docstring).
        :raises PublisherClosed: close() was called.
        """
        return self._outbox.submit(exchange, routing_key, body, properties, mandatory)

    def flush(self, timeout=None):
        """Wait until every message published so far is confirmed (or failed).

        :raises TimeoutError: some are still outstanding after `timeout` s.
        """
        box = self._outbox
        target = box.n_submitted
        self._wait(lambda: box.n_done >= target, timeout, "_flush_waiters",
                   lambda: TimeoutError("%d messages still unconfirmed" % (
                       box.n_submitted - box.n_done)))

    def close(self, timeout=None):
        """Flush, close the connection and stop the background loop.

        Messages still unconfirmed after `timeout` seconds fail with
        `PublisherClosed`.
        """
        if self._closing and self._closed.done():
            return
        try:
            if not self._on_loop_thread() and self._fatal is None:
                self.flush(timeout)
        except TimeoutError:
            pass
        finally:
            self._closing = True
            self._outbox.closed_error = PublisherClosed("publish() on a closed Publisher")
            self._loop.call_soon_threadsafe(self._close_on_loop)
            if not self._on_loop_thread():
                try:
                    self._closed.result(30)
                except concurrent.futures.TimeoutError:
                    logger.warning("connection close did not finish within 30 s")
            self._shutdown_thread()

    @property
    def outstanding(self):
        """Messages published but not yet confirmed or failed."""
        return self._outbox.n_submitted - self._outbox.n_done

    # ------------------------------------------------- waiting (any thread)

    def _on_loop_thread(self):
        return self._loop._thread_id == threading.get_ident()

    def _wake(self):
        self._loop.call_soon_threadsafe(self._drain)

    def _wait_for_room(self):
        if self._on_loop_thread():
            raise BackPressureError("confirm window full (%d) on the loop thread"
                                    % self._max_in_flight)
        box = self._outbox
        self._wait(lambda: box.n_submitted - box.n_done < self._max_in_flight,
                   self._publish_timeout, "_room_waiters",
                   lambda: BackPressureError("confirm window (%d) still full after %ss" % (
                       self._max_in_flight, self._publish_timeout)))

    def _wait(self, ready, timeout, counter, timeout_exc):
        # Dekker-style hand-off, correct because the GIL orders memory: a
        # waiter raises its counter and then reads the outbox counts; the
        # loop thread updates the counts and then reads the counters. One
        # of the two sees the other's write, so no wake-up is lost.
        if ready():
            return
        with self._cond:
            setattr(self, counter, getattr(self, counter) + 1)
            try:
                if not self._cond.wait_for(
                        lambda: ready() or self._fatal is not None, timeout):
                    raise timeout_exc()
            finally:
                setattr(self, counter, getattr(self, counter) - 1)
        if self._fatal is not None and not ready():
            raise self._fatal

    def _wake_waiters(self):
        if self._flush_waiters or (self._room_waiters and self.outstanding <= self._low_water):
            with self._cond:
                self._cond.notify_all()

    # ------------------------------------------------- connection (loop)

    def _addresses(self):
        return ", ".join("%s:%s" % (p.host, p.port) for p in self._params)

    def _connect(self):
        self._reconnect_timer = None
        if self._closing:
            return
        params = self._params[self._address % len(self._params)]
        self._address += 1
        conn = _ConfirmingConnection(params, on_open_callback=self._on_open,
                                     on_open_error_callback=self._on_open_error,
                                     on_close_callback=self._on_close,
                                     custom_ioloop=self._loop)
        if self._confirms:
            conn.confirm_sink = self._on_confirm
        self._connection = conn

    def _on_open_error(self, connection, exc):
        self._connection = None
        if isinstance(exc, _AUTH_ERRORS) and not self._first_open.done():
            # Retrying a refused login cannot help: report it at once.
            self._fail_fatal(ConnectError("login refused by %s: %r" % (
                self._addresses(), exc)))
            return
        logger.warning("connecting to %s:%s failed: %r", connection.params.host,
                       connection.params.port, exc)
        self._schedule_reconnect()

    def _schedule_reconnect(self):
        if self._closing:
            self._finish_close()
            return
        delay = min(self._delay_max, self._delay_first * (2 ** self._attempt))
        self._attempt += 1
        # Jitter keeps a fleet of publishers from reconnecting in lockstep.
        self._reconnect_timer = self._loop.call_later(
            delay * random.uniform(0.5, 1.0), self._connect)

    def _on_open(self, connection):
        self._outbox.frame_max = connection.params.frame_max
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(channel_number=CHANNEL, on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel):
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        if self._confirms:
            # Confirms never reach pika (see _ConfirmingConnection); it
            # still wants a callback to register.
            channel.confirm_delivery(self._on_pika_confirm, callback=self._on_ready)
        else:
            self._on_ready(None)

    def _on_ready(self, _frame):
        self._transport = self._connection._transport
        self._ready = True
        self._attempt = 0
        self._outbox.reset_tags()     # delivery tags restart at 1 on a new channel
        if not self._first_open.done():
            self._first_open.set_result(None)
        self._drain()

    def _on_blocked(self, connection, frame):
        logger.warning("broker blocked publishing: %s", frame.method.reason)
        self._blocked = True

    def _on_unblocked(self, connection, frame):
        self._blocked = False
        self._drain()

    def _on_channel_closed(self, channel, reason):
        self._ready = False
        self._channel = None
        recycling, self._recycling = self._recycling, False
        if self._closing or self._connection is None or not self._connection.is_open:
            return      # the connection's close handler deals with it
        if recycling:
            # Our own close: what was unconfirmed was never answered.
            self._requeue(self._outbox.take_unconfirmed())
        elif getattr(reason, "reply_code", None) in _TRANSIENT_CLOSE:
            logger.warning("broker closed the channel: %r; re-publishing", reason)
            self._requeue(self._outbox.take_unconfirmed(), "channel closed: %r" % (reason,))
        else:
            logger.error("broker closed the channel: %r", reason)
            self._fail_unconfirmed(ChannelClosedError(
                "channel closed by the broker with the message in flight: %s" % (reason,)))
        # pika unregisters the channel only after its close callbacks ran:
        # reopening number 1 from here would collide with the dying one.
        self._loop.call_soon(self._reopen_channel)

    def _reopen_channel(self):
        if self._connection is not None and self._connection.is_open and not self._closing:
            self._connection.channel(channel_number=CHANNEL,
                                     on_open_callback=self._on_channel_open)

    def _on_close(self, connection, reason):
        self._ready = False
        self._transport = None
        self._connection = None
        self._channel = None
        self._recycling = False
        self._blocked = False
        if self._closing:
            self._finish_close()
            return
        logger.warning("connection to %s:%s lost (%r); reconnecting", connection.params.host,
                       connection.params.port, reason)
        # At-least-once: what the broker did not ack goes out again, first.
        # Our own close (moving to another node) is not a failed attempt.
        outcome = (None if isinstance(reason, pika.exceptions.ConnectionClosedByClient)
                   else "connection lost: %r" % (reason,))
        self._requeue(self._outbox.take_unconfirmed(), outcome, connection)
        self._schedule_reconnect()

    def _fail_fatal(self, exc):
        self._fatal = exc
        self._closing = True
        self._outbox.closed_error = exc
        if not self._first_open.done():
            self._first_open.set_exception(exc)
        self._finish_close()

    # ------------------------------------------------------ hot path (loop)

    def _drain(self):
        box = self._outbox
        box.wake_pending = False
        if not self._ready or self._blocked or not box.queue:
            return
        data, sent = box.take(self._confirms)
        # The coalesced write: one send() for everything that was queued.
        self._transport.write(data)
        if sent:
            for future in sent:
                future._resolve()
            box.n_done += len(sent)
            self._wake_waiters()

    def _on_confirm(self, tag, multiple, nack):
        if not nack:
            self._nack_rounds = 0
        self._outbox.confirm(tag, multiple, nack, self._on_failed)
        self._wake_waiters()

    def _on_pika_confirm(self, frame):
        method = frame.method
        self._on_confirm(method.delivery_tag, method.multiple,
                         isinstance(method, pika.spec.Basic.Nack))

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

    # ------------------------------------------------------ retry (loop)

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
            self._outbox.n_done += len(msgs) - len(kept)
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

    # ------------------------------------------------------------ closing

    def _fail_unconfirmed(self, exc):
        msgs = self._outbox.take_unconfirmed()
        self._returnable.clear()
        self._returned.clear()
        for msg in msgs:
            msg[0]._resolve(exc)
        self._outbox.n_done += len(msgs)
        self._wake_waiters()

    def _fail_queued(self, exc):
        queue = self._outbox.queue
        n = 0
        while queue:
            queue.popleft()[0]._resolve(exc)
            n += 1
        self._outbox.n_done += n
        self._wake_waiters()

    def _close_on_loop(self):
        if self._reconnect_timer is not None:
            self._reconnect_timer.cancel()
            self._reconnect_timer = None
        conn = self._connection
        if conn is not None and not conn.is_closed and not conn.is_closing:
            conn.close()        # _on_close (or _on_open_error) finishes
        elif conn is None:
            self._finish_close()

    def _finish_close(self):
        exc = self._fatal or PublisherClosed("Publisher closed before the broker confirmed")
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        self._outbox.queue.extendleft(reversed(self._retry))
        self._retry = []
        self._fail_unconfirmed(exc)
        self._fail_queued(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _shutdown_thread(self):
        if self._owns_loop and self._thread is not None:
            self._loop.stop()
            self._thread.join(30)
            self._thread = None
            self._loop.close()


def _new_loop():
    from fastio.loop import Loop
    return Loop()


def _as_bytes(body):
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _same(a, b):
    return (a.decode("utf-8") if isinstance(a, bytes) else a) == b
