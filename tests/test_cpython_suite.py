"""CPython's own test_selectors, unmodified, against both of fastio's implementations.

Subprocesses run the running interpreter's `test.test_selectors`: one after
`fastio.install()` on the compiled core ("fastio-c": every
`selectors.*Selector` the suite reads is fastio's), one with the pure-Python
twin's selectors (fastio._impl.core_py) in their place ("fastio-py"), and one
untouched as the stdlib reference. fastio must have no failure or error, run
as many tests, and skip exactly what the stdlib run skips.

The runs are subprocesses because the suite reads `selectors.*` at import time
and raises RLIMIT_NOFILE (test_above_fd_setsize opens up to 2**16 fds); they
run at once to keep the wall time near one run's (~15 s).
"""

import json
import subprocess
import sys

import pytest

from cpython_tests import PROJECT_ROOT, has_test_module, subprocess_env
from fastio._impl import compiled

RUNNER = r"""
import json, sys, unittest

mode = sys.argv[1]
if mode == "fastio-c":
    import fastio
    assert fastio.IMPLEMENTATION == "cython"
    assert fastio.install() is True
import selectors
if mode == "fastio-py":
    from fastio._impl import core_py
    for name in ("EpollSelector", "PollSelector", "SelectSelector"):
        if hasattr(selectors, name):
            setattr(selectors, name, getattr(core_py, name))
    if hasattr(selectors, "EpollSelector"):
        selectors.DefaultSelector = selectors.EpollSelector
from test import test_selectors as suite_module

if mode != "stdlib":
    names = ("EpollSelector", "PollSelector", "SelectSelector", "DefaultSelector")
    for name in names:
        cls = getattr(selectors, name, None)
        if cls is None:
            continue
        assert cls.__module__.startswith("fastio"), (name, cls, cls.__module__)
    for case in ("DefaultSelectorTestCase", "SelectSelectorTestCase",
                 "PollSelectorTestCase", "EpollSelectorTestCase"):
        cls = getattr(suite_module, case).SELECTOR
        assert cls is None or cls.__module__.startswith("fastio"), (case, cls)


class Recorder(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.outcomes = {}
        self.details = {}

    def _set(self, test, outcome, detail=None):
        self.outcomes[test.id()] = outcome
        if detail is not None:
            self.details[test.id()] = detail

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


suite = unittest.defaultTestLoader.loadTestsFromModule(suite_module)
result = Recorder()
suite.run(result)
print("@@RESULT@@" + json.dumps({
    "tests_run": result.testsRun,
    "outcomes": result.outcomes,
    "details": result.details,
}))
"""

pytestmark = pytest.mark.skipif(
    not has_test_module("test.test_selectors"),
    reason="this interpreter ships without the `test` package (test.test_selectors)",
)


def _start(mode):
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
        cwd=PROJECT_ROOT,
    )


def _collect(proc, mode):
    out, err = proc.communicate(timeout=300)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("@@RESULT@@")]
    assert proc.returncode == 0 and lines, "%s run died (rc=%s):\n%s" % (
        mode,
        proc.returncode,
        err.decode()[-4000:],
    )
    return json.loads(lines[-1][len("@@RESULT@@"):])


@pytest.fixture(scope="module")
def all_runs():
    """Run the suite on each of fastio's implementations and on the stdlib, concurrently."""
    modes = ["fastio-py", "stdlib"]
    if compiled("core") is not None:
        modes.insert(0, "fastio-c")
    procs = {mode: _start(mode) for mode in modes}
    try:
        return {mode: _collect(proc, mode) for mode, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def runs(all_runs, implementation):
    """The stdlib run, and as "fastio" the run on `implementation`'s selectors."""
    return {"stdlib": all_runs["stdlib"], "fastio": all_runs["fastio-" + implementation]}


def _with(run, outcome):
    return {t: run["details"].get(t) for t, o in run["outcomes"].items() if o == outcome}


def test_stdlib_reference_run_is_clean(runs):
    stdlib = runs["stdlib"]
    assert stdlib["tests_run"] > 0
    assert _with(stdlib, "failed") == {} and _with(stdlib, "error") == {}


def test_fastio_run_has_no_failures(runs):
    assert _with(runs["fastio"], "failed") == {}


def test_fastio_run_has_no_errors(runs):
    # setUpModule/tearDownModule errors land here too (as _ErrorHolder ids).
    assert _with(runs["fastio"], "error") == {}


def test_fastio_run_has_no_unexpected_successes(runs):
    assert _with(runs["fastio"], "unexpected-success") == {}


def test_fastio_run_runs_as_many_tests_as_stdlib(runs):
    assert runs["fastio"]["tests_run"] == runs["stdlib"]["tests_run"]
    assert set(runs["fastio"]["outcomes"]) == set(runs["stdlib"]["outcomes"])


def test_fastio_run_skips_exactly_what_stdlib_skips(runs):
    assert _with(runs["fastio"], "skipped") == _with(runs["stdlib"], "skipped")


def test_fastio_run_exercises_the_fd_setsize_tests(runs):
    # test_above_fd_setsize is the no-cap/no-FD_SETSIZE check: it must have
    # run (not skipped) wherever the stdlib run ran it.
    above = {t: o for t, o in runs["stdlib"]["outcomes"].items() if "test_above_fd_setsize" in t}
    assert above, "the CPython suite no longer has test_above_fd_setsize"
    for test_id, outcome in above.items():
        assert runs["fastio"]["outcomes"][test_id] == outcome
