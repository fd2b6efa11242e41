"""fastio Loop echo server with a plain Python Protocol: the same server as the asyncio/uvloop protocol peer, on fastio's loop.

`python -m fastio echo` runs fastio's own echo server, whose per-chunk path is
compiled; this peer measures the loop with the per-chunk path in Python, the
like-for-like comparison with asyncio's and uvloop's protocol servers.
``--backend io_uring`` runs it on `Loop(backend="io_uring")`: the same
protocol over the loop's completion-based transports.
"""

import signal

import _common
# The asyncio/uvloop peer's protocol, unchanged: fastio's transports call the
# same methods.
from asyncio_server import EchoProtocol

from fastio.loop import Loop


def main():
    args = _common.parse_args(__doc__, lambda p: p.add_argument(
        "--backend", choices=("epoll", "poll", "select", "io_uring"), default=None,
        help="the Loop's backend (default: the best readiness one)"))
    reply = _common.reply_function(args.upper)
    loop = Loop(backend=args.backend)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, loop.stop)
    server = loop.create_server(lambda: EchoProtocol(reply), sock=_common.listen(args.host, args.port))
    _common.ready()
    loop.run_forever()
    server.close()
    loop.close()


if __name__ == "__main__":
    main()
