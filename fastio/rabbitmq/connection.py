"""FastioConnection: pika's BaseConnection on fastio's Loop.

pika splits an adapter into a connection class and "I/O services" (the
`nbio_interface.AbstractIOServices` it calls for timers, fd watches and
streams). `SelectorIOServicesAdapter` builds those services from any loop
with pika's ioloop interface, which fastio's Loop has; so FastioConnection
is pika's SelectConnection with a fastio Loop in place of pika's IOLoop.

One thing is replaced: for plaintext sockets the stream transport is
fastio's (recv/send compiled, into the loop's one receive buffer, when the
extension is built) instead of pika's pure-Python
`_AsyncPlaintextTransport`. pika's protocol side is already
asyncio-shaped (connection_made / data_received / eof_received /
connection_lost), which is exactly what fastio's Transport drives. TLS
sockets keep pika's own SSL transport, running on the same loop.
"""

import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import pika.connection
from pika.adapters.base_connection import BaseConnection
from pika.adapters.utils import nbio_interface
from pika.adapters.utils.io_services_utils import check_callback_arg
from pika.adapters.utils.selector_ioloop_adapter import SelectorIOServicesAdapter

from fastio import _streams
from fastio._log import get_logger
from fastio.loop import Loop

if TYPE_CHECKING:
    from fastio._contracts import IOLoopLike

__all__ = ["FastioConnection", "FastioIOServices"]

#: What a FastioConnection runs on: a fastio Loop, or pika I/O services.
IOLoopOrServices = Union[Loop, nbio_interface.AbstractIOServices]

logger = get_logger("fastio.rabbitmq")


class _NoProtocol:
    """What a transport whose linkup failed reports to: nothing."""

    def connection_lost(self, exc):
        pass


#: pika's protocols have no pause_writing(): its connection buffers in the
#: transport and the application watches `_get_write_buffer_size()`. So a
#: pika stream's transport never pauses its protocol.
_NEVER_PAUSE = sys.maxsize


class _StreamLinkup(nbio_interface.AbstractIOReference):
    """Wrap a connected socket in a fastio Transport, on the next loop turn.

    Same contract as pika's `_AsyncStreamConnector`: bad arguments and an
    unconnected socket raise ValueError at once; start() never calls back
    from the caller's frame; cancel() before completion closes the socket
    (this object owns it) and suppresses `on_done`; if the protocol factory,
    the transport or `connection_made()` raises, `on_done` gets the
    exception and the socket is closed, with no connection_lost().
    """

    def __init__(self, loop, protocol_factory, sock, on_done):
        check_callback_arg(protocol_factory, "protocol_factory")
        check_callback_arg(on_done, "on_done")
        try:
            sock.getpeername()
        except Exception as error:
            raise ValueError("Expected connected socket, but getpeername() failed: "
                             "error={!r}; {}; ".format(error, sock)) from None
        self._loop = loop
        self._factory = protocol_factory
        self._sock = sock
        self._on_done = on_done
        self._handle = None

    def start(self):
        self._handle = self._loop.call_soon(self._linkup)
        return self

    def cancel(self):
        if self._sock is None:
            return False
        self._handle.cancel()
        self._sock.close()
        self._sock = None
        return True

    def _linkup(self):
        sock, self._sock = self._sock, None
        transport = None
        try:
            protocol = self._factory()
            cls = self._loop.transport_class
            if not issubclass(cls, nbio_interface.AbstractStreamTransport):
                # It has pika's transport methods (abort, get_protocol,
                # write, get_write_buffer_size).
                nbio_interface.AbstractStreamTransport.register(cls)
            transport = cls(self._loop, sock, protocol, _streams._extra(sock))
            transport.set_write_buffer_limits(_NEVER_PAUSE, 0)
            # Called here, not by the transport's _start(), which would log
            # an exception and serve the connection all the same (asyncio's
            # contract): pika's is to fail the linkup.
            protocol.connection_made(transport)
        except Exception as exc:
            logger.exception("stream linkup failed on %r", sock)
            if transport is not None:
                transport._set_protocol(_NoProtocol())
                transport.abort()
            try:
                self._on_done(exc)
            finally:
                sock.close()
            return
        if not transport.is_closing() and not transport._reading_paused:
            transport._set_reading(True)
        self._on_done((transport, protocol))


class FastioIOServices(SelectorIOServicesAdapter):
    """pika's I/O services on a fastio Loop, with fastio's plaintext transport.

    :param loop: a `fastio.loop.Loop` (or anything with pika's ioloop API,
        `fastio._contracts.IOLoopLike`).
    """

    def create_streaming_connection(self, protocol_factory, sock, on_done,
                                    ssl_context=None, server_hostname=None):
        """Same contract as pika's; plaintext sockets get a fastio Transport."""
        if (ssl_context is not None or server_hostname is not None
                or not hasattr(self._loop, "transport_class")):
            return super().create_streaming_connection(
                protocol_factory, sock, on_done, ssl_context, server_hostname)
        return _StreamLinkup(self._loop, protocol_factory, sock, on_done).start()


def _services(custom_ioloop: Optional[IOLoopOrServices]
              ) -> nbio_interface.AbstractIOServices:
    if isinstance(custom_ioloop, nbio_interface.AbstractIOServices):
        return custom_ioloop
    # Annotated so that type checkers hold Loop to pika's ioloop interface.
    ioloop: "IOLoopLike" = custom_ioloop if custom_ioloop is not None else Loop()
    return FastioIOServices(ioloop)


class FastioConnection(BaseConnection):  # type: ignore[misc, unused-ignore]  # pika: untyped
    """A pika connection on a fastio Loop; use it wherever SelectConnection fits.

    Same constructor and callbacks as `pika.SelectConnection`; the loop is
    ``connection.ioloop`` (a `fastio.loop.Loop`): run it with ``start()``.

    :param parameters: `pika.ConnectionParameters` / `URLParameters`.
    :param on_open_callback: ``on_open_callback(connection)``.
    :param on_open_error_callback: ``on_open_error_callback(connection, exc)``.
    :param on_close_callback: ``on_close_callback(connection, exc)``.
    :param custom_ioloop: a fastio Loop to run on, or ready-made
        `AbstractIOServices`; None creates a new Loop.
    :param internal_connection_workflow: False when driven by
        `create_connection()`.
    """

    def __init__(self, parameters: Optional[pika.connection.Parameters] = None,
                 on_open_callback: Optional[Callable[["FastioConnection"], None]] = None,
                 on_open_error_callback: Optional[
                     Callable[["FastioConnection", BaseException], None]] = None,
                 on_close_callback: Optional[
                     Callable[["FastioConnection", BaseException], None]] = None,
                 custom_ioloop: Optional[IOLoopOrServices] = None,
                 internal_connection_workflow: bool = True) -> None:
        super().__init__(parameters, on_open_callback, on_open_error_callback,
                         on_close_callback, _services(custom_ioloop),
                         internal_connection_workflow=internal_connection_workflow)

    @classmethod
    def create_connection(cls, connection_configs: Sequence[pika.connection.Parameters],
                          on_done: Callable[[Union["FastioConnection", BaseException]], None],
                          custom_ioloop: Optional[IOLoopOrServices] = None,
                          workflow: Any = None) -> Any:
        """Try `connection_configs` in order; same contract as pika's."""
        nbio = _services(custom_ioloop)

        def connection_factory(params: Optional[pika.connection.Parameters]
                               ) -> "FastioConnection":
            if params is None:
                raise ValueError("Expected pika.connection.Parameters instance, "
                                 "but got None in params arg.")
            return cls(parameters=params, custom_ioloop=nbio,
                       internal_connection_workflow=False)

        return cls._start_connection_workflow(
            connection_configs=connection_configs,
            connection_factory=connection_factory, nbio=nbio,
            workflow=workflow, on_done=on_done)

    def _get_write_buffer_size(self) -> int:
        """Return how many bytes the transport holds unsent."""
        return self._transport.get_write_buffer_size()
