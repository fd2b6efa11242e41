"""Talk to an echo server like the tutorial's multi-socket client, or load it with --bench.

The command line of ``python -m fastio client``: tutorial mode runs
`fastio.echo.tutorial.talk`, bench mode runs `fastio.echo.loadgen.bench`.
"""

import argparse
import json
import sys
from typing import Any, Dict, Optional, Sequence

from fastio._cli import bounded, format_address
from fastio.echo import loadgen, tutorial

__all__ = ["add_arguments", "run", "main"]


BENCH_DEFAULTS: Dict[str, Any] = dict(connections=100, size=1024, duration=5.0, pipeline=1, warmup=0.5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the client's options to an argparse parser (for `python -m fastio client`)."""
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    parser.add_argument("--port", type=bounded(int, 1, 65535), default=10000,
                        help="server port (default: %(default)s)")
    parser.add_argument("--upper", action="store_true",
                        help="expect replies in ASCII uppercase (a server run with --upper)")
    parser.add_argument("--timeout", type=bounded(float, 0.001), default=10.0,
                        help="seconds to wait for a connection or a reply (default: %(default)s)")
    talk_group = parser.add_argument_group("tutorial mode (the default): the tutorial's multi-socket client")
    talk_group.add_argument("--sockets", type=bounded(int, 1, 10000), default=2,
                            help="connections to open (default: %(default)s)")
    talk_group.add_argument("--parts", type=bounded(int, 1, 10000), default=3,
                            help="pieces each message is sent in (default: %(default)s)")
    talk_group.add_argument("--message", default=tutorial.TUTORIAL_MESSAGE,
                            help="the message (default: the tutorial's, %(default)r)")
    load = parser.add_argument_group("load generator")
    load.add_argument("--bench", action="store_true", help="run the load generator instead")
    load.add_argument("--connections", type=bounded(int, 1, 100000),
                      help="concurrent connections (default: %d)" % BENCH_DEFAULTS["connections"])
    load.add_argument("--size", type=bounded(int, 1, loadgen.MAX_SIZE),
                      help="request size in bytes (default: %d)" % BENCH_DEFAULTS["size"])
    load.add_argument("--duration", type=bounded(float, 0.01),
                      help="seconds measured (default: %g)" % BENCH_DEFAULTS["duration"])
    load.add_argument("--pipeline", type=bounded(int, 1, loadgen.MAX_PIPELINE),
                      help="requests in flight per connection (default: %d)" % BENCH_DEFAULTS["pipeline"])
    load.add_argument("--warmup", type=bounded(float, 0.0),
                      help="seconds of load before the window opens (default: %g)" % BENCH_DEFAULTS["warmup"])
    load.add_argument("--json", action="store_true", help="print the result as JSON")
    load.add_argument("--progress", type=bounded(float, 0.01), nargs="?",
                      const=loadgen.PROGRESS_INTERVAL,
                      metavar="SECONDS",
                      help="print a progress line on stderr every SECONDS (default %g; on by "
                           "default when stderr is a terminal). Ctrl-C prints the summary of "
                           "what completed" % loadgen.PROGRESS_INTERVAL)


def run(args: argparse.Namespace) -> int:
    """Run the client as parsed by a parser built with `add_arguments`; return the exit status."""
    prog = "fastio client"
    given = [name for name in BENCH_DEFAULTS if getattr(args, name) is not None]
    if not args.bench and (given or args.json or args.progress is not None):
        flag = given[0] if given else "json" if args.json else "progress"
        print("%s: error: --%s needs --bench" % (prog, flag), file=sys.stderr)
        return 2
    try:
        if not args.bench:
            bad = tutorial.talk(args.host, args.port, args.sockets, args.parts, args.message, args.upper,
                                args.timeout)
            return 1 if bad else 0
        options = {name: getattr(args, name) if getattr(args, name) is not None else default
                   for name, default in BENCH_DEFAULTS.items()}
        interval = args.progress
        if interval is None and sys.stderr.isatty():
            interval = loadgen.PROGRESS_INTERVAL
        if interval is not None:
            options.update(progress_interval=interval, progress=lambda report: print(
                loadgen.format_progress(report), file=sys.stderr, flush=True))
        result = loadgen.bench(args.host, args.port, upper=args.upper, timeout=args.timeout, **options)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        print("%s: cannot talk to %s: %s" % (prog, format_address(args.host, args.port), reason),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result) if args.json else loadgen.format_result(result), flush=True)
    if result["interrupted"]:
        return 130
    return 1 if result["errors"] else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the client; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m fastio client", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
