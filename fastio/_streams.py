"""TCP servers and clients for fastio.loop.Loop: accept, connect, Server.

The transports themselves (the recv/send path) live in src/_loop.pyx and its
twin fastio/_impl/loop_py.py; this module only sets sockets up and hands them over.
"""

import errno
import socket
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

if TYPE_CHECKING:
    import asyncio

    from fastio._contracts import LoopLike
    from fastio._impl.loop_py import Transport

__all__ = ["Protocol", "Server", "start_server", "open_connection"]

# accept() errors that mean "out of resources for now": stop accepting for a
# moment instead of spinning on a listening socket that stays readable.
_ACCEPT_RETRY = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_ACCEPT_RETRY_DELAY = 1.0


class Protocol:
    """Base class of stream protocols; same callbacks as `asyncio.Protocol`."""

    def connection_made(self, transport: "Transport") -> None:
        """Called with the transport once the connection is up."""

    def data_received(self, data: bytes) -> None:
        """Called with each chunk of bytes received."""

    def eof_received(self) -> Optional[bool]:
        """Called when the peer shut down its sending side.

        :returns: true to keep the transport open (half-closed) for writing;
            otherwise the transport closes itself.
        """

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """Called once the connection is closed; `exc` is None or the error."""

    def pause_writing(self) -> None:
        """Called when the transport's write buffer goes over the high mark."""

    def resume_writing(self) -> None:
        """Called when the write buffer drains below the low mark."""


def _extra(sock: socket.socket) -> Dict[str, Any]:
    try:
        peername = sock.getpeername()
    except OSError:
        peername = None
    return {"peername": peername, "sockname": sock.getsockname(), "socket": sock}


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Server:
    """Listening sockets accepting connections into protocols on a Loop.

    Returned by `Loop.create_server()`; use `close()` to stop listening and
    `wait_closed()` for a future done once it is closed and every connection
    it accepted is gone.
    """

    def __init__(self, loop: "LoopLike", sockets: List[socket.socket],
                 protocol_factory: Callable[[], Protocol], backlog: int) -> None:
        self._loop = loop
        self._sockets: Optional[List[socket.socket]] = sockets
        self._factory = protocol_factory
        self._backlog = backlog
        self._active = 0
        self._waiters: "List[asyncio.Future[None]]" = []
        self._accept_paused = False
        for sock in sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def sockets(self) -> Tuple[socket.socket, ...]:
        """The listening sockets (empty once closed)."""
        return tuple(self._sockets or ())

    def get_loop(self) -> Any:
        """Return the Loop the server runs on."""
        return self._loop

    def is_serving(self) -> bool:
        """Return whether the server still accepts connections."""
        return self._sockets is not None

    def close(self) -> None:
        """Stop listening; connections already accepted stay open."""
        sockets, self._sockets = self._sockets, None
        if sockets is None:
            return
        for sock in sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._wake_waiters()

    def pause_accepting(self) -> None:
        """Stop taking new connections (they wait in the kernel's backlog)."""
        if self._sockets is not None and not self._accept_paused:
            self._accept_paused = True
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())

    def resume_accepting(self) -> None:
        """Undo pause_accepting()."""
        if self._sockets is not None and self._accept_paused:
            self._accept_paused = False
            for sock in self._sockets:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    def wait_closed(self) -> "asyncio.Future[None]":
        """Return a future done once closed with no connection left."""
        fut: "asyncio.Future[None]" = self._loop.create_future()
        self._waiters.append(fut)
        self._wake_waiters()
        return fut

    def _attach(self) -> None:
        self._active += 1

    def _detach(self) -> None:
        self._active -= 1
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        if self._sockets is not None or self._active:
            return
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _accept(self, sock: socket.socket) -> None:
        # Take up to `backlog` connections per readiness: one accept() per
        # loop iteration would let a burst wait behind every other fd.
        for _ in range(self._backlog):
            if self._accept_paused or self._sockets is None:
                return  # a protocol paused or closed us from connection_made()
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                self._loop.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": exc, "socket": sock})
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(_ACCEPT_RETRY_DELAY, self._resume_accept, sock)
                return
            try:
                _tune(conn)
                transport = self._loop.transport_class(
                    self._loop, conn, self._factory(), _extra(conn), self)
            except Exception:
                conn.close()
                raise
            transport._start()

    def _resume_accept(self, sock: socket.socket) -> None:
        if self._sockets is not None and sock in self._sockets and not self._accept_paused:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def __repr__(self) -> str:
        return "<Server sockets=%r>" % (self.sockets,)


def _check_port(port: Any, call: str) -> None:
    # getaddrinfo() takes a port number modulo 65536 (70000 is 4464);
    # bind() and connect() refuse it, as asyncio's loop does through them.
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise OverflowError("%s(): port must be 0-65535." % call)


def start_server(loop: "LoopLike", protocol_factory: Callable[[], Protocol],
                 host: Union[None, str, Iterable[str]], port: Optional[int], backlog: int,
                 reuse_port: bool, sock: Optional[socket.socket]) -> Server:
    """Listen on `host`:`port` (or on `sock`); see Loop.create_server."""
    if sock is not None:
        if host is not None or port is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
        sock.setblocking(False)
        return Server(loop, [sock], protocol_factory, backlog)
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    _check_port(port, "bind")
    hosts = [host] if host is None or isinstance(host, str) else list(host)
    infos: List[Tuple[Any, ...]] = []
    for h in hosts:
        infos += socket.getaddrinfo(h, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)
    sockets: List[socket.socket] = []
    try:
        for family, type_, proto, _name, addr in dict.fromkeys(infos):
            s = socket.socket(family, type_, proto)
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(backlog)
            s.setblocking(False)
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return Server(loop, sockets, protocol_factory, backlog)


def open_connection(loop: "LoopLike", protocol_factory: Callable[[], Protocol], host: Optional[str],
                    port: Union[int, str, None]) -> "asyncio.Future[Any]":
    """Connect without blocking on the connect; see Loop.create_connection."""
    _check_port(port, "connect")
    fut: "asyncio.Future[Any]" = loop.create_future()
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    _try_connect(loop, fut, protocol_factory, infos, None)
    return fut


def _try_connect(loop, fut, protocol_factory, infos, last_exc):
    # Try each address in turn; the future gets the last error if none works.
    while infos:
        family, type_, proto, _name, addr = infos.pop(0)
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        if err in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            loop.add_writer(sock.fileno(), _connected, loop, fut, sock,
                            protocol_factory, infos, addr)
            return
        sock.close()
        last_exc = OSError(err, "Connect call failed %r: %s" % (addr, errno.errorcode.get(err, err)))
    fut.set_exception(last_exc or OSError("getaddrinfo returned no address"))


def _connected(loop, fut, sock, protocol_factory, infos, addr):
    # Writability ends a non-blocking connect; SO_ERROR says how it ended.
    loop.remove_writer(sock.fileno())
    if fut.cancelled():
        sock.close()
        return
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        sock.close()
        exc = ConnectionRefusedError if err == errno.ECONNREFUSED else OSError
        _try_connect(loop, fut, protocol_factory, infos,
                     exc(err, "Connect call failed %r" % (addr,)))
        return
    try:
        _tune(sock)
        protocol = protocol_factory()
        transport = loop.transport_class(loop, sock, protocol, _extra(sock))
        transport._start()
    except BaseException as exc:
        sock.close()
        fut.set_exception(exc)
        if not isinstance(exc, Exception):
            raise
        return
    fut.set_result((transport, protocol))
