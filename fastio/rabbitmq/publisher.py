"""Publisher: confirmed, thread-safe, reconnecting publishing on fastio.

Design (why it is fast and what it guarantees):

* pika does the talking that is not hot: FastioConnection opens the
  connection, channel 1, confirm.select, and decodes the rare frames
  (basic.return, connection.blocked, close, heartbeats). The hot paths
  are ours, compiled (fastio._impl.amqp_c; on the pure-Python fallback its
  twin fastio._impl.amqp_py, same behaviour): `publish()` is
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
* Retry, for clusters: a nack is not final; a nacked or returned message,
  or one lost with its channel or connection, is sent again within a
  bound (`retry_deadline`, `max_attempts`). See fastio.rabbitmq._retry.
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
  body (the broker routes a channel's publishes in order), and when the
  ack arrives it is retried (see above) or, past the bound, its future
  fails with `UnroutableError`.
* A channel error that is not transient (e.g. an unknown exchange) closes
  the channel, and a new one is opened. The broker does not say which
  message caused it, but its reply names the exchange (404 no exchange, 403
  access refused) or the body size (406 over max_message_size): the
  unconfirmed messages that match fail with `ChannelClosedError`, the
  others go out again on the new channel (after the first refused one the
  broker discarded them). A reply naming neither fails every unconfirmed
  message.
"""

import collections
import concurrent.futures
import os
import random
import re
import threading
import time
import weakref
from types import TracebackType
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Mapping, Optional,
                    Sequence, Tuple, Type, Union)

import pika
import pika.connection
import pika.exceptions
import pika.spec

from fastio._impl import amqp as _frames
from fastio._log import get_logger
from fastio.rabbitmq import _params
from fastio.rabbitmq._future import PublishFuture, new_future
from fastio.rabbitmq._retry import RetryEngine, check_options, check_retry_options, check_timeout
from fastio.rabbitmq.connection import FastioConnection
from fastio.rabbitmq.errors import (BackPressureError, ChannelClosedError, CloseTimeoutError,
                                    ConnectError, PublisherClosed)

if TYPE_CHECKING:
    from fastio.loop import Loop

__all__ = ["Publisher", "Address", "Properties", "Body"]

#: What a Publisher connects to: an AMQP URL or pika connection parameters.
Address = Union[str, pika.connection.Parameters]
#: Message properties: a pika.BasicProperties, a dict of its fields, or None.
Properties = Union[pika.spec.BasicProperties, Mapping[str, Any], None]
#: A message body; str is sent UTF-8 encoded.
Body = Union[bytes, bytearray, memoryview, str]

logger = get_logger("fastio.rabbitmq")

# The hot path: the amqp pair fastio._impl chose (compiled, else the twin).
split_confirms = _frames.split_confirms
Outbox = _frames.Outbox

CHANNEL = 1
# Channel-close reply codes that say something about the node, not about
# the message: CONNECTION_FORCED (node shutting down), RESOURCE_ERROR,
# INTERNAL_ERROR (e.g. a queue process gone with its node). The others
# (NOT_FOUND, ACCESS_REFUSED, PRECONDITION_FAILED, ...) would fail again.
_TRANSIENT_CLOSE = frozenset((320, 506, 541))
# What the broker's reply names of the publish it refused: the exchange
# (404 no exchange, 403 access refused) or the body size (406, over
# max_message_size).
_REFUSED_EXCHANGE = re.compile(r"exchange '(.*?)' in vhost")
_REFUSED_SIZE = re.compile(r"message size (\d+) is larger than")


def _exchange_of(frames: bytes) -> bytes:
    # basic.publish: frame head (7), class and method (4), reserved (2),
    # then the exchange as a short string.
    return frames[14:14 + frames[13]]


def _body_size_of(frames: bytes) -> int:
    # The content header follows the method frame (head, payload, end
    # byte): its head (7), class (2), weight (2), then the body size (8).
    header = 7 + int.from_bytes(frames[3:7], "big") + 1
    return int.from_bytes(frames[header + 11:header + 19], "big")


def _refused_test(reason: Any) -> Optional[Callable[[bytes], bool]]:
    """Return a test of a message's frames for the publish a channel.close refused, or None."""
    text = getattr(reason, "reply_text", None) or ""
    match = _REFUSED_EXCHANGE.search(text)
    if match:
        name = match.group(1).encode("utf-8")
        return lambda frames: _exchange_of(frames) == name
    match = _REFUSED_SIZE.search(text)
    if match:
        size = int(match.group(1))
        return lambda frames: _body_size_of(frames) == size
    return None
# Longest a blocked publish()/flush() sleeps without re-checking (see _wait).
_RECHECK = 0.05

# A message, until it is confirmed, is a tuple (future, frames, args): the
# encoded frames are what goes on the wire (again, after a reconnect);
# args = (exchange, routing_key, body, properties, mandatory, frame_max)
# is kept only when needed: to match a basic.return (mandatory), or to
# re-encode frames longer than the smallest frame_max should the broker
# negotiate a smaller frame_max than assumed (a message whose header then
# no longer fits a frame fails with ValueError). Tuples: cheapest to build.


class _ConfirmingConnection(FastioConnection):
    """FastioConnection that takes basic.ack/nack out of the stream itself.

    pika would decode every confirm into objects and dispatch it through
    its callback registry; at tens of thousands of messages a second that
    is most of the client's CPU. The bytes go through `split_confirms`
    (compiled, or its pure-Python twin) first: confirms on the Publisher's
    channel go to `confirm_sink`, every other frame reaches pika whole and
    in order, so pika's own frame buffer never holds a partial frame.
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


class Publisher(RetryEngine):
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
    :param close_timeout: how long `close()` (and leaving a ``with``
        block) waits for outstanding confirms (messages waiting for a retry
        included) and the connection's close before it gives up with
        `CloseTimeoutError`; None: no limit.
    :param reconnect_delay: (first, max) back-off between attempts, seconds.
    :param retry_deadline: seconds, from a message's first failed attempt
        (nacked, returned, or lost with a channel the broker closed or with
        the connection), after which its next failure is final (`NackError`
        or `UnroutableError`); None: no time bound. close() waits for
        messages being retried too, within its own timeout.
    :param max_attempts: failed attempts after which a message fails;
        None (the default): no count bound. With both bounds None a
        message is retried until it is acked or close() gives up on it.
    :param retry_delay: (first, max) back-off before re-publishing a
        nacked or returned message, seconds; doubles with each of its
        failed attempts.
    :param loop: a fastio Loop to attach to instead of a background thread.
    :raises ValueError: an address that is not an ``amqp://`` or
        ``amqps://`` URL or pika connection parameters, or an option out
        of range (a timeout that is not None or a finite number >= 0, a
        back-off pair not 0 <= first <= max, a window or attempt bound
        below 1).
    :raises ConnectError: (background-thread mode) no broker could be
        reached within `connect_timeout`, or the login or virtual host was
        refused.
    """

    def __init__(self, url_or_parameters: Union[Address, Sequence[Address]], *,
                 confirms: bool = True, max_in_flight: int = 20000,
                 publish_timeout: Optional[float] = None, connect_timeout: float = 15.0,
                 close_timeout: Optional[float] = 30.0,
                 reconnect_delay: Tuple[float, float] = (0.1, 5.0),
                 retry_deadline: Optional[float] = 120.0, max_attempts: Optional[int] = None,
                 retry_delay: Tuple[float, float] = (0.05, 2.0),
                 loop: Optional["Loop"] = None) -> None:
        check_options(max_in_flight, connect_timeout, close_timeout, reconnect_delay,
                      publish_timeout)
        check_retry_options(retry_deadline, max_attempts, retry_delay)
        self._init_retry(retry_deadline, max_attempts, retry_delay)
        self._params = _params.parameters_list(url_or_parameters)
        self._close_timeout = close_timeout
        self._failed_on_close = 0       # messages close() had to fail
        self._last_error: Optional[str] = None
        self._confirms = confirms
        self._max_in_flight = max_in_flight
        # Blocked publishers wake only once a quarter of the window is free:
        # waking them for every confirm batch would cost more than the rest.
        self._low_water = max_in_flight - max(1, max_in_flight // 4)
        self._publish_timeout = publish_timeout
        self._delay_first, self._delay_max = reconnect_delay
        # Reentrant: flush() or close() from a signal handler may run on a
        # thread that is inside _wait() holding it.
        self._cond = threading.Condition(threading.RLock())
        self._room_waiters = 0
        self._flush_waiters = 0
        self._closing = False
        self._fatal: Optional[BaseException] = None
        self._returnable: Deque[int] = collections.deque()
        self._returned: Dict[int, BaseException] = {}
        self._loop = loop if loop is not None else _new_loop()
        self._outbox = Outbox(CHANNEL, self._params[0].frame_max, max_in_flight,
                              self._future_factory(), self._wake, self._wait_for_room,
                              self._returnable, self._returned)
        # Loop-thread state.
        self._connection: Any = None
        self._channel: Any = None
        self._transport: Any = None
        self._ready = False
        self._recycling = False     # closing the channel to open a fresh one
        self._blocked = False
        self._attempt = 0
        self._address = 0
        self._reconnect_timer: Any = None
        self._first_open: "concurrent.futures.Future[None]" = concurrent.futures.Future()
        self._closed: "concurrent.futures.Future[None]" = concurrent.futures.Future()
        self._thread: Optional[threading.Thread] = None
        self._owns_loop = loop is None
        self._forked = False
        if self._owns_loop:
            _running_publishers.add(self)
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
                    raise self._unreachable(connect_timeout) from None
                raise

    def _unreachable(self, connect_timeout: float) -> ConnectError:
        last = "" if self._last_error is None else ": " + self._last_error
        return ConnectError("no broker reachable within %ss at %s%s" % (
            connect_timeout, self._addresses(), last))

    def _future_factory(self) -> Callable[[], PublishFuture]:
        """Return what makes a message's future (a subclass may bridge them)."""
        return new_future

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open" if self._ready else "connecting"
        return "<%s %s %s, %d outstanding>" % (type(self).__name__, self._addresses(),
                                               state, self.outstanding)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    # ------------------------------------------------------------ public

    def publish(self, exchange: Union[str, bytes], routing_key: Union[str, bytes], body: Body,
                properties: Properties = None,
                mandatory: bool = False) -> "concurrent.futures.Future[None]":
        """Queue one message; return a future resolved by the broker's ack.

        Thread-safe. The future (a `concurrent.futures.Future`) resolves to
        None; it fails with `NackError`, `UnroutableError` (mandatory and
        no queue matched), `ChannelClosedError` or `PublisherClosed`.
        The work is done by `Outbox.submit` (compiled, or its pure-Python
        twin on the fallback).

        :param exchange: exchange name ('' is the default exchange).
        :param routing_key: the routing key (the queue, on the default exchange).
        :param body: bytes (or str, sent UTF-8 encoded).
        :param properties: a `pika.BasicProperties`, a dict of its fields
            (``{"delivery_mode": 2}``), or None.
        :param mandatory: ask the broker to return the message if unroutable.
        :raises BackPressureError: the window stayed full (see the module docstring).
        :raises PublisherClosed: close() was called.
        :raises TypeError: properties of another type, or a dict with a key
            that is not a basic property.
        """
        future: "concurrent.futures.Future[None]" = self._outbox.submit(
            exchange, routing_key, body, properties, mandatory)
        return future

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every message published so far is confirmed (or failed).

        Safe in ``finally`` blocks and signal handlers: the one lock it
        takes is reentrant, and its wait re-checks on its own, so a handler
        that interrupted a publish() or another flush() on the same thread
        neither deadlocks nor misses a wake-up. Not on the loop thread of an
        attached Publisher: waiting there would stop the loop it waits for.

        :raises TimeoutError: some are still outstanding after `timeout` s.
        :raises RuntimeError: called on the loop's own thread.
        :raises ValueError: `timeout` is not None or a finite number >= 0.
        """
        check_timeout("timeout", timeout)
        if self._on_loop_thread():
            raise RuntimeError("flush() on the Publisher's loop thread would never return")
        box = self._outbox
        target = box.n_submitted
        if box.n_done >= target:
            return
        # Also covers a publish() interrupted between queueing its message
        # and scheduling the write (KeyboardInterrupt, a signal handler).
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._drain)
        self._wait(lambda: box.n_done >= target, timeout, "_flush_waiters",
                   lambda: TimeoutError("%d messages still unconfirmed" % (
                       box.n_submitted - box.n_done)))

    def close(self, timeout: Optional[float] = None) -> None:
        """Flush, close the connection and stop the background loop.

        Waits at most `timeout` seconds (default: the constructor's
        `close_timeout`) for the outstanding confirms and the connection's
        close. A message waiting for a retry (nacked or returned, see
        `retry_deadline`) is outstanding too: close() waits for its ack,
        and when the time runs out it fails and counts like the others.
        Idempotent, and safe in ``finally`` blocks and signal handlers,
        also while another close() on the same thread is under way.

        :raises CloseTimeoutError: messages were still unconfirmed when the
            time ran out; their futures failed with `PublisherClosed`.
        :raises ValueError: `timeout` is not None or a finite number >= 0.
        """
        check_timeout("timeout", timeout)
        if self._forked:
            # A copy a fork() left in this process: its connection, loop and
            # thread are the parent's. Nothing is sent; the copies of the
            # unconfirmed messages' futures fail here (the parent's resolve).
            if not self._closed.done():
                self._finish_close()
            return
        if timeout is None:
            timeout = self._close_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        on_loop = self._on_loop_thread()
        timed_out = False
        try:
            if not on_loop and self._fatal is None and not self._closed.done():
                self.flush(timeout)
        except TimeoutError:
            timed_out = True
        finally:
            self._closing = True
            self._outbox.closed_error = PublisherClosed("publish() on a closed Publisher")
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._close_on_loop)
            if not on_loop:
                remaining = None if deadline is None else max(0.5, deadline - time.monotonic())
                try:
                    self._closed.result(remaining)
                except concurrent.futures.TimeoutError:
                    logger.warning("connection close did not finish within %ss", timeout)
                    if not self._loop.is_closed():
                        # The broker stopped answering: drop the socket now,
                        # not when this Publisher is collected.
                        self._loop.call_soon_threadsafe(self._drop_stream)
                        try:
                            self._closed.result(1.0)
                        except concurrent.futures.TimeoutError:
                            pass
                self._shutdown_thread()
        # Confirms that came in after the flush gave up are not counted:
        # only messages whose futures close() failed are.
        left = self._failed_on_close or self.outstanding
        if timed_out and left:
            raise CloseTimeoutError(left, timeout)

    @property
    def outstanding(self) -> int:
        """Messages published but not yet confirmed or failed."""
        return self._outbox.n_submitted - self._outbox.n_done

    # ------------------------------------------------- waiting (any thread)

    def _on_loop_thread(self) -> bool:
        return self._loop.thread_id == threading.get_ident()

    def _wake(self):
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            # The loop is closed (close() finished while this message was
            # being queued): nothing will send it, so fail it now.
            self._fail_queued(self._outbox.closed_error or PublisherClosed(
                "publish() on a closed Publisher"))

    def _wait_for_room(self) -> None:
        """Block until the window has room (the Outbox calls it when full)."""
        if self._on_loop_thread():
            raise BackPressureError("confirm window full (%d) on the loop thread"
                                    % self._max_in_flight)
        box = self._outbox
        self._wait(lambda: box.n_submitted - box.n_done < self._max_in_flight,
                   self._publish_timeout, "_room_waiters",
                   lambda: BackPressureError("confirm window (%d) still full after %ss" % (
                       self._max_in_flight, self._publish_timeout)))
        if box.closed_error is not None:
            raise box.closed_error      # closed while this publish() waited

    def _wait(self, ready, timeout, counter, timeout_exc):
        # Dekker-style hand-off, correct because the GIL orders memory: a
        # waiter raises its counter and then reads the outbox counts; the
        # loop thread updates the counts and then reads the counters. One
        # of the two sees the other's write, so no wake-up is lost.
        #
        # The wait re-checks every _RECHECK seconds even without a wake-up:
        # a signal handler that runs on this thread after the check and
        # before the wait (the lock is reentrant, so the handler may flush)
        # can take the last notification, and nothing would wake us again.
        if ready():
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            setattr(self, counter, getattr(self, counter) + 1)
            try:
                while not (ready() or self._fatal is not None):
                    pause = _RECHECK
                    if deadline is not None:
                        pause = min(pause, deadline - time.monotonic())
                        if pause <= 0:
                            raise timeout_exc()
                    self._cond.wait(pause)
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
        return ", ".join(_params.describe(p) for p in self._params)

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
        why = _params.explain(exc, connection.params)
        if _params.is_fatal(exc) and not self._first_open.done():
            # Retrying a refused login or a missing vhost cannot help.
            self._fail_fatal(ConnectError(why))
            return
        # Once per outage: a broker that stays down would otherwise log a
        # line per attempt.
        if self._last_error is None:
            logger.warning("%s; retrying", why)
        else:
            logger.debug("%s; retrying", why)
        self._last_error = why
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
        self._last_error = None
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
            exc = ChannelClosedError(
                "channel closed by the broker with the message in flight: %s" % (reason,))
            msgs = self._outbox.take_unconfirmed()
            refused = _refused_test(reason)
            failed, others = [], []
            for msg in msgs:
                (failed if refused is not None and refused(msg[1]) else others).append(msg)
            if failed:
                # The messages the reply names fail; the others on that
                # channel were discarded (after the first refused) or not
                # yet confirmed: they go out again on the next channel, not
                # counted as a failed attempt of theirs.
                self._fail_unconfirmed(exc, failed)
                self._requeue(others)
            else:
                self._fail_unconfirmed(exc, msgs)
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
        if data:
            self._transport.write(data)
        if sent:
            for future in sent:
                future._resolve()
            box.settle(len(sent))
        # (take() may also have failed messages that no longer fit a frame.)
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

    # ------------------------------------------------------------ closing

    def _fail_unconfirmed(self, exc, msgs=None):
        if msgs is None:
            msgs = self._outbox.take_unconfirmed()
        self._returnable.clear()
        self._returned.clear()
        for msg in msgs:
            msg[0]._resolve(exc)
        self._outbox.settle(len(msgs))
        self._wake_waiters()
        return len(msgs)

    def _fail_queued(self, exc):
        queue = self._outbox.queue
        n = 0
        while queue:
            queue.popleft()[0]._resolve(exc)
            n += 1
        self._outbox.settle(n)
        self._wake_waiters()
        return n

    def _close_on_loop(self):
        if self._reconnect_timer is not None:
            self._reconnect_timer.cancel()
            self._reconnect_timer = None
        conn = self._connection
        if conn is not None and not conn.is_closed and not conn.is_closing:
            conn.close()        # _on_close (or _on_open_error) finishes
        elif conn is None:
            self._finish_close()

    def _drop_stream(self):
        conn = self._connection
        if conn is not None and not conn.is_closed:
            conn._terminate_stream(ConnectionError("the broker did not answer the close"))

    def _finish_close(self):
        exc = self._fatal or PublisherClosed("Publisher closed before the broker confirmed")
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        # Messages waiting for their retry are unconfirmed too: they fail
        # (and count) with the rest, never vanish.
        self._outbox.queue.extendleft(reversed(self._retry))
        self._retry = []
        self._failed_on_close += self._fail_unconfirmed(exc) + self._fail_queued(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _shutdown_thread(self):
        thread, self._thread = self._thread, None
        if not self._owns_loop or thread is None:
            return      # not ours, or another close() (maybe the one we interrupted) does it
        _running_publishers.discard(self)
        self._loop.stop()
        thread.join(30)
        if thread.is_alive():
            logger.warning("the Publisher's loop thread did not stop within 30 s")
            return
        # The loop is stopped: what the close on the loop could not settle
        # (the broker never answered, or a publish() raced close()),
        # settle here, so no future stays pending.
        self._loop.close()
        if not self._closed.done():
            self._finish_close()
        else:
            self._fail_queued(self._outbox.closed_error)

    def _after_fork_in_child(self):
        # Only assignments: another thread of the parent may have held any
        # lock at the fork, and that thread is not here to release it.
        self._forked = True
        self._closing = True
        self._fatal = self._outbox.closed_error = PublisherClosed(
            "this Publisher belongs to the process that forked this one (pid %d); "
            "make a new Publisher here" % os.getppid())
        self._cond = threading.Condition(threading.RLock())
        self._thread = None


# Publishers running their own loop thread: after a fork() the child's
# copies have no thread and share the parent's connection (see close()).
_running_publishers: "weakref.WeakSet[Publisher]" = weakref.WeakSet()


def _orphan_publishers_in_child():
    for publisher in list(_running_publishers):
        publisher._after_fork_in_child()
    _running_publishers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_orphan_publishers_in_child)


def _new_loop():
    from fastio.loop import Loop
    return Loop()
