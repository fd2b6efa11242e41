"""Loop micro-benchmarks: fastio's Loop vs asyncio vs uvloop, in one run.

    python benchmarks/bench_loop.py [--repeats 7] [--n 200000]

Each case runs on every loop in one process, in an order that rotates each
repeat (so no loop always runs first, on a cold cache, or last, on a warm
one); the table shows the median per-operation time and fastio's speed
relative to the others (>1.00x: fastio is faster). Self-contained so it can
be wired into `python -m benchmarks` as `run(args)`.
"""

import argparse
import asyncio
import gc
import socket
import statistics
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(
        __import__("os").path.abspath(__file__))))

import fastio
from fastio.loop import Loop

try:
    import uvloop
except ImportError:  # optional peer
    uvloop = None


def _loops():
    loops = {"fastio": Loop, "asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        loops["uvloop"] = uvloop.new_event_loop
    return loops


# ------------------------------------------------------------------ cases
# Each takes a fresh loop and n; returns seconds for n operations.


def bench_call_soon(loop, n):
    """Schedule n callbacks with call_soon and run them."""
    counter = [0]

    def cb():
        counter[0] += 1

    call_soon = loop.call_soon
    t0 = time.perf_counter()
    for _ in range(n):
        call_soon(cb)
    call_soon(loop.stop)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    assert counter[0] == n
    return elapsed


def bench_call_later_cancel(loop, n):
    """Schedule n timers with call_later, cancel each, run one iteration."""
    def cb():
        raise AssertionError("a cancelled timer ran")

    call_later = loop.call_later
    t0 = time.perf_counter()
    for i in range(n):
        call_later(10.0 + i * 1e-6, cb).cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    return time.perf_counter() - t0


def bench_add_remove_reader(loop, n):
    """add_reader + remove_reader on one socket, n times."""
    a, b = socket.socketpair()
    fd = a.fileno()

    def cb():
        pass

    add, remove = loop.add_reader, loop.remove_reader
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            add(fd, cb)
            remove(fd)
        return time.perf_counter() - t0
    finally:
        a.close()
        b.close()


CASES = [
    ("call_soon", bench_call_soon, 1),
    ("call_later+cancel", bench_call_later_cancel, 1),
    ("add/remove reader", bench_add_remove_reader, 4),  # syscalls: fewer ops
]


def measure(loops, n, repeats):
    """Return {case: {loop: [seconds per op, ...]}}, orders rotated per repeat."""
    names = list(loops)
    results = {case: {name: [] for name in names} for case, _, _ in CASES}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for case, fn, divisor in CASES:
            ops = n // divisor
            for name in order:
                loop = loops[name]()
                gc.collect()
                try:
                    results[case][name].append(fn(loop, ops) / ops)
                finally:
                    loop.close()
    return results


def table(results):
    names = list(next(iter(results.values())))
    others = [x for x in names if x != "fastio"]
    head = "| case | " + " | ".join("%s ns/op" % x for x in names)
    head += "".join(" | fastio vs %s" % x for x in others) + " |"
    lines = [head, "|" + "---|" * (1 + len(names) + len(others))]
    for case, per_loop in results.items():
        med = {x: statistics.median(v) for x, v in per_loop.items()}
        cells = ["%.0f" % (med[x] * 1e9) for x in names]
        cells += ["%.2fx" % (med[x] / med["fastio"]) for x in others]
        lines.append("| %s | %s |" % (case, " | ".join(cells)))
    return "\n".join(lines)


def run(args=None):
    """Run the loop benchmarks and print a Markdown table; return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=200_000)
    opts = parser.parse_args(args)
    loops = _loops()
    results = measure(loops, opts.n, opts.repeats)
    print("fastio %s (%s), Python %s, %d repeats, medians; ratio >1 = fastio faster\n"
          % (fastio.__version__, fastio.IMPLEMENTATION, sys.version.split()[0], opts.repeats))
    print(table(results))
    return results


if __name__ == "__main__":
    run()
