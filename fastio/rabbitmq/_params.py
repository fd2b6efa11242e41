"""Broker addresses: validate AMQP URLs, mask credentials, explain pika's errors.

Everything that shows an address to a person (exception messages, log
lines, reprs, the command line) goes through `mask_url` or `describe`:
a password never leaves the process in text. `explain` turns pika's
error chains (``AMQPConnectionWorkflowFailed: 1 exceptions in all; ...``)
into one line that says what happened and what to check.
"""

import socket
import ssl
from typing import Any, List, Sequence, Union
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.connection
import pika.exceptions
from pika.adapters.utils import connection_workflow as _workflow

__all__ = ["parameters_list", "mask_url", "describe", "explain", "is_fatal"]

SCHEMES = ("amqp", "amqps")

_UrlOrParameters = Union[str, pika.connection.Parameters]


def mask_url(url: str) -> str:
    """Return `url` with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc="%s:***@%s" % (user, host)))


def _check_url(url: str) -> pika.URLParameters:
    masked = mask_url(url)
    try:
        parts = urlsplit(url)
        parts.port        # raises ValueError for a port out of range / not a number
    except ValueError as exc:
        raise ValueError("bad AMQP URL %r: %s" % (masked, exc)) from None
    if parts.scheme not in SCHEMES:
        what = "no scheme" if not parts.scheme else "scheme %r" % parts.scheme
        raise ValueError("bad AMQP URL %r: %s; expected amqp://user:password@host:port/vhost "
                         "(or amqps:// for TLS)" % (masked, what))
    if not parts.hostname:
        raise ValueError("bad AMQP URL %r: no host; expected "
                         "amqp://user:password@host:port/vhost" % (masked,))
    try:
        return pika.URLParameters(url)
    except Exception as exc:          # pika's own checks (query options, ...)
        raise ValueError("bad AMQP URL %r: %s" % (masked, exc)) from None


def parameters_list(url_or_parameters: Union[_UrlOrParameters, Sequence[_UrlOrParameters]]
                    ) -> List[pika.connection.Parameters]:
    """Return pika parameters for an AMQP URL, pika parameters, or a list of either.

    :raises ValueError: a URL that is not ``amqp://`` / ``amqps://`` with a
        host, an item of another type, or an empty list.
    """
    items: Any = url_or_parameters
    if isinstance(items, (str, pika.connection.Parameters)):
        items = [items]
    elif not isinstance(items, (list, tuple)):
        raise ValueError("expected an AMQP URL (str), pika connection parameters or a "
                         "list of them, not %s" % type(items).__name__)
    out: List[pika.connection.Parameters] = []
    for item in items:
        if isinstance(item, str):
            out.append(_check_url(item))
        elif isinstance(item, pika.connection.Parameters):
            out.append(item)
        else:
            raise ValueError("expected an AMQP URL (str) or pika connection parameters, "
                             "not %s" % type(item).__name__)
    if not out:
        raise ValueError("no broker address given")
    return out


def describe(params: pika.connection.Parameters) -> str:
    """Return ``host:port/vhost`` of `params`, without credentials."""
    host = params.host
    if ":" in host:
        host = "[%s]" % host          # an IPv6 literal
    return "%s:%s%s" % (host, params.port, "" if params.virtual_host == "/"
                        else "/" + params.virtual_host)


def _unwrap(exc: BaseException) -> BaseException:
    # pika nests: AMQPConnectionError(AMQPConnectionWorkflowFailed(...
    # [..., AMQPConnectorSocketConnectError(ConnectionRefusedError)])).
    for _ in range(8):
        if isinstance(exc, _workflow.AMQPConnectionWorkflowFailed) and exc.exceptions:
            exc = exc.exceptions[-1]
        elif isinstance(exc, _workflow.AMQPConnectorPhaseErrorBase) and exc.exception:
            exc = exc.exception
        elif (type(exc) is pika.exceptions.AMQPConnectionError and exc.args
              and isinstance(exc.args[0], BaseException)):
            exc = exc.args[0]
        else:
            break
    return exc


def is_fatal(exc: BaseException) -> bool:
    """Return whether retrying cannot help: a refused login or a missing vhost."""
    exc = _unwrap(exc)
    return isinstance(exc, (pika.exceptions.ProbableAuthenticationError,
                            pika.exceptions.AuthenticationError,
                            pika.exceptions.ProbableAccessDeniedError))


def explain(exc: BaseException, params: pika.connection.Parameters) -> str:
    """Return one line saying why connecting to `params` failed, and what to check."""
    where = describe(params)
    inner = _unwrap(exc)
    if isinstance(inner, (pika.exceptions.ProbableAuthenticationError,
                          pika.exceptions.AuthenticationError)):
        return "login refused by %s for user %r: check the user name and password" % (
            where, params.credentials.username)
    if isinstance(inner, pika.exceptions.ProbableAccessDeniedError):
        return ("virtual host %r missing on %s, or user %r may not use it"
                % (params.virtual_host, where, params.credentials.username))
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused by %s: is RabbitMQ running and listening on that port?" % where
    if isinstance(inner, socket.gaierror):
        return "cannot resolve host %r: %s" % (params.host, inner.strerror or inner)
    if isinstance(inner, (ssl.SSLError, ssl.CertificateError)):
        return "TLS handshake with %s failed: %s (is the port a TLS listener? " \
               "is the certificate trusted?)" % (where, getattr(inner, "reason", None) or inner)
    if isinstance(inner, (_workflow.AMQPConnectorStackTimeout, socket.timeout, TimeoutError)):
        return "%s did not answer in time: host unreachable or a firewall drops the packets" % where
    if isinstance(inner, pika.exceptions.IncompatibleProtocolError):
        return "%s closed the connection before speaking AMQP: wrong port, or not RabbitMQ" % where
    if isinstance(inner, OSError):
        return "%s unreachable: %s" % (where, inner.strerror or inner)
    if isinstance(inner, pika.exceptions.ConnectionClosedByBroker):
        return "%s closed the connection: (%s) %s" % (where, inner.reply_code, inner.reply_text)
    return "cannot connect to %s: %s" % (where, type(inner).__name__)
