"""The echo server on io_uring beside fastio on epoll, the C epoll server and
a C io_uring server of the same design (benchmarks/c_echo/echo_uring.c), and
fastio.loop.Loop serving a Python protocol on epoll and on io_uring.

Same load generator, pinning and CPU accounting as bench_echo (whose
machinery this suite reuses): servers pinned to CPU 0, the compiled load
generator on CPU 1, every reply verified. Each cell runs `rounds` rounds, the
three servers in an order that rotates every round; a ratio is the median of
per-round ratios of server CPU per request, so drift on a shared machine
cancels out.

Discussion: syscalls per request make the mechanism visible. After the CPU
rounds, each server gets more windows: one per cell, three at the headline
cell (in rotating order, median kept), each with
``perf stat -e raw_syscalls:sys_enter -p PID`` attached for a fixed span
inside it; syscalls per request = the syscall rate over that span / the
request rate of the window (both under the same steady load). Those windows
are kept out of the CPU figures: counting a tracepoint costs the server a
little. Without perf (or without permission) the column says so.

Discussion: the C io_uring server does what fastio's engine does (multishot
accept and recv, provided buffers, replies sent from them, one
io_uring_enter per turn) on the same ring code, src/fastio_uring.h. Its row
is the floor for that design on this kernel: "vs C io_uring" is what fastio
adds, the distance from it to the C epoll server is what io_uring itself
gains or costs.
"""

import shutil
import statistics
import signal
import subprocess
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.bench_echo import C_BINARY, PEERS, PY, Server, measure_once, missing, paired_ratio, summarize
from benchmarks.harness import RunningServer, Unavailable
from fastio.echo import loadgen

C_URING_SOURCE = Path(__file__).resolve().parent / "c_echo" / "echo_uring.c"
C_URING_HEADER = harness.REPO_DIR / "src" / "fastio_uring.h"
C_URING_BINARY = harness.REPO_DIR / "build" / "c_echo" / "echo_uring"

SERVERS = {
    "c-epoll": Server((str(C_BINARY),), "reference", "cc"),
    "c-io_uring": Server((str(C_URING_BINARY),), "reference", "cc-uring"),
    "fastio-epoll": Server((PY, "-m", "fastio", "echo", "--backend", "epoll"), "fastio", "fastio-echo"),
    "fastio-io_uring": Server((PY, "-m", "fastio", "echo", "--backend", "io_uring"), "fastio", "fastio-echo"),
    # fastio.loop.Loop with a plain Python Protocol (data_received in Python
    # per chunk), on epoll and on io_uring (the loop's completion transports).
    "loop-epoll": Server((PY, str(PEERS / "fastio_protocol_server.py"), "--backend", "epoll"), "fastio",
                         "fastio-echo"),
    "loop-io_uring": Server((PY, str(PEERS / "fastio_protocol_server.py"), "--backend", "io_uring"), "fastio",
                            "fastio-echo"),
}
URING_SERVERS = ("c-io_uring", "fastio-io_uring", "loop-io_uring")
HEADLINE = (1024, 100)
CELLS = (HEADLINE, (64, 100), (16384, 100), (1024, 1000))
# perf windows per server at the headline cell (one at the others): the
# syscall rate depends on how many completions each wait finds, which a
# busy neighbour moves from window to window.
SYSCALL_WINDOWS = 3

PROFILES = {
    "quick": dict(rounds=2, duration=0.6, warmup=0.2, cells=(HEADLINE,)),
    "default": dict(rounds=5, duration=1.0, warmup=0.3, cells=CELLS),
    "full": dict(rounds=9, duration=2.0, warmup=0.5, cells=CELLS),
}

TARGETS = (
    # (cell, metric, vs, goal, stretch)
    (HEADLINE, "cpu", "c-epoll", 0.95, 0.90),
    (HEADLINE, "syscalls", None, 0.5, None),
) + tuple((cell, "cpu", "fastio-epoll", 1.00, None) for cell in CELLS)


def build_c_uring_server():
    """Compile the C io_uring server into build/ unless it is up to date; return its path."""
    newest = max(C_URING_SOURCE.stat().st_mtime, C_URING_HEADER.stat().st_mtime)
    if C_URING_BINARY.exists() and C_URING_BINARY.stat().st_mtime >= newest:
        return C_URING_BINARY
    C_URING_BINARY.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["cc", "-O2", "-I", str(C_URING_HEADER.parent), "-o", str(C_URING_BINARY),
                               str(C_URING_SOURCE)], capture_output=True, text=True)
    except OSError as exc:
        raise Unavailable("no C compiler (cc): %s" % exc) from None
    if done.returncode != 0:
        raise Unavailable("cc failed: %s" % done.stderr.strip().splitlines()[-1:])
    return C_URING_BINARY


def _missing(requirement):
    if requirement != "cc-uring":
        return missing(requirement)
    try:
        build_c_uring_server()
    except Unavailable as exc:
        return str(exc)
    return None


def _uring_unavailable():
    done = subprocess.run(
        [PY, "-c", "from fastio.echo import uring; m, r = uring.status(); print(r or '')"],
        capture_output=True, text=True, cwd=harness.REPO_DIR, timeout=30)
    if done.returncode != 0:
        return "fastio.echo.uring failed to import: %s" % done.stderr.strip().splitlines()[-1:]
    return done.stdout.strip() or None


def _perf_missing():
    if shutil.which("perf") is None:
        return "perf not installed (apt-get install linux-perf)"
    probe = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or "raw_syscalls" not in probe.stderr:
        return "perf cannot count raw_syscalls:sys_enter here: %s" % probe.stderr.strip()[:120]
    return None


def syscalls_per_request(server, size, conns, duration, warmup):
    """Measure one window with perf counting the server's syscalls; return (syscalls/req, result)."""
    span = max(0.2, duration - 0.2)
    perf = {}

    def start():
        perf["proc"] = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(server.proc.pid), "--",
             "sleep", "%.3f" % span], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    server.wait_idle()
    result = loadgen.bench("127.0.0.1", server.port, connections=conns, size=size, duration=duration,
                           pipeline=1, warmup=warmup, timeout=10.0, on_start=start)
    proc = perf.get("proc")
    if proc is None:
        return None, result
    _, err = proc.communicate(timeout=30)
    count = None
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter" and fields[0].isdigit():
            count = int(fields[0])
    if count is None or not result["req_per_s"]:
        return None, result
    return round(count / span / result["req_per_s"], 3), result


def run(config):
    """Run the io_uring comparison under `config`; return JSON-able results."""
    profile = PROFILES[config.profile]
    rounds = config.repeats or profile["rounds"]
    warning = harness.warn_if_fallback()
    nofile = harness.raise_nofile()
    skipped, errors, running, cells = [], [], {}, []
    reason = _uring_unavailable()
    perf_reason = _perf_missing()
    machine, cpu = None, None
    try:
        for name, server in SERVERS.items():
            why = _missing(server.requires) or (reason if name in URING_SERVERS else None)
            if why:
                skipped.append({"server": name, "reason": why})
                harness.progress("[uring] %s: skipped (%s)" % (name, why))
                continue
            try:
                running[name] = RunningServer(name, server)
            except (Unavailable, OSError, subprocess.SubprocessError) as exc:
                skipped.append({"server": name, "reason": str(exc)})
                harness.progress("[uring] %s: skipped (%s)" % (name, exc))
        names = list(running)
        t0 = time.monotonic()
        with harness.pinned(1) as cpu:
            machine = harness.machine_info()
            for size, conns in profile["cells"]:
                runs = {n: [] for n in names}
                for r in range(rounds):
                    shift = r % max(1, len(names))
                    for name in names[shift:] + names[:shift]:
                        server = running[name]
                        if server.proc.poll() is not None:
                            errors.append({"server": name, "cell": [size, conns],
                                           "error": "server exited: %s" % server.error_tail()})
                            continue
                        try:
                            res = measure_once(server, size, conns, profile["duration"], profile["warmup"])
                        except OSError as exc:
                            errors.append({"server": name, "cell": [size, conns], "error": str(exc)})
                            continue
                        res["round"] = r
                        if res["errors"]:
                            errors.append({"server": name, "cell": [size, conns],
                                           "error": "%d echo errors: %s" % (res["errors"], res["error_messages"][:1])})
                        runs[name].append(res)
                        harness.progress("[uring %.0fs] %d B x %d, %s, round %d: %.0f req/s, server %s µs/req" % (
                            time.monotonic() - t0, size, conns, name, r + 1, res["req_per_s"],
                            res["server_cpu_us_per_req"]))
                cell = {"size": size, "connections": conns, "duration_s": profile["duration"],
                        "servers": {n: summarize(v) for n, v in runs.items() if v}}
                # The syscall windows: more at the headline cell, whose
                # figure is a target; servers in rotating order, median kept.
                counts = {n: [] for n in names if n in cell["servers"]}
                windows = SYSCALL_WINDOWS if (size, conns) == HEADLINE else 1
                for w in range(windows if perf_reason is None else 0):
                    shift = w % max(1, len(counts))
                    order = list(counts)
                    for name in order[shift:] + order[:shift]:
                        if running[name].proc.poll() is not None:
                            continue
                        try:
                            value, _ = syscalls_per_request(
                                running[name], size, conns, profile["duration"], profile["warmup"])
                        except (OSError, subprocess.SubprocessError) as exc:
                            errors.append({"server": name, "cell": [size, conns], "error": "perf: %s" % exc})
                            continue
                        if value is not None:
                            counts[name].append(value)
                for name, values in counts.items():
                    entry = cell["servers"][name]
                    entry["syscalls_windows"] = values
                    entry["syscalls_per_req"] = statistics.median(values) if values else None
                    harness.progress("[uring] %d B x %d, %s: %s syscalls/req (windows: %s)" % (
                        size, conns, name, entry["syscalls_per_req"], values))
                for name, s in cell["servers"].items():
                    s["cpu_vs_c_epoll"] = paired_ratio(s, cell["servers"].get("c-epoll"), "server_cpu_us_per_req")
                    s["cpu_vs_fastio_epoll"] = paired_ratio(
                        s, cell["servers"].get("fastio-epoll"), "server_cpu_us_per_req")
                    s["cpu_vs_loop_epoll"] = paired_ratio(
                        s, cell["servers"].get("loop-epoll"), "server_cpu_us_per_req")
                    s["cpu_vs_c_uring"] = paired_ratio(
                        s, cell["servers"].get("c-io_uring"), "server_cpu_us_per_req")
                cells.append(cell)
    finally:
        for name, server in running.items():
            status = server.stop()
            if status not in (0, -signal.SIGTERM):
                harness.progress("[uring] %s exited with status %s on SIGTERM" % (name, status))
    targets = evaluate(cells)
    harness.progress("[uring] targets: " + "; ".join(
        "%s %s" % (t["what"], "PASS" if t["pass"] else "-" if t["pass"] is None else "FAIL") for t in targets))
    return {
        "suite": "uring",
        "machine": machine,
        "config": {"profile": config.profile, "rounds": rounds, "duration_s": profile["duration"],
                   "warmup_s": profile["warmup"], "server_cpu": 0, "client_cpu": cpu, "rlimit_nofile": nofile,
                   "syscall_counter": perf_reason or "perf stat -e raw_syscalls:sys_enter -p PID"},
        "warnings": [w for w in (warning, perf_reason) if w],
        "targets": targets,
        "cells": cells,
        "skipped": skipped,
        "errors": errors,
    }


def evaluate(cells):
    """Check the io_uring targets; return one entry per target."""
    out = []
    by_cell = {(c["size"], c["connections"]): c["servers"] for c in cells}
    for cell, metric, vs, goal, stretch in TARGETS:
        me = by_cell.get(cell, {}).get("fastio-io_uring")
        label = "%d B x %d" % cell
        if metric == "cpu":
            value = me and me.get("cpu_vs_c_epoll" if vs == "c-epoll" else "cpu_vs_fastio_epoll")
            what = "io_uring CPU/req vs %s at %s <= %.2fx" % (vs, label, goal)
        else:
            value = me and me.get("syscalls_per_req")
            what = "io_uring syscalls/req at %s <= %.2f" % (label, goal)
        entry = {"what": what, "value": value, "goal": goal,
                 "pass": None if value is None else value <= goal}
        if stretch is not None:
            entry["stretch"] = stretch
            entry["stretch_pass"] = None if value is None else value <= stretch
        out.append(entry)
    return out


def _num(value, fmt="%.2f"):
    return harness.num_or_dash(value, fmt)


def to_markdown(result):
    """Render the results as Markdown, targets first."""
    cfg = result["config"]
    lines = ["# fastio echo on io_uring", ""] + harness.alert_lines(result, "FAILURE")
    if result["machine"]:
        lines += [harness.machine_line(result["machine"], cfg["client_cpu"]).replace(
            "pinned to CPU %s" % cfg["client_cpu"], "server on CPU 0, client on CPU %s" % cfg["client_cpu"]), ""]
    lines += [
        "Closed loop, pipeline 1, every echoed byte verified. %d rounds per cell, servers in rotating order; "
        "ratios are medians of per-round ratios of server CPU per request. Syscalls per request: %s, over "
        "extra windows per server after the CPU rounds (the median of %d at %d B x %d, one at the other cells). "
        "The machine may be shared: read the numbers as noisy."
        % ((cfg["rounds"], cfg["syscall_counter"], SYSCALL_WINDOWS) + HEADLINE), "",
        "## Targets", "", "| target | value | result |", "|---|---:|---|",
    ]
    for t in result["targets"]:
        verdict = "-" if t["pass"] is None else "PASS" if t["pass"] else "**FAIL**"
        if t.get("stretch_pass"):
            verdict += " (stretch %.2fx: PASS)" % t["stretch"]
        elif t.get("stretch_pass") is False:
            verdict += " (stretch %.2fx: missed)" % t["stretch"]
        lines.append("| %s | %s | %s |" % (t["what"], _num(t["value"]), verdict))
    lines.append("")
    for cell in result["cells"]:
        lines += ["## %d B × %d connections" % (cell["size"], cell["connections"]), "",
                  "| server | req/s | p99 | server CPU µs/req | vs C epoll | vs C io_uring | vs fastio epoll "
                  "| vs Loop epoll | syscalls/req |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, s in cell["servers"].items():
            lines.append("| %s | %s | %s µs | %s | %s | %s | %s | %s | %s |" % (
                name, _num(s["req_per_s"], "%.0f"), _num(s["p99_us"], "%.0f"), _num(s["server_cpu_us_per_req"]),
                _num(s.get("cpu_vs_c_epoll"), "%.3fx"), _num(s.get("cpu_vs_c_uring"), "%.3fx"),
                _num(s.get("cpu_vs_fastio_epoll"), "%.3fx"),
                _num(s.get("cpu_vs_loop_epoll") if name.startswith("loop-") else None, "%.3fx"),
                _num(s.get("syscalls_per_req"))))
        lines.append("")
    if result["skipped"]:
        lines += [harness.skipped_line(result["skipped"])]
    return "\n".join(lines)
