"""Run fastio's benchmark suites and write their results.

    python -m benchmarks [--quick | --full] [--only SUITE] [--repeats N] [--out DIR]

Tables go to stdout, progress to stderr, ``<DIR>/<suite>.json`` and
``<DIR>/<suite>.md`` to disk. Exit status 1 if a suite hit a correctness
failure (its numbers would be meaningless), else 0: missed targets are
reported, not failed.
"""

import argparse
import importlib
import sys
from pathlib import Path

from benchmarks import SUITES
from benchmarks.harness import RESULTS_DIR, Config, progress, write_results


def main(argv=None):
    """Parse the command line, run the chosen suites, return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer cells, 3 repeats (a smoke run)")
    size.add_argument("--full", action="store_true", help="every cell, more repeats, longer batches")
    parser.add_argument(
        "--only", action="append", choices=list(SUITES), metavar="SUITE",
        help="run only this suite (repeatable); one of: %s" % ", ".join(SUITES),
    )
    parser.add_argument("--repeats", type=int, help="repeats per cell (overrides the profile)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")

    config = Config(
        profile="quick" if args.quick else "full" if args.full else "default",
        repeats=args.repeats,
        out=args.out,
    )
    status = 0
    for name in dict.fromkeys(args.only or SUITES):
        suite = importlib.import_module(SUITES[name])
        progress("== %s (%s) ==" % (name, config.profile))
        result = suite.run(config)
        markdown = suite.to_markdown(result)
        print(markdown, flush=True)
        for path in write_results(config.out, name, result, markdown):
            progress("wrote %s" % path)
        if result.get("errors"):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
