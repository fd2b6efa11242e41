"""Run CPython's own asyncio test modules on fastio's event loop and on asyncio's.

    python tests/cpython_asyncio_suite.py run MODULE --loop fastio|fastio-io_uring|stock [--ids FILE]
    python tests/cpython_asyncio_suite.py compare [--jobs N] [--full-stock] [--markdown F] [--json F] [MODULE ...]

`run` executes one module of the interpreter's `test.test_asyncio` package in
this process and prints one ``@@RESULT@@{json}`` line: every test id with its
outcome, plus which loop class the suite really got. `compare` runs each
module in its own subprocess on fastio's loop, then reruns only the tests that
failed or errored there on asyncio's stock loop (the full stock pass would
double the wall time for no information: a test that passes on fastio needs no
reference), and prints per-module counts as a Markdown table. The test
`tests/test_cpython_asyncio.py` and `make cpython-asyncio PY=...` drive it.

How the suites are pointed at fastio (`--loop fastio`):

* asyncio's default policy becomes fastio's (`asyncio.set_event_loop_policy`),
  so ``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner`` and
  ``unittest.IsolatedAsyncioTestCase`` all build fastio loops;
* the names the suites construct directly are rebound to fastio's classes:
  ``asyncio.SelectorEventLoop`` (and ``asyncio.unix_events``' alias),
  ``asyncio.DefaultEventLoopPolicy``;
* every concrete test class's ``create_event_loop()`` (the loop mixins of
  test_events, test_sock_lowlevel, test_sendfile, ...) returns a fastio loop,
  whatever selector the stock variant passes (EPoll/Poll/Select variants all
  run fastio's loop then).

Tests that build `test_utils.TestLoop` or `BaseEventLoop` directly test
asyncio's own base class; they run unchanged on both sides.

This file is run by path with the interpreter under test and imports only the
standard library and fastio.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

#: test.test_asyncio modules to run, with the first Python that has them.
MODULES = {
    "test_events": (3, 9),
    "test_base_events": (3, 9),
    "test_sock_lowlevel": (3, 9),
    "test_server": (3, 9),
    "test_streams": (3, 9),
    "test_ssl": (3, 11),
    "test_sslproto": (3, 9),
    "test_subprocess": (3, 9),
    "test_buffered_proto": (3, 9),
    "test_sendfile": (3, 9),
    "test_tasks": (3, 9),
    "test_futures": (3, 9),
    "test_taskgroups": (3, 11),
    "test_timeouts": (3, 11),
    "test_unix_events": (3, 9),
}

#: Roughly slowest first, so two workers finish close together.
ORDER = ("test_events", "test_tasks", "test_ssl", "test_subprocess", "test_base_events", "test_sslproto",
         "test_sendfile", "test_streams", "test_sock_lowlevel", "test_unix_events", "test_futures",
         "test_server", "test_taskgroups", "test_timeouts", "test_buffered_proto")

RESULT_MARK = "@@RESULT@@"
BAD = ("failed", "error", "unexpected-success")
MODULE_TIMEOUT = 900  # seconds; a hung module is reported, not waited on forever


# --- fastio's loop, with or without fastio.EventLoop -----------------------------------


def fastio_loop_classes(uring=False):
    """Return (loop class, policy class) of fastio's asyncio loop.

    `fastio.EventLoop` / `fastio.EventLoopPolicy` where fastio has them; else
    asyncio's SelectorEventLoop over fastio's selectors (what
    `fastio.new_event_loop()` returns) and a policy that builds it. With
    `uring`: `fastio.EventLoop(backend="io_uring")` (completion transports)
    unless given a selector.
    """
    import asyncio

    import fastio

    if uring:
        class UringEventLoop(fastio.EventLoop):
            """fastio.EventLoop on io_uring unless given a selector."""

            def __init__(self, selector=None):
                if selector is None:
                    super().__init__(backend="io_uring")
                else:
                    super().__init__(selector)

        class UringEventLoopPolicy(fastio.EventLoopPolicy):
            """fastio's policy, building `UringEventLoop`."""

            _loop_factory = UringEventLoop

            def new_event_loop(self):
                return UringEventLoop()

        for cls in (UringEventLoop, UringEventLoopPolicy):
            cls.__module__ = __name__
        return UringEventLoop, UringEventLoopPolicy

    loop_cls = getattr(fastio, "EventLoop", None)
    policy_cls = getattr(fastio, "EventLoopPolicy", None)
    if loop_cls is not None and policy_cls is not None:
        return loop_cls, policy_cls
    stock_loop = asyncio.SelectorEventLoop
    # One source of truth for the selector: the one fastio.new_event_loop() picks.
    probe = fastio.new_event_loop()
    default_selector = type(probe._selector)
    probe.close()

    class FastioSelectorEventLoop(stock_loop):
        """asyncio's SelectorEventLoop over fastio's default selector unless given one."""

        def __init__(self, selector=None):
            super().__init__(default_selector() if selector is None else selector)

    FastioSelectorEventLoop.__module__ = __name__
    FastioSelectorEventLoop.__qualname__ = "FastioSelectorEventLoop"

    class FastioEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
        """asyncio's default policy, building `FastioSelectorEventLoop`."""

        _loop_factory = FastioSelectorEventLoop

    return FastioSelectorEventLoop, FastioEventLoopPolicy


# --- one module in this process ---------------------------------------------------------


class Recorder(unittest.TestResult):
    """Record every test's outcome (and the traceback of failures) by test id."""

    def __init__(self):
        super().__init__()
        self.outcomes, self.details = {}, {}

    def _set(self, test, outcome, detail=None):
        self.outcomes[test.id()] = outcome
        if detail is not None:
            self.details[test.id()] = detail[-3000:]

    def addSuccess(self, test):
        super().addSuccess(test)
        self._set(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, "failed", self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, "error", self.errors[-1][1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set(test, "skipped", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set(test, "expected-failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, "unexpected-success")

    def addSubTest(self, test, subtest, err):
        # A failed subtest fails its test; passing subtests leave it to addSuccess.
        super().addSubTest(test, subtest, err)
        if err is not None:
            bad = self.failures if issubclass(err[0], test.failureException) else self.errors
            self._set(test, "failed" if bad is self.failures else "error", bad[-1][1])


def _point_at_fastio(module, uring=False):
    """Make asyncio and `module` build fastio's loop; return a dict of probes and counters."""
    import asyncio
    import asyncio.unix_events as unix_events

    loop_cls, policy_cls = fastio_loop_classes(uring)
    counts = {"policy": 0, "test_case": 0}  # fastio loops built through each door

    class CountingPolicy(policy_cls):
        """fastio's policy, counting the loops it builds (proof the suite used it)."""

        def new_event_loop(self):
            counts["policy"] += 1
            return super().new_event_loop()

    def create_event_loop(self):
        counts["test_case"] += 1
        return loop_cls()

    asyncio.SelectorEventLoop = unix_events.SelectorEventLoop = loop_cls
    asyncio.DefaultEventLoopPolicy = unix_events.DefaultEventLoopPolicy = CountingPolicy
    asyncio.set_event_loop_policy(CountingPolicy())
    patched = []
    for name, obj in vars(module).items():
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase):
            # test_events & co. build loops in create_event_loop(); test_server,
            # test_buffered_proto and test_sslproto in new_loop().
            for method in ("create_event_loop", "new_loop"):
                if hasattr(obj, method):
                    setattr(obj, method, create_event_loop)
                    patched.append("%s.%s" % (name, method))

    # The loop under test really is fastio's: built through each door the suites use.
    probes = {}
    for door, make in (("asyncio.new_event_loop", asyncio.new_event_loop),
                       ("asyncio.SelectorEventLoop", asyncio.SelectorEventLoop)):
        loop = make()
        probes[door] = "%s.%s" % (type(loop).__module__, type(loop).__qualname__)
        if uring:
            probes[door + " completion transports"] = getattr(loop, "_uring", None) is not None
        selector = getattr(loop, "_selector", None)
        if selector is not None:
            probes[door + " selector"] = "%s.%s" % (type(selector).__module__, type(selector).__qualname__)
        loop.close()
    counts["policy"] = 0
    import fastio

    return {
        "fastio_implementation": fastio.IMPLEMENTATION,
        "loop_class": "%s.%s" % (loop_cls.__module__, loop_cls.__qualname__),
        "loop_is_fastio_event_loop": loop_cls.__module__.startswith("fastio"),
        "probes": probes,
        "patched_classes": sorted(patched),
        "counts": counts,
    }


def run_module(name, loop, ids=None):
    """Run test.test_asyncio.<name> (only `ids` if given) on `loop`; return the result dict."""
    import importlib

    module = importlib.import_module("test.test_asyncio." + name)
    info = _point_at_fastio(module, loop == "fastio-io_uring") if loop != "stock" else {}
    loader = unittest.TestLoader()
    suite = loader.loadTestsFromNames(ids) if ids is not None else loader.loadTestsFromModule(module)
    result = Recorder()
    started = time.monotonic()
    suite.run(result)
    return dict(info, module=name, loop=loop, python=sys.version.split()[0], tests_run=result.testsRun,
                seconds=round(time.monotonic() - started, 1), outcomes=result.outcomes, details=result.details)


# --- driving subprocesses -----------------------------------------------------------------


def available_modules(names=None):
    """Return ({module: reason it is skipped}, [modules to run]) for this interpreter."""
    import importlib.util

    skipped, todo = {}, []
    for name in names or ORDER:
        if name not in MODULES:
            raise ValueError("unknown module %r (known: %s)" % (name, ", ".join(MODULES)))
        if sys.version_info[:2] < MODULES[name]:
            skipped[name] = "added in Python %d.%d" % MODULES[name]
            continue
        try:
            found = importlib.util.find_spec("test.test_asyncio." + name) is not None
        except ImportError:
            found = False
        if not found:
            skipped[name] = "not in this interpreter's test package"
            continue
        todo.append(name)
    return skipped, todo


def run_subprocess(name, loop, ids=None, python=sys.executable, env=None):
    """Run one module in a fresh interpreter; return its result dict (or a crash description)."""
    argv = [python, os.path.abspath(__file__), "run", name, "--loop", loop]
    ids_file = None
    if ids is not None:
        ids_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(sorted(ids), ids_file)
        ids_file.close()
        argv += ["--ids", ids_file.name]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=MODULE_TIMEOUT, env=env,
                              stdin=subprocess.DEVNULL)
        out, err, rc = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err, rc = "timed out after %d s" % MODULE_TIMEOUT, None
    finally:
        if ids_file is not None:
            os.unlink(ids_file.name)
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)]
    if rc != 0 or not lines:
        return {"module": name, "loop": loop, "crashed": True, "returncode": rc,
                "stderr_tail": err[-4000:], "seconds": round(time.monotonic() - started, 1),
                "outcomes": {}, "details": {}, "tests_run": 0}
    result = json.loads(lines[-1][len(RESULT_MARK):])
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def compare_module(name, full_stock=False, python=sys.executable, env=None, loop="fastio"):
    """Run `name` on fastio (`loop`: "fastio" or "fastio-io_uring"), then on
    stock (only fastio's failures unless `full_stock`).

    Returns {"fastio": result, "stock": result or None}.
    """
    fastio_run = run_subprocess(name, loop, python=python, env=env)
    bad = sorted(t for t, o in fastio_run["outcomes"].items() if o in BAD)
    stock_run = None
    if full_stock or fastio_run.get("crashed"):
        stock_run = run_subprocess(name, "stock", python=python, env=env)
    elif bad:
        # Module/class fixture errors ("setUpModule (test.test_asyncio...)")
        # have no id to load: then the whole module reruns on stock.
        fixture = any(" (" in t for t in bad)
        stock_run = run_subprocess(name, "stock", None if fixture else bad, python=python, env=env)
    return {"fastio": fastio_run, "stock": stock_run}


def compare(names=None, jobs=2, full_stock=False, python=sys.executable, env=None, loop="fastio"):
    """Compare every module in `names` (default: all available here), `jobs` modules at a time."""
    skipped, todo = available_modules(names)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        runs = dict(zip(todo, pool.map(lambda n: compare_module(n, full_stock, python, env, loop), todo)))
    return {"python": sys.version.split()[0], "skipped": skipped, "modules": runs, "jobs": jobs,
            "full_stock": full_stock, "wall_seconds": round(time.monotonic() - started, 1)}


def bad_ids(run):
    """Return the ids of a run's failures, errors and unexpected successes."""
    return {t for t, o in (run or {}).get("outcomes", {}).items() if o in BAD}


def counts(run):
    """Count a run's outcomes: passed, failed (failures + errors + unexpected successes), skipped."""
    out = {"passed": 0, "failed": 0, "skipped": 0, "expected-failure": 0}
    for outcome in (run or {}).get("outcomes", {}).values():
        key = "failed" if outcome in BAD else outcome
        out[key] = out.get(key, 0) + 1
    return out


def regressions(pair):
    """Return the ids that failed on fastio but not on stock (empty when fastio's set is within stock's)."""
    if pair["fastio"].get("crashed"):
        return {"(the fastio run crashed)"}
    return bad_ids(pair["fastio"]) - bad_ids(pair["stock"])


def to_markdown(report):
    """Render a compare() report as a Markdown table, one row per module."""
    modules = report["modules"]
    first = next(iter(modules.values()), {"fastio": {}})["fastio"]
    full = report["full_stock"]
    lines = [
        "# CPython's asyncio test suites on fastio's loop",
        "",
        "Python %s · loop under test: `%s` (fastio %s) · %d modules at a time, %.0f s wall time in all." % (
            report["python"], first.get("loop_class", "?"), first.get("fastio_implementation", "?"),
            report["jobs"], report["wall_seconds"]),
        "",
        ("Each module ran in full on fastio's loop and on asyncio's stock loop, each in its own interpreter."
         if full else
         "Each module ran in full on fastio's loop, each in its own interpreter; the tests that failed there "
         "were rerun on asyncio's stock loop."),
        "Failed counts failures, errors and unexpected successes. fastio's failing tests must all fail on "
        "stock too.",
        "",
        "| module | tests | fastio passed | fastio failed | stock passed | stock failed | skipped | "
        "fastio-only failures | fastio time | stock time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("tests", "fp", "ff", "sp", "sf", "skipped", "only")
    total = dict.fromkeys(keys, 0)
    for name, pair in modules.items():
        run, stock = pair["fastio"], pair["stock"]
        if run.get("crashed"):
            lines.append("| %s | crashed (exit %s) | | | | | | | %.0f s | |" % (
                name, run["returncode"], run["seconds"]))
            continue
        c = counts(run)
        s = counts(stock) if stock else None
        # Counted from the outcomes: from 3.12 on, testsRun leaves out skipped classes.
        row = {"tests": len(run["outcomes"]), "fp": c["passed"], "ff": c["failed"],
               "sp": s["passed"] if full and s else None,
               "sf": s["failed"] if s else 0 if not c["failed"] else None,
               "skipped": c["skipped"], "only": len(regressions(pair))}
        for key in keys:
            if row[key] is not None:
                total[key] += row[key]
        lines.append("| %s | %s | %s s | %s |" % (
            name, " | ".join("-" if row[k] is None else str(row[k]) for k in keys), "%.0f" % run["seconds"],
            "%.0f s" % stock["seconds"] if stock else "-"))
    lines.append("| **total** | %s | | |" % " | ".join(
        ("-" if k == "sp" and not full else str(total[k])) for k in keys))
    if not full:
        lines += ["", "stock passed: not run (only fastio's failures are rerun on stock; "
                      "`compare --full-stock` runs everything on both)."]
    if report["skipped"]:
        lines += ["", "Not run: " + "; ".join("%s (%s)" % kv for kv in report["skipped"].items()) + "."]
    worse = {name: sorted(regressions(pair)) for name, pair in modules.items() if regressions(pair)}
    if worse:
        lines += ["", "**Failing on fastio only:**", ""]
        lines += ["- %s: %s" % (name, ", ".join(ids)) for name, ids in worse.items()]
    return "\n".join(lines)


def main(argv=None):
    """Parse the command line and run `run` or `compare`; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="run one module in this process")
    one.add_argument("module", choices=list(MODULES))
    one.add_argument("--loop", choices=("fastio", "fastio-io_uring", "stock"), required=True)
    one.add_argument("--ids", help="JSON file listing the test ids to run (default: the whole module)")
    many = sub.add_parser("compare", help="run modules on fastio, their failures on stock")
    many.add_argument("modules", nargs="*", metavar="MODULE")
    many.add_argument("--jobs", type=int, default=2, help="modules run at a time (default: %(default)s)")
    many.add_argument("--full-stock", action="store_true",
                      help="run every test on stock too (default: only those that failed on fastio)")
    many.add_argument("--markdown", help="also write the table to this file")
    many.add_argument("--json", help="also write the full report to this file")
    args = parser.parse_args(argv)
    if args.command == "run":
        ids = None
        if args.ids:
            with open(args.ids) as f:
                ids = json.load(f)
        result = run_module(args.module, args.loop, ids)
        sys.stdout.flush()
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0
    report = compare(args.modules or None, args.jobs, args.full_stock)
    markdown = to_markdown(report)
    print(markdown)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 1 if any(regressions(p) for p in report["modules"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
