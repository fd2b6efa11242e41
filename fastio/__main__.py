"""fastio's command line: ``python -m fastio COMMAND`` or ``fastio COMMAND``.

    python -m fastio echo --port 10000 [--upper] [--backend epoll|poll|select|io_uring] [--workers N] [--reuse-port]
    python -m fastio client [--sockets N --parts K | --bench --connections N --size B ...]
    python -m fastio publish [--url URL] [--timeout S] [--exchange X] [--routing-key K | --queue Q] [--declare] MESSAGE...
    python -m fastio consume [--url URL] [--timeout S] [--queue Q] [--declare] [--count N]
"""

import argparse
import errno
import os
import sys
from typing import Optional, Sequence

import fastio
from fastio._cli import bounded, format_address

DESCRIPTION = ("fastio's command line: an echo server, its client and load generator, "
               "and a RabbitMQ publisher and consumer.")


def _add_echo(sub):
    from fastio.echo.server import BACKENDS

    parser = sub.add_parser(
        "echo", help="run the echo server",
        description="Echo every byte back to its sender (the select() echo server, done "
                    "properly). Stops gracefully on SIGINT/SIGTERM: owed replies are flushed, "
                    "then a one-line summary is printed.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=bounded(int, 0, 65535), default=10000,
                        help="TCP port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--upper", action="store_true",
                        help="reply with the ASCII uppercase of what arrived")
    parser.add_argument("--backend", choices=[name for name, cls in BACKENDS.items() if cls],
                        help="readiness syscall, or io_uring (completion-based; falls back to epoll "
                             "where unavailable) (default: the best available, epoll on Linux)")
    parser.add_argument("--workers", type=bounded(int, 1), default=1,
                        help="processes serving one port through SO_REUSEPORT; one that dies "
                             "is replaced (default: 1)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="share the port with other servers already listening on it "
                             "(SO_REUSEPORT); without it such a port is refused: address in use")
    parser.add_argument("--max-conns", type=bounded(int, 1), default=None,
                        help="connections served at once; more wait in the backlog "
                             "(default: no limit; at most 1000 with --backend select)")
    parser.set_defaults(func=_run_echo)


def _run_echo(args):
    from fastio.echo.server import serve

    try:
        serve(args.host, args.port, upper=args.upper, backend=args.backend,
              workers=args.workers, max_conns=args.max_conns, reuse_port=args.reuse_port)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE and not args.reuse_port:
            hint = " (another server holds the port; --reuse-port shares it)"
        print("fastio echo: cannot listen on %s: %s%s" % (
            format_address(args.host, args.port), exc.strerror or exc, hint), file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a worker failed to start or exited with an error
        print("fastio echo: %s" % (exc,), file=sys.stderr)
        return 1
    return 0


def _add_client(sub):
    from fastio.echo import client

    parser = sub.add_parser(
        "client", help="run the echo client or the load generator",
        description=client.__doc__.split("\n")[0])
    client.add_arguments(parser)
    parser.set_defaults(func=client.run)


def _add_rabbitmq(sub):
    # Kept out of fastio.rabbitmq so that the CLI parses without pika installed.
    from fastio._rabbitmq_cli import add_consume, add_publish

    add_publish(sub)
    add_consume(sub)


def _prog() -> str:
    # `python -m fastio` runs this file as __main__.py; the console script
    # is named after itself.
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m fastio" if name in ("", "__main__.py", "-c") else name


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog=_prog(), description=DESCRIPTION)
    parser.add_argument("--version", action="version",
                        version="fastio %s (%s)" % (fastio.__version__, fastio.IMPLEMENTATION))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_echo(sub)
    _add_client(sub)
    _add_rabbitmq(sub)
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
