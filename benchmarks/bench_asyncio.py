"""Compare asyncio event loops: fastio's, uvloop and stock asyncio, side by side in one run.

Three parts, each run on every loop (fastio's on io_uring, "fastio-io_uring":
the echo servers only):

* echo servers in three styles (asyncio.Protocol, asyncio.BufferedProtocol,
  streams via asyncio.start_server) at 1 KiB, 64 B and 16 KiB x 100
  connections, loaded by fastio's compiled load generator exactly as the echo
  suite does (`bench_echo.measure_once`: server pinned to CPU 0, client to
  CPU 1, every byte verified, server CPU read from /proc around the window);
  the C epoll echo server of the echo suite runs in the protocol cells'
  rounds as their reference (see REFERENCE);
* an HTTP/1.1 keep-alive hello-world served by aiohttp's web server, loaded by
  `wrk` (one thread, 100 connections, pinned to CPU 1);
* micro-benchmarks in this process: call_soon, call_later + cancel, timers
  firing, future resolution, `asyncio.sleep(0)` task switches, gather over
  10k tasks, sock_sendall/sock_recv ping-pong over a socketpair,
  add_reader + remove_reader, a server accepting and closing connections;
  ns per operation.

Discussion: same-run ratios. Each round measures every server once, in an
order that rotates every round, and a target's ratio is the median of the
per-round ratios of server CPU per request, so drift on a shared machine
hits both sides of a ratio alike. Targets are reported as PASS/FAIL lines; a
FAIL is a finding, not an error (only wrong echoes make the run fail).

Discussion: the HTTP window. wrk reports requests over its whole run, so the
server's CPU is sampled around the wrk process: the window also holds the 100
connects and closes (well under 1% of the requests' CPU here, and the same
work on every loop). Short unmeasured wrk runs first warm each server: one
connection, then all of them.

Discussion: why one connection first. CPython 3.11 lays an instance's
attributes out by its class's shared keys, which stop taking new names once
enough instances were made; a name added later puts every later instance
on a dict. A server whose first requests are a burst of 100 makes 100
aiohttp StreamWriters before the first one sets `buffer_size` and
`output_size`, so whether those two make it into the shared keys depends on
how the loop batches that burst (asyncio's order makes all 100 before any
writes; uvloop's does not), and it then costs ~3k instructions per request
for the rest of the process. That is start-up luck, not the loop's per-request
cost: the one-connection warm-up settles aiohttp's layouts the same way on
every loop before the loaded warm-up.
"""

import gc
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from benchmarks import bench_echo, harness
from benchmarks.peers import _common

LOOPS = _common.ASYNCIO_LOOPS  # fastio first: it is what the ratios are about
STYLES = ("protocol", "buffered", "streams")
CELLS = ((1024, 100), (64, 100), (16384, 100))
HTTP_CONNECTIONS = 100
MICRO_OPS = ("call_soon", "call_later_cancel", "timers_firing", "future_resolution", "sleep0_switch",
             "gather_10k", "sock_pingpong", "add_remove_reader", "accept_close")

PROFILES = {
    "quick": dict(rounds=2, duration=0.4, warmup=0.2, http_duration=1.0, micro_repeats=3, micro_scale=0.2),
    "default": dict(rounds=3, duration=1.0, warmup=0.3, http_duration=2.0, micro_repeats=5, micro_scale=1.0),
    "full": dict(rounds=5, duration=2.0, warmup=0.5, http_duration=3.0, micro_repeats=7, micro_scale=1.0),
}

#: The loops measured on the echo cases only (not aiohttp, not the micro-benchmarks).
ECHO_ONLY = ("fastio-io_uring",)

#: The C epoll echo server (benchmarks/c_echo), measured in the protocol cells'
#: rounds beside the loops. It makes the same syscalls per request as a loop
#: serving a protocol (a recv and a send, a share of an epoll_wait) and runs
#: no Python, so no loop can spend less per request: its ratio to uvloop is
#: the floor of what the protocol target asks, and it shows how much of the
#: server's CPU is the kernel's on this machine.
REFERENCE = "c-epoll"

#: (what, style or "aiohttp", reference loop, goal as a max ratio of server CPU per
#: request, the fastio loop held to it).
TARGETS = (
    [("protocol echo", "protocol", "uvloop", 0.90, "fastio"),
     ("streams echo", "streams", "uvloop", 1.00, "fastio"),
     ("aiohttp hello", "aiohttp", "uvloop", 1.00, "fastio")]
    + [("%s echo" % style, style, "asyncio", 0.85, "fastio") for style in STYLES]
    + [("protocol echo on io_uring", "protocol", "uvloop", 0.90, "fastio-io_uring"),
       ("streams echo on io_uring", "streams", "uvloop", 1.00, "fastio-io_uring")]
)


def echo_server(loop, style):
    """Return the bench_echo.Server of one asyncio echo peer."""
    return bench_echo.Server((bench_echo.PY, str(bench_echo.PEERS / "asyncio_server.py"), "--loop", loop,
                              "--style", style), "fastio" if loop.startswith("fastio") else "peer",
                             "uvloop" if loop == "uvloop" else None)


def http_server(loop):
    """Return the bench_echo.Server of the aiohttp hello-world peer on `loop`."""
    return bench_echo.Server((bench_echo.PY, str(bench_echo.PEERS / "aiohttp_server.py"), "--loop", loop),
                             "fastio" if loop == "fastio" else "peer", "uvloop" if loop == "uvloop" else None)


def _missing(loop, http=False):
    """Return why a server cannot run here, or None."""
    import importlib.util

    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "uvloop is not installed (`make bench` installs it)"
    if loop in ECHO_ONLY and http:
        return "echo cases only"
    if loop == "fastio-io_uring":
        from fastio import _pollers

        poller, reason = _pollers.uring_poller(8)
        if poller is None:
            return "io_uring is unavailable: %s" % reason
        poller.close()
    if http and importlib.util.find_spec("aiohttp") is None:
        return "aiohttp is not installed (`make bench` installs it)"
    if http and shutil.which("wrk") is None:
        return "wrk is not installed (`make bench` installs it as root; else apt-get install wrk)"
    return None


def rotate(names, r):
    """Return `names` rotated by round `r`."""
    shift = r % max(1, len(names))
    return names[shift:] + names[:shift]


# --- HTTP through wrk -----------------------------------------------------------------------

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _wrk_latency_us(text, percent):
    match = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % percent, text, re.M)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else None


def parse_wrk(text):
    """Parse wrk's --latency report: requests, seconds, req/s, p50/p99 µs, socket errors."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not done or not rate:
        raise ValueError("unexpected wrk output: %r" % text[-500:])
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": int(done.group(1)),
        "req_per_s": float(rate.group(1)),
        "latency_us": {"p50": _wrk_latency_us(text, 50), "p99": _wrk_latency_us(text, 99)},
        "errors": (sum(int(g) for g in errors.groups()) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0),
    }


def run_wrk(port, duration, connections=HTTP_CONNECTIONS):
    """Run wrk (1 thread) pinned to the client CPU; return (parsed report, wall s, wrk CPU s)."""
    argv = ["wrk", "-t1", "-c%d" % connections, "-d%ds" % max(1, round(duration)), "--latency",
            "http://127.0.0.1:%d/" % port]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: os.sched_setaffinity(0, {_client_cpu()}))
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    wall = time.monotonic() - started
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise OSError("wrk exited with status %s: %s" % (proc.returncode, text.strip()[-300:]))
    return parse_wrk(text), wall, usage.ru_utime + usage.ru_stime


def _client_cpu():
    allowed = os.sched_getaffinity(0)
    return harness.CLIENT_CPU if harness.CLIENT_CPU in allowed else max(allowed)


def measure_http(server, duration):
    """Load `server` with wrk for one window; return a result shaped like measure_once's."""
    server.wait_idle()
    pid = server.proc.pid
    before = harness.cpu_sample(pid)
    report, wall, wrk_cpu = run_wrk(server.port, duration)
    after = harness.cpu_sample(pid)
    ns, method = harness.cpu_delta(before, after)
    report.update(
        server_cpu_us_per_req=round(ns / 1e3 / report["requests"], 3) if report["requests"] else None,
        server_cpu_pct=round(100 * ns / 1e9 / wall, 1),
        client_cpu_pct=round(100 * wrk_cpu / wall, 1),
        cpu_method=method,
        error_messages=["%d wrk socket errors or non-2xx replies" % report["errors"]] if report["errors"] else [],
    )
    return report


# --- micro-benchmarks -------------------------------------------------------------------------

# This thread's CPU time, not wall time: on a shared machine, time spent
# descheduled would otherwise land in whichever loop was running. Every loop
# runs its callbacks in this thread, so this counts all of its work.
_clock = time.thread_time_ns


async def _call_soon(n):
    loop = _running()
    done = loop.create_future()
    left = [n]

    def tick():
        left[0] -= 1
        if not left[0]:
            done.set_result(None)

    t0 = _clock()
    call_soon = loop.call_soon
    for _ in range(n):
        call_soon(tick)
    await done
    return _clock() - t0


async def _call_later_cancel(n):
    loop = _running()
    call_later = loop.call_later
    t0 = _clock()
    for _ in range(n):
        call_later(3600.0, _noop).cancel()
    # Let the loop drop the cancelled timers: part of a timer's cost.
    await _sleep0()
    await _sleep0()
    return _clock() - t0


async def _timers_firing(n):
    loop = _running()
    done = loop.create_future()
    left = [n]

    def fire():
        left[0] -= 1
        if not left[0]:
            done.set_result(None)

    call_at = loop.call_at
    when = loop.time()  # already due: every timer fires on the next iteration
    t0 = _clock()
    for i in range(n):
        call_at(when - (i % 97) * 1e-6, fire)  # varied deadlines, so the heap does real work
    await done
    return _clock() - t0


async def _future_resolution(n):
    loop = _running()
    create_future, call_soon = loop.create_future, loop.call_soon
    t0 = _clock()
    for _ in range(n):
        fut = create_future()
        call_soon(fut.set_result, None)
        await fut
    return _clock() - t0


async def _sleep0_switch(n):
    import asyncio

    tasks = 10

    async def worker(k):
        for _ in range(k):
            await asyncio.sleep(0)

    t0 = _clock()
    await asyncio.gather(*(worker(n // tasks) for _ in range(tasks)))
    return _clock() - t0


async def _gather_10k(n):
    import asyncio

    async def nothing():
        return None

    t0 = _clock()
    for _ in range(max(1, n // 10000)):
        await asyncio.gather(*(nothing() for _ in range(10000)))
    return _clock() - t0


async def _sock_pingpong(n):
    # One round trip: sock_sendall() a byte one way and sock_recv() it back
    # the other; every receive waits for readiness first (reader added and
    # removed), as in a request/response exchange.
    import asyncio
    import socket

    loop = _running()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def echo():
        for _ in range(n):
            await loop.sock_sendall(b, await loop.sock_recv(b, 64))

    t0 = _clock()
    peer = asyncio.ensure_future(echo())
    for _ in range(n):
        await loop.sock_sendall(a, b"x")
        await loop.sock_recv(a, 64)
    await peer
    elapsed = _clock() - t0
    a.close()
    b.close()
    return elapsed


async def _add_remove_reader(n):
    import socket

    loop = _running()
    a, b = socket.socketpair()
    add_reader, remove_reader, fd = loop.add_reader, loop.remove_reader, a.fileno()
    t0 = _clock()
    for _ in range(n):
        add_reader(fd, _noop)
        remove_reader(fd)
    elapsed = _clock() - t0
    a.close()
    b.close()
    return elapsed


async def _accept_close(n):
    # A server's accept loop: clients connect in batches of 50; the protocol
    # closes each connection as it is made. Client syscalls are counted too
    # (the same for every loop).
    import asyncio
    import socket
    import struct

    loop = _running()
    made = [0]
    batch_done = [None]

    class Closer(asyncio.Protocol):
        def connection_made(self, transport):
            transport.close()
            made[0] += 1
            if made[0] % 50 == 0:
                batch_done[0].set_result(None)

    server = await loop.create_server(Closer, "127.0.0.1", 0, backlog=128)
    address = server.sockets[0].getsockname()
    t0 = _clock()
    for _ in range(max(1, n // 50)):
        batch_done[0] = loop.create_future()
        clients = []
        for _ in range(50):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(address)
            clients.append(c)
        await batch_done[0]
        for c in clients:
            # A reset, not a FIN: no TIME_WAIT left to use up local ports.
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
    elapsed = _clock() - t0
    server.close()
    await server.wait_closed()
    return elapsed


def _running():
    import asyncio
    return asyncio.get_running_loop()


def _noop():
    pass


async def _sleep0():
    import asyncio
    await asyncio.sleep(0)


#: op -> (coroutine function(n) returning ns, operations per run at scale 1).
MICRO = {
    "call_soon": (_call_soon, 200_000),
    "call_later_cancel": (_call_later_cancel, 100_000),
    "timers_firing": (_timers_firing, 100_000),
    "future_resolution": (_future_resolution, 100_000),
    "sleep0_switch": (_sleep0_switch, 100_000),
    "gather_10k": (_gather_10k, 30_000),
    "sock_pingpong": (_sock_pingpong, 20_000),
    "add_remove_reader": (_add_remove_reader, 100_000),
    "accept_close": (_accept_close, 2_000),
}


def run_micro(loops, repeats, scale):
    """Time every micro-benchmark on every loop, loops in rotating order; return {op: {loop: summary}}."""
    out = {}
    for op in MICRO_OPS:
        func, n = MICRO[op]
        n = max(min(n, 10_000), int(n * scale))
        samples = {loop: [] for loop in loops}
        for loop in loops:  # one unmeasured run each: imports, caches, allocator
            _common.run_on(loop, func(n // 10))
        for r in range(repeats):
            for loop in rotate(list(loops), r):
                gc.collect()
                gc.disable()
                try:
                    ns = _common.run_on(loop, func(n))
                finally:
                    gc.enable()
                samples[loop].append(ns / n)
        out[op] = {loop: harness.summarize(s) for loop, s in samples.items()}
        harness.progress("[asyncio] micro %s: %s" % (op, ", ".join(
            "%s %s" % (loop, harness.format_ns(out[op][loop]["median_ns"])) for loop in loops)))
    return out


# --- the suite ----------------------------------------------------------------------------------


def evaluate_targets(cases):
    """Return one check per target and measured cell: ratio, goal, pass."""
    checks = []
    for what, style, ref, goal, mine in TARGETS:
        for case in cases:
            if case["style"] != style or (mine != "fastio" and mine not in case["loops"]):
                continue
            me, other = case["loops"].get(mine), case["loops"].get(ref)
            ratio = bench_echo.paired_ratio(me, other, "server_cpu_us_per_req") if me and other else None
            floor = case["loops"].get(REFERENCE)
            checks.append({"target": what, "case": case["label"], "loop": mine, "vs": ref, "goal": goal,
                           "ratio": ratio, "pass": None if ratio is None else ratio <= goal,
                           "reference_ratio": bench_echo.paired_ratio(floor, other, "server_cpu_us_per_req")
                           if floor and other else None})
    return checks


def _case_label(style, size):
    if style == "aiohttp":
        return "aiohttp hello × %d" % HTTP_CONNECTIONS
    return "%s %s × 100" % (style, "%d KiB" % (size // 1024) if size >= 1024 else "%d B" % size)


def run(config):
    """Run the asyncio suite with `config`; return the JSON-able results."""
    profile = PROFILES[config.profile]
    rounds = config.repeats or profile["rounds"]
    warning = harness.warn_if_fallback()
    nofile = harness.raise_nofile()
    loops = [loop for loop in LOOPS if not _missing(loop)]
    skipped = [{"server": loop, "reason": _missing(loop)} for loop in LOOPS if _missing(loop)]
    http_loops = [loop for loop in loops if not _missing(loop, http=True)]
    if loops and not http_loops:
        skipped.append({"server": "aiohttp", "reason": _missing(loops[0], http=True)})
    micro_loops = [loop for loop in loops if loop not in ECHO_ONLY]
    factory = _common.loop_factory("fastio")
    fastio_name = "%s.%s" % (factory.__module__, factory.__qualname__)
    errors, cases = [], []
    running = {}
    t_start = time.monotonic()
    try:
        for loop in loops:
            for style in STYLES:
                running[(loop, style)] = harness.RunningServer("%s-%s" % (loop, style), echo_server(loop, style))
            if loop in http_loops:
                running[(loop, "aiohttp")] = harness.RunningServer("%s-aiohttp" % loop, http_server(loop))
        reference = bench_echo.missing("cc")
        if reference is None:
            running[(REFERENCE, "protocol")] = harness.RunningServer(REFERENCE, bench_echo.SERVERS[REFERENCE])
        else:
            skipped.append({"server": REFERENCE, "reason": reference})
        with harness.pinned(harness.CLIENT_CPU) as cpu:
            machine = harness.machine_info()
            plan = [(style, size, conns) for size, conns in CELLS for style in STYLES]
            if http_loops:
                plan.append(("aiohttp", None, HTTP_CONNECTIONS))
                for loop in http_loops:  # warm-up, unmeasured: one connection first
                    run_wrk(running[(loop, "aiohttp")].port, 1, connections=1)
                    run_wrk(running[(loop, "aiohttp")].port, 1)
            def members_of(style):
                if style == "aiohttp":
                    return http_loops
                return loops + [REFERENCE] if (REFERENCE, style) in running else loops

            total, done = sum(len(members_of(style)) for style, _, _ in plan) * rounds, 0
            for style, size, conns in plan:
                members = members_of(style)
                runs = {loop: [] for loop in members}
                for r in range(rounds):
                    for loop in rotate(list(members), r):
                        done += 1
                        server = running[(loop, style)]
                        head = "[asyncio %d/%d %.0fs] %s, %s, round %d" % (
                            done, total, time.monotonic() - t_start, _case_label(style, size), loop, r + 1)
                        if server.proc.poll() is not None:
                            errors.append({"server": server.name, "case": _case_label(style, size),
                                           "error": "server exited: %s" % server.error_tail()})
                            harness.progress("%s: server is gone" % head)
                            continue
                        try:
                            if style == "aiohttp":
                                res = measure_http(server, profile["http_duration"])
                            else:
                                res = bench_echo.measure_once(server, size, conns, profile["duration"],
                                                              profile["warmup"])
                        except (OSError, ValueError) as exc:
                            errors.append({"server": server.name, "case": _case_label(style, size),
                                           "error": str(exc)})
                            harness.progress("%s: FAILED %s" % (head, exc))
                            continue
                        res["round"] = r
                        if res["errors"]:
                            errors.append({"server": server.name, "case": _case_label(style, size),
                                           "error": "%d errors: %s" % (res["errors"], res["error_messages"][:1])})
                        runs[loop].append(res)
                        harness.progress("%s: %.0f req/s, server %s µs/req, p99 %s µs, client CPU %.0f%%%s" % (
                            head, res["req_per_s"], res["server_cpu_us_per_req"], res["latency_us"]["p99"],
                            res["client_cpu_pct"], ", %d ERRORS" % res["errors"] if res["errors"] else ""))
                cases.append({"style": style, "size": size, "connections": conns,
                              "label": _case_label(style, size),
                              "loops": {loop: bench_echo.summarize(v) for loop, v in runs.items() if v}})
            micro = (run_micro(micro_loops, profile["micro_repeats"], profile["micro_scale"])
                     if micro_loops else {})
    finally:
        for server in running.values():
            status = server.stop()
            if status not in (0, -signal.SIGTERM):
                harness.progress("[asyncio] %s exited with status %s on SIGTERM" % (server.name, status))
    checks = evaluate_targets(cases)
    for c in checks:
        harness.progress("[asyncio] target %s (%s): %s/%s = %s, goal <= %.2fx: %s" % (
            c["target"], c["case"], c["loop"], c["vs"], "-" if c["ratio"] is None else "%.2fx" % c["ratio"], c["goal"],
            "-" if c["pass"] is None else "PASS" if c["pass"] else "FAIL"))
    result = {
        "suite": "asyncio",
        "machine": machine,
        "config": {
            "profile": config.profile, "rounds": rounds, "duration_s": profile["duration"],
            "warmup_s": profile["warmup"], "http_duration_s": profile["http_duration"],
            "micro_repeats": profile["micro_repeats"], "micro_scale": profile["micro_scale"],
            "server_cpu": harness.SERVER_CPU, "client_cpu": cpu, "rlimit_nofile": nofile,
            "fastio_loop": fastio_name, "loops": loops, "micro_loops": micro_loops,
            "reference": REFERENCE,
            "load_generators": {"echo": "fastio.echo.loadgen.bench (in-process, compiled core)",
                                "http": "wrk -t1 -c%d --latency" % HTTP_CONNECTIONS},
        },
        "warnings": [warning] if warning else [],
        "targets": checks,
        "cases": cases,
        "micro": micro,
        "skipped": skipped,
        "errors": errors,
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    result["plots"] = write_plot(result, config.out)
    return result


# --- output -----------------------------------------------------------------------------------------


def write_plot(result, out_dir):
    """Write asyncio.png: server CPU per request per case, one bar per loop, with the target lines; return names."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        harness.progress("[asyncio] matplotlib not installed: no plot")
        return []
    cases = [c for c in result["cases"] if c["loops"]]
    if not cases:
        return []
    loops = result["config"]["loops"]
    colors = {"fastio": "tab:red", "fastio-io_uring": "tab:orange", "uvloop": "tab:blue",
              "asyncio": "tab:gray", REFERENCE: "tab:green"}
    if any(REFERENCE in case["loops"] for case in cases):
        loops = loops + [REFERENCE]
    fig, ax = plt.subplots(figsize=(12, 4.8))
    width = 0.8 / max(1, len(loops))
    for i, loop in enumerate(loops):
        xs = [k + (i - (len(loops) - 1) / 2) * width for k in range(len(cases))]
        ys = [(c["loops"].get(loop) or {}).get("server_cpu_us_per_req") or 0 for c in cases]
        ax.bar(xs, ys, width, label=loop, color=colors.get(loop))
    # Each case's goal as a short line: the strictest target's allowed CPU per request.
    for k, case in enumerate(cases):
        goals = [c["goal"] * case["loops"][c["vs"]]["server_cpu_us_per_req"]
                 for c in result["targets"] if c["case"] == case["label"] and c["vs"] in case["loops"]
                 and case["loops"][c["vs"]]["server_cpu_us_per_req"]]
        if goals:
            ax.hlines(min(goals), k - 0.45, k + 0.45, colors="black", linestyles="dashed",
                      label="fastio's target" if k == 0 else None)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([c["label"] for c in cases], rotation=20, ha="right", fontsize="small")
    ax.set_ylabel("server CPU µs per request (lower is better)")
    ax.set_title("asyncio loops: echo and aiohttp servers (medians; dashed: fastio's target)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "asyncio.png", dpi=100)
    plt.close(fig)
    return ["asyncio.png"]


def _num(value, fmt="%.0f"):
    return "-" if value is None else fmt % value


def to_markdown(result):
    """Render the suite's results as Markdown, the targets first."""
    cfg = result["config"]
    loops = cfg["loops"]
    lines = ["# asyncio event loops: fastio vs uvloop vs stock asyncio", ""]
    for warning in result["warnings"]:
        lines += ["> **WARNING:** %s" % warning, ""]
    for error in result["errors"]:
        lines += ["> **CORRECTNESS FAILURE** %s in %s: %s" % (error["server"], error["case"], error["error"]), ""]
    lines += [harness.machine_line(result["machine"], cfg["client_cpu"]).replace(
        "pinned to CPU %s" % cfg["client_cpu"],
        "server on CPU %s, client on CPU %s" % (cfg["server_cpu"], cfg["client_cpu"])), ""]
    lines += [
        "fastio's loop: `%s`. Echo: closed loop, pipeline 1, every byte verified, %.1f s windows; "
        "HTTP: wrk, 1 thread, %d keep-alive connections, %.0f s runs. %d rounds, servers in rotating order; "
        "medians. Server CPU = on-CPU time of the server process over the window / requests completed. "
        "Ratios are medians of per-round ratios." % (
            cfg["fastio_loop"], cfg["duration_s"], HTTP_CONNECTIONS, cfg["http_duration_s"], cfg["rounds"]),
        "",
        "## Targets (fastio's server CPU per request / the other loop's, same run)",
        "",
        "The last column is the C epoll echo server's ratio to the same loop in the same rounds "
        "(protocol cells): it makes the syscalls a protocol server makes and runs no Python, so no "
        "loop serving a protocol gets below it.",
        "",
        "| target | case | loop | vs | ratio | goal | result | C epoll server / vs |",
        "|---|---|---|---|---:|---:|---|---:|",
    ]
    for c in result["targets"]:
        lines.append("| %s | %s | %s | %s | %s | <= %.2fx | %s | %s |" % (
            c["target"], c["case"], c.get("loop", "fastio"), c["vs"], _num(c["ratio"], "%.2fx"), c["goal"],
            "-" if c["pass"] is None else "PASS" if c["pass"] else "**FAIL**",
            _num(c.get("reference_ratio"), "%.2fx")))
    if any(REFERENCE in case["loops"] for case in result["cases"]):
        loops = loops + [REFERENCE]
    ours = [loop for loop in loops if loop.startswith("fastio")]
    pairs = [(me, ref) for me in ours for ref in ("uvloop", "asyncio")]
    lines += ["", "## Servers: server CPU µs/request (req/s, p99 µs)", "",
              "| case | %s | %s | client CPU |" % (" | ".join(loops),
                                                  " | ".join("%s / %s" % pair for pair in pairs)),
              "|---|%s%s---:|" % ("---:|" * len(loops), "---:|" * len(pairs))]
    for case in result["cases"]:
        got = case["loops"]
        cells = ["%s (%s/s, %s)" % (_num(got[loop]["server_cpu_us_per_req"], "%.2f"),
                                    _num(got[loop]["req_per_s"]), _num(got[loop]["p99_us"]))
                 if loop in got else "-" for loop in loops]
        ratios = [_num(bench_echo.paired_ratio(got[me], got.get(ref), "server_cpu_us_per_req"), "%.2fx")
                  if me in got else "-" for me, ref in pairs]
        client = max((s["client_cpu_pct"] or 0 for s in got.values()), default=None)
        lines.append("| %s | %s | %s | %s |" % (case["label"], " | ".join(cells), " | ".join(ratios),
                                                _num(client, "%.0f%%")))
    lines += ["", "Client CPU is the highest of the loops' medians; near 100% the load generator set the "
                  "req/s, so compare server CPU per request there.", ""]
    if result["micro"]:
        micro_loops = cfg.get("micro_loops", loops)
        lines += ["## Micro-benchmarks (CPU time per operation, median of %d; min–max)" % cfg["micro_repeats"], "",
                  "| operation | %s |" % " | ".join(micro_loops), "|---|%s" % ("---:|" * len(micro_loops))]
        for op, per_loop in result["micro"].items():
            lines.append("| %s | %s |" % (op, " | ".join(
                harness.format_spread(per_loop[loop]) if loop in per_loop else "-" for loop in micro_loops)))
        lines += ["", "call_later_cancel: schedule a timer an hour out and cancel it (plus the loop dropping "
                      "it); timers_firing: already-due timers with varied deadlines; future_resolution: "
                      "create_future, call_soon(set_result), await; sleep0_switch: 10 tasks each awaiting "
                      "asyncio.sleep(0), per sleep; gather_10k: per task of a 10,000-task gather; sock_pingpong: "
                      "a 1-byte round trip of sock_sendall + sock_recv each way over a socketpair; "
                      "add_remove_reader: add_reader + remove_reader of one fd; accept_close: per "
                      "connection a server accepts (its protocol closes it), client syscalls included.", ""]
    if result["skipped"]:
        lines += ["Skipped: " + "; ".join("%s (%s)" % (s["server"], s["reason"]) for s in result["skipped"]) + ".",
                  ""]
    lines.append("Suite wall time: %.0f s." % result["wall_s"])
    for name in result.get("plots", []):
        lines += ["", "![%s](%s)" % (name, name)]
    return "\n".join(lines)
