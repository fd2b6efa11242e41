"""fastio's event loop: asyncio-shaped callbacks and TCP, pika's ioloop API.

`Loop` reads like a small asyncio loop (`call_soon`, `call_later`, `call_at`,
`call_soon_threadsafe`, `add_reader`, `add_writer`, `add_signal_handler`,
`run_forever`, `run_until_complete`, `stop`, `close`, `create_server`,
`create_connection`) and is at the same time the ioloop pika's
`SelectorIOServicesAdapter` drives (`READ`/`WRITE`/`ERROR`, `add_handler`,
`update_handler`, `remove_handler`, `remove_timeout`, `add_callback`,
`start`). It is not an asyncio loop: coroutines run on
`fastio.new_event_loop()` instead.

Differences from asyncio: a callback runs in the `contextvars.Context`
passed as ``context=``, but without one it runs in the loop's current
context (asyncio copies the caller's context on every call_soon, a good
part of its per-callback cost); I/O callbacks run as soon as their event is
seen rather than through the ready queue. Under pika's start(), an exception
from a callback propagates from start(), as from pika's IOLoop; under
run_forever() it is logged, as asyncio does.

The per-event dispatch, the ready queue, the timer heap and the transports
are the loop pair's (fastio._impl: compiled loop_c, else the twin loop_py).

Synchronous use: `create_connection()` and `Server.wait_closed()` return an
`asyncio.Future` bound to this loop (no coroutine needed);
`run_until_complete(fut)` runs the loop until it is done and returns its
result, and `fut.add_done_callback(cb)` works from plain callbacks.
"""

import asyncio
import signal
import socket
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Optional, Tuple, TypeVar, Union

from fastio import _pollers, _streams
from fastio._impl import compiled, loop as _impl
from fastio._pollers import SelectorArg

if TYPE_CHECKING:
    # The pure-Python twin is the type source (fastio._impl names it for
    # type checkers): loop_c has the same classes, methods and signatures.
    from fastio._impl.loop_py import LoopCore as _LoopBase
else:
    _LoopBase = object

from fastio._log import get_logger
from fastio._streams import Protocol, Server

__all__ = ["Loop", "Handle", "TimerHandle", "Transport", "Server", "Protocol"]

Handle = _impl.Handle
TimerHandle = _impl.TimerHandle
Transport = _impl.Transport

logger = get_logger("fastio.loop")

_T = TypeVar("_T")
_P = TypeVar("_P", bound=Protocol)

#: An exception handler: handler(loop, context).
ExceptionHandler = Callable[["Loop", Dict[str, Any]], object]


def _noop_signal_handler(signum: int, frame: Optional[FrameType]) -> None:
    # The wakeup fd only gets the signal number if a Python handler is set.
    pass


class _LoopAPI(_LoopBase):
    """Everything of Loop above the core: shared by the Cython and Python cores."""

    if TYPE_CHECKING:
        # Set by each loop class, to its core's Transport.
        transport_class: type

    # pika's event bits; equal to poll(2)'s POLLIN, POLLOUT, POLLERR.
    READ = 0x001
    WRITE = 0x004
    ERROR = 0x008

    def __init__(self, selector: SelectorArg = None, *, backend: Optional[str] = None) -> None:
        if backend is None:
            poller = _pollers.make_poller(selector)
        elif selector is not None:
            raise ValueError("selector and backend can not be specified at the same time")
        else:
            poller = _pollers.backend_poller(backend, type(self).__name__)
        waker = _pollers.Waker()
        try:
            super().__init__(poller, waker)  # the core, next in the MRO
        except BaseException:
            waker.close()
            poller.close()
            raise
        if getattr(self, "_uring", None) is not None:
            # Completion-based transports on the poller's ring (the
            # compiled core only has a ring).
            self.transport_class = compiled("loop").UringTransport
        self._poller_ref = poller
        self._waker_ref = waker
        self._closed = False
        self._thread_id: Optional[int] = None
        self._exception_handler: Optional[ExceptionHandler] = None
        # start() (pika's entry point) raises what a callback raised.
        self._raise_callback_errors = False
        self._callback_error: Optional[BaseException] = None
        self._signal_handlers: Dict[int, Tuple[Callable[..., object], Tuple[Any, ...]]] = {}
        self._signal_socks: Optional[Tuple[socket.socket, socket.socket]] = None
        self._old_wakeup_fd = -1

    # ------------------------------------------------------------- running

    def run_forever(self) -> None:
        """Run until stop() is called.

        :raises RuntimeError: the loop is closed or already running.
        """
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._thread_id is not None:
            raise RuntimeError("This event loop is already running")
        self._thread_id = threading.get_ident()
        try:
            self._run_forever_core()
        finally:
            self._thread_id = None

    def run_until_complete(self, future: "asyncio.Future[_T]") -> _T:
        """Run until `future` (from create_future()) is done; return its result.

        :raises RuntimeError: the loop stopped first.
        """
        if not asyncio.isfuture(future):
            raise TypeError("fastio.loop.Loop runs futures, not coroutines; "
                            "use fastio.run() for coroutines")
        future.add_done_callback(self._stop_on_done)
        try:
            self.run_forever()
        finally:
            future.remove_done_callback(self._stop_on_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def _stop_on_done(self, future: "asyncio.Future[Any]") -> None:
        self.stop()

    def create_future(self) -> "asyncio.Future[Any]":
        """Return an `asyncio.Future` whose callbacks run on this loop."""
        return asyncio.Future(loop=self)  # type: ignore[arg-type]  # uses call_soon/get_debug only

    def stop(self) -> None:
        """Stop after the current iteration; from any thread.

        Called before run_forever()/start(), makes the next run do one
        iteration and return.
        """
        self._stopping = True
        if self._thread_id is not None and self._thread_id != threading.get_ident():
            self._waker_ref.wake()

    def is_running(self) -> bool:
        """Return whether run_forever() is running."""
        return self._thread_id is not None

    @property
    def thread_id(self) -> Optional[int]:
        """The ident (`threading.get_ident()`) of the thread running the loop; None when it is not running."""
        return self._thread_id

    def is_closed(self) -> bool:
        """Return whether close() was called."""
        return self._closed

    def close(self) -> None:
        """Drop pending callbacks and release the poller; idempotent.

        :raises RuntimeError: the loop is running.
        """
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        self._closed = True
        self._clear()
        self._poller_ref.close()
        self._waker_ref.close()
        uring = getattr(self, "_uring", None)
        if uring is not None:
            # The ring closed with the poller, cancelling what was in
            # flight: the driver lets go of the transports.
            uring._forget()

    def get_debug(self) -> bool:
        """Return False: the loop has no debug mode (asyncio.Future asks)."""
        return False

    # ------------------------------------------------------ pika's ioloop

    def start(self) -> None:
        """pika: run until stop().

        As with pika's IOLoop, an exception from a callback or an fd handler
        ends start() and propagates from it (run_forever() logs it and runs
        on, as asyncio does), unless an exception handler is set: the loop
        stops after the iteration in which the callback raised, and start()
        may be called again.
        """
        self._callback_error = None
        self._raise_callback_errors = True
        try:
            self.run_forever()
        finally:
            self._raise_callback_errors = False
            exc, self._callback_error = self._callback_error, None
        if exc is not None:
            try:
                raise exc
            finally:
                exc = None

    def add_callback(self, callback: Callable[[], object]) -> None:
        """pika: call `callback()` on the loop; thread-safe.

        As pika's IOLoop: a callback that is not callable is a TypeError,
        and one added once the loop is closed is dropped, not an error
        (pika's own threads, e.g. its address resolver, may call back
        after the connection's loop was closed).
        """
        if not callable(callback):
            raise TypeError("callback must be a callable, but got %r" % (callback,))
        try:
            self.call_soon_threadsafe(callback)
        except RuntimeError:
            if not self.is_closed():
                raise

    # pika's own IOLoop spells it both ways; code written for
    # SelectConnection calls connection.ioloop.add_callback_threadsafe().
    add_callback_threadsafe = add_callback

    def remove_timeout(self, timeout_handle: "Handle") -> None:
        """pika: cancel a handle returned by call_later()."""
        timeout_handle.cancel()

    # ----------------------------------------------------------- errors

    def set_exception_handler(self, handler: Optional[ExceptionHandler]) -> None:
        """Route callback errors to `handler(loop, context)`; None restores the default."""
        if handler is not None and not callable(handler):
            raise TypeError("A callable object or None is expected, got %r" % (handler,))
        self._exception_handler = handler

    def get_exception_handler(self) -> Optional[ExceptionHandler]:
        """Return the handler set by set_exception_handler(), or None."""
        return self._exception_handler

    def default_exception_handler(self, context: Dict[str, Any]) -> None:
        """Log `context['message']` with the exception's traceback."""
        exc = context.get("exception")
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else False
        details = "".join("\n%s: %r" % (k, v) for k, v in sorted(context.items())
                          if k not in ("message", "exception"))
        logger.error("%s%s", context.get("message", "Unhandled error in event loop"),
                     details, exc_info=exc_info)

    def call_exception_handler(self, context: Dict[str, Any]) -> None:
        """Report `context` to the exception handler; never raises."""
        handler = self._exception_handler
        if (handler is None and self._raise_callback_errors
                and ("handle" in context or "handler" in context)):
            # Under start(): a callback's error is start()'s (see there).
            if self._callback_error is None:
                self._callback_error = context.get("exception")
                self.stop()
                return
        try:
            if handler is None:
                self.default_exception_handler(context)
            else:
                handler(self, context)  # type: ignore[arg-type]  # self is a Loop
        except Exception:
            logger.exception("Exception in the exception handler (context %r)", context)

    # ---------------------------------------------------------- signals

    # Discussion: signal.set_wakeup_fd() makes the C-level handler write the
    # signal number into a socket the loop reads, so the Python handler runs
    # inside the loop, never between two bytecodes of whatever it
    # interrupted. A socket pair, not the core Waker: an eventfd takes only
    # 8-byte writes, and the waker's byte would not say which signal.

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        """Run `callback(*args)` in the loop each time signal `sig` arrives.

        :raises ValueError: not in the main thread, or an invalid signal.
        :raises RuntimeError: for SIGKILL/SIGSTOP or a closed loop.
        """
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("signals can only be handled from the main thread")
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise RuntimeError("sig %d cannot be caught" % sig)
        signal.Signals(sig)  # ValueError for an unknown number
        if self._signal_socks is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._old_wakeup_fd = signal.set_wakeup_fd(wsock.fileno())
            self._signal_socks = (rsock, wsock)
            self.add_reader(rsock.fileno(), self._read_signals)
        self._signal_handlers[sig] = (callback, args)
        try:
            signal.signal(sig, _noop_signal_handler)
            signal.siginterrupt(sig, False)
        except (OSError, RuntimeError):
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._close_signal_socks()
            raise

    def remove_signal_handler(self, sig: int) -> bool:
        """Restore the default action of `sig`; return whether it was handled."""
        if self._signal_handlers.pop(sig, None) is None:
            return False
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT
                      else signal.SIG_DFL)
        if not self._signal_handlers:
            self._close_signal_socks()
        return True

    def _close_signal_socks(self) -> None:
        assert self._signal_socks is not None
        rsock, wsock = self._signal_socks
        self._signal_socks = None
        signal.set_wakeup_fd(self._old_wakeup_fd)
        self.remove_reader(rsock.fileno())
        rsock.close()
        wsock.close()

    def _read_signals(self) -> None:
        while self._signal_socks is not None:
            try:
                data = self._signal_socks[0].recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            for signum in data:
                entry = self._signal_handlers.get(signum)
                if entry is not None:
                    self.call_soon(entry[0], *entry[1])

    # ----------------------------------------------------------- streams

    def create_server(self, protocol_factory: Callable[[], Protocol],
                      host: Union[None, str, Iterable[str]] = None, port: Optional[int] = None, *,
                      backlog: int = 100, reuse_port: bool = False,
                      sock: Optional[socket.socket] = None) -> Server:
        """Listen on `host`:`port` (or on a bound, listening `sock`).

        Unlike asyncio's, returns the listening Server at once (no coroutine);
        each accepted connection gets `protocol_factory()` and a Transport.
        `host` None listens on all interfaces; port 0 picks a free port.

        :raises OSError: bind/listen failed (nothing is left open).
        """
        return _streams.start_server(self, protocol_factory, host, port,
                                     backlog, reuse_port, sock)

    def create_connection(self, protocol_factory: Callable[[], _P], host: Optional[str],
                          port: Union[int, str, None]) -> "asyncio.Future[Tuple[Transport, _P]]":
        """Connect to `host`:`port` without blocking on the connect.

        Name resolution (getaddrinfo) is synchronous: pass numeric addresses
        or names the resolver answers at once.

        :returns: an `asyncio.Future` bound to this loop, resolving to
            ``(transport, protocol)`` or to the connect error; run it with
            `run_until_complete()` or chain `add_done_callback()`.
        """
        return _streams.open_connection(self, protocol_factory, host, port)

    @property
    def backend(self) -> str:
        """Return what the loop waits with: "io_uring", "epoll", "poll",
        "select", or the poller's class name."""
        poller = self._poller_ref
        name = type(poller).__name__
        return {"UringPoller": "io_uring", "EpollPoller": "epoll", "PollPoller": "poll",
                "SelectPoller": "select", "_StdlibEpoll": "epoll",
                "_StdlibPoll": "poll"}.get(name, name)

    def __repr__(self) -> str:
        return "<%s running=%s closed=%s>" % (
            type(self).__name__, self.is_running(), self._closed)


class Loop(_LoopAPI, _impl.LoopCore):
    """A callback event loop over a fastio poller.

    :param selector: the backend: None for the best available (epoll, then
        poll, then select), a fastio poller, or a selector (see
        `fastio._pollers.make_poller`). The loop owns it and closes it.
    :param backend: instead of `selector`, a backend by name: "epoll",
        "poll", "select" or "io_uring". On "io_uring" the loop waits with
        io_uring_enter and its TCP transports are completion-based
        (multishot recv into a shared buffer ring, sends as SQEs; same
        Transport contract); readers, writers, timers, signals and
        call_soon_threadsafe work as on the other backends. Where io_uring
        is refused (no extension, not Linux, ENOSYS, EPERM, an old kernel,
        FASTIO_IO_URING=0) the loop runs on epoll and says so once with a
        RuntimeWarning.
    :raises ValueError: an unknown backend, or both arguments.
    """

    #: The Transport class of the connections the loop's servers accept
    #: and create_connection() makes; the pika adapter makes its own with it.
    transport_class = _impl.Transport

