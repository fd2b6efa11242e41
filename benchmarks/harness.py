"""Shared pieces of the benchmark suites: timing, CPU pinning, machine info, output,
server processes and the CPU time they spend."""

import contextlib
import dataclasses
import datetime
import gc
import importlib
import itertools
import json
import os
import platform
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import fastio

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_DIR = Path(__file__).resolve().parent.parent
# Servers run on one core and their clients on the other, so that a client
# that saturates its core does not steal the server's.
SERVER_CPU, CLIENT_CPU = 0, 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Config:
    """What the command line asked of every suite."""

    profile: str = "default"  # "quick" | "default" | "full"
    repeats: int = None  # None: the suite's default for the profile
    out: Path = RESULTS_DIR


def tests_module(name):
    """Import and return tests/<name>.py, the private brokers' home (tests/broker.py, tests/cluster.py)."""
    tests_dir = str(REPO_DIR / "tests")
    # On sys.path, not loaded by file: tests/cluster.py imports its sibling `broker`.
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    return importlib.import_module(name)


def clock():
    """Return (wall seconds, this process's CPU seconds) for `since`."""
    return time.perf_counter(), time.process_time()


def since(start):
    """Return (wall seconds, CPU seconds) elapsed since `start`, a `clock()` reading."""
    t, c = clock()
    return t - start[0], c - start[1]


def progress(message):
    """Print a progress line to stderr (stdout carries only the tables)."""
    print(message, file=sys.stderr, flush=True)


def warn_if_fallback():
    """Shout when fastio runs its pure-Python fallback; return the warning or None."""
    if fastio.IMPLEMENTATION == "cython":
        return None
    message = (
        'fastio.IMPLEMENTATION is "%s": the compiled core is not built (or is disabled), '
        "so every fastio number below measures the pure-Python fallback, not fastio's extension."
        % fastio.IMPLEMENTATION
    )
    bar = "!" * 78
    progress("%s\n!! WARNING: %s\n%s" % (bar, message, bar))
    return message


def raise_nofile():
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def pinned(cpu=1):
    """Pin this process to `cpu` (else the first allowed one) for the block; yield the CPU.

    One fixed core keeps caches warm and stops the scheduler from moving the
    benchmark mid-batch. Yields None where affinity is not supported.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    target = cpu if cpu in before else min(before)
    os.sched_setaffinity(0, {target})
    try:
        yield target
    finally:
        os.sched_setaffinity(0, before)


# --- CPU time of a process tree ---------------------------------------------------


def _read(path):
    with open(path) as f:
        return f.read()


def process_tree(pid):
    """Return the pids of `pid` and its live descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for tid in os.listdir("/proc/%d/task" % p):
                todo.extend(int(c) for c in _read("/proc/%d/task/%s/children" % (p, tid)).split())
        except OSError:  # exited meanwhile
            pass
    return pids


def cpu_sample(pid):
    """Sample the CPU time of `pid`'s tree: (thread ids, schedstat ns, stat ticks).

    Two samples around a window give the CPU the tree spent in it (`cpu_delta`):

    * precise: the sum of `/proc/<pid>/task/<tid>/schedstat` on-CPU nanoseconds
      (user + system) over every thread of the process and of its descendants
      (found through `/proc/<pid>/task/<tid>/children`), used when the set of
      threads is the same at both ends of the window;
    * otherwise (a thread or child process came or went mid-window):
      utime + stime of every live process of the tree plus the root's
      cutime + cstime from `/proc/<pid>/stat`, in clock ticks (10 ms). A child
      that exits and is reaped mid-window moves its whole CPU time into the
      root's cutime, so the difference still counts only what it spent in the
      window. This is how a fork server is covered.
    """
    tids, ns, ticks = set(), 0, 0
    for p in process_tree(pid):
        try:
            fields = _read("/proc/%d/stat" % p).rsplit(")", 1)[1].split()
            # fields[11:15] are utime, stime, cutime, cstime (stat(5) fields 14-17)
            ticks += int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if p == pid else 0)
            for tid in os.listdir("/proc/%d/task" % p):
                ns += int(_read("/proc/%d/task/%s/schedstat" % (p, tid)).split()[0])
                tids.add(int(tid))
        except (OSError, IndexError, ValueError):
            pass
    return frozenset(tids), ns, ticks


def cpu_delta(before, after):
    """Return (ns of CPU between two samples, method): schedstat if the threads stayed, else stat ticks."""
    if before[0] == after[0]:
        return after[1] - before[1], "schedstat"
    return (after[2] - before[2]) * 1e9 / CLK_TCK, "stat"


# --- server processes ---------------------------------------------------------------


class Unavailable(Exception):
    """A server (or a peer) cannot run here; the message says why."""


def free_port():
    """Return a TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pin_to_server_cpu():
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {SERVER_CPU if SERVER_CPU in allowed else min(allowed)})


def server_env():
    """Return the environment for a server process: peer scripts run by path import this checkout's fastio."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(REPO_DIR) + (os.pathsep + path if path else ""))


class RunningServer:
    """A server process pinned to the server CPU, started in its own session.

    `server.argv` is its command line, to which ``--port P`` (and ``--upper``)
    is appended; it is ready once it prints a line starting with ``READY`` or
    ``fastio echo: listening``.

    :raises Unavailable: when it exits or stays silent before it is ready.
    """

    def __init__(self, name, server, upper=False, ready_timeout=20.0):
        self.name, self.port = name, free_port()
        argv = list(server.argv) + ["--port", str(self.port)] + (["--upper"] if upper else [])
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL, cwd=REPO_DIR,
            env=server_env(),
            preexec_fn=_pin_to_server_cpu, start_new_session=True,
        )
        deadline = time.monotonic() + ready_timeout
        line = b""
        while not (line.startswith(b"READY") or line.startswith(b"fastio echo: listening")):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.stop()
                raise Unavailable("no READY within %.0f s" % ready_timeout)
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise Unavailable("exited before READY: %s" % self.error_tail())
        # Whatever it prints later must not fill the pipe and block it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.baseline = self.fd_count(), cpu_sample(self.proc.pid)[0]

    def error_tail(self):
        """Return the last line the server wrote on stderr."""
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no stderr) exit status %s" % self.proc.poll()

    def fd_count(self):
        try:
            return len(os.listdir("/proc/%d/fd" % self.proc.pid))
        except OSError:
            return -1

    def wait_idle(self, timeout=5.0):
        """Wait until the server has closed the last run's connections (fds and threads back to baseline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.fd_count() <= self.baseline[0] and cpu_sample(self.proc.pid)[0] == self.baseline[1]:
                return True
            time.sleep(0.02)
        return False

    def stop(self):
        """SIGTERM the server, then SIGKILL its whole session if it lingers; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # a fork server's stragglers
        except (ProcessLookupError, PermissionError):
            pass
        status = self.proc.wait()
        self.proc.stdout.close()
        return status


def pin_process(pid, cpu):
    """Pin every thread `pid` has now to `cpu`; return False where that failed (gone, not allowed)."""
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            os.sched_setaffinity(int(tid), {cpu})
    except (OSError, ValueError):
        return False
    return True


# --- timing in this process -------------------------------------------------------------


def make_batch(stmt, names):
    """Compile a function running `stmt` n times and returning the ns it took.

    As in timeit, the statement is inlined in the loop and its names are fast
    locals, so the harness adds no call of its own to what is measured.
    """
    params = "".join(", %s=%s" % (name, name) for name in names)
    source = (
        "def batch(_n, _clock=_clock, _repeat=_repeat%s):\n"
        "    _t0 = _clock()\n"
        "    for _ in _repeat(None, _n):\n"
        "        %s\n"
        "    return _clock() - _t0\n" % (params, stmt)
    )
    namespace = dict(names, _clock=time.perf_counter_ns, _repeat=itertools.repeat)
    exec(compile(source, "<batch: %s>" % stmt, "exec"), namespace)
    return namespace["batch"]


def timed(batch, n):
    """Run one batch with the GC off, so no collection lands inside it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return batch(n)
    finally:
        if enabled:
            gc.enable()


def calibrate(batch, target_ns):
    """Return the loop count whose batch takes about `target_ns`."""
    n = 1
    while True:
        elapsed = timed(batch, n)
        # Extrapolate only from a batch long enough for the clock to be exact.
        if elapsed >= target_ns / 20:
            return max(1, round(n * target_ns / elapsed))
        n *= 10


def measure(batches, calls_per_iter, repeats, target_ns):
    """Time each system's batch `repeats` times; return {name: [ns per call, ...]}, loops.

    Systems run interleaved, in an order that rotates every repeat, so drift
    and bursts of noise on a shared machine hit all of them alike.
    """
    gc.collect()
    names = list(batches)
    loops = {name: calibrate(batch, target_ns) for name, batch in batches.items()}
    samples = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = timed(batches[name], loops[name])
            samples[name].append(elapsed / (loops[name] * calls_per_iter))
    return samples, loops


def summarize(samples):
    """Reduce per-repeat ns/call to median, min and max."""
    return {
        "median_ns": round(statistics.median(samples), 2),
        "min_ns": round(min(samples), 2),
        "max_ns": round(max(samples), 2),
        "samples_ns": [round(s, 2) for s in samples],
    }


def _unit(ns):
    """Pick (divisor, suffix, decimals) to show `ns` with about three digits."""
    if ns < 1e3:
        return 1, "ns", 0
    if ns < 1e4:
        return 1e3, "µs", 2
    if ns < 1e6:
        return 1e3, "µs", 1
    return 1e6, "ms", 2


def format_ns(ns):
    """Format a duration for a table: 87 ns, 1.23 µs, 45.2 µs, 1.05 ms."""
    if ns is None:
        return "-"
    div, suffix, dec = _unit(ns)
    return "%.*f %s" % (dec, ns / div, suffix)


def format_spread(summary):
    """Format a summary as "median unit (min–max)", all in the median's unit."""
    div, suffix, dec = _unit(summary["median_ns"])
    return "%.*f %s (%.*f–%.*f)" % (
        dec, summary["median_ns"] / div, suffix, dec, summary["min_ns"] / div, dec, summary["max_ns"] / div,
    )


def _cpu_model():
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _git_revision():
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_DIR, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def machine_info():
    """Describe the machine and the build being measured."""
    core = sys.modules.get("fastio._impl.core_c")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "fastio_version": fastio.__version__,
        "fastio_implementation": fastio.IMPLEMENTATION,
        "fastio_core": getattr(core, "__file__", None),
        "git": _git_revision(),
    }


def machine_line(machine, cpu):
    """One Markdown line naming the machine, for the head of a report."""
    return "Python %s · %s · %s · pinned to CPU %s · fastio %s (%s) · git %s · %s" % (
        machine["python"],
        machine["platform"],
        machine["cpu_model"],
        cpu,
        machine["fastio_version"],
        machine["fastio_implementation"],
        machine["git"] or "-",
        machine["date"],
    )


def write_results(out_dir, name, result, markdown):
    """Write <out_dir>/<name>.json and .md; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / (name + ".json"), out_dir / (name + ".md")
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(markdown + "\n")
    return json_path, md_path


def num_or_dash(value, fmt):
    """Format `value` with `fmt` for a Markdown table; "-" where it is None."""
    return "-" if value is None else fmt % value


def alert_lines(result, failure):
    """Return Markdown lines for the result's warnings and failed cells, `failure` the latter's label."""
    lines = []
    for warning in result["warnings"]:
        lines += ["> **WARNING:** %s" % warning, ""]
    for error in result["errors"]:
        lines += ["> **%s** %s at %d B × %d: %s" % (failure, error["server"], *error["cell"], error["error"]), ""]
    return lines


def skipped_line(skipped):
    """Return the Markdown sentence listing the servers a suite skipped and why."""
    return "Skipped: " + "; ".join("%s (%s)" % (s["server"], s["reason"]) for s in skipped) + "."
