"""What every peer echo server shares: its command line, listening socket, READY line and signals.

Each peer is run as ``python benchmarks/peers/<name>.py --port P [--upper]``,
prints READY on stdout once listening, and exits cleanly on SIGTERM/SIGINT.
"""

import argparse
import signal
import socket
import sys

BACKLOG = 1024  # the tutorial server's listen(5) would drop SYNs when 1000 clients connect at once
BUFSIZE = 65536


def parse_args(description, extra=None, argv=None):
    """Parse --host, --port, --upper plus whatever `extra(parser)` adds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10000)
    parser.add_argument("--upper", action="store_true", help="reply with the ASCII uppercase of what arrived")
    if extra:
        extra(parser)
    return parser.parse_args(argv)


def reply_function(upper):
    """Return bytes -> bytes: what the server sends back for what it received."""
    return bytes.upper if upper else bytes


def listen(host, port, blocking=False):
    """Return a listening TCP socket with SO_REUSEADDR."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(BACKLOG)
    server.setblocking(blocking)
    return server


def nodelay(sock):
    """Disable Nagle, as asyncio and uvloop do on their transports, so every server is alike."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def ready():
    """Tell the parent the server listens."""
    print("READY", flush=True)


def exit_on_signals():
    """Turn SIGTERM into KeyboardInterrupt, so servers exit through one `except` path."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run(main):
    """Call main(), exiting 0 on SIGTERM/SIGINT."""
    exit_on_signals()
    try:
        main()
    except KeyboardInterrupt:
        pass
    sys.exit(0)
