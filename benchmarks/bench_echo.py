"""Compare echo servers side by side: req/s, p99 latency and server CPU per request.

Every server in `SERVERS` is started once, pinned to CPU 0, and loaded in turn
by fastio's own load generator (`fastio.echo.loadgen.bench`, in this process,
pinned to CPU 1): for each cell (message size x connections) and each repeat,
the servers run in an order that rotates every repeat, so drift on a noisy
machine hits them alike; medians over repeats are reported. Each client reply
is verified byte for byte: a server that echoes wrong bytes is a correctness
failure, not a number.

Discussion: server CPU per request. A client that saturates its core caps
req/s for every server alike and hides how much each server spends; the CPU
time the server burns per request does not. It is read from /proc around the
measured window only (connect, warm-up and drain are outside it): see
`harness.cpu_sample`.

The servers are data: `SERVERS` maps a name to a command line (`--port P` is
appended). fastio's own servers (`python -m fastio echo --backend ...`) are
listed too and skipped, with a note, while `python -m fastio echo --help`
fails.
"""

import dataclasses
import functools
import importlib.util
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fastio.echo import loadgen

from benchmarks import harness
from benchmarks.harness import CLIENT_CPU, SERVER_CPU, RunningServer, Unavailable, cpu_delta, cpu_sample

PEERS = Path(__file__).resolve().parent / "peers"
C_SOURCE = Path(__file__).resolve().parent / "c_echo" / "echo_epoll.c"
C_BINARY = harness.REPO_DIR / "build" / "c_echo" / "echo_epoll"
PY = sys.executable
# The echo target, checked in the headline cell (1 KiB requests, 100
# connections): `python -m fastio echo` spends at most 1.10x the CPU per
# request of the C epoll server, less than uvloop's protocol server and the
# selectors server, and serves at least as many req/s as those two.
HEADLINE = (1024, 100)  # (size, connections)


@dataclasses.dataclass
class Server:
    """One echo server to compare: its command line and what it needs to run."""

    argv: tuple
    kind: str  # "reference", "peer" or "fastio"
    requires: str = None  # "cc", "uvloop" or "fastio-echo"
    core: bool = False  # also measured in the default profile's spread cells
    target: bool = False  # held to the echo target (see HEADLINE)


def _peer(script, *flags, **kw):
    return Server((PY, str(PEERS / script)) + flags, "peer", **kw)


def _fastio(backend, core=False, target=False):
    return Server((PY, "-m", "fastio", "echo", "--backend", backend), "fastio", "fastio-echo", core, target)


SERVERS = {
    "c-epoll": Server((str(C_BINARY),), "reference", "cc", core=True),
    "select-1k": _peer("select_server.py"),
    "select-64k": _peer("select_server.py", "--recv-size", "65536"),
    "selectors": _peer("selectors_server.py", core=True),
    "threads": _peer("thread_server.py"),
    "fork": _peer("fork_server.py"),
    "asyncio-protocol": _peer("asyncio_server.py"),
    "asyncio-streams": _peer("asyncio_server.py", "--style", "streams"),
    "uvloop-protocol": _peer("asyncio_server.py", "--loop", "uvloop", requires="uvloop", core=True),
    "uvloop-streams": _peer("asyncio_server.py", "--loop", "uvloop", "--style", "streams", requires="uvloop"),
    "fastio-epoll": _fastio("epoll", core=True, target=True),
    "fastio-poll": _fastio("poll"),
    "fastio-select": _fastio("select"),
    # fastio's loop with the per-chunk path in Python, as the protocol peers above.
    "fastio-pyprotocol": Server((PY, str(PEERS / "fastio_protocol_server.py")), "fastio", "fastio-echo",
                                core=True),
}

SIZES = (64, 1024, 16384)
CONNECTIONS = (1, 10, 100, 1000)
SPREAD = ((64, 100), (16384, 100), (1024, 1), (1024, 1000))
# The servers the target compares (fastio's first): in the headline cell they
# get `target_rounds` more rounds among themselves, and each ratio is the
# median of per-round ratios -- servers measured seconds apart, so drift on
# this noisy machine cancels out.
TARGET_GROUP = ("fastio-epoll", "c-epoll", "uvloop-protocol", "selectors")

# cells: list of ((size, connections), "all" | "core"); duration/warmup in seconds.
PROFILES = {
    "quick": dict(repeats=3, duration=0.5, warmup=0.2, cells=[(HEADLINE, "all")]),
    "default": dict(repeats=3, target_rounds=4, duration=1.5, spread_duration=1.0, warmup=0.3,
                    cells=[(HEADLINE, "all")] + [(cell, "core") for cell in SPREAD]),
    "full": dict(repeats=3, duration=2.0, warmup=0.5,
                 cells=[((size, conns), "all") for size in SIZES for conns in CONNECTIONS]),
}


# --- servers ---------------------------------------------------------------------------


def build_c_server():
    """Compile the C epoll server into build/ unless it is up to date; return its path."""
    if C_BINARY.exists() and C_BINARY.stat().st_mtime >= C_SOURCE.stat().st_mtime:
        return C_BINARY
    C_BINARY.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["cc", "-O2", "-o", str(C_BINARY), str(C_SOURCE)], capture_output=True, text=True)
    except OSError as exc:
        raise Unavailable("no C compiler (cc): %s" % exc) from None
    if done.returncode != 0:
        raise Unavailable("cc failed: %s" % done.stderr.strip().splitlines()[-1:])
    return C_BINARY


@functools.lru_cache(maxsize=None)
def missing(requirement):
    """Return why `requirement` is not met here, or None when it is (asked once per run)."""
    try:
        if requirement == "cc":
            build_c_server()
        elif requirement == "uvloop" and importlib.util.find_spec("uvloop") is None:
            return "uvloop is not installed (`make bench` installs it)"
        elif requirement == "fastio-echo":
            done = subprocess.run([PY, "-m", "fastio", "echo", "--help"], capture_output=True, timeout=30,
                                  cwd=harness.REPO_DIR)
            if done.returncode != 0:
                return "fastio server not available (`python -m fastio echo --help` failed)"
    except Unavailable as exc:
        return str(exc)
    return None


# --- measuring --------------------------------------------------------------------------


def measure_once(server, size, connections, duration, warmup):
    """Load `server` for one window; return the client's result plus server CPU per request."""
    server.wait_idle()
    marks = {}
    pid = server.proc.pid
    result = loadgen.bench(
        "127.0.0.1", server.port, connections=connections, size=size, duration=duration, pipeline=1,
        warmup=warmup, timeout=10.0,
        on_start=lambda: marks.__setitem__("start", cpu_sample(pid)),
        on_stop=lambda: marks.__setitem__("stop", cpu_sample(pid)),
    )
    if "start" in marks and "stop" in marks and result["requests"]:
        ns, method = cpu_delta(marks["start"], marks["stop"])
        result["server_cpu_us_per_req"] = round(ns / 1e3 / result["requests"], 3)
        result["server_cpu_pct"] = round(100 * ns / 1e9 / result["duration_s"], 1)
        result["cpu_method"] = method
    else:
        result["server_cpu_us_per_req"] = result["server_cpu_pct"] = result["cpu_method"] = None
    return result


def _median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(runs):
    """Reduce one server's runs in a cell to medians."""
    return {
        "req_per_s": _median([r["req_per_s"] for r in runs]),
        "p99_us": _median([r["latency_us"]["p99"] for r in runs]),
        "p50_us": _median([r["latency_us"]["p50"] for r in runs]),
        "server_cpu_us_per_req": _median([r["server_cpu_us_per_req"] for r in runs]),
        "server_cpu_pct": _median([r["server_cpu_pct"] for r in runs]),
        "client_cpu_pct": _median([r["client_cpu_pct"] for r in runs]),
        "cpu_methods": sorted({r["cpu_method"] for r in runs if r["cpu_method"]}),
        "samples": [{k: r[k] for k in ("round", "req_per_s", "server_cpu_us_per_req", "client_cpu_pct")}
                    | {"p99_us": r["latency_us"]["p99"]} for r in runs],
    }


def paired_ratio(me, other, metric):
    """Return the median over rounds of me/other for `metric` (None if unmeasured)."""
    if other is None:
        return None
    mine = {s["round"]: s[metric] for s in me["samples"] if s[metric]}
    ratios = [mine[s["round"]] / s[metric] for s in other["samples"] if s[metric] and s["round"] in mine]
    return _median(ratios) if ratios else None


def evaluate_target(cell):
    """Check the echo target (see HEADLINE) in the headline cell for each fastio server present."""
    if cell is None:
        return [{"server": None, "result": "headline cell not measured", "checks": []}]
    got = cell["servers"]
    fastio_names = [name for name in got if SERVERS[name].target]
    if not fastio_names:
        return [{"server": None, "result": "fastio server not available", "checks": []}]
    out = []
    for name in fastio_names:
        me, checks = got[name], []
        for ref, metric, goal in (
            ("c-epoll", "server_cpu_us_per_req", "<= 1.10x"),
            ("uvloop-protocol", "server_cpu_us_per_req", "< 1.00x"),
            ("selectors", "server_cpu_us_per_req", "< 1.00x"),
            ("uvloop-protocol", "req_per_s", ">= 1.00x"),
            ("selectors", "req_per_s", ">= 1.00x"),
        ):
            ratio = paired_ratio(me, got.get(ref), metric)
            if ratio is None:
                ok = None
            elif goal == "<= 1.10x":
                ok = ratio <= 1.10
            elif goal == "< 1.00x":
                ok = ratio < 1.0
            else:
                ok = ratio >= 1.0
            checks.append({"vs": ref, "metric": metric, "goal": goal,
                           "ratio": None if ratio is None else round(ratio, 3), "pass": ok})
        verdict = ("PASS" if all(c["pass"] for c in checks)
                   else "FAIL" if any(c["pass"] is False for c in checks) else "INCOMPLETE")
        out.append({"server": name, "result": verdict, "checks": checks})
    return out


def run(config):
    """Run the echo suite under `config`; return JSON-able results."""
    profile = PROFILES[config.profile]
    repeats = config.repeats or profile["repeats"]
    warning = harness.warn_if_fallback()
    nofile = harness.raise_nofile()
    needed = {"core": [n for n, s in SERVERS.items() if s.core], "all": list(SERVERS)}
    wanted = list(dict.fromkeys(n for _, which in profile["cells"] for n in needed[which]))
    skipped, errors, running, cells = [], [], {}, []
    try:
        for name in wanted:
            try:
                reason = missing(SERVERS[name].requires)
                if reason:
                    raise Unavailable(reason)
                running[name] = RunningServer(name, SERVERS[name])
            except (Unavailable, OSError, subprocess.SubprocessError) as exc:
                skipped.append({"server": name, "reason": str(exc)})
                harness.progress("[echo] %s: skipped (%s)" % (name, exc))
        group = [n for n in TARGET_GROUP if n in running]
        target_rounds = profile.get("target_rounds", 0) if profile["cells"][0][0] == HEADLINE else 0
        total = (sum(repeats * len([n for n in needed[w] if n in running]) for _, w in profile["cells"])
                 + target_rounds * len(group))
        done = 0
        t_start = time.monotonic()
        with harness.pinned(CLIENT_CPU) as cpu:
            machine = harness.machine_info()
            for i, ((size, conns), which) in enumerate(profile["cells"]):
                duration = profile["duration"] if i == 0 else profile.get("spread_duration", profile["duration"])
                names = [n for n in needed[which] if n in running]
                rounds = [(r, names) for r in range(repeats)]
                if i == 0:
                    rounds += [(repeats + r, group) for r in range(target_rounds)]
                runs = {n: [] for n in names}
                for r, members in rounds:
                    shift = r % max(1, len(members))
                    for name in members[shift:] + members[:shift]:
                        done += 1
                        head = "[echo %d/%d %.0fs] %d B x %d conns, %s, repeat %d" % (
                            done, total, time.monotonic() - t_start, size, conns, name, r + 1)
                        server = running[name]
                        if server.proc.poll() is not None:
                            errors.append({"server": name, "cell": [size, conns],
                                           "error": "server exited: %s" % server.error_tail()})
                            harness.progress("%s: server is gone" % head)
                            continue
                        try:
                            res = measure_once(server, size, conns, duration, profile["warmup"])
                        except OSError as exc:
                            errors.append({"server": name, "cell": [size, conns], "error": str(exc)})
                            harness.progress("%s: FAILED %s" % (head, exc))
                            continue
                        res["round"] = r
                        if res["errors"]:
                            errors.append({"server": name, "cell": [size, conns],
                                           "error": "%d echo errors: %s" % (res["errors"], res["error_messages"][:1])})
                        runs[name].append(res)
                        harness.progress("%s: %.0f req/s, server %s µs/req, p99 %s µs, client CPU %.0f%%%s" % (
                            head, res["req_per_s"], res["server_cpu_us_per_req"], res["latency_us"]["p99"],
                            res["client_cpu_pct"], ", %d ERRORS" % res["errors"] if res["errors"] else ""))
                cells.append({"size": size, "connections": conns, "duration_s": duration,
                              "servers": {n: summarize(v) for n, v in runs.items() if v}})
    finally:
        for name, server in running.items():
            status = server.stop()
            if status not in (0, -signal.SIGTERM):
                harness.progress("[echo] %s exited with status %s on SIGTERM" % (name, status))
    headline = next((c for c in cells if (c["size"], c["connections"]) == HEADLINE), None)
    targets = evaluate_target(headline)
    harness.progress("[echo] target: " + "; ".join("%s %s" % (t["server"] or "", t["result"]) for t in targets))
    result = {
        "suite": "echo",
        "machine": machine,
        "config": {
            "profile": config.profile, "repeats": repeats, "target_rounds": target_rounds,
            "warmup_s": profile["warmup"],
            "pipeline": 1, "server_cpu": SERVER_CPU, "client_cpu": cpu, "rlimit_nofile": nofile,
            "load_generator": "fastio.echo.loadgen.bench (in-process)",
            "servers": {name: " ".join(Path(a).name if "/" in a else a for a in s.argv) for name, s in SERVERS.items()},
        },
        "warnings": [warning] if warning else [],
        "targets": targets,
        "cells": cells,
        "skipped": skipped,
        "errors": errors,
    }
    result["plots"] = write_plots(result, config.out)
    if warning:
        harness.progress("!! WARNING: " + warning)
    return result


# --- output ---------------------------------------------------------------------------------


def _cell_label(cell):
    size = cell["size"]
    return "%s × %d" % ("%d KiB" % (size // 1024) if size >= 1024 else "%d B" % size, cell["connections"])


def write_plots(result, out_dir):
    """Write the headline bar chart and (with several cells) the CPU-per-request matrix as PNG; return names."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        harness.progress("[echo] matplotlib not installed: no plots")
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    headline = next((c for c in result["cells"] if (c["size"], c["connections"]) == HEADLINE), None)
    if headline and headline["servers"]:
        rows = sorted(headline["servers"].items(), key=lambda kv: kv[1]["server_cpu_us_per_req"] or 1e9)
        labels = [name for name, _ in rows]
        colors = ["tab:red" if SERVERS[n].kind == "fastio" else "tab:gray" if SERVERS[n].kind == "reference"
                  else "tab:blue" for n in labels]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.5), sharey=True)
        ax1.barh(labels, [s["server_cpu_us_per_req"] or 0 for _, s in rows], color=colors)
        ax1.set_xlabel("server CPU µs per request (lower is better)")
        ax2.barh(labels, [s["req_per_s"] or 0 for _, s in rows], color=colors)
        ax2.set_xlabel("requests per second (higher is better)")
        ax1.invert_yaxis()
        fig.suptitle("Echo servers, %s connections, pipeline 1 (medians)" % _cell_label(headline))
        fig.tight_layout()
        fig.savefig(out_dir / "echo_headline.png", dpi=100)
        plt.close(fig)
        names.append("echo_headline.png")
    sizes = sorted({c["size"] for c in result["cells"]})
    multi = [s for s in sizes if len([c for c in result["cells"] if c["size"] == s]) > 1]
    if multi:
        fig, axes = plt.subplots(1, len(multi), figsize=(5 * len(multi), 4), squeeze=False)
        for ax, size in zip(axes[0], multi):
            cells = sorted((c for c in result["cells"] if c["size"] == size), key=lambda c: c["connections"])
            for name in SERVERS:
                points = [(c["connections"], c["servers"][name]["server_cpu_us_per_req"])
                          for c in cells if name in c["servers"] and c["servers"][name]["server_cpu_us_per_req"]]
                if len(points) > 1:
                    ax.plot(*zip(*points), marker="o", label=name,
                            linewidth=2.5 if SERVERS[name].kind != "peer" else 1)
            ax.set_xscale("log")
            ax.set_title("%d B messages" % size)
            ax.set_xlabel("connections")
            ax.set_ylabel("server CPU µs per request")
        axes[0][-1].legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out_dir / "echo_matrix.png", dpi=100)
        plt.close(fig)
        names.append("echo_matrix.png")
    return names


def _num(value, fmt="%.0f"):
    return harness.num_or_dash(value, fmt)


def to_markdown(result):
    """Render the suite's results as Markdown, the echo target first."""
    cfg = result["config"]
    lines = ["# fastio echo server benchmark", ""] + harness.alert_lines(result, "CORRECTNESS FAILURE")
    lines += [
        harness.machine_line(result["machine"], cfg["client_cpu"]).replace(
            "pinned to CPU %s" % cfg["client_cpu"], "server on CPU %s, client on CPU %s" % (
                cfg["server_cpu"], cfg["client_cpu"])),
        "",
        "Closed loop, pipeline 1, every echoed byte verified; medians of %d repeats, servers in rotating order. "
        "Server CPU = on-CPU time of the server's process tree over the measured window "
        "(/proc schedstat; /proc stat ticks when threads came or went) divided by the requests completed in it."
        % cfg["repeats"],
        "",
        "## Target: 1 KiB × 100 connections",
        "",
        "fastio's server CPU per request <= 1.10x the C epoll server's and below uvloop protocol's and stdlib "
        "selectors'; its req/s not below either. Ratios are medians of per-round ratios: in the headline cell "
        "%s also run %d more rounds among themselves." % (", ".join(TARGET_GROUP), cfg.get("target_rounds", 0)),
        "",
    ]
    for t in result["targets"]:
        if not t["checks"]:
            lines += ["**%s**" % t["result"], ""]
            continue
        lines += ["**%s: %s**" % (t["server"], t["result"]), "",
                  "| vs | metric | fastio / other | goal | result |", "|---|---|---:|---|---|"]
        for c in t["checks"]:
            lines.append("| %s | %s | %s | %s | %s |" % (
                c["vs"], "server CPU/req" if c["metric"] == "server_cpu_us_per_req" else "req/s",
                _num(c["ratio"], "%.2fx"), c["goal"],
                "-" if c["pass"] is None else "PASS" if c["pass"] else "**FAIL**"))
        lines.append("")
    for cell in result["cells"]:
        ref = cell["servers"].get("c-epoll", {}).get("server_cpu_us_per_req")
        lines += [
            "## %s connections (%.1f s windows)" % (_cell_label(cell), cell["duration_s"]), "",
            "| server | req/s | p99 latency | server CPU µs/req | vs C epoll | server CPU | client CPU |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        rows = sorted(cell["servers"].items(), key=lambda kv: kv[1]["server_cpu_us_per_req"] or 1e9)
        for name, s in rows:
            cpu = s["server_cpu_us_per_req"]
            lines.append("| %s | %s | %s µs | %s | %s | %s%% | %s%% |" % (
                "**%s**" % name if SERVERS[name].kind == "fastio" else name,
                _num(s["req_per_s"]), _num(s["p99_us"]), _num(cpu, "%.2f"),
                _num(cpu / ref if cpu and ref else None, "%.2fx"),
                _num(s["server_cpu_pct"]), _num(s["client_cpu_pct"])))
        lines.append("")
    lines.append("Client CPU near 100% means the load generator, not the server, set the req/s: "
                 "compare servers by CPU per request there.")
    if result["skipped"]:
        lines += ["", harness.skipped_line(result["skipped"])]
    for name in result.get("plots", []):
        lines += ["", "![%s](%s)" % (name, name)]
    return "\n".join(lines)
