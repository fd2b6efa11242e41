"""Loop micro-benchmarks: fastio's Loop vs asyncio vs uvloop, in one run.

    python -m benchmarks --only loop [--quick | --full] [--repeats N]

Each case runs on every loop in one process, in an order that rotates each
repeat (so no loop always runs first, on a cold cache, or last, on a warm
one); the table shows the median per-operation time and fastio's speed
relative to the others (>1.00x: fastio is faster).
"""

import asyncio
import gc
import socket
import time

from fastio.loop import Loop

from benchmarks import harness

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
    """Return {case: {loop: [ns per op, ...]}}, orders rotated per repeat."""
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
                    results[case][name].append(fn(loop, ops) / ops * 1e9)
                finally:
                    loop.close()
    return results


#: The loop's targets, per operation: fastio's Loop is at least as fast as
#: asyncio's and uvloop's loops (time ratio other / fastio >= 1.0 for each).
TARGETS = {"asyncio": 1.0, "uvloop": 1.0}


def run(config):
    """Run the loop micro-benchmarks; return JSON-able results."""
    profile = getattr(config, "profile", "default")
    repeats = getattr(config, "repeats", None) or {"quick": 3, "full": 11}.get(profile, 7)
    n = {"quick": 50_000, "full": 400_000}.get(profile, 200_000)
    loops = _loops()
    with harness.pinned(1) as cpu:
        machine = harness.machine_info()
        samples = measure(loops, n, repeats)
    cases = {}
    for case, per_loop in samples.items():
        cases[case] = {name: harness.summarize(v) for name, v in per_loop.items()}
    return {
        "suite": "loop",
        "machine": machine,
        "config": {"repeats": repeats, "n": n, "pinned_cpu": cpu, "profile": profile},
        "cases": cases,
    }


def to_markdown(result):
    """Render the results as a Markdown report (targets first)."""
    cases = result["cases"]
    names = list(next(iter(cases.values())))
    others = [x for x in names if x != "fastio"]
    lines = [
        "# fastio loop micro-benchmarks",
        "",
        harness.machine_line(result["machine"], result["config"]["pinned_cpu"]),
        "",
        "Median ns per operation over %d repeats, loops in rotating order; "
        "ratio = other / fastio (>1.00x: fastio is faster)." % result["config"]["repeats"],
        "",
        "| case | " + " | ".join("%s ns/op" % x for x in names)
        + "".join(" | fastio vs %s" % x for x in others) + " | target |",
        "|" + "---|" * (2 + len(names) + len(others)),
    ]
    for case, per_loop in cases.items():
        med = {x: per_loop[x]["median_ns"] for x in names}
        ratios = {x: med[x] / med["fastio"] for x in others}
        ok = all(ratios[x] >= TARGETS.get(x, 0) for x in others)
        cells = ["%.0f" % med[x] for x in names] + ["%.2fx" % ratios[x] for x in others]
        lines.append("| %s | %s | %s |" % (case, " | ".join(cells), "PASS" if ok else "**FAIL**"))
    return "\n".join(lines)


if __name__ == "__main__":
    print(to_markdown(run(harness.Config())))
