"""``python -m fastio publish`` and ``python -m fastio consume``.

`publish` is the RabbitMQ tutorial's send.py done with confirms: with no arguments it
declares queue ``hello``, sends ``Hello World!`` and prints
`` [x] Sent 'Hello World!'``. `consume` prints what arrives, like the
tutorial's receive.py, until --count messages or SIGINT.
"""

import signal
import sys

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"


def _need_pika(command):
    try:
        import pika  # noqa: F401
    except ImportError:
        print("fastio %s needs pika: pip install 'fastio[rabbitmq]'" % command,
              file=sys.stderr)
        return False
    return True


def add_publish(sub):
    parser = sub.add_parser(
        "publish", help="publish messages to RabbitMQ (with confirms)",
        description="Publish each MESSAGE and wait for the broker's confirm. "
                    "--queue Q declares Q and routes to it through the default "
                    "exchange (the default is --queue hello).")
    parser.add_argument("--url", default=DEFAULT_URL, help="AMQP URL (default: %(default)s)")
    parser.add_argument("--exchange", default="", help="exchange (default: the default exchange)")
    route = parser.add_mutually_exclusive_group()
    route.add_argument("--routing-key", help="routing key, used as given")
    route.add_argument("--queue", help="queue to declare and route to")
    parser.add_argument("--declare", action="store_true",
                        help="declare the routing key's queue first (implied by --queue)")
    parser.add_argument("messages", nargs="*", metavar="MESSAGE", default=["Hello World!"],
                        help="message bodies (default: 'Hello World!')")
    parser.set_defaults(func=run_publish)


def add_consume(sub):
    parser = sub.add_parser(
        "consume", help="print the messages arriving on a queue",
        description="Consume from a queue and print each message; stops after "
                    "--count messages or on SIGINT.")
    parser.add_argument("--url", default=DEFAULT_URL, help="AMQP URL (default: %(default)s)")
    parser.add_argument("--queue", default="hello", help="queue (default: %(default)s)")
    parser.add_argument("--declare", action="store_true", help="declare the queue first")
    parser.add_argument("--count", type=int, default=None,
                        help="exit after this many messages (default: run until SIGINT)")
    parser.set_defaults(func=run_consume)


def _connect(url, on_channel, loop):
    """Open a FastioConnection and a channel; return the connection."""
    import pika

    from fastio.rabbitmq import FastioConnection

    state = {"error": None}

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_failed(conn, exc):
        state["error"] = exc
        loop.stop()

    conn = FastioConnection(pika.URLParameters(url), on_open_callback=on_open,
                            on_open_error_callback=on_failed,
                            on_close_callback=lambda c, exc: loop.stop(),
                            custom_ioloop=loop)
    return conn, state


def _declare(url, queue):
    from fastio.loop import Loop

    loop = Loop()
    conn, state = _connect(url, lambda ch: ch.queue_declare(
        queue, callback=lambda frame: ch.connection.close()), loop)
    loop.run_forever()
    loop.close()
    if state["error"] is not None:
        raise state["error"]


def run_publish(args):
    if not _need_pika("publish"):
        return 2
    from fastio.rabbitmq import ConnectError, PublishError, Publisher

    routing_key = args.routing_key
    declare = args.declare
    if routing_key is None:
        routing_key = args.queue or "hello"
        declare = True
    try:
        if declare:
            _declare(args.url, routing_key)
        with Publisher(args.url, connect_timeout=10) as pub:
            for message in args.messages:
                pub.publish(args.exchange, routing_key, message).result()
                print(" [x] Sent %r" % message, flush=True)
    except ConnectError as exc:
        print("fastio publish: %s" % exc, file=sys.stderr)
        return 1
    except PublishError as exc:
        print("fastio publish: not confirmed: %s" % exc, file=sys.stderr)
        return 1
    except Exception as exc:      # pika's connection errors from _declare
        print("fastio publish: cannot connect to %s: %r" % (args.url, exc), file=sys.stderr)
        return 1
    return 0


def run_consume(args):
    if not _need_pika("consume"):
        return 2
    from fastio.loop import Loop

    loop = Loop()
    received = [0]
    holder = {}

    def on_channel(ch):
        holder["channel"] = ch
        if args.declare:
            ch.queue_declare(args.queue, callback=lambda frame: start(ch))
        else:
            start(ch)

    def start(ch):
        ch.basic_consume(args.queue, on_message, auto_ack=True)
        print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)

    def on_message(ch, method, props, body):
        print(" [x] Received %r" % body, flush=True)
        received[0] += 1
        if args.count is not None and received[0] >= args.count:
            stop()

    def stop():
        conn = holder["conn"]
        if conn.is_open:
            conn.close()
        else:
            loop.stop()

    conn, state = _connect(args.url, on_channel, loop)
    holder["conn"] = conn
    loop.add_signal_handler(signal.SIGINT, stop)
    try:
        loop.run_forever()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.close()
    if state["error"] is not None:
        print("fastio consume: cannot connect to %s: %r" % (args.url, state["error"]),
              file=sys.stderr)
        return 1
    return 0
