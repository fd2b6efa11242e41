"""Time fastio's selectors against the stdlib's and the raw `select` calls beneath them.

For each backend (epoll, poll, select) and each system -- fastio's class, the
stdlib's class, and "raw", the bare `select`-module work the stdlib class does --
three operations are timed:

* ``select(0)`` with N registered sockets of which K are readable;
* ``register`` + ``unregister`` of one socket (one call = the pair);
* ``modify`` toggling one socket between EVENT_READ and EVENT_WRITE.

For the select backend "raw" register/unregister/modify is the set bookkeeping
`selectors.SelectSelector` does (no syscall: select(2) has no registration).

The N registered sockets are both ends of N/2 socketpairs, so N=10000 needs
10000 fds, not 20000. Every cell is checked for correct results before and
after timing, so a broken build cannot report fast nonsense.
"""

import contextlib
import dataclasses
import select
import selectors as stdlib_selectors
import socket

import fastio
from fastio import selectors as fastio_selectors

from benchmarks import harness

EVENT_READ = stdlib_selectors.EVENT_READ
EVENT_WRITE = stdlib_selectors.EVENT_WRITE
BACKENDS = ("epoll", "poll", "select")
SYSTEMS = ("fastio", "stdlib", "raw")
SELECT0, REGUNREG, MODIFY = "select(0)", "register+unregister", "modify"
FD_SETSIZE = 1024  # glibc's: select(2) cannot watch an fd at or above it
FD_MARGIN = 64  # fds beyond the sockets: the interpreter's own, pollers, slack

PROFILES = {
    "quick": dict(repeats=3, batch_ms=20, sizes=(10, 100, 1000), ready=(1, 100)),
    "default": dict(repeats=7, batch_ms=25, sizes=(10, 100, 1000, 10000), ready=(1, 10, 100)),
    "full": dict(repeats=11, batch_ms=50, sizes=(10, 100, 1000, 10000), ready=(1, 10, 100)),
}

# (backend, operation, N, K, metric, goal): what the project aims for.
TARGETS = (
    ("epoll", SELECT0, 1000, 100, "speedup", 2.0),
    ("epoll", SELECT0, 1000, 100, "overhead", 1.15),
    ("epoll", REGUNREG, None, None, "speedup", 2.0),
    ("poll", REGUNREG, None, None, "speedup", 5.0),
    ("select", REGUNREG, None, None, "speedup", 5.0),
    ("epoll", MODIFY, None, None, "speedup", 2.0),
    ("poll", MODIFY, None, None, "speedup", 2.0),
    ("select", MODIFY, None, None, "speedup", 2.0),
)

RAW_SELECT0 = {
    "epoll": "`epoll.poll(0, N)`",
    "poll": "`poll.poll(0)`",
    "select": "`select.select(rlist, wlist, [], 0)`, prebuilt lists",
}
RAW_OPS = {
    ("epoll", REGUNREG): "`ep.register(fd, EPOLLIN); ep.unregister(fd)` (two epoll_ctl; fastio: one, DEL deferred)",
    ("poll", REGUNREG): "`p.register(fd, POLLIN); p.unregister(fd)`",
    ("select", REGUNREG): "set add + 2 discards (SelectSelector's bookkeeping, no syscall)",
    ("epoll", MODIFY): "`ep.modify(fd, mask)`",
    ("poll", MODIFY): "`p.modify(fd, mask)`",
    ("select", MODIFY): "2 set discards + add (SelectSelector's modify bookkeeping, no syscall)",
}


class Skip(Exception):
    """The cell cannot run here (fd limits, missing backend)."""


class CheckFailed(AssertionError):
    """A system returned wrong results: its timing would be meaningless."""


@dataclasses.dataclass
class System:
    """One contender in a cell: the statements timed and how to see their effect."""

    names: dict  # the timed statements' locals
    steps: tuple  # statements one iteration runs, in turn
    observe: object  # () -> set of (fd, EVENT_*) a zero-timeout poll reports now


def _classes(backend):
    """Return (fastio class, stdlib class) for `backend`, or raise Skip."""
    name = backend.capitalize() + "Selector"
    fast, std = getattr(fastio_selectors, name, None), getattr(stdlib_selectors, name, None)
    if fast is None or std is None:
        raise Skip("%s not available on this platform" % name)
    if std.__module__ != "selectors":
        # fastio.install() swapped the stdlib names: "stdlib" would measure fastio.
        raise CheckFailed("selectors.%s is %s.%s, not the stdlib's" % (name, std.__module__, std.__qualname__))
    return fast, std


def _selector_systems(stack, backend, steps, setup):
    """Build the fastio and stdlib systems, each on its own selector prepared by `setup`."""
    systems = {}
    for system, cls in zip(SYSTEMS, _classes(backend)):
        sel = cls()
        stack.callback(sel.close)
        setup(sel)
        observe = lambda sel=sel: {(key.fd, events) for key, events in sel.select(0)}
        systems[system] = System(dict(sel=sel), steps, observe)
    return systems


def _raw_poller(stack, backend, fds, read=True):
    """Return (names, observe) for a bare `select` poller with `fds` registered."""
    if backend == "select":
        readers, writers = (set(fds), set()) if read else (set(), set(fds))

        def observe():
            r, w, _ = select.select(readers, writers, [], 0)
            return {(fd, EVENT_READ) for fd in r} | {(fd, EVENT_WRITE) for fd in w}

        return dict(readers=readers, writers=writers), observe
    if backend == "epoll":
        poller, IN, OUT = select.epoll(), select.EPOLLIN, select.EPOLLOUT
        stack.callback(poller.close)
    else:
        poller, IN, OUT = select.poll(), select.POLLIN, select.POLLOUT
    for fd in fds:
        poller.register(fd, IN if read else OUT)

    def observe():
        out = set()
        for fd, bits in poller.poll(0):
            if bits & IN:
                out.add((fd, EVENT_READ))
            if bits & OUT:
                out.add((fd, EVENT_WRITE))
        return out

    return dict(p=poller, IN=IN, OUT=OUT), observe


def _socketpair(stack):
    a, b = socket.socketpair()
    stack.callback(a.close)
    stack.callback(b.close)
    return a, b


def setup_select0(stack, backend, n, k, nofile):
    """N sockets registered for reading, K of them readable; time select(0)."""
    if backend == "select" and n >= FD_SETSIZE:
        raise Skip("N >= FD_SETSIZE")
    if n + FD_MARGIN > nofile:
        raise Skip("needs ~%d fds, RLIMIT_NOFILE is %d" % (n + FD_MARGIN, nofile))
    pairs = [_socketpair(stack) for _ in range((n + 1) // 2)]
    socks = [s for pair in pairs for s in pair][:n]
    ready = set()
    for i in range(k):  # spread the ready ones over the registration order
        j = i * n // k
        pairs[j // 2][1 - j % 2].send(b"x")  # the peer writes, so socks[j] is readable
        ready.add((socks[j].fileno(), EVENT_READ))
    fds = [s.fileno() for s in socks]
    if backend == "select" and max(fds) >= FD_SETSIZE:
        raise Skip("fd %d >= FD_SETSIZE" % max(fds))

    def register_all(sel):
        for s in socks:
            sel.register(s, EVENT_READ)

    systems = _selector_systems(stack, backend, ("sel.select(0)",), register_all)
    names, observe = _raw_poller(stack, backend, fds)
    if backend == "epoll":
        names, stmt = dict(ep=names["p"], maxevents=n), "ep.poll(0, maxevents)"
    elif backend == "poll":
        stmt = "p.poll(0)"
    else:
        names, stmt = dict(select=select.select, rlist=fds, wlist=[]), "select(rlist, wlist, [], 0)"
    systems["raw"] = System(names, (stmt,), observe)
    return systems, [ready], 1


def setup_regunreg(stack, backend, n, k, nofile):
    """One readable socket; time register(EVENT_READ) + unregister."""
    a, b = _socketpair(stack)
    b.send(b"x")  # `a` readable: a registration that reached the kernel shows in select(0)
    fd = a.fileno()
    systems = _selector_systems(stack, backend, ("sel.register(s, R)", "sel.unregister(s)"), lambda sel: None)
    for system in systems.values():
        system.names.update(s=a, R=EVENT_READ)
    names, observe = _raw_poller(stack, backend, ())
    if backend == "select":
        steps = ("readers.add(fd)", "readers.discard(fd); writers.discard(fd)")
    else:
        steps = ("p.register(fd, IN)", "p.unregister(fd)")
    systems["raw"] = System(dict(names, fd=fd), steps, observe)
    return systems, [set(), {(fd, EVENT_READ)}], 1


def setup_modify(stack, backend, n, k, nofile):
    """One registered, writable, never readable socket; time modify to WRITE and back."""
    a, _ = _socketpair(stack)
    fd = a.fileno()
    steps = ("sel.modify(s, W)", "sel.modify(s, R)")
    systems = _selector_systems(stack, backend, steps, lambda sel: sel.register(a, EVENT_READ))
    for system in systems.values():
        system.names.update(s=a, R=EVENT_READ, W=EVENT_WRITE)
    names, observe = _raw_poller(stack, backend, (fd,))
    if backend == "select":
        steps = (
            "readers.discard(fd); writers.discard(fd); writers.add(fd)",
            "readers.discard(fd); writers.discard(fd); readers.add(fd)",
        )
    else:
        steps = ("p.modify(fd, OUT)", "p.modify(fd, IN)")
    systems["raw"] = System(dict(names, fd=fd), steps, observe)
    return systems, [set(), {(fd, EVENT_WRITE)}], 2


SETUPS = {SELECT0: setup_select0, REGUNREG: setup_regunreg, MODIFY: setup_modify}


def check(name, system, states):
    """Run each step once, twice round, checking what a poll reports in between.

    states[i] is what must be reported before step i. Twice round, because a
    poller that wrongly consumes readiness (say, edge-triggered) passes once.
    """
    for i in range(2 * len(system.steps)):
        step, want = system.steps[i % len(states)], states[i % len(states)]
        got = system.observe()
        if got != want:
            raise CheckFailed("%s: before %r a poll reported %s, want %s" % (name, step, got, want))
        harness.make_batch(step, system.names)(1)
    if system.observe() != states[0]:
        raise CheckFailed("%s: state not restored after a full iteration" % name)


def plan(profile):
    """Yield the (backend, operation, N, K) cells of a profile."""
    for backend in BACKENDS:
        for n in profile["sizes"]:
            for k in profile["ready"]:
                if k <= n:
                    yield backend, SELECT0, n, k
    for op in (REGUNREG, MODIFY):
        for backend in BACKENDS:
            yield backend, op, None, None


def label(backend, op, n, k):
    return "%s %s" % (backend, op) + (" N=%d K=%d" % (n, k) if n is not None else "")


def run_cell(backend, op, n, k, repeats, target_ns, nofile):
    """Check, time and re-check one cell; return its result dict (or raise Skip)."""
    with contextlib.ExitStack() as stack:
        systems, states, calls_per_iter = SETUPS[op](stack, backend, n, k, nofile)
        for name, system in systems.items():
            check(name, system, states)
        batches = {name: harness.make_batch("; ".join(s.steps), s.names) for name, s in systems.items()}
        samples, loops = harness.measure(batches, calls_per_iter, repeats, target_ns)
        for name, system in systems.items():
            check(name, system, states)
    stats = {name: harness.summarize(samples[name]) for name in SYSTEMS}
    median = {name: stats[name]["median_ns"] for name in SYSTEMS}
    return {
        "backend": backend,
        "op": op,
        "n": n,
        "k": k,
        "raw": RAW_SELECT0[backend] if op == SELECT0 else RAW_OPS[backend, op],
        "calls_per_iter": calls_per_iter,
        "loops": loops,
        "systems": stats,
        "speedup_vs_stdlib": round(median["stdlib"] / median["fastio"], 3),
        "overhead_vs_raw": round(median["fastio"] / median["raw"], 3),
    }


def evaluate_targets(cells):
    """Compare the target cells with their goals."""
    by_key = {(c["backend"], c["op"], c["n"], c["k"]): c for c in cells}
    out = []
    for backend, op, n, k, metric, goal in TARGETS:
        cell = by_key.get((backend, op, n, k))
        value = cell and cell["speedup_vs_stdlib" if metric == "speedup" else "overhead_vs_raw"]
        ok = value is not None and (value >= goal if metric == "speedup" else value <= goal)
        out.append({
            "cell": label(backend, op, n, k),
            "metric": "speed-up vs stdlib" if metric == "speedup" else "overhead vs raw",
            "goal": (">= %.2fx" if metric == "speedup" else "<= %.2fx") % goal,
            "value": None if value is None else round(value, 3),
            "pass": ok,
        })
    return out


def run(config):
    """Run the selectors suite under `config`; return JSON-able results."""
    profile = PROFILES[config.profile]
    repeats = config.repeats or profile["repeats"]
    target_ns = profile["batch_ms"] * 1e6
    warning = harness.warn_if_fallback()
    nofile = harness.raise_nofile()
    cells, skipped, errors = [], [], []
    todo = list(plan(profile))
    with harness.pinned(1) as cpu:
        machine = harness.machine_info()
        for i, (backend, op, n, k) in enumerate(todo, 1):
            name = label(backend, op, n, k)
            head = "[selectors %d/%d] %s" % (i, len(todo), name)
            try:
                cell = run_cell(backend, op, n, k, repeats, target_ns, nofile)
            except Skip as exc:
                skipped.append({"cell": name, "reason": str(exc)})
                harness.progress("%s: skipped (%s)" % (head, exc))
                continue
            except Exception as exc:  # a broken build: record it, keep measuring the rest
                errors.append({"cell": name, "error": "%s: %s" % (type(exc).__name__, exc)})
                harness.progress("%s: FAILED %s: %s" % (head, type(exc).__name__, exc))
                continue
            cells.append(cell)
            harness.progress("%s: fastio %s, stdlib %s, raw %s -> %.2fx vs stdlib, %.2fx of raw" % (
                head, *(harness.format_ns(cell["systems"][s]["median_ns"]) for s in SYSTEMS),
                cell["speedup_vs_stdlib"], cell["overhead_vs_raw"],
            ))
    targets = evaluate_targets(cells)
    harness.progress("targets: %d/%d PASS" % (sum(t["pass"] for t in targets), len(targets)))
    if warning:  # again at the end, where it cannot scroll away
        harness.progress("!! WARNING: " + warning)
    return {
        "suite": "selectors",
        "machine": machine,
        "config": {
            "profile": config.profile,
            "repeats": repeats,
            "batch_ms": profile["batch_ms"],
            "pinned_cpu": cpu,
            "rlimit_nofile": nofile,
            "unit": "ns per call; median, min and max over repeats",
        },
        "warnings": [warning] if warning else [],
        "targets": targets,
        "cells": cells,
        "skipped": skipped,
        "errors": errors,
    }


def _ratio(x):
    return "-" if x is None else "%.2fx" % x


def to_markdown(result):
    """Render the suite's results as Markdown, headline targets first."""
    cfg, machine = result["config"], result["machine"]
    lines = ["# fastio selectors micro-benchmarks", ""]
    for warning in result["warnings"]:
        lines += ["> **WARNING:** %s" % warning, ""]
    for error in result["errors"]:
        lines += ["> **CORRECTNESS FAILURE** in %s: %s (not timed)" % (error["cell"], error["error"]), ""]
    lines += [
        harness.machine_line(machine, cfg["pinned_cpu"]),
        "",
        "Median ns per call over %d repeats of ~%d ms batches, systems interleaved in rotating order; "
        "(min–max) is the spread over repeats. Speed-up = stdlib/fastio, overhead = fastio/raw."
        % (cfg["repeats"], cfg["batch_ms"]),
        "",
        "## Targets",
        "",
        "| cell | metric | measured | goal | result |",
        "|---|---|---:|---|---|",
    ]
    for t in result["targets"]:
        lines.append("| %s | %s | %s | %s | %s |" % (
            t["cell"], t["metric"], _ratio(t["value"]), t["goal"], "PASS" if t["pass"] else "**FAIL**"))

    lines += [
        "",
        "## select(0): N registered sockets, K readable",
        "",
        "| backend | N | K | fastio | stdlib | raw | speed-up vs stdlib | overhead vs raw |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    row = "| %s | %s | %s | %s | %s | %s | %s | %s |"
    for c in result["cells"]:
        if c["op"] == SELECT0:
            lines.append(row % (
                c["backend"], c["n"], c["k"], *(harness.format_spread(c["systems"][s]) for s in SYSTEMS),
                _ratio(c["speedup_vs_stdlib"]), _ratio(c["overhead_vs_raw"])))
    lines += ["", "raw: " + "; ".join("%s %s" % item for item in RAW_SELECT0.items()) + "."]

    lines += [
        "",
        "## register+unregister and modify: one socket",
        "",
        "| backend | operation | fastio | stdlib | raw | speed-up vs stdlib | overhead vs raw | raw is |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in result["cells"]:
        if c["op"] != SELECT0:
            lines.append(row % (
                c["backend"], c["op"], *(harness.format_spread(c["systems"][s]) for s in SYSTEMS),
                _ratio(c["speedup_vs_stdlib"]), _ratio(c["overhead_vs_raw"]), c["raw"]))
    lines += [
        "",
        "register+unregister: one call is the pair. modify: one call is one modify(). "
        "fastio's EpollSelector defers EPOLL_CTL_DEL: unregister() makes no syscall and a "
        "register() of the same fd re-arms the old kernel entry with one EPOLL_CTL_MOD, so its "
        "pair costs one epoll_ctl where the stdlib and raw pay two (see src/epoll.pxi).",
    ]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join("%s (%s)" % (s["cell"], s["reason"]) for s in result["skipped"]) + "."]
    return "\n".join(lines)
