"""``python -m fastio publish`` and ``python -m fastio consume``.

`publish` is the RabbitMQ tutorial's send.py done with confirms: with no arguments
it makes sure queue ``hello`` exists, sends ``Hello World!`` and prints
`` [x] Sent 'Hello World!'``. `consume` prints what arrives, like the
tutorial's receive.py, until --count messages or SIGINT.

Queues: the tutorial's queue ``hello`` is created when absent by both
commands (as the tutorial's send.py and receive.py both declare it), so
receive-before-send works. Any other queue must exist unless --declare
(or, for publish, --queue) asks to create it; a missing one is reported
in one line. An existing queue is never re-declared, so its arguments
(durable, TTL, ...) do not have to be repeated.

Every failure is one line on stderr and a non-zero exit status; URLs
are shown without their password.
"""

import argparse
import logging
import os
import signal
import sys

from fastio._cli import bounded

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
# The default URL's password is the broker's well-known default; help
# texts still never print a password.
_DEFAULT_URL_SHOWN = "amqp://guest:***@localhost:5672/%2F"
TUTORIAL_QUEUE = "hello"


class _Failed(Exception):
    """A failure already phrased for the user."""


def _need_pika(command):
    try:
        import pika  # noqa: F401
    except ImportError:
        print("fastio %s needs pika: pip install 'fastio[rabbitmq]'" % command,
              file=sys.stderr)
        return False
    return True


def _name(value):
    """An exchange, queue or routing key: an AMQP short string (argparse type)."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("not valid UTF-8: %r" % value) from None
    if size > 255:
        raise argparse.ArgumentTypeError("%d bytes, more than AMQP's 255" % size)
    return value


def _common(parser):
    parser.add_argument("--url", default=DEFAULT_URL,
                        help="AMQP URL, amqp:// or amqps:// (default: %s)"
                             % _DEFAULT_URL_SHOWN.replace("%", "%%"))
    parser.add_argument("--timeout", type=bounded(float, 0.1), default=10.0,
                        help="give up connecting after this many seconds (default: %(default)s)")


def add_publish(sub):
    parser = sub.add_parser(
        "publish", help="publish messages to RabbitMQ (with confirms)",
        description="Publish each MESSAGE and wait for the broker's confirm. "
                    "--queue Q routes to Q through the default exchange and creates "
                    "Q when it does not exist (the default is --queue hello). "
                    "Messages are mandatory: one that reaches no queue is an error.")
    _common(parser)
    parser.add_argument("--exchange", type=_name, default="",
                        help="exchange (default: the default exchange)")
    route = parser.add_mutually_exclusive_group()
    route.add_argument("--routing-key", type=_name, help="routing key, used as given")
    route.add_argument("--queue", type=_name, help="queue to route to, created when absent")
    parser.add_argument("--declare", action="store_true",
                        help="create the routing key's queue when absent (implied by --queue)")
    parser.add_argument("messages", nargs="*", metavar="MESSAGE", default=["Hello World!"],
                        help="message bodies (default: 'Hello World!')")
    parser.set_defaults(func=run_publish)


def add_consume(sub):
    parser = sub.add_parser(
        "consume", help="print the messages arriving on a queue",
        description="Consume from a queue and print each message. With --count N, "
                    "exactly N messages are taken and acknowledged and the rest stay "
                    "in the queue; otherwise it runs until SIGINT (messages received "
                    "but not yet printed then go back to the queue). The queue must "
                    "exist, except the tutorial's queue 'hello', which is created when "
                    "absent; --declare creates any queue.")
    _common(parser)
    parser.add_argument("--queue", type=_name, default=TUTORIAL_QUEUE,
                        help="queue (default: %(default)s)")
    parser.add_argument("--declare", action="store_true", help="create the queue when absent")
    parser.add_argument("--count", type=bounded(int, 0), default=0,
                        help="exit after taking this many messages; 0 runs until "
                             "interrupted (default: %(default)s)")
    parser.set_defaults(func=run_consume)


def _quiet_logs():
    # The command prints its own one-line errors; the library's warnings
    # (reconnect attempts) would repeat them.
    logging.getLogger("fastio").addHandler(logging.NullHandler())


def _parse_url(command, url, timeout):
    """Return pika parameters for `url`, or print why not and return None."""
    from fastio.rabbitmq import _params

    try:
        params = _params.parameters_list(url)[0]
    except ValueError as exc:
        print("fastio %s: %s" % (command, exc), file=sys.stderr)
        return None
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    return params


class _Session:
    """One connection and channel on a fresh fastio Loop, driven by callbacks.

    `fail(message)` ends the session with that message; `finish()` ends it
    cleanly. `run()` returns the failure message or None.
    """

    def __init__(self, params, on_channel):
        from fastio.loop import Loop
        from fastio.rabbitmq import FastioConnection

        self.params = params
        self.loop = Loop()
        self.error = None
        self.closing = False
        self.channel = None
        self._on_channel = on_channel
        self._on_channel_closed = None
        self.conn = FastioConnection(params, on_open_callback=self._opened,
                                     on_open_error_callback=self._open_failed,
                                     on_close_callback=self._closed,
                                     custom_ioloop=self.loop)

    def where(self):
        from fastio.rabbitmq import _params

        return _params.describe(self.params)

    def run(self):
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()
        return self.error

    def open_channel(self, on_closed=None):
        """Open a new channel; `on_closed(reply_code, reply_text)` if the broker closes it."""
        self._on_channel_closed = on_closed
        self.conn.channel(on_open_callback=self._channel_opened)

    def _opened(self, conn):
        self.open_channel()

    def _channel_opened(self, channel):
        self.channel = channel
        channel.add_on_close_callback(self._channel_closed)
        self._on_channel(channel)

    def _channel_closed(self, channel, reason):
        if self.closing or channel is not self.channel:
            return
        code = getattr(reason, "reply_code", 0)
        text = getattr(reason, "reply_text", str(reason))
        handler = self._on_channel_closed
        if handler is None or not handler(code, text):
            self.fail("the broker closed the channel: (%s) %s" % (code, text))

    def _open_failed(self, conn, exc):
        from fastio.rabbitmq import _params

        if self.error is None:
            self.error = _params.explain(exc, self.params)
        self.loop.stop()

    def _closed(self, conn, reason):
        import pika.exceptions

        if not self.closing and self.error is None:
            if isinstance(reason, pika.exceptions.ConnectionClosedByBroker):
                self.error = "%s closed the connection: (%s) %s" % (
                    self.where(), reason.reply_code, reason.reply_text)
            else:
                self.error = "connection to %s lost: %s" % (self.where(), reason)
        self.loop.stop()

    def fail(self, message):
        if self.error is None:
            self.error = message
        self.finish()

    def finish(self):
        if self.closing:
            return
        self.closing = True
        if self.conn.is_open:
            self.conn.close()
        elif not self.conn.is_closing:
            self.loop.stop()


def _ensure_queue(session, channel, queue, create, then):
    """Call ``then(channel)`` once `queue` exists; create it when absent if `create`.

    A passive declare first: an existing queue is used as it is, whatever
    its arguments. When it is absent the broker closes the channel (404),
    so the queue is declared on a new one.
    """
    def absent(code, text):
        if code != 404:
            return False
        if not create:
            session.fail("queue %r does not exist on %s (pass --declare to create it)"
                         % (queue, session.where()))
            return True
        session._on_channel = lambda ch: ch.queue_declare(
            queue, callback=lambda frame: then(ch))
        session.open_channel()
        return True

    session._on_channel_closed = absent
    channel.queue_declare(queue, passive=True, callback=lambda frame: then(channel))


def _ensure_queue_only(params, queue):
    """Create `queue` when absent, on a connection of its own; raise _Failed."""
    def on_channel(channel):
        _ensure_queue(session, channel, queue, True, lambda ch: session.finish())

    session = _Session(params, on_channel)
    error = session.run()
    if error is not None:
        raise _Failed(error)


def _noisy_publisher():
    from fastio.rabbitmq import Publisher

    class NoisyPublisher(Publisher):
        """Says when the broker blocks and unblocks publishing.

        The library only logs it, and the command silences the library's
        logs; without this a blocked broker (low on memory or disk) would
        be a silent wait.
        """

        def _on_blocked(self, connection, frame):
            print("fastio publish: the broker blocked publishing (%s); waiting for it "
                  "(Ctrl-C stops)" % frame.method.reason, file=sys.stderr, flush=True)
            super()._on_blocked(connection, frame)

        def _on_unblocked(self, connection, frame):
            print("fastio publish: the broker unblocked publishing", file=sys.stderr, flush=True)
            super()._on_unblocked(connection, frame)

    return NoisyPublisher


def run_publish(args):
    if not _need_pika("publish"):
        return 2
    _quiet_logs()
    from fastio.rabbitmq import ConnectError, PublishError
    publisher_cls = _noisy_publisher()

    params = _parse_url("publish", args.url, args.timeout)
    if params is None:
        return 2
    routing_key = args.routing_key
    declare = args.declare
    if routing_key is None:
        routing_key = args.queue or TUTORIAL_QUEUE
        declare = True
    try:
        if declare:
            _ensure_queue_only(params, routing_key)
        # max_attempts=1: a one-shot command reports the broker's nack or
        # return at once instead of retrying it for the library's deadline.
        with publisher_cls(params, connect_timeout=args.timeout,
                           close_timeout=args.timeout, max_attempts=1) as pub:
            for message in args.messages:
                # The bytes as typed, whatever the locale made of them.
                body = os.fsencode(message)
                pub.publish(args.exchange, routing_key, body, mandatory=True).result()
                print(" [x] Sent %r" % message, flush=True)
    except (_Failed, ConnectError) as exc:
        print("fastio publish: %s" % exc, file=sys.stderr)
        return 1
    except PublishError as exc:
        print("fastio publish: not confirmed: %s" % exc, file=sys.stderr)
        return 1
    return 0


def run_consume(args):
    if not _need_pika("consume"):
        return 2
    _quiet_logs()
    params = _parse_url("consume", args.url, args.timeout)
    if params is None:
        return 2
    count = args.count
    create = args.declare or args.queue == TUTORIAL_QUEUE
    # At most `prefetch` unacknowledged messages are delivered. Acks are
    # held back so that acked + prefetch never exceeds --count: the broker
    # can then never deliver a message beyond the N-th, and the N-th's
    # ack (multiple) comes after the consumer's cancel.
    prefetch = min(count, 1000) if count else 100
    received = [0]

    def on_channel(channel):
        _ensure_queue(session, channel, args.queue, create, start)

    def start(channel):
        session._on_channel_closed = None
        channel.basic_qos(prefetch_count=prefetch, callback=lambda frame: consume(channel))

    def consume(channel):
        channel.basic_consume(args.queue, on_message)
        print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)

    def on_message(channel, method, props, body):
        if session.closing:
            return      # not acked: the broker puts it back
        received[0] += 1
        print(" [x] Received %r" % body, flush=True)
        if count and received[0] == count:
            channel.basic_cancel(method.consumer_tag)
            channel.basic_ack(method.delivery_tag, multiple=True)
            session.finish()
        elif not count or received[0] + prefetch <= count:
            channel.basic_ack(method.delivery_tag)

    session = _Session(params, on_channel)
    session.loop.add_signal_handler(signal.SIGINT, session.finish)
    error = session.run()       # closing the loop removes the handler
    if error is not None:
        print("fastio consume: %s" % error, file=sys.stderr)
        return 1
    return 0
