"""Time what `import fastio; fastio.install()` adds to interpreter start.

Each sample is a pair of fresh interpreters run back to back (in alternating
order): a bare ``python -c pass`` and ``python -c "import fastio;
fastio.install()"``; the cost is the median of the per-pair differences in
wall-clock time (fork/exec included on both sides, so it cancels out). A
second pair does the same with ``import asyncio`` on both sides: what a
program that does use the selectors pays for fastio's (its extension, its
classes, the rebinding by the import hook).

Before timing, each command is run once to check it does what it says (fastio
installed, asyncio's default selector fastio's), so a broken build cannot
report fast nonsense.
"""

import os
import statistics
import subprocess
import sys
import time

from benchmarks import harness

#: (case, baseline code, fastio code, check code printed by the fastio side)
CASES = (
    ("start", "pass", "import fastio; fastio.install()",
     "import fastio, sys; fastio.install(); "
     "print(fastio.installed() and 'selectors' not in sys.modules)"),
    ("start + import asyncio", "import asyncio",
     "import fastio; fastio.install(); import asyncio",
     "import fastio; fastio.install(); import asyncio, selectors; "
     "print(selectors.DefaultSelector.__module__ == 'fastio.selectors')"),
)
#: The target: fastio adds at most this much to a bare interpreter start.
TARGET_MS = 5.0
PROFILES = {"quick": 15, "default": 41, "full": 101}


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(harness.REPO_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _time(code, env):
    """Return the wall-clock seconds of one `python -c code` run."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=harness.REPO_DIR)
    return time.perf_counter() - t0


def _check(code, env):
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=harness.REPO_DIR)
    if proc.returncode != 0 or proc.stdout.strip() != "True":
        return "check failed: %r -> rc %d, %r %r" % (code, proc.returncode, proc.stdout, proc.stderr[-500:])
    return None


def run(config):
    """Time each case's pairs of interpreter starts; return JSON-able results."""
    profile = getattr(config, "profile", "default")
    pairs = getattr(config, "repeats", None) or PROFILES.get(profile, PROFILES["default"])
    env = _env()
    errors = [e for e in (_check(case[3], env) for case in CASES) if e]
    cases = {}
    with harness.pinned(1) as cpu:
        machine = harness.machine_info()
        if not errors:
            for name, base, fast, _check_code in CASES:
                _time(base, env), _time(fast, env)  # warm the caches (pyc, page cache)
                bases, fasts, diffs = [], [], []
                for i in range(pairs):
                    if i % 2:
                        f = _time(fast, env)
                        b = _time(base, env)
                    else:
                        b = _time(base, env)
                        f = _time(fast, env)
                    bases.append(b * 1e9)
                    fasts.append(f * 1e9)
                    diffs.append((f - b) * 1e9)
                cases[name] = {
                    "baseline": harness.summarize(bases),
                    "fastio": harness.summarize(fasts),
                    "added_ns": round(statistics.median(diffs), 2),
                    "baseline_code": base,
                    "fastio_code": fast,
                }
    return {
        "suite": "import",
        "machine": machine,
        "config": {"pairs": pairs, "pinned_cpu": cpu, "profile": profile, "target_ms": TARGET_MS},
        "cases": cases,
        "errors": errors,
    }


def to_markdown(result):
    """Render the results as a Markdown report (target first)."""
    cases = result["cases"]
    lines = [
        "# fastio import cost",
        "",
        harness.machine_line(result["machine"], result["config"]["pinned_cpu"]),
        "",
    ]
    if result.get("errors"):
        lines += ["**Correctness failure, no timings:**", ""] + ["- %s" % e for e in result["errors"]]
        return "\n".join(lines)
    start = cases["start"]["added_ns"] / 1e6
    lines += [
        "Target: `import fastio; fastio.install()` adds <= %.1f ms to interpreter start: "
        "%.2f ms, %s." % (TARGET_MS, start, "PASS" if start <= TARGET_MS else "**FAIL**"),
        "",
        "Wall-clock time of a fresh `python -c CODE`, median (min–max) over %d pairs run back "
        "to back; added = median of the per-pair differences." % result["config"]["pairs"],
        "",
        "| case | baseline code | baseline | with fastio | added |",
        "|---|---|---:|---:|---:|",
    ]
    for name, c in cases.items():
        lines.append("| %s | `%s` | %s | %s | %.2f ms |" % (
            name, c["baseline_code"], harness.format_spread(c["baseline"]),
            harness.format_spread(c["fastio"]), c["added_ns"] / 1e6))
    lines += [
        "",
        "install() imports neither `selectors` nor the modules that capture a selector class "
        "(subprocess, socketserver, multiprocessing.connection): an import hook rebinds them "
        "when the program imports them. The second row is what a program that uses them pays.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(to_markdown(run(harness.Config())))
