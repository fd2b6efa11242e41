"""The cold half of the loop's TCP transport, shared by both twins.

fastio._impl.loop_c (compiled) and fastio._impl.loop_py (pure Python) each have a
`TransportCore` with what runs per chunk: recv, send, the write buffer and
flow control. Everything else -- starting, closing, aborting, half-closing,
pausing reading, limits, extra info, the protocol swap -- runs a few times per
connection, so it is written once here, and each twin's `Transport` is
``class Transport(TransportMixin, TransportCore)``. A compiled protocol's
writes go to the core's C method directly (src/loop_capi.pxi); a Python
protocol's `transport.write` resolves to the core's method through the type's
attribute cache, so the mixin adds no cost per call.

What a core provides (the compiled one exposes it as cdef public/readonly
attributes and def/cpdef methods):

- state: `_loop`, `_sock`, `_fd`, `_protocol`, `_extra`, `_server`,
  `_buffer` (a bytearray), `_high`, `_low`, `_closing`, `_eof`,
  `_reading_paused`, `_conn_lost`;
- `_set_reading(reading)` / `_set_writing(writing)`: watch the socket for
  readability / writability through the transport's own handles, or stop;
- `_set_protocol(protocol)`: install the protocol (the compiled core also
  looks up its compiled data_received);
- `_set_write_buffer_limits(high, low)`: install checked flow-control marks
  and call pause_writing() at once if the buffer is above the new high one;
- `_owed()`: the bytes written but not yet sent (the write buffer's, plus,
  on io_uring, a send in flight); `_drop_output()`: drop them, counted as
  'dropped_bytes' (abort, a broken connection).
"""

import socket
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, Tuple, Union

if TYPE_CHECKING:
    from fastio._streams import Protocol

__all__ = ["TransportMixin"]

_Buffer = Union[bytes, bytearray, memoryview]


class TransportMixin:
    """The asyncio transport methods of fastio's TCP transport, over a core."""

    if not TYPE_CHECKING:
        # No __dict__ of its own: the compiled Transport has none. (Hidden
        # from mypy, which would take the core's attributes for undeclared
        # slots.)
        __slots__ = ()

    # Provided by the core (see the module docstring).
    _loop: Any
    _sock: socket.socket
    _fd: int
    _protocol: Any
    _extra: Dict[str, Any]
    _server: Any
    _buffer: bytearray
    _high: int
    _low: int
    _closing: bool
    _eof: bool
    _reading_paused: bool
    _conn_lost: int

    if TYPE_CHECKING:
        def write(self, data: _Buffer) -> None: ...
        def _set_reading(self, reading: bool) -> None: ...
        def _set_writing(self, writing: bool) -> None: ...
        def _set_protocol(self, protocol: Any) -> None: ...
        def _set_write_buffer_limits(self, high: int, low: int) -> None: ...
        def _owed(self) -> int: ...
        def _drop_output(self) -> None: ...

    # --- life cycle

    def _start(self) -> None:
        """Call connection_made(), then start reading."""
        try:
            self._protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            self._force_close(None)
            raise
        except BaseException as exc:
            # As asyncio: log it and serve the connection all the same; it
            # is closed by the protocol or the peer, never left behind.
            self._loop.call_exception_handler({
                "message": "protocol.connection_made() failed",
                "exception": exc, "transport": self, "protocol": self._protocol})
        if not self._closing and not self._reading_paused:
            self._set_reading(True)

    def close(self) -> None:
        """Stop reading, flush the buffer, then close; connection_lost(None)."""
        if self._closing:
            return
        self._closing = True
        self._set_reading(False)
        if not self._owed():
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        """Close at once, dropping buffered data; connection_lost(None)."""
        self._force_close(None)

    def is_closing(self) -> bool:
        """Return whether close() or abort() was called, or the connection broke."""
        return self._closing

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        # A connection the peer broke is the protocol's business, reported
        # through connection_lost(exc); anything else is also logged.
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({
                "message": message, "exception": exc,
                "transport": self, "protocol": self._protocol})
        self._force_close(exc)

    def _force_close(self, exc: Optional[BaseException]) -> None:
        if self._conn_lost:
            return
        self._drop_output()
        if not self._closing:
            self._closing = True
            self._set_reading(False)
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Optional[BaseException]) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._set_protocol(None)
            server = self._server
            if server is not None:
                self._server = None
                server._detach()

    # --- writing

    def writelines(self, list_of_data: "Iterable[_Buffer]") -> None:
        """Send each bytes-like of `list_of_data`, as one write."""
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        """Shut down the sending side once the buffer is flushed."""
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._owed():
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        # A reset can land between the last send and this call.
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fatal_error(exc, "Fatal error on socket shutdown")

    def can_write_eof(self) -> bool:
        """Return True: a TCP transport can half-close."""
        return True

    def get_write_buffer_size(self) -> int:
        """Return the number of bytes waiting in the write buffer."""
        return self._owed()

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        """Return the (low, high) flow-control marks."""
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        """Set the flow-control marks (asyncio defaults: 64 KiB / 16 KiB).

        :raises ValueError: unless high >= low >= 0.
        """
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError("high (%r) must be >= low (%r) must be >= 0" % (high, low))
        self._set_write_buffer_limits(high, low)

    # --- reading

    def pause_reading(self) -> None:
        """Stop calling data_received() until resume_reading()."""
        if self._closing or self._reading_paused:
            return
        self._reading_paused = True
        self._set_reading(False)

    def resume_reading(self) -> None:
        """Undo pause_reading()."""
        if self._closing or not self._reading_paused:
            return
        self._reading_paused = False
        self._set_reading(True)

    def is_reading(self) -> bool:
        """Return whether data_received() may be called."""
        return not self._reading_paused and not self._closing

    # --- the rest

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Return 'peername', 'sockname', 'socket', or 'dropped_bytes' (bytes
        left unsent when the connection broke or was aborted), else `default`."""
        return self._extra.get(name, default)

    def get_protocol(self) -> Any:
        """Return the protocol (None once the connection is lost)."""
        return self._protocol

    def set_protocol(self, protocol: "Protocol") -> None:
        """Deliver further callbacks to `protocol`."""
        self._set_protocol(protocol)

    def __repr__(self) -> str:
        return "<%s fd=%d%s>" % (type(self).__name__, self._fd,
                                 " closing" if self._closing else "")
