# asyncio's face of the loop core: the sock_*() coroutines, their I/O
# callbacks and done-callbacks, and the server's accept loop (see
# aio_sock.pxi for what is compiled and when asyncio's own code runs
# instead; the setup and the helpers used here are there too).

# ------------------------------------------------------------ sock_*()

def aio__sock_read_done(self, fd, fut, handle=None):
    """Drop the reader of a finished sock_recv()/sock_recv_into()/sock_accept()."""
    if handle is None or not _aio_handle_cancelled(handle):
        if _aio_own(self):
            _aio_ensure_fd_no_transport(self, fd)
            _aio_remove_handler(self, fd, 1)
        else:
            self.remove_reader(fd)


def aio__sock_write_done(self, fd, fut, handle=None):
    """Drop the writer of a finished sock_sendall()/sock_connect()."""
    if handle is None or not _aio_handle_cancelled(handle):
        if _aio_own(self):
            _aio_ensure_fd_no_transport(self, fd)
            _aio_remove_handler(self, fd, 2)
        else:
            self.remove_writer(fd)


def aio__sock_recv(self, fut, sock, n):
    """Finish a sock_recv() once the socket is readable."""
    if fut.done():
        return
    try:
        data = _aio_raw_recv(sock, n)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        if data is not _AIO_AGAIN:
            fut.set_result(data)


def aio__sock_recv_into(self, fut, sock, buf):
    """Finish a sock_recv_into() once the socket is readable."""
    if fut.done():
        return
    try:
        nbytes = _aio_raw_recv_into(sock, buf)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        if nbytes is not _AIO_AGAIN:
            fut.set_result(nbytes)


def aio__sock_sendall(self, fut, sock, view, pos):
    """Send more of a sock_sendall() once the socket is writable."""
    if fut.done():
        # Future cancellation can be scheduled on previous loop iteration
        return
    start = pos[0]
    try:
        if (type(view) is memoryview and type(start) is int
                and PyMemoryView_GET_BUFFER(view).itemsize == 1
                and PyMemoryView_GET_BUFFER(view).ndim == 1):
            # view[start:] of a byte view is its bytes from `start` on
            # (a released view fails in _aio_raw_send's getbuffer first).
            n = _aio_raw_send(sock, view, start) if start >= 0 else _aio_raw_send(sock, view[start:], 0)
        else:
            n = _aio_raw_send(sock, view[start:], 0)
        if n is None:
            return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
        return

    start += n

    if start == len(view):
        fut.set_result(None)
    else:
        pos[0] = start


def aio__sock_connect(self, fut, sock, address):
    """Start connecting; wait for writability if it is in progress."""
    fd = sock.fileno()
    try:
        sock.connect(address)
    except (BlockingIOError, InterruptedError):
        # connect() in progress (or interrupted: it goes on in the
        # background): the socket becomes writable when it is done.
        _aio_ensure_of(self, fd)
        handle = _aio_add_writer_of(
            self, fd, _aio_bound(self, aio__sock_connect_cb, '_sock_connect_cb'),
            (fut, sock, address))
        fut.add_done_callback(
            _aio_partial(_aio_bound(self, aio__sock_write_done, '_sock_write_done'),
                         fd, handle=handle))
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result(None)
    finally:
        fut = None


def aio__sock_connect_cb(self, fut, sock, address):
    """Finish a sock_connect() once the socket is writable."""
    if fut.done():
        return

    try:
        err = sock.getsockopt(_aio_SOL_SOCKET, _aio_SO_ERROR)
        if err != 0:
            # Jump to any except clause below.
            raise OSError(err, f'Connect call failed {address}')
    except (BlockingIOError, InterruptedError):
        # socket is still registered, the callback will be retried later
        pass
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result(None)
    finally:
        fut = None


cdef tuple _aio_accept(object sock):
    """sock.accept() of a plain socket.socket, without socket.py's frames."""
    if type(sock) is not _aio_socket_cls:
        return sock.accept()
    fd, addr = sock._accept()
    # socket.accept() builds socket(self.family, self.type, self.proto,
    # fileno=fd); socket.__init__ is _socket.socket's plus two slots.
    conn = _aio_socket_cls.__new__(_aio_socket_cls)
    _aio_socket_init(conn, _aio_sock_family(sock), _aio_sock_type(sock), _aio_sock_proto(sock), fd)
    conn._io_refs = 0
    conn._closed = False
    if _aio_getdefaulttimeout() is None and sock.gettimeout():
        conn.setblocking(True)
    return conn, addr


def aio__sock_accept(self, fut, sock):
    """Accept now, or wait for the listening socket to be readable."""
    fd = sock.fileno()
    try:
        conn, address = _aio_accept(sock)
        conn.setblocking(False)
    except (BlockingIOError, InterruptedError):
        _aio_ensure_of(self, fd)
        handle = _aio_add_reader_of(
            self, fd, _aio_bound(self, aio__sock_accept, '_sock_accept'), (fut, sock))
        fut.add_done_callback(
            _aio_partial(_aio_bound(self, aio__sock_read_done, '_sock_read_done'),
                         fd, handle=handle))
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result((conn, address))


# ------------------------------------------------------------ accept loop

# The default of an SSL timeout argument: asyncio's constant, read at setup.
cdef object _AIO_UNSET = object()


def aio__accept_connection(self, protocol_factory, sock, sslcontext=None, server=None,
                           backlog=100, ssl_handshake_timeout=_AIO_UNSET,
                           ssl_shutdown_timeout=_AIO_UNSET):
    """Accept up to `backlog` connections of a readable listening socket.

    Each gets a task running _accept_connection2() (protocol and
    transport); a lack of file descriptors or memory is reported and
    accepting pauses for ACCEPT_RETRY_DELAY seconds, as asyncio does.
    """
    if ssl_handshake_timeout is _AIO_UNSET:
        ssl_handshake_timeout = _aio_ssl_handshake_timeout
    if ssl_shutdown_timeout is _AIO_UNSET:
        ssl_shutdown_timeout = _aio_ssl_shutdown_timeout
    timeouts = (ssl_handshake_timeout, ssl_shutdown_timeout) if _aio_ssl_shutdown \
        else (ssl_handshake_timeout,)
    if self._debug:
        return _aio_py_accept_connection(self, protocol_factory, sock, sslcontext, server,
                                         backlog, *timeouts)
    for _ in range(backlog):
        try:
            conn, addr = _aio_accept(sock)
            conn.setblocking(False)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            # Early exit because the socket accept buffer is empty.
            return None
        except OSError as exc:
            # There's nowhere to send the error, so just log it.
            if exc.errno in _aio_accept_resource_errnos:
                # Linux keeps reporting the fd as ready: stop reading it
                # and try again in a while.
                self.call_exception_handler({
                    'message': 'socket.accept() out of system resource',
                    'exception': exc,
                    'socket': _aio_TransportSocket(sock),
                })
                self._remove_reader(sock.fileno())
                self.call_later(_aio_accept_retry_delay,
                                self._start_serving,
                                protocol_factory, sock, sslcontext, server,
                                backlog, *timeouts)
            else:
                raise  # The event loop will catch, log and ignore it.
        else:
            extra = {'peername': addr}
            if _aio_own(self):
                accept = aio__accept_connection2(
                    self, protocol_factory, conn, extra, sslcontext, server, *timeouts)
            else:
                accept = self._accept_connection2(
                    protocol_factory, conn, extra, sslcontext, server, *timeouts)
            self.create_task(accept)


# --------------------------------------------------- the coroutines

class BaseSelectorEventLoop:
    # Only a namespace, deleted below: coroutines defined here carry
    # asyncio's qualified names ("BaseSelectorEventLoop.sock_recv"), which
    # their reprs, task reprs and "never awaited" warnings show.
    async def sock_recv(self, sock, n):
        """Receive data from the socket.

        The return value is a bytes object representing the data received.
        The maximum amount of data to be received at once is specified by
        nbytes.
        """
        if not _aio_fast_sock(self, sock):
            return await _aio_py_sock_recv(self, sock, n)
        data = _aio_raw_recv(sock, n)
        if data is not _AIO_AGAIN:
            return data
        fut = self.create_future()
        fd = sock.fileno()
        _aio_ensure_of(self, fd)
        handle = _aio_add_reader_of(self, fd, _aio_bound(self, aio__sock_recv, '_sock_recv'),
                                    (fut, sock, n))
        fut.add_done_callback(
            _aio_partial(_aio_bound(self, aio__sock_read_done, '_sock_read_done'), fd, handle=handle))
        return await fut

    async def sock_recv_into(self, sock, buf):
        """Receive data from the socket.

        The received data is written into *buf* (a writable buffer).
        The return value is the number of bytes written.
        """
        if not _aio_fast_sock(self, sock):
            return await _aio_py_sock_recv_into(self, sock, buf)
        nbytes = _aio_raw_recv_into(sock, buf)
        if nbytes is not _AIO_AGAIN:
            return nbytes
        fut = self.create_future()
        fd = sock.fileno()
        _aio_ensure_of(self, fd)
        handle = _aio_add_reader_of(
            self, fd, _aio_bound(self, aio__sock_recv_into, '_sock_recv_into'), (fut, sock, buf))
        fut.add_done_callback(
            _aio_partial(_aio_bound(self, aio__sock_read_done, '_sock_read_done'), fd, handle=handle))
        return await fut

    async def sock_sendall(self, sock, data):
        """Send data to the socket.

        The socket must be connected to a remote socket. This method continues
        to send data from data until either all data has been sent or an
        error occurs. None is returned on success. On error, an exception is
        raised, and there is no way to determine how much data, if any, was
        successfully processed by the receiving end of the connection.
        """
        if not _aio_fast_sock(self, sock):
            return await _aio_py_sock_sendall(self, sock, data)
        n = _aio_raw_send(sock, data, 0)
        if n is None:
            n = 0
        if n == len(data):
            # all data sent
            return
        fut = self.create_future()
        fd = sock.fileno()
        _aio_ensure_of(self, fd)
        # The position reached lives in a one-item list, as asyncio keeps it.
        handle = _aio_add_writer_of(
            self, fd, _aio_bound(self, aio__sock_sendall, '_sock_sendall'),
            (fut, sock, memoryview(data), [n]))
        fut.add_done_callback(
            _aio_partial(_aio_bound(self, aio__sock_write_done, '_sock_write_done'), fd, handle=handle))
        return await fut

    async def sock_connect(self, sock, address):
        """Connect to a remote socket at address.

        This method is a coroutine.
        """
        if not _aio_fast_sock(self, sock):
            return await _aio_py_sock_connect(self, sock, address)

        family = sock.family
        if family == _aio_AF_INET or (_aio_has_ipv6 and family == _aio_AF_INET6):
            if type(self)._ensure_resolved is _aio_base_ensure_resolved:
                # asyncio's _ensure_resolved(), without its coroutine when
                # the host is already an IP address.
                host, port = address[:2]
                info = _aio_ipaddr_info(host, port, family, sock.type, sock.proto, *address[2:])
                if info is not None:
                    resolved = [info]
                else:
                    resolved = await self.getaddrinfo(host, port, family=family, type=sock.type,
                                                      proto=sock.proto, flags=0)
            else:
                resolved = await self._ensure_resolved(
                    address, family=sock.family, type=sock.type, proto=sock.proto,
                    loop=self,
                )
            _, _, _, _, address = resolved[0]

        fut = self.create_future()
        if _aio_own(self):
            aio__sock_connect(self, fut, sock, address)
        else:
            self._sock_connect(fut, sock, address)
        try:
            return await fut
        finally:
            # Needed to break cycles when an exception occurs.
            fut = None

    async def sock_accept(self, sock):
        """Accept a connection.

        The socket must be bound to an address and listening for connections.
        The return value is a pair (conn, address) where conn is a new socket
        object usable to send and receive data on the connection, and address
        is the address bound to the socket on the other end of the connection.
        """
        if not _aio_fast_sock(self, sock):
            return await _aio_py_sock_accept(self, sock)
        fut = self.create_future()
        if _aio_own(self):
            aio__sock_accept(self, fut, sock)
        else:
            self._sock_accept(fut, sock)
        return await fut

    async def _accept_connection2(self, protocol_factory, conn, extra, sslcontext=None,
                                      server=None, ssl_handshake_timeout=_AIO_UNSET,
                                      ssl_shutdown_timeout=_AIO_UNSET):
        """Make the protocol and transport of an accepted connection."""
        protocol = None
        transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            if sslcontext:
                if ssl_handshake_timeout is _AIO_UNSET:
                    ssl_handshake_timeout = _aio_ssl_handshake_timeout
                if _aio_ssl_shutdown:
                    if ssl_shutdown_timeout is _AIO_UNSET:
                        ssl_shutdown_timeout = _aio_ssl_shutdown_timeout
                    transport = self._make_ssl_transport(
                        conn, protocol, sslcontext, waiter=waiter,
                        server_side=True, extra=extra, server=server,
                        ssl_handshake_timeout=ssl_handshake_timeout,
                        ssl_shutdown_timeout=ssl_shutdown_timeout)
                else:
                    transport = self._make_ssl_transport(
                        conn, protocol, sslcontext, waiter=waiter,
                        server_side=True, extra=extra, server=server,
                        ssl_handshake_timeout=ssl_handshake_timeout)
            else:
                transport = self._make_socket_transport(
                    conn, protocol, waiter=waiter, extra=extra,
                    server=server)

            try:
                await waiter
            except BaseException:
                transport.close()
                # An exception set in the waiter can keep the protocol alive
                # through a reference cycle.
                waiter = None
                raise
                # It's now up to the protocol to handle the connection.

        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if self._debug:
                context = {
                    'message':
                        'Error on transport creation for incoming connection',
                    'exception': exc,
                }
                if protocol is not None:
                    context['protocol'] = protocol
                if transport is not None:
                    context['transport'] = transport
                self.call_exception_handler(context)


aio_sock_recv = BaseSelectorEventLoop.sock_recv
aio_sock_recv_into = BaseSelectorEventLoop.sock_recv_into
aio_sock_sendall = BaseSelectorEventLoop.sock_sendall
aio_sock_connect = BaseSelectorEventLoop.sock_connect
aio_sock_accept = BaseSelectorEventLoop.sock_accept
aio__accept_connection2 = BaseSelectorEventLoop._accept_connection2
del BaseSelectorEventLoop
