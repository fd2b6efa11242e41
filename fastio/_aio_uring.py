"""fastio.EventLoop on io_uring: completion-based TCP / Unix-socket transports.

`EventLoop(backend="io_uring")` waits on a `fastio._impl.core_c.UringPoller`
with a buffer ring (`UringBufferSelector`) and makes its socket transports
`UringSocketTransport`s: asyncio's `_SelectorSocketTransport` whose socket
I/O is a compiled `AioUringStream` of the completion engine Loop's io_uring
transports run on (src/uring_stream.pxi, src/aio_uring.pxi) -- a multishot
recv into the ring's provided buffers while reading, one send SQE in flight
-- instead of readiness callbacks and recv(2)/send(2). What asyncio does
with a transport (flow control, close/abort, write_eof, pause/resume
reading, start_tls and ssl= through its SSLProtocol, the Server's
connection bookkeeping, loop.sendfile() -- os.sendfile() on the socket
while reading is paused and once what is owed has gone out) is asyncio's
code over the methods below.

What differs from the readiness transport: data arrives in chunks of at
most one provided buffer (64 KiB) rather than `max_size`; a write goes out
with the loop's next io_uring_enter instead of a send(2) inside write()
(outside a loop run, write() still sends at once; a write taking what is
owed over the high-water mark, and close(), send what is still in the SQ at
once, so flow control and writes after close() go as asyncio's).
"""

import functools
import socket
import sys
import types
from asyncio import protocols, selector_events, sslproto
from asyncio.log import logger
from typing import Any, Optional

from fastio import _pollers
from fastio import selectors as fastio_selectors
from fastio._impl import compiled

_c: Any = compiled("loop")
_core: Any = compiled("core")

# (typeshed does not declare asyncio's private transport class)
_AsyncioSocketTransport: Any = getattr(selector_events, "_SelectorSocketTransport")

__all__ = ["UringBufferSelector", "UringSocketTransport", "attach", "make_ssl_transport"]

if _c is not None and hasattr(fastio_selectors, "UringSelector"):

    class UringBufferSelector(fastio_selectors.UringSelector):
        """`fastio.selectors.UringSelector` whose ring also has the buffer
        ring completion transports receive into."""

        _selector_cls = staticmethod(functools.partial(
            _core.UringPoller, nbufs=_pollers.URING_NBUFS, bufsize=_pollers.URING_BUFSIZE))

else:
    UringBufferSelector = None  # type: ignore[assignment, misc]


def attach(loop: Any) -> None:
    """Give `loop` (a fastio.EventLoop on a UringBufferSelector) completion transports."""
    poller = loop._selector._selector
    loop._uring = _c.UringDriver(poller)
    loop._socket_transport = functools.partial(_socket_transport, type(loop)._socket_transport)


def _socket_transport(readiness: Any, loop: Any, sock: Any, *args: Any, **kwargs: Any) -> Any:
    # A socket class with its own recv/send gets the readiness transport,
    # which calls them (this one never does).
    cls = UringSocketTransport if _c.aio_plain_sock(sock) else readiness
    return cls(loop, sock, *args, **kwargs)


def make_ssl_transport(loop: Any, rawsock: Any, protocol: Any, sslcontext: Any, waiter: Any = None,
                       *, server_side: bool = False, server_hostname: Optional[str] = None,
                       extra: Any = None, server: Any = None, **timeouts: Any) -> Any:
    """asyncio's _make_ssl_transport with the loop's own socket transport under the SSLProtocol."""
    ssl_protocol = sslproto.SSLProtocol(loop, protocol, sslcontext, waiter, server_side,
                                        server_hostname, **timeouts)
    loop._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
    return ssl_protocol._app_transport


def _make_class() -> Any:
    class UringSocketTransport(_AsyncioSocketTransport):
        """asyncio's socket transport with its socket I/O on io_uring (see the module docstring)."""

        # asyncio's, set by its __init__ (declared for the type checker).
        _stream: Any
        _closing: bool
        _paused: bool
        _eof: bool
        _conn_lost: int
        _empty_waiter: Any

        def __init__(self, loop: Any, sock: Any, protocol: Any, waiter: Any = None,
                     extra: Any = None, server: Any = None) -> None:
            self._stream = None
            super().__init__(loop, sock, protocol, waiter, extra, server)
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                # asyncio sets TCP_NODELAY only where sock.proto says TCP,
                # which a socket made with proto 0 (and what it accepts) does
                # not. Here it matters more: a message arrives in as many
                # completions as it took segments, and its echo would leave
                # in as many writes, the later ones held by Nagle's algorithm
                # until the peer's delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._stream = _c.aio_uring_stream(loop._uring, self, loop, self._sock_fd)
            self._stream.set_buffered(isinstance(self._protocol, protocols.BufferedProtocol))

        write = _c.aio_uring_write
        # Named as the asyncio method it stands for (Handle reprs, logs).
        write.__name__ = "write"
        write.__qualname__ = _AsyncioSocketTransport.write.__qualname__

        def set_protocol(self, protocol: Any) -> None:
            super().set_protocol(protocol)
            if self._stream is not None:
                self._stream.set_buffered(isinstance(protocol, protocols.BufferedProtocol))

        def _add_reader(self, fd: int, callback: Any, *args: Any) -> None:
            # asyncio starts (and resumes) reading through this; its
            # loop._add_reader() refuses a closed loop.
            if self.is_reading():
                self._loop._check_closed()
                self._stream.resume()

        def pause_reading(self) -> None:
            if not self.is_reading():
                return
            self._paused = True
            self._stream.pause()
            if self._loop.get_debug():
                logger.debug("%r pauses reading", self)

        def close(self) -> None:
            if self._closing:
                return
            self._closing = True
            self._stream.close()
            # What asyncio's write() would have sent already goes now, so
            # the buffer is empty where asyncio's is: the connection is
            # lost soon, and writes from now on are dropped, as there.
            self._stream.flush()
            if not self._conn_lost and not self._stream.owed_bytes():
                self._conn_lost += 1
                self._loop.call_soon(self._call_connection_lost, None)

        def _force_close(self, exc: Optional[BaseException]) -> None:
            if self._conn_lost:
                return
            self._stream.drop()
            if not self._closing:
                self._closing = True
                self._stream.close()
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, exc)

        def _call_connection_lost(self, exc: Optional[BaseException]) -> None:
            try:
                super()._call_connection_lost(exc)
            finally:
                self._stream.done()

        def get_write_buffer_size(self) -> int:
            return self._stream.unsent_bytes()

        def _io_completion(self) -> None:
            # In debug mode the loop runs each io_uring completion as a
            # Handle of this method of its transport (src/aio_loop.pxi), so
            # a slow protocol callback is reported under the transport, as
            # asyncio reports a readiness transport's _read_ready().
            self._stream.reap_next()

        if sys.version_info >= (3, 12):
            # (before 3.12, asyncio's WriteTransport.writelines: one write()
            # of b"".join(list_of_data), with its own errors)
            def writelines(self, list_of_data: Any) -> None:
                if self._eof:
                    raise RuntimeError('Cannot call writelines() after write_eof()')
                if self._empty_waiter is not None:
                    raise RuntimeError('unable to writelines; sendfile is in progress')
                # One write of the joined bytes; a non-bytes-like item is a
                # TypeError that sends nothing.
                views = [memoryview(chunk) for chunk in list_of_data]
                if not self._conn_lost:
                    for view in views:
                        if not view.c_contiguous:
                            # asyncio's sendmsg() of the buffer refuses it: the
                            # connection is lost with that error.
                            try:
                                raise BufferError("memoryview: underlying buffer is not C-contiguous")
                            except BufferError as exc:
                                self._fatal_error(exc, 'Fatal write error on socket transport')
                            return
                data = b"".join(views)
                if data:
                    self.write(data)

        def __repr__(self) -> str:
            # asyncio's, with the states it asks its selector for taken from
            # the stream (this transport registers nothing there).
            info = [self.__class__.__name__]
            if self._sock is None:
                info.append('closed')
            elif self._closing:
                info.append('closing')
            info.append(f'fd={self._sock_fd}')
            if self._loop is not None and not self._loop.is_closed():
                reading = self._stream is not None and self._stream.reading()
                info.append('read=polling' if reading else 'read=idle')
                bufsize = self.get_write_buffer_size()
                writing = self._stream is not None and self._stream.owed_bytes()
                info.append(f'write=<{"polling" if writing else "idle"}, bufsize={bufsize}>')
            return '<{}>'.format(' '.join(info))

        def write_eof(self) -> None:
            if self._closing or self._eof:
                return
            self._eof = True
            self._stream.eof()
            if not self._stream.owed_bytes():
                self._sock.shutdown(socket.SHUT_WR)

        def _make_empty_waiter(self) -> Any:
            if self._empty_waiter is not None:
                raise RuntimeError("Empty waiter is already set")
            self._empty_waiter = self._loop.create_future()
            self._stream.waiter(True)
            if not self._stream.owed_bytes():
                self._empty_waiter.set_result(None)
            return self._empty_waiter

        def _reset_empty_waiter(self) -> None:
            self._empty_waiter = None
            self._stream.waiter(False)

    # Named as a module-level class (Handle reprs, logs, pickling errors).
    UringSocketTransport.__qualname__ = "UringSocketTransport"
    for value in vars(UringSocketTransport).values():
        if isinstance(value, types.FunctionType):
            value.__qualname__ = "UringSocketTransport." + value.__name__
    return UringSocketTransport


UringSocketTransport: Any = _make_class() if _c is not None else None

