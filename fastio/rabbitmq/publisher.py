"""Publisher: confirmed, thread-safe, reconnecting publishing on fastio.

Design (why it is fast and what it guarantees):

* pika does the talking that is not hot: FastioConnection opens the
  connection, channel 1, confirm.select, and decodes what the broker sends
  (basic.ack/nack/return, connection.blocked, close). The hot direction is
  ours: `publish()` encodes basic.publish + header + body frames in C
  (fastio._amqp), in the calling thread, and the loop thread writes every
  queued message with ONE transport write. pika's channel never sees those
  publishes, which is safe because pika keeps no per-publish state on a
  plain channel; delivery tags are counted here (per channel, from 1 after
  confirm.select, as the broker counts).
* Confirms are pipelined in a bounded window of `max_in_flight` messages
  (queued + unconfirmed). Back-pressure policy: when the window is full,
  `publish()` BLOCKS the calling thread until confirms free a slot, at
  most `publish_timeout` seconds (None: no limit), then raises
  `BackPressureError`. On the loop thread itself (attached mode) blocking
  would deadlock, so there a full window raises `BackPressureError` at
  once. Memory is thus bounded by max_in_flight messages.
* At-least-once: every message is kept (as its encoded frames, which carry
  no delivery tag) until the broker acks it. When the connection drops,
  the Publisher reconnects with exponential back-off, cycling through the
  given broker addresses, and re-publishes every unconfirmed message in
  the original order before new ones. A message may thus be delivered
  twice, never lost.
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

import pika
import pika.exceptions

from fastio._ext import amqp as _amqp
from fastio import _pyamqp
from fastio.loop import Loop
from fastio.rabbitmq._future import new_future
from fastio.rabbitmq.connection import FastioConnection
from fastio.rabbitmq.errors import (BackPressureError, ChannelClosedError, ConnectError,
                                    NackError, PublisherClosed, UnroutableError)

__all__ = ["Publisher"]

logger = logging.getLogger("fastio.rabbitmq")

_frames = _amqp if _amqp is not None else _pyamqp
encode_publish = _frames.encode_publish
split_confirms = _frames.split_confirms
EMPTY_PROPERTIES = _pyamqp.EMPTY_PROPERTIES

CHANNEL = 1
# AMQP's smallest frame_max: a body up to this size encodes identically
# whatever frame_max the broker negotiates.
_MIN_FRAME_MAX = 4096
_AUTH_ERRORS = (pika.exceptions.ProbableAuthenticationError,
                pika.exceptions.AuthenticationError,
                pika.exceptions.ProbableAccessDeniedError)


# A message until it is confirmed is a tuple (future, frames, args): the
# encoded frames are what goes on the wire (again, after a reconnect);
# args = (exchange, routing_key, body, properties, mandatory, frame_max)
# is kept only when needed: to match a basic.return (mandatory) or to
# re-encode a body longer than the smallest frame_max should the broker
# negotiate a smaller one than assumed. Tuples: cheapest to build.


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

    def _proto_data_received(self, data):
        if self._rx_tail:
            data = self._rx_tail + data
        if data[:4] == b"AMQP":
            # Protocol-version refusal: not frames; pika reports it.
            self.confirm_sink = None
        sink = self.confirm_sink
        if sink is None:
            self._rx_tail = b""
            super()._proto_data_received(data)
            return
        consumed, events = split_confirms(data, CHANNEL)
        self._rx_tail = data[consumed:] if consumed < len(data) else b""
        for event in events:
            if type(event) is tuple:
                # pika's heartbeat checker counts received bytes.
                self.bytes_received += 21
                sink(*event)
            else:
                super()._proto_data_received(event)
                if self.is_closed:
                    return

    _rx_tail = b""


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
    :param loop: a fastio Loop to attach to instead of a background thread.
    :raises ConnectError: (background-thread mode) no broker could be
        reached within `connect_timeout`, or the login was refused.
    """

    def __init__(self, url_or_parameters, *, confirms=True, max_in_flight=20000,
                 publish_timeout=None, connect_timeout=15.0,
                 reconnect_delay=(0.1, 5.0), loop=None):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._params = _parameters_list(url_or_parameters)
        self._confirms = confirms
        self._max_in_flight = max_in_flight
        self._publish_timeout = publish_timeout
        self._delay_first, self._delay_max = reconnect_delay
        self._frame_max = self._params[0].frame_max
        # Shared with publishing threads (single deque/count operations are
        # atomic under the GIL; see _wait_for_room for the wake-up order).
        self._queue = collections.deque()
        self._submit_lock = threading.Lock()
        self._n_submitted = 0
        self._n_done = 0
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0
        self._wake_pending = False
        self._closing = False
        self._fatal = None
        # Loop-thread state.
        self._connection = None
        self._channel = None
        self._transport = None
        self._ready = False
        self._blocked = False
        self._tag = 0
        self._unconfirmed = {}
        self._lowest = 1
        self._returnable = collections.deque()
        self._returned = {}
        self._attempt = 0
        self._address = 0
        self._reconnect_timer = None
        self._first_open = concurrent.futures.Future()
        self._closed = concurrent.futures.Future()
        self._thread = None
        if loop is None:
            self._loop = Loop()
            self._owns_loop = True
            self._thread = threading.Thread(target=self._loop.run_forever,
                                            name="fastio-publisher", daemon=True)
            self._thread.start()
            self._loop.call_soon_threadsafe(self._connect)
            try:
                self._first_open.result(connect_timeout)
            except BaseException as exc:
                self._shutdown_thread()
                if isinstance(exc, concurrent.futures.TimeoutError):
                    raise ConnectError("no broker reachable within %ss at %s" % (
                        connect_timeout, self._addresses())) from None
                raise
        else:
            self._loop = loop
            self._owns_loop = False
            self._loop.call_soon_threadsafe(self._connect)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ------------------------------------------------------------ public

    def publish(self, exchange, routing_key, body, properties=None, mandatory=False):
        """Queue one message; return a future resolved by the broker's ack.

        Thread-safe. The future's result is None; it fails with
        `NackError`, `UnroutableError` (mandatory and no queue matched),
        `ChannelClosedError` or `PublisherClosed`.

        :param exchange: exchange name ('' is the default exchange).
        :param routing_key: the routing key (the queue, on the default exchange).
        :param body: bytes (or str, sent UTF-8 encoded).
        :param properties: a `pika.BasicProperties`, or None.
        :param mandatory: ask the broker to return the message if unroutable.
        :raises BackPressureError: the window stayed full (see the module docstring).
        :raises PublisherClosed: close() was called.
        """
        if self._closing:
            raise PublisherClosed("publish() on a closed Publisher")
        if self._fatal is not None:
            raise self._fatal
        props = EMPTY_PROPERTIES if properties is None else b"".join(properties.encode())
        frame_max = self._frame_max
        frames = encode_publish(CHANNEL, frame_max, exchange, routing_key, body,
                                props, mandatory)
        if mandatory or len(frames) > _MIN_FRAME_MAX:
            args = (exchange, routing_key, body, props, mandatory, frame_max)
        else:
            args = None
        if self._n_submitted - self._n_done >= self._max_in_flight:
            self._wait_for_room()
        future = new_future()
        with self._submit_lock:
            self._n_submitted += 1
        self._queue.append((future, frames, args))
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._drain)
        return future

    def flush(self, timeout=None):
        """Wait until every message published so far is confirmed (or failed).

        :raises TimeoutError: some are still outstanding after `timeout` s.
        """
        target = self._n_submitted
        self._wait(lambda: self._n_done >= target, timeout,
                   TimeoutError("%d messages still unconfirmed" % (
                       self._n_submitted - self._n_done)))

    def close(self, timeout=None):
        """Flush, close the connection and stop the background loop.

        Messages still unconfirmed after `timeout` seconds fail with
        `PublisherClosed`.
        """
        if self._closing and self._closed.done():
            return
        try:
            if not self._on_loop_thread():
                self.flush(timeout)
        except TimeoutError:
            pass
        finally:
            self._closing = True
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
        return self._n_submitted - self._n_done

    # ------------------------------------------------- waiting (any thread)

    def _on_loop_thread(self):
        return self._loop._thread_id == threading.get_ident()

    def _wait_for_room(self):
        if self._on_loop_thread():
            raise BackPressureError("confirm window full (%d) on the loop thread"
                                    % self._max_in_flight)
        self._wait(lambda: self._n_submitted - self._n_done < self._max_in_flight,
                   self._publish_timeout,
                   BackPressureError("confirm window (%d) still full after %ss" % (
                       self._max_in_flight, self._publish_timeout)))

    def _wait(self, ready, timeout, timeout_exc):
        # Dekker-style hand-off, correct because the GIL orders memory:
        # a waiter raises _waiters and then reads the counts; the loop
        # thread updates the counts and then reads _waiters. One of the two
        # sees the other's write, so no wake-up is lost.
        if ready():
            return
        with self._cond:
            self._waiters += 1
            try:
                if not self._cond.wait_for(
                        lambda: ready() or self._fatal is not None, timeout):
                    raise timeout_exc
            finally:
                self._waiters -= 1
        if self._fatal is not None and not ready():
            raise self._fatal

    def _wake_waiters(self):
        if self._waiters:
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

    def _on_open_error(self, connection, exc):
        if isinstance(exc, _AUTH_ERRORS) and not self._first_open.done():
            # Retrying a refused login cannot help: report it at once.
            self._fail_fatal(ConnectError("login refused by %s: %r" % (
                self._addresses(), exc)))
            return
        logger.warning("connecting to %s failed: %r", connection.params.host, exc)
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
        self._connection = connection
        self._frame_max = connection.params.frame_max
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(channel_number=CHANNEL, on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel):
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        if self._confirms:
            # Confirms never reach pika (see _ConfirmingConnection); it still
            # wants a callback to register.
            channel.confirm_delivery(self._on_unexpected_confirm, callback=self._on_ready)
        else:
            self._on_ready(None)

    def _on_ready(self, _frame):
        self._transport = self._connection._transport
        self._ready = True
        self._attempt = 0
        self._tag = 0           # delivery tags restart at 1 on a new channel
        self._lowest = 1
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
        if self._closing or self._connection is None or not self._connection.is_open:
            return      # the connection's close handler deals with it
        logger.error("broker closed the channel: %r", reason)
        err = ChannelClosedError("channel closed by the broker with the message "
                                 "in flight: %s" % (reason,))
        self._fail_unconfirmed(err)
        # pika unregisters the channel only after its close callbacks ran:
        # reopening number 1 from here would collide with the dying one.
        self._loop.call_soon(self._reopen_channel)

    def _reopen_channel(self):
        if self._connection is not None and self._connection.is_open and not self._closing:
            self._connection.channel(channel_number=CHANNEL,
                                     on_open_callback=self._on_channel_open)

    def _on_close(self, connection, reason):
        self._ready = False
        self._channel = None
        self._transport = None
        self._connection = None
        self._blocked = False
        if self._closing:
            self._finish_close()
            return
        logger.warning("connection lost (%r); reconnecting", reason)
        self._requeue_unconfirmed()
        self._schedule_reconnect()

    def _requeue_unconfirmed(self):
        # At-least-once: what the broker did not ack goes out again, first.
        pending = [self._unconfirmed[t] for t in sorted(self._unconfirmed)]
        self._unconfirmed.clear()
        self._returnable.clear()
        self._returned.clear()
        self._queue.extendleft(reversed(pending))

    def _fail_fatal(self, exc):
        self._fatal = exc
        self._closing = True
        if not self._first_open.done():
            self._first_open.set_exception(exc)
        self._fail_queued(exc)
        self._finish_close()

    # ------------------------------------------------------ hot path (loop)

    def _drain(self):
        self._wake_pending = False
        if not self._ready or self._blocked:
            return
        queue = self._queue
        if not queue:
            return
        frames = []
        append = frames.append
        confirms = self._confirms
        unconfirmed = self._unconfirmed
        tag = self._tag
        frame_max = self._frame_max
        sent = []
        popleft = queue.popleft
        while queue:
            msg = popleft()
            args = msg[2]
            if args is not None:
                if args[5] != frame_max and len(args[2]) > _MIN_FRAME_MAX - 8:
                    msg = self._reencode(msg, frame_max)
                if args[4] and confirms:
                    self._returnable.append(tag + 1)
            append(msg[1])
            if confirms:
                tag += 1
                unconfirmed[tag] = msg
            else:
                sent.append(msg[0])
        self._tag = tag
        # The coalesced write: one send() for everything that was queued.
        self._transport.write(b"".join(frames))
        if sent:
            for future in sent:
                future._resolve()
            self._done(len(sent))

    @staticmethod
    def _reencode(msg, frame_max):
        exchange, routing_key, body, props, mandatory, _ = msg[2]
        frames = encode_publish(CHANNEL, frame_max, exchange, routing_key, body,
                                props, mandatory)
        return (msg[0], frames, (exchange, routing_key, body, props, mandatory, frame_max))

    def _done(self, n):
        self._n_done += n
        self._wake_waiters()

    def _on_unexpected_confirm(self, frame):
        method = frame.method
        self._on_confirm(method.delivery_tag, method.multiple,
                         isinstance(method, pika.spec.Basic.Nack))

    def _on_confirm(self, tag, multiple, nack):
        unconfirmed = self._unconfirmed
        pop = unconfirmed.pop
        returned = self._returned
        n = 0
        if multiple:
            first = self._lowest
            self._lowest = max(first, tag + 1)
            tags = range(first, tag + 1)
        else:
            tags = (tag,)
            if tag == self._lowest:
                self._lowest += 1
        for t in tags:
            msg = pop(t, None)
            if msg is None:
                continue
            n += 1
            if nack:
                args = msg[2]
                msg[0]._resolve(NackError("broker nacked the message" if args is None else
                                          "broker nacked the message (exchange=%r "
                                          "routing_key=%r)" % (args[0], args[1])))
            elif returned and t in returned:
                msg[0]._resolve(returned.pop(t))
            else:
                msg[0]._resolve()
        # Out-of-order single acks leave holes below: skip confirmed tags.
        while self._lowest <= self._tag and self._lowest not in unconfirmed:
            self._lowest += 1
        self._done(n)

    def _on_return(self, channel, method, properties, body):
        # Drop tags already confirmed, then take the oldest match.
        returnable = self._returnable
        unconfirmed = self._unconfirmed
        while returnable and returnable[0] not in unconfirmed:
            returnable.popleft()
        for tag in returnable:
            msg = unconfirmed.get(tag)
            if msg is None or tag in self._returned:
                continue
            exchange, routing_key, sent_body = msg[2][:3]
            if (_same(exchange, method.exchange) and _same(routing_key, method.routing_key)
                    and bytes(_as_bytes(sent_body)) == body):
                self._returned[tag] = UnroutableError(
                    method.exchange, method.routing_key, method.reply_code,
                    method.reply_text)
                return
        logger.warning("basic.return matched no unconfirmed message: %r", method)

    # ------------------------------------------------------------ closing

    def _fail_unconfirmed(self, exc):
        msgs = [self._unconfirmed[t] for t in sorted(self._unconfirmed)]
        self._unconfirmed.clear()
        self._returnable.clear()
        self._returned.clear()
        for msg in msgs:
            msg[0]._resolve(exc)
        self._done(len(msgs))

    def _fail_queued(self, exc):
        n = 0
        while self._queue:
            self._queue.popleft()[0]._resolve(exc)
            n += 1
        self._done(n)

    def _close_on_loop(self):
        if self._reconnect_timer is not None:
            self._reconnect_timer.cancel()
            self._reconnect_timer = None
        if self._connection is not None and self._connection.is_open:
            self._connection.close()        # _on_close finishes
        elif self._connection is None or self._connection.is_closed:
            self._finish_close()

    def _finish_close(self):
        exc = PublisherClosed("Publisher closed before the broker confirmed")
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


def _as_bytes(body):
    return body.encode("utf-8") if isinstance(body, str) else body


def _same(a, b):
    return (a.decode("utf-8") if isinstance(a, bytes) else a) == b
