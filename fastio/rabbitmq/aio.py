"""AsyncPublisher: the Publisher for asyncio code, on the same engine.

The engine is `Publisher` itself (a private subclass, `_Engine`) running
its fastio loop in its background thread: the connection, the confirm
window, reconnects with re-publication, retries of nacked and returned
messages (with their options), cluster addresses and the C hot path are
the Publisher's, unchanged. Two things differ, both hooks of the
Publisher:

* Futures. Each message's `PublishFuture` also carries an asyncio future
  made on the event loop. When the engine's thread resolves a message it
  queues it on the `_Bridge`; the first resolution of a batch schedules
  one ``call_soon_threadsafe(dispatch)``, so a batch of confirms costs one
  cross-thread wake-up, not one per message. `dispatch` runs on the event
  loop and settles the asyncio futures there.
* Back-pressure. The engine never blocks: the window is counted on the
  event loop's side (published minus settled), and `publish()` awaits
  room (`publish_nowait()` raises `BackPressureError`, as
  ``asyncio.Queue.put_nowait`` raises QueueFull).

The steps that block (waiting for the first connection, close() joining
the engine's thread) run in a short-lived helper thread that the event
loop awaits. Nothing here uses anything beyond ``call_soon_threadsafe``
and ``create_future``, so any asyncio loop works: asyncio's, uvloop's,
fastio's.
"""

import asyncio
import collections
import threading
from types import TracebackType
from typing import (Any, Callable, Deque, List, Optional, Sequence, Tuple, Type,
                    TypeVar, Union)

from fastio.rabbitmq import _params
from fastio.rabbitmq._future import PublishFuture
from fastio.rabbitmq.errors import BackPressureError, PublisherClosed
from fastio.rabbitmq._retry import check_options, check_retry_options, check_timeout
from fastio.rabbitmq.publisher import Address, Body, Properties, Publisher

__all__ = ["AsyncPublisher"]

_T = TypeVar("_T")


class _Bridge:
    """Resolved messages on their way from the engine's thread to the event loop."""

    __slots__ = ("loop", "done", "scheduled", "dispatch")

    def __init__(self, loop: asyncio.AbstractEventLoop, dispatch: Callable[[], None]) -> None:
        self.loop = loop
        self.done: Deque["_BridgedFuture"] = collections.deque()
        self.scheduled = False
        self.dispatch = dispatch


class _BridgedFuture(PublishFuture):
    """A PublishFuture whose resolution is forwarded to its asyncio future."""

    _bridge: _Bridge       # set on the per-publisher subclass
    _aio: "asyncio.Future[None]"

    def _resolve(self, exc: Optional[BaseException] = None) -> None:
        PublishFuture._resolve(self, exc)
        bridge = self._bridge
        bridge.done.append(self)
        # Ordering against dispatch(): it clears `scheduled` before it
        # drains, and this appends before it reads `scheduled`; the GIL
        # orders the two, so either dispatch sees this future or a new
        # dispatch is scheduled.
        if not bridge.scheduled:
            bridge.scheduled = True
            try:
                bridge.loop.call_soon_threadsafe(bridge.dispatch)
            except RuntimeError:       # the event loop is closed: nobody awaits it
                pass


class _Engine(Publisher):
    """The Publisher with bridged futures and a window that never blocks."""

    def __init__(self, future_factory: Callable[[], PublishFuture],
                 url_or_parameters: Any, **kwargs: Any) -> None:
        self._bridged_factory = future_factory
        super().__init__(url_or_parameters, **kwargs)
        # AsyncPublisher counts the window itself, on the event loop; the
        # engine's own count lags it by the confirms being settled.
        self._outbox.max_in_flight = 1 << 62

    def _future_factory(self) -> Callable[[], PublishFuture]:
        return self._bridged_factory

    def _wait_for_room(self) -> None:
        raise BackPressureError("confirm window full")


def _in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], _T],
               on_orphan: Optional[Callable[[_T], None]] = None) -> "asyncio.Future[_T]":
    """Run blocking `fn` in a new thread; return an asyncio future of its result.

    `on_orphan(result)` runs (in that thread) when nobody is left to take
    the result: the future was cancelled or the event loop closed.
    """
    future: "asyncio.Future[_T]" = loop.create_future()

    def settle(result: Any, exc: Optional[BaseException]) -> None:
        if future.cancelled():
            if exc is None and on_orphan is not None:
                threading.Thread(target=on_orphan, args=(result,), daemon=True).start()
        elif exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result = fn()
        except BaseException as error:   # handed to the awaiting task
            try:
                loop.call_soon_threadsafe(settle, None, error)
            except RuntimeError:          # the event loop is closed
                pass
            return
        try:
            loop.call_soon_threadsafe(settle, result, None)
        except RuntimeError:              # the event loop is closed
            if on_orphan is not None:
                on_orphan(result)

    threading.Thread(target=run, name="fastio-aio-helper", daemon=True).start()
    return future


class AsyncPublisher:
    """Publish to RabbitMQ with confirms from asyncio code; reconnect on failure.

    The `Publisher` for coroutines, on the same engine and with the same
    guarantees (confirms, at-least-once re-publication after a reconnect,
    retries of nacked and returned messages, cluster addresses, a bounded
    window), and nothing that blocks the event loop::

        async with AsyncPublisher("amqp://guest:guest@localhost/%2F") as pub:
            await pub.publish("", "hello", b"body")          # returns once confirmed

    Use one AsyncPublisher from one event loop (the one it connected on).

    :param url_or_parameters: an AMQP URL, pika connection parameters, or a
        list of either (several brokers of a cluster: tried in turn).
    :param confirms: use publisher confirms; False settles each message
        once it is handed to the socket.
    :param max_in_flight: the window: messages published and not yet
        confirmed; `publish()` awaits room, `publish_nowait()` raises
        `BackPressureError` when it is full.
    :param connect_timeout: how long `connect()` waits for the first
        connection before `ConnectError`.
    :param close_timeout: how long `close()` waits for outstanding
        confirms before `CloseTimeoutError`; None: no limit.
    :param reconnect_delay: (first, max) back-off between attempts, seconds.
    :param retry_deadline: seconds from a message's first failed attempt
        (nacked, returned, or lost with its channel or connection) after
        which its next failure is final; None: no time bound.
    :param max_attempts: failed attempts after which a message fails;
        None: no count bound.
    :param retry_delay: (first, max) back-off before re-publishing a
        nacked or returned message, seconds; doubles with each attempt.
        The retry options are the `Publisher`'s, with the same meaning.
    :raises ValueError: an address that is not an ``amqp://`` or
        ``amqps://`` URL or pika connection parameters, or options out of
        range, as the `Publisher`'s.
    """

    def __init__(self, url_or_parameters: Union[Address, Sequence[Address]],
                 *, confirms: bool = True, max_in_flight: int = 20000,
                 connect_timeout: float = 15.0, close_timeout: Optional[float] = 30.0,
                 reconnect_delay: Tuple[float, float] = (0.1, 5.0),
                 retry_deadline: Optional[float] = 120.0, max_attempts: Optional[int] = None,
                 retry_delay: Tuple[float, float] = (0.05, 2.0)) -> None:
        check_options(max_in_flight, connect_timeout, close_timeout, reconnect_delay)
        # Checked here, not only by the engine: bad options fail at once,
        # not at connect().
        check_retry_options(retry_deadline, max_attempts, retry_delay)
        self._params = _params.parameters_list(url_or_parameters)
        self._options = dict(confirms=confirms, max_in_flight=max_in_flight,
                             connect_timeout=connect_timeout, close_timeout=close_timeout,
                             reconnect_delay=reconnect_delay, retry_deadline=retry_deadline,
                             max_attempts=max_attempts, retry_delay=retry_delay)
        self._max_in_flight = max_in_flight
        self._low_water = max_in_flight - max(1, max_in_flight // 4)
        self._engine: Optional[_Engine] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._submit: Callable[..., Any] = self._not_connected
        self._published = 0
        self._settled = 0
        self._room_waiters: List["asyncio.Future[None]"] = []
        self._flush_waiters: List[Tuple[int, "asyncio.Future[None]"]] = []
        self._closed = False

    def __repr__(self) -> str:
        state = ("closed" if self._closed else "open" if self._engine is not None
                 else "not connected")
        return "<AsyncPublisher %s %s, %d outstanding>" % (
            ", ".join(_params.describe(p) for p in self._params), state, self.outstanding)

    async def __aenter__(self) -> "AsyncPublisher":
        await self.connect()
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]],
                        exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        await self.close()

    # ------------------------------------------------------------ public

    @property
    def outstanding(self) -> int:
        """Messages published and not yet confirmed or failed."""
        return self._published - self._settled

    async def connect(self) -> None:
        """Connect to the first broker that accepts; `async with` calls it.

        :raises ConnectError: no broker could be reached within
            `connect_timeout`, or the login or virtual host was refused.
        :raises RuntimeError: already connected.
        """
        if self._engine is not None or self._closed:
            raise RuntimeError("AsyncPublisher.connect() called twice")
        loop = asyncio.get_running_loop()
        bridge = _Bridge(loop, self._dispatch)
        future_cls: Any = type("_BridgedFuture", (_BridgedFuture,), {"_bridge": bridge})
        new = object.__new__
        create_future = loop.create_future

        def new_future() -> PublishFuture:
            future: _BridgedFuture = new(future_cls)
            future._aio = create_future()
            return future

        self._loop = loop
        self._bridge = bridge
        params, options = self._params, self._options
        engine = await _in_thread(loop, lambda: _Engine(new_future, params, **options),
                                  on_orphan=lambda engine: engine.close())
        self._engine = engine
        self._submit = engine._outbox.submit

    def publish_nowait(self, exchange: Union[str, bytes], routing_key: Union[str, bytes],
                       body: Body,
                       properties: Properties = None,
                       mandatory: bool = False) -> "asyncio.Future[None]":
        """Queue one message; return an asyncio future settled by the broker's confirm.

        Same arguments and failures as `Publisher.publish`: the future
        fails with `NackError`, `UnroutableError`, `ChannelClosedError` or
        `PublisherClosed`.

        :raises BackPressureError: the window is full (``await publish()``
            waits for room instead).
        :raises PublisherClosed: close() was called.
        :raises RuntimeError: not connected yet.
        """
        if self._published - self._settled >= self._max_in_flight:
            raise BackPressureError("confirm window full (%d messages)" % self._max_in_flight)
        future = self._submit(exchange, routing_key, body, properties, mandatory)
        self._published += 1
        aio: "asyncio.Future[None]" = future._aio
        return aio

    async def publish(self, exchange: Union[str, bytes], routing_key: Union[str, bytes],
                      body: Body,
                      properties: Properties = None, mandatory: bool = False) -> None:
        """Publish one message; return once the broker confirmed it.

        Awaits room first when the window is full.

        Returns only on the broker's ack: a nacked or returned message is
        retried (see `retry_deadline`) before it fails.

        :raises NackError: nacked (or lost with its channel or connection)
            on every attempt until the retry bound; ``.attempts`` lists them.
        :raises UnroutableError: mandatory, and still returned at the bound.
        :raises ChannelClosedError: the broker closed the channel with it
            in flight for a reason a retry would not cure.
        :raises PublisherClosed: closed before it was confirmed.
        """
        while self._published - self._settled >= self._max_in_flight:
            await self._wait_for_room()
        await self.publish_nowait(exchange, routing_key, body, properties, mandatory)

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every message published so far is confirmed (or failed).

        :raises TimeoutError: some are still outstanding after `timeout` s.
        :raises ValueError: `timeout` is not None or a finite number >= 0.
        """
        check_timeout("timeout", timeout)
        target = self._published
        if self._settled >= target:
            return
        engine = self._engine
        if engine is not None and not engine._loop.is_closed():
            # A publish interrupted before it scheduled its write (cancelled
            # task, KeyboardInterrupt) would otherwise wait for the next one.
            engine._loop.call_soon_threadsafe(engine._drain)
        waiter: "asyncio.Future[None]" = self._new_waiter()
        self._flush_waiters.append((target, waiter))
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("%d messages still unconfirmed" % self.outstanding) from None
        finally:
            self._flush_waiters = [w for w in self._flush_waiters if w[1] is not waiter]

    async def close(self, timeout: Optional[float] = None) -> None:
        """Flush, close the connection and stop the engine; idempotent.

        Waits at most `timeout` seconds (default: `close_timeout`), also
        for messages waiting for a retry; those still unconfirmed then fail
        and count like the others.

        :raises CloseTimeoutError: messages were still unconfirmed when the
            time ran out; their futures failed with `PublisherClosed`.
        :raises ValueError: `timeout` is not None or a finite number >= 0.
        """
        check_timeout("timeout", timeout)
        self._closed = True
        engine = self._engine
        if engine is None:
            self._submit = self._not_connected
            return
        self._submit = engine._outbox.submit    # raises PublisherClosed from now on
        loop = self._loop
        assert loop is not None
        await _in_thread(loop, lambda: engine.close(timeout))

    # ------------------------------------------------------ event loop side

    def _not_connected(self, *args: Any) -> Any:
        if self._closed:
            raise PublisherClosed("publish() on a closed AsyncPublisher")
        raise RuntimeError("AsyncPublisher is not connected: use `async with` "
                           "or `await connect()` first")

    def _new_waiter(self) -> "asyncio.Future[None]":
        loop = self._loop
        if loop is None:
            raise RuntimeError("AsyncPublisher is not connected")
        return loop.create_future()

    async def _wait_for_room(self) -> None:
        waiter = self._new_waiter()
        self._room_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._room_waiters:
                self._room_waiters.remove(waiter)

    def _dispatch(self) -> None:
        bridge = self._bridge
        bridge.scheduled = False
        done = bridge.done
        popleft = done.popleft
        n = 0
        while done:
            future = popleft()
            aio = future._aio
            n += 1
            if aio.done():          # cancelled by its caller
                continue
            exc = future._exception
            if exc is None:
                aio.set_result(None)
            else:
                aio.set_exception(exc)
        self._settled += n
        if self._room_waiters and self._published - self._settled <= self._low_water:
            waiters, self._room_waiters = self._room_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self._flush_waiters:
            settled = self._settled
            for target, waiter in self._flush_waiters:
                if target <= settled and not waiter.done():
                    waiter.set_result(None)
