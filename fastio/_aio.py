"""asyncio on fastio: `EventLoop`, its policy, `new_event_loop()` and `run()`.

`EventLoop` is asyncio's own selector loop (on Unix
`asyncio.unix_events._UnixSelectorEventLoop`, so subprocesses, pipes,
signals, Unix sockets, sendfile, UDP, TLS, executors and debug mode are
asyncio's code) over a fastio selector, with its hot paths -- one loop
iteration (reading the fastio poller's events directly and running the I/O
callbacks in asyncio's order without queueing them), call_soon/call_later/
call_at, the timer heap, create_future/create_task, running the ready
queue, the TCP / Unix-socket transports' receive and send (bytes for an
asyncio StreamReader go straight into its buffer), readers and writers,
the sock_*() coroutines and the server's accept loop -- in
fastio._impl.loop_c (Cython). They work on asyncio's own objects (its Handle and
TimerHandle classes, ready deque and timer heap), so every version 3.9-3.13
keeps its asyncio semantics; the loop and the transport keep what those
read per event in slots, which the compiled code reads at their offsets.
Without the extension `EventLoop` is `SelectorEventLoop`: asyncio's loop
over a fastio selector, nothing else but the transport's writelines(),
which both loops take from fixed CPython releases where this interpreter's
has known bugs.
"""

import asyncio
import selectors
import sys
from asyncio import base_events, constants, events, format_helpers, selector_events
from asyncio.log import logger
from typing import Any, Coroutine, Optional, TypeVar

from fastio import _aio_uring
from fastio._impl import compiled

_c: Any = compiled("loop")  # the compiled methods below, when the extension is there

__all__ = ["EventLoop", "EventLoopPolicy", "SelectorEventLoop", "new_event_loop", "run"]


# (typeshed does not declare asyncio's private transport class)
_AsyncioSocketTransport: Any = getattr(selector_events, "_SelectorSocketTransport")


if "writelines" in vars(_AsyncioSocketTransport):

    class _SocketTransport(_AsyncioSocketTransport):
        # asyncio's TCP / Unix-socket transport with the fixed writelines().

        def writelines(self, list_of_data):
            """Buffer the non-empty bytes-likes of `list_of_data`; send what the kernel takes."""
            # asyncio's scatter-gather writelines() (3.12+) with the fixes
            # later CPython releases made to it; 3.12.0 and 3.13.0 lack all
            # three:
            # - CPython gh-127655 (fixed in 3.12.9 and 3.13.2): it never
            #   paused the protocol, so a writer honouring flow control
            #   buffered without bound;
            # - CPython gh-136234 (fixed in later 3.13 releases): after the
            #   connection was lost it still buffered and sent, where write()
            #   drops the data;
            # - CPython gh-155888 (fixed in later releases): an empty chunk
            #   stayed in the buffer for good (sendmsg() takes 0 bytes of
            #   it), so the transport spun on write readiness and never sent
            #   its EOF or closed.
            if self._eof:
                raise RuntimeError('Cannot call writelines() after write_eof()')
            if self._empty_waiter is not None:
                raise RuntimeError('unable to writelines; sendfile is in progress')
            if not list_of_data:
                return
            # All converted before anything is buffered: a non-bytes-like
            # item is a TypeError that sends nothing.
            views = [memoryview(data) for data in list_of_data]
            conn_lost = self._conn_lost
            if conn_lost:
                if conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                    logger.warning('socket.send() raised exception.')
                self._conn_lost = conn_lost + 1
                return
            views = [view for view in views if view.nbytes]
            if not views:
                return
            self._buffer.extend(views)
            self._write_ready()
            # If the entire buffer couldn't be written, register a write handler.
            if self._buffer:
                self._loop._add_writer(self._sock_fd, self._write_ready)
            self._maybe_pause_protocol()

else:
    # 3.9-3.11: writelines() is WriteTransport's, one write() of the joined
    # bytes.
    _SocketTransport = _AsyncioSocketTransport  # type: ignore[misc]

# Newer asyncio checks the fd has no live transport first (a bugfix release
# may have it too): do what this interpreter's asyncio does.
_base_make: Any = getattr(selector_events.BaseSelectorEventLoop, "_make_socket_transport")
_CHECKS_FD = "_ensure_fd_no_transport" in _base_make.__code__.co_names


_BACKEND_OF = {"UringSelector": "io_uring", "UringBufferSelector": "io_uring", "EpollSelector": "epoll",
               "PollSelector": "poll", "SelectSelector": "select", "DevpollSelector": "devpoll",
               "KqueueSelector": "kqueue"}


class SelectorEventLoop(asyncio.SelectorEventLoop):
    """asyncio's SelectorEventLoop over `fastio.selectors.DefaultSelector`.

    Its socket transport is asyncio's with writelines() as fixed CPython
    releases have it.

    :param selector: a selector to use instead (any `selectors.BaseSelector`).
    :param backend: instead of `selector`, fastio's selector by name:
        "epoll", "poll", "select" or "io_uring" (`fastio.selectors.UringSelector`:
        registrations and waits are io_uring SQEs, one io_uring_enter per
        iteration; this class's transports stay asyncio's readiness ones,
        `EventLoop`'s are completion-based, see fastio._aio_uring). Where
        io_uring is refused the loop uses the default selector and says so
        once with a RuntimeWarning.
    :raises ValueError: an unknown backend, or both arguments.
    """

    _socket_transport: Any = _SocketTransport
    # On backend="io_uring": completion-based transports (the compiled
    # EventLoop's iteration reaps their completions).
    _uring_transports = False

    def __init__(self, selector: Optional[selectors.BaseSelector] = None, *,
                 backend: Optional[str] = None) -> None:
        from fastio import selectors as fastio_selectors

        if backend is not None:
            try:
                if selector is not None:
                    raise ValueError("selector and backend can not be specified at the same time")
                selector = _selector_for(backend, type(self).__name__, self._uring_transports)
            except BaseException:
                self._closed = True  # what asyncio's __del__ looks at
                raise
        elif selector is None:
            selector = fastio_selectors.DefaultSelector()
        super().__init__(selector)
        name = type(selector).__name__
        self._backend = _BACKEND_OF.get(name, name)
        if _aio_uring.UringBufferSelector is not None and isinstance(selector, _aio_uring.UringBufferSelector):
            _aio_uring.attach(self)

    @property
    def backend(self) -> str:
        """Return what the loop waits with: "io_uring", "epoll", "poll",
        "select", or its selector's class name (as `fastio.loop.Loop.backend`;
        "io_uring" was refused where a loop asked for it says "epoll")."""
        return self._backend

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        if _CHECKS_FD:
            self._ensure_fd_no_transport(sock)
        return self._socket_transport(self, sock, protocol, waiter, extra, server)


def _selector_for(backend: str, who: str, buffers: bool = False) -> selectors.BaseSelector:
    from fastio import _pollers, selectors as fastio_selectors

    if backend == "io_uring":
        if buffers and _aio_uring.UringBufferSelector is not None:
            try:
                return _aio_uring.UringBufferSelector()
            except OSError:
                pass  # (no buffer ring here: readiness on io_uring, if that works)
        try:
            return fastio_selectors.UringSelector()
        except (AttributeError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or "fastio's C extension is not available"
            _pollers.uring_fallback_notice(who, reason)
            return fastio_selectors.DefaultSelector()
    name = {"epoll": "EpollSelector", "poll": "PollSelector", "select": "SelectSelector"}.get(backend)
    if name is None or not hasattr(fastio_selectors, name):
        raise ValueError("backend must be one of %s, not %r"
                         % (", ".join(_pollers.BACKENDS), backend))
    return getattr(fastio_selectors, name)()


def _callback_error(handle, exc):
    # What asyncio's Handle._run does with an exception from its callback
    # (3.13 formats the callback with the loop's debug flag).
    if sys.version_info >= (3, 13):
        cb = format_helpers._format_callback_source(
            handle._callback, handle._args, debug=handle._loop.get_debug())
    else:
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def _as_method(fn: Any, owner: Any, name: str) -> Any:
    # Handle reprs and log lines ("Exception in callback ...", debug mode's
    # slow-callback warning) name the callback by its __qualname__: make a
    # compiled twin read as the asyncio method it stands for.
    original = getattr(owner, name)
    fn.__name__ = original.__name__
    fn.__qualname__ = original.__qualname__
    return fn


if _c is not None:
    _c.aio_setup(base_events, selector_events, events, _callback_error)

    class _SelectorSocketTransport(_SocketTransport):
        # asyncio's TCP / Unix-socket transport; the per-event methods are
        # compiled twins of asyncio's, the rest is inherited unchanged. What
        # those read per event lives in slots, which they read directly.
        __slots__ = ("_sock", "_protocol", "_conn_lost", "_buffer", "_eof", "_empty_waiter",
                     "_read_ready_cb", "_closing", "_recv_hint", "_read_error")

        _read_ready = _as_method(_c.aio_read_ready, _AsyncioSocketTransport, "_read_ready")
        _read_ready__data_received = _as_method(
            _c.aio_read_ready__data_received, _AsyncioSocketTransport, "_read_ready__data_received")
        _read_ready__get_buffer = _as_method(
            _c.aio_read_ready__get_buffer, _AsyncioSocketTransport, "_read_ready__get_buffer")
        write = _as_method(_c.aio_write, _AsyncioSocketTransport, "write")
        is_closing = _as_method(_c.aio_is_closing, _AsyncioSocketTransport, "is_closing")

        def _send_failed_first(self) -> bool:
            # The error a read took after its bytes, not reported yet
            # (src/aio_transport.pxi): the kernel reports one once, and
            # asyncio's send() of the buffer would have got it. Report it
            # as asyncio's write callback reports its send()'s error.
            exc = _c.aio_take_read_error(self)
            if exc is None:
                return False
            self._loop._remove_writer(self._sock_fd)
            self._buffer.clear()
            try:
                raise exc  # handled, with a traceback, as asyncio's send() error is
            except OSError:
                self._fatal_error(exc, 'Fatal write error on socket transport')
            if self._empty_waiter is not None:
                self._empty_waiter.set_exception(exc)
            return True

        if hasattr(_AsyncioSocketTransport, "_write_send"):  # 3.12+: _write_ready is one of these
            def _write_send(self) -> None:
                if not self._send_failed_first():
                    super()._write_send()

            def _write_sendmsg(self) -> None:
                if not self._send_failed_first():
                    super()._write_sendmsg()
        else:
            def _write_ready(self) -> None:
                if not self._send_failed_first():
                    super()._write_ready()

    _c.aio_transport_class(_SelectorSocketTransport)

    class EventLoop(SelectorEventLoop):
        """An asyncio event loop on fastio's compiled core.

        Same contract as `asyncio.SelectorEventLoop`; see the module docstring
        for what runs compiled.
        """

        # What the compiled methods read every iteration and every
        # call_soon(), kept in slots they read directly.
        __slots__ = ("_ready", "_scheduled", "_stopping", "_debug", "_selector", "_closed",
                     "_clock_resolution")

        _run_once = _as_method(_c.aio_run_once, base_events.BaseEventLoop, "_run_once")
        _process_events = _as_method(
            _c.aio_process_events, selector_events.BaseSelectorEventLoop, "_process_events")
        call_soon = _as_method(_c.aio_call_soon, base_events.BaseEventLoop, "call_soon")
        _call_soon = _as_method(_c.aio_private_call_soon, base_events.BaseEventLoop, "_call_soon")
        call_at = _as_method(_c.aio_call_at, base_events.BaseEventLoop, "call_at")
        call_later = _as_method(_c.aio_call_later, base_events.BaseEventLoop, "call_later")
        _timer_handle_cancelled = _as_method(
            _c.aio_timer_handle_cancelled, base_events.BaseEventLoop, "_timer_handle_cancelled")
        create_task = _as_method(_c.aio_create_task, base_events.BaseEventLoop, "create_task")
        create_future = _as_method(_c.aio_create_future, base_events.BaseEventLoop, "create_future")
        get_debug = _as_method(_c.aio_get_debug, base_events.BaseEventLoop, "get_debug")
        time = _as_method(_c.aio_time, base_events.BaseEventLoop, "time")

        _socket_transport = _SelectorSocketTransport
        _uring_transports = True
        _uring: Any = None  # its UringDriver, with completion transports

        def __init_subclass__(cls, **kwargs: Any) -> None:
            # The compiled call_soon()/call_at() do what asyncio's private
            # helpers do without calling them. A subclass overriding one of
            # those helpers (and not the public method) gets asyncio's public
            # method, which calls it, as a subclass of asyncio's loop would.
            super().__init_subclass__(**kwargs)
            for public, helpers in _PRIVATE_HELPERS:
                if getattr(cls, public) is getattr(EventLoop, public) and any(
                        getattr(cls, name) is not getattr(EventLoop, name) for name in helpers):
                    setattr(cls, public, getattr(base_events.BaseEventLoop, public))

        def run_forever(self) -> None:
            uring = self._uring
            if uring is None or self.is_running() or self.is_closed():
                return super().run_forever()
            # Writes queue SQEs while the loop runs; what the last
            # iteration queued goes out when it stops.
            uring._running = True
            try:
                super().run_forever()
            finally:
                uring._running = False
                uring._submit()

        def close(self) -> None:
            super().close()
            if self._uring is not None:
                # The ring closed with the selector, cancelling what was in
                # flight: the driver lets go of the transports.
                self._uring._forget()

        def _make_ssl_transport(self, *args: Any, **kwargs: Any) -> Any:
            if self._uring is None:
                base: Any = super()  # (typeshed lacks the private method)
                return base._make_ssl_transport(*args, **kwargs)
            return _aio_uring.make_ssl_transport(self, *args, **kwargs)

    _c.aio_loop_class(EventLoop)

    # What asyncio's call_soon()/call_at() call on the loop.
    _PRIVATE_HELPERS = (
        ("call_soon", ("_call_soon", "_check_closed", "_check_callback", "_check_thread")),
        ("call_at", ("_check_closed", "_check_callback", "_check_thread")),
    )

    # Readers/writers, the sock_*() coroutines with their callbacks, and the
    # server's accept loop: compiled twins of asyncio's (src/aio_sock.pxi).
    for _name in ("add_reader", "remove_reader", "add_writer", "remove_writer", "_add_reader",
                  "_remove_reader", "_add_writer", "_remove_writer", "_ensure_fd_no_transport",
                  "sock_recv", "_sock_recv", "sock_recv_into", "_sock_recv_into", "sock_sendall",
                  "_sock_sendall", "sock_connect", "_sock_connect", "_sock_connect_cb",
                  "sock_accept", "_sock_accept", "_sock_read_done", "_sock_write_done",
                  "_accept_connection", "_accept_connection2"):
        setattr(EventLoop, _name, _as_method(
            getattr(_c, "aio_" + _name), selector_events.BaseSelectorEventLoop, _name))
    import fastio.selectors as _fastio_selectors

    _core: Any = compiled("core")
    _c.aio_sock_setup(base_events, selector_events, EventLoop, [
        cls for cls in (getattr(_fastio_selectors, n, None)
                        for n in ("EpollSelector", "PollSelector", "SelectSelector"))
        if isinstance(cls, type) and issubclass(cls, _core.SelectorCore)])

else:
    EventLoop = SelectorEventLoop  # type: ignore[misc, assignment]


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making `EventLoop`s.

    ``asyncio.set_event_loop_policy(fastio.EventLoopPolicy())`` makes
    fastio's loop the default for `asyncio.run()` and `new_event_loop()`.
    """

    _loop_factory = EventLoop

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """Return a new `EventLoop`."""
        return EventLoop()

_T = TypeVar("_T")

def new_event_loop() -> asyncio.AbstractEventLoop:
    """Return a new `EventLoop` (a `SelectorEventLoop` without the extension).

    Usable as ``asyncio.run(main(), loop_factory=fastio.new_event_loop)``
    on Python 3.12+.
    """
    return EventLoop()


def run(main: Coroutine[Any, Any, _T], *, debug: Optional[bool] = None) -> _T:
    """Run coroutine `main` on a fresh `new_event_loop()`; same contract as `asyncio.run`."""
    if sys.version_info >= (3, 11):
        if asyncio.events._get_running_loop() is not None:
            # Fail before making a loop, as asyncio.run() does.
            raise RuntimeError("fastio.run() cannot be called from a running event loop")
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            # What asyncio.run()'s Runner does with the loop it makes: the
            # policy's current loop while it runs (so the policy's
            # get_event_loop() finds it and child watchers attach to it),
            # unset when the Runner closes.
            asyncio.set_event_loop(runner.get_loop())
            runner._set_event_loop = True
            return runner.run(main)
    # 3.9/3.10: asyncio.run() with the policy's loop factory swapped in.
    # An instance attribute shadows the policy's method until deleted.
    policy: Any = asyncio.get_event_loop_policy()
    policy.new_event_loop = new_event_loop
    try:
        return asyncio.run(main, debug=debug)
    finally:
        del policy.new_event_loop
