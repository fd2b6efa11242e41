"""Pure-Python twin of src/_loop.pyx: the loop's hot path without a compiler.

fastio._impl runs it when loop_c is absent (FASTIO_NO_EXTENSIONS=1, PyPy). The classes,
names, signatures and behaviour match the Cython module one for one; fastio.loop builds
everything else on top of whichever of the two it got. Keep the two in step:
a change here is a change in src/_loop.pyx, and tests run on both.
"""

import collections
import contextvars
import heapq as _heapq
import socket
import time
import typing
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple, Union

from fastio._transport import TransportMixin

if TYPE_CHECKING:
    from fastio._contracts import PollerLike, WakerLike
    from fastio._streams import Protocol

__all__ = ["Handle", "TimerHandle", "LoopCore", "TransportCore", "Transport"]


class _HasFileno(typing.Protocol):
    def fileno(self) -> int: ...


# An fd number or an object with fileno(), as asyncio's add_reader() takes.
_FileDescriptorLike = Union[int, _HasFileno]
_Buffer = Union[bytes, bytearray, memoryview]

POLLIN = 0x001
POLLOUT = 0x004
POLLERR = 0x008
POLLHUP = 0x010
# The longest single wait, as asyncio's: a timer further away than any
# poller's timeout can express just takes several waits.
MAX_WAIT = 24 * 3600.0
# Readiness bits that wake a reader / a writer: an error or hang-up wakes both,
# as the stdlib selectors do, so whoever waits learns it from recv()/send().
_READ_BITS = ~POLLOUT
_WRITE_BITS = ~POLLIN

_monotonic = time.monotonic


def _check_callback(callback, method):
    # At call time, as asyncio's debug mode does: later, inside the loop,
    # the error would be far from its cause.
    if not callable(callback):
        raise TypeError("a callable object was expected by %s(), got %r" % (method, callback))


def _check_time(value, name):
    """Return `value` as a float; NaN is refused (no timer could ever be due)."""
    if not (hasattr(type(value), "__float__") or hasattr(type(value), "__index__")):
        # float() would parse strings; the compiled core refuses them, and
        # None, as PyFloat_AsDouble does.
        raise TypeError("must be real number, not %s" % type(value).__name__)
    t = float(value)
    if t != t:
        raise ValueError("%s must not be NaN" % name)
    return t


class Handle:
    """A callback scheduled on the loop; `cancel()` keeps it from running."""

    __slots__ = ("_callback", "_args", "_context", "_cancelled", "_loop")

    def __init__(self, callback: Callable[..., object], args: Tuple[Any, ...], loop: Any) -> None:
        self._callback = callback
        self._args = args
        self._context: Optional[contextvars.Context] = None
        self._cancelled = False
        self._loop = loop

    def cancel(self) -> None:
        """Keep the callback from running; calling it again does nothing."""
        self._cancelled = True

    def cancelled(self) -> bool:
        """Return whether cancel() was called."""
        return self._cancelled

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return "<%s%s %r>" % (type(self).__name__, state, self._callback)

    def _run(self) -> None:
        try:
            if self._context is not None:
                self._context.run(self._callback, *self._args)
            else:
                self._callback(*self._args)
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": "Exception in callback %r" % (self._callback,),
                "exception": exc,
                "handle": self,
            })


class TimerHandle(Handle):
    """A callback due at loop time `when()`."""

    __slots__ = ("_when", "_seq", "_scheduled")

    # Constructed as a Handle; the loop sets _when, _seq and _scheduled.
    _when: float
    _seq: int
    _scheduled: bool

    def when(self) -> float:
        """Return the loop time at which the callback is due."""
        return self._when

    def cancel(self) -> None:
        """Keep the callback from running; same contract as asyncio's."""
        if not self._cancelled:
            self._cancelled = True
            if self._scheduled:
                self._loop._timer_cancelled()


class _FdEntry:
    __slots__ = ("reader", "writer", "handler", "handler_events", "mask")

    def __init__(self) -> None:
        self.reader: Optional[Handle] = None
        self.writer: Optional[Handle] = None
        self.handler: Optional[Callable[[int, int], object]] = None
        self.handler_events = self.mask = 0



class LoopCore:
    """The loop's engine: ready queue, timer heap, fd table, one iteration.

    :param poller: a fastio poller (register/modify/unregister/poll with
        POLLIN/POLLOUT bits).
    :param waker: a fastio Waker, registered here for call_soon_threadsafe().
    """

    def __init__(self, poller: "PollerLike", waker: "WakerLike") -> None:
        self._poller = poller
        self._waker = waker
        self._ready: List[Handle] = []
        self._threadsafe: Deque[Handle] = collections.deque()
        self._timers: List[Tuple[float, int, TimerHandle]] = []
        self._timer_seq = 0
        self._timer_cancelled_count = 0
        self._fds: Dict[int, _FdEntry] = {}
        self._stopping = False
        self._closed = False
        self._wfd = waker.fileno()
        poller.register(self._wfd, POLLIN)

    # ------------------------------------------------------------ callbacks

    if TYPE_CHECKING:
        # Provided by fastio.loop.Loop, the class every core is mixed into.
        def call_exception_handler(self, context: Dict[str, Any]) -> None: ...

    def time(self) -> float:
        """Return the loop's clock: time.monotonic()."""
        return _monotonic()

    def _check_closed(self) -> None:
        if self._closed:
            raise RuntimeError("Event loop is closed")

    def call_soon(self, callback: Callable[..., object], *args: Any,
                  context: Optional[contextvars.Context] = None) -> Handle:
        """Run `callback(*args)` at the next iteration; return its Handle.

        :raises RuntimeError: the loop is closed.
        """
        self._check_closed()
        _check_callback(callback, "call_soon")
        handle = Handle(callback, args, self)
        handle._context = context
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any,
                             context: Optional[contextvars.Context] = None) -> Handle:
        """Like call_soon() but callable from any thread; wakes the loop."""
        self._check_closed()
        _check_callback(callback, "call_soon_threadsafe")
        handle = Handle(callback, args, self)
        handle._context = context
        # A deque that is never replaced: appends from other threads cannot
        # land in a list the loop has already swapped out (see _run_once).
        self._threadsafe.append(handle)
        self._waker.wake()
        return handle

    def call_at(self, when: float, callback: Callable[..., object], *args: Any,
                context: Optional[contextvars.Context] = None) -> TimerHandle:
        """Run `callback(*args)` at loop time `when`; return its TimerHandle.

        :raises ValueError: `when` is NaN.
        """
        return self._call_at(_check_time(when, "when"), callback, args, context, "call_at")

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any,
                   context: Optional[contextvars.Context] = None) -> TimerHandle:
        """Run `callback(*args)` `delay` seconds from now; return its TimerHandle.

        :raises ValueError: `delay` is NaN.
        """
        return self._call_at(_monotonic() + _check_time(delay, "delay"), callback, args,
                             context, "call_later")

    def _call_at(self, when: float, callback: Callable[..., object], args: Tuple[Any, ...],
                 context: Optional[contextvars.Context], method: str) -> TimerHandle:
        self._check_closed()
        _check_callback(callback, method)
        self._timer_seq += 1
        timer = TimerHandle(callback, args, self)
        timer._context = context
        timer._when = when
        timer._seq = self._timer_seq
        timer._scheduled = True
        # (when, seq): equal deadlines fire in the order they were scheduled.
        _heapq.heappush(self._timers, (when, timer._seq, timer))
        return timer

    def _timer_cancelled(self) -> None:
        # Cancelled timers stay in the heap until due; rebuild it when they
        # are the majority so a cancel-heavy load keeps it small.
        self._timer_cancelled_count += 1
        n = len(self._timers)
        if n > 64 and self._timer_cancelled_count * 2 > n:
            live = []
            for entry in self._timers:
                if entry[2]._cancelled:
                    entry[2]._scheduled = False
                else:
                    live.append(entry)
            _heapq.heapify(live)
            self._timers = live
            self._timer_cancelled_count = 0

    # ------------------------------------------------------------ fd table

    def _entry(self, fd: int) -> _FdEntry:
        entry = self._fds.get(fd)
        if entry is None:
            entry = self._fds[fd] = _FdEntry()
        return entry

    def _update(self, fd: int, entry: _FdEntry) -> None:
        mask = (POLLIN if entry.reader is not None else 0) | (
            POLLOUT if entry.writer is not None else 0) | entry.handler_events
        if mask == entry.mask:
            return
        if entry.mask == 0:
            self._poller.register(fd, mask)
        elif mask == 0:
            del self._fds[fd]
            try:
                self._poller.unregister(fd)
            except OSError:
                pass  # closed before it was removed: already out of the kernel
        else:
            try:
                self._poller.modify(fd, mask)
            except FileNotFoundError:
                # The fd was closed without remove_*() and its number reused:
                # the kernel forgot it, so it is a new registration.
                self._poller.register(fd, mask)
        entry.mask = mask

    def _set_io(self, fd: "_FileDescriptorLike", reader: bool, handle: Handle) -> None:
        fd = _fileno(fd)
        entry = self._entry(fd)
        if entry.handler is not None:
            raise ValueError("fd %d has a handler; remove_handler() first" % fd)
        old = entry.reader if reader else entry.writer
        if reader:
            entry.reader = handle
        else:
            entry.writer = handle
        try:
            self._update(fd, entry)
        except BaseException:
            if reader:
                entry.reader = old
            else:
                entry.writer = old
            if entry.mask == 0:
                self._fds.pop(fd, None)
            raise
        if old is not None and old is not handle:
            old._cancelled = True

    def add_reader(self, fd: "_FileDescriptorLike", callback: Callable[..., object], *args: Any) -> None:
        """Call `callback(*args)` whenever `fd` is readable."""
        _check_callback(callback, "add_reader")
        self._set_io(fd, True, Handle(callback, args, self))

    def add_writer(self, fd: "_FileDescriptorLike", callback: Callable[..., object], *args: Any) -> None:
        """Call `callback(*args)` whenever `fd` is writable."""
        _check_callback(callback, "add_writer")
        self._set_io(fd, False, Handle(callback, args, self))

    def remove_reader(self, fd: "_FileDescriptorLike") -> bool:
        """Stop watching `fd` for reading; return whether it was watched."""
        return self._remove_io(_fileno(fd), True)

    def remove_writer(self, fd: "_FileDescriptorLike") -> bool:
        """Stop watching `fd` for writing; return whether it was watched."""
        return self._remove_io(_fileno(fd), False)

    def _remove_io(self, fd: int, reader: bool) -> bool:
        entry = self._fds.get(fd)
        if entry is None:
            return False
        old = entry.reader if reader else entry.writer
        if old is None:
            return False
        if reader:
            entry.reader = None
        else:
            entry.writer = None
        old._cancelled = True
        self._update(fd, entry)
        return True

    def add_handler(self, fd: "_FileDescriptorLike", handler: Callable[[int, int], object],
                    events: int) -> None:
        """pika: call `handler(fd, events)` on READ/WRITE/ERROR readiness."""
        fd = _fileno(fd)
        entry = self._entry(fd)
        if entry.reader is not None or entry.writer is not None or entry.handler is not None:
            raise ValueError("fd %d is already watched" % fd)
        entry.handler = handler
        entry.handler_events = events & (POLLIN | POLLOUT | POLLERR)
        try:
            self._update(fd, entry)
        except BaseException:
            self._fds.pop(fd, None)
            raise

    def update_handler(self, fd: "_FileDescriptorLike", events: int) -> None:
        """pika: change the events a handler added by add_handler() watches."""
        entry = self._fds.get(_fileno(fd))
        if entry is None or entry.handler is None:
            raise ValueError("fd %r has no handler" % (fd,))
        entry.handler_events = events & (POLLIN | POLLOUT | POLLERR)
        self._update(_fileno(fd), entry)

    def remove_handler(self, fd: "_FileDescriptorLike") -> None:
        """pika: stop calling the handler of `fd`."""
        fd = _fileno(fd)
        entry = self._fds.get(fd)
        if entry is None or entry.handler is None:
            return
        entry.handler = None
        entry.handler_events = 0
        self._update(fd, entry)

    # ------------------------------------------------------------ iteration

    def _run_once(self) -> None:
        """Wait for I/O or the first timer, then run what is due."""
        timeout: Optional[float]
        if self._ready or self._threadsafe or self._stopping:
            timeout = 0
        elif self._timers:
            timeout = min(max(0, self._timers[0][0] - _monotonic()), MAX_WAIT)
        else:
            timeout = None
        events = self._poller.poll(timeout)
        fds = self._fds
        for fd, ev in events:
            if fd == self._wfd:
                self._waker.drain()
                continue
            entry = fds.get(fd)
            if entry is None:
                continue
            if entry.handler is not None:
                handler_events = ev & (POLLIN | POLLOUT | POLLERR)
                if ev & POLLHUP:
                    handler_events |= POLLIN
                self._run_handler(entry.handler, fd, handler_events)
                continue
            # Discussion: I/O callbacks run right here, not through the ready
            # queue as in asyncio: one less handle trip per event. The entry is
            # read at call time, so a reader removed by an earlier callback of
            # this batch does not run.
            if ev & _READ_BITS and entry.reader is not None:
                entry.reader._run()
            if ev & _WRITE_BITS and entry.writer is not None:
                entry.writer._run()
        # Callbacks queued from other threads come first: they were queued
        # before the timers below became due (asyncio queues them at once).
        threadsafe = self._threadsafe
        while threadsafe:
            self._ready.append(threadsafe.popleft())
        # Timers due now (never early: compared with the clock, not the
        # poll timeout) join the ready queue in deadline order.
        timers = self._timers
        if timers:
            now = _monotonic()
            while timers and timers[0][0] <= now:
                timer = _heapq.heappop(timers)[2]
                timer._scheduled = False
                if timer._cancelled:
                    self._timer_cancelled_count -= 1
                else:
                    self._ready.append(timer)
        # Run what is ready now; what those callbacks schedule runs next time.
        ready = self._ready
        self._ready = []
        i = 0
        try:
            while i < len(ready):
                handle = ready[i]
                i += 1
                if not handle._cancelled:
                    handle._run()
        except BaseException:
            # KeyboardInterrupt/SystemExit leave run_forever(); the rest of
            # the batch stays queued for the next run, as in asyncio.
            self._ready[:0] = ready[i:]
            raise

    def _clear(self) -> None:
        self._ready = []
        self._threadsafe.clear()
        self._timers = []
        self._fds = {}

    def _run_handler(self, handler: Callable[[int, int], object], fd: int, events: int) -> None:
        try:
            handler(fd, events)
        except Exception as exc:
            self.call_exception_handler({
                "message": "Exception in fd handler %r" % (handler,),
                "exception": exc,
                "handler": handler,
            })

    def _run_forever_core(self) -> None:
        # As asyncio: at least one iteration, so callbacks scheduled before a
        # stop() still run; the iteration that sees stop() is the last.
        try:
            while True:
                self._run_once()
                if self._stopping:
                    break
        finally:
            self._stopping = False


def _fileno(fd: "_FileDescriptorLike") -> int:
    if isinstance(fd, int):
        return fd
    return fd.fileno()


# ---------------------------------------------------------------- transport


class TransportCore:
    """A TCP transport's per-chunk path: recv, send, buffer, flow control.

    Writes go out at once; what the kernel does not take waits in a buffer
    flushed on writability. `pause_writing()` is called above the high-water
    mark and `resume_writing()` once the buffer drains below the low one.
    """

    max_size = 256 * 1024

    if TYPE_CHECKING:
        # The cold half, from fastio._transport.TransportMixin.
        def close(self) -> None: ...
        def _shutdown_write(self) -> None: ...
        def _fatal_error(self, exc: BaseException, message: str) -> None: ...
        def _call_connection_lost(self, exc: Optional[BaseException]) -> None: ...

    def __init__(self, loop: Any, sock: socket.socket, protocol: "Protocol", extra: Dict[str, Any],
                 server: Any = None) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol: Any = protocol
        self._extra = extra
        self._server = server
        self._buffer = bytearray()
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._closing = False
        self._conn_lost = 0
        self._eof = False
        self._reading_paused = False
        self._protocol_paused = False
        self._reader = Handle(self._read_ready, (), loop)
        self._writer = Handle(self._write_ready, (), loop)
        if server is not None:
            server._attach()

    # --- event side

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(self.max_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if data:
            try:
                self._protocol.data_received(data)
            except Exception as exc:
                self._fatal_error(exc, "protocol.data_received() call failed.")
            return
        self._loop._remove_io(self._fd, True)
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._fatal_error(exc, "protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def _write_ready(self) -> None:
        buf = self._buffer
        try:
            n = self._sock.send(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._loop._remove_io(self._fd, False)
            buf.clear()
            self._fatal_error(exc, "Fatal write error on socket transport")
            return
        if n:
            del buf[:n]
        self._maybe_resume_protocol()
        if not buf:
            self._loop._remove_io(self._fd, False)
            if self._closing:
                self._conn_lost += 1
                self._call_connection_lost(None)
            elif self._eof:
                self._shutdown_write()

    # --- user side

    def write(self, data: "_Buffer") -> None:
        """Send `data` (bytes-like), buffering what the kernel does not take.

        :raises RuntimeError: after write_eof().
        """
        if type(data) is not bytes:
            try:
                # Any bytes-like, counted in bytes (an array's items may not be).
                data = memoryview(data).cast("B")
            except TypeError:
                raise TypeError("data argument must be a bytes-like object, not %r"
                                % type(data).__name__) from None
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data or self._conn_lost:
            return
        buf = self._buffer
        if not buf:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            if n == len(data):
                return
            data = memoryview(data)[n:]
            self._writer._cancelled = False
            self._loop._set_io(self._fd, False, self._writer)
        buf += data
        self._maybe_pause_protocol()

    # --- what the mixin drives

    def _set_reading(self, reading: bool) -> None:
        """Watch the socket for readability (this transport's reader), or stop."""
        if reading:
            self._reader._cancelled = False
            self._loop._set_io(self._fd, True, self._reader)
        else:
            self._loop._remove_io(self._fd, True)

    def _set_writing(self, writing: bool) -> None:
        """Watch the socket for writability (this transport's writer), or stop."""
        if writing:
            self._writer._cancelled = False
            self._loop._set_io(self._fd, False, self._writer)
        else:
            self._loop._remove_io(self._fd, False)

    def _set_write_buffer_limits(self, high: int, low: int) -> None:
        """Install flow-control marks the mixin has checked; pause now if above."""
        self._high = high
        self._low = low
        self._maybe_pause_protocol()

    def _owed(self) -> int:
        """Return the bytes written but not yet sent."""
        return len(self._buffer)

    def _drop_output(self) -> None:
        """Drop what is owed (abort, a broken connection); count it as
        'dropped_bytes'."""
        if self._buffer:
            self._extra["dropped_bytes"] = len(self._buffer)
            self._buffer.clear()
            self._set_writing(False)

    def _set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def _maybe_pause_protocol(self) -> None:
        if self._owed() <= self._high or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed",
                "exception": exc, "transport": self, "protocol": self._protocol})

    def _maybe_resume_protocol(self) -> None:
        if not self._protocol_paused or self._owed() > self._low:
            return
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": "protocol.resume_writing() failed",
                "exception": exc, "transport": self, "protocol": self._protocol})


class Transport(TransportMixin, TransportCore):
    """A TCP transport: non-blocking socket <-> asyncio-shaped protocol.

    TransportCore's recv/send path under fastio._transport's asyncio
    transport methods.
    """
