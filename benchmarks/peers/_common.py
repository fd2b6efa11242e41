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


# --- asyncio peers: which loop -----------------------------------------------------------

ASYNCIO_LOOPS = ("fastio", "fastio-io_uring", "uvloop", "asyncio")


def loop_factory(name):
    """Return a no-argument callable building a new event loop of `name` (one of ASYNCIO_LOOPS).

    "fastio" is `fastio.EventLoop` where fastio has it, else what
    `fastio.new_event_loop()` builds (asyncio's SelectorEventLoop over
    fastio's selectors); "fastio-io_uring" is `fastio.EventLoop(backend=
    "io_uring")`, whose transports are completion-based.
    """
    if name == "asyncio":
        import asyncio
        return asyncio.SelectorEventLoop
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    if name == "fastio":
        import fastio
        return getattr(fastio, "EventLoop", None) or fastio.new_event_loop
    if name == "fastio-io_uring":
        import functools

        import fastio
        return functools.partial(getattr(fastio, "EventLoop", fastio.SelectorEventLoop), backend="io_uring")
    raise ValueError("unknown loop %r (one of %s)" % (name, ", ".join(ASYNCIO_LOOPS)))


def run_on(name, main):
    """Run coroutine `main` to completion on a new loop of `name`, as asyncio.run() does; return its result."""
    import asyncio

    if hasattr(asyncio, "Runner"):  # 3.11+
        with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
            return runner.run(main)
    loop = loop_factory(name)()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
