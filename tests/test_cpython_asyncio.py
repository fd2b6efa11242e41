"""CPython's own asyncio test modules, unmodified, on fastio's event loop.

`cpython_asyncio_suite` runs each module of the interpreter's
`test.test_asyncio` (events, base_events, sock_lowlevel, server, streams,
ssl, sslproto, subprocess, buffered_proto, sendfile, tasks, futures,
taskgroups, timeouts, unix_events) in its own subprocess with fastio's loop
as asyncio's default and as every loop class the suites build, two modules at
a time; the tests that fail there are rerun on asyncio's stock loop. fastio
may fail only what stock fails too. About 40 s of wall time on two cores.

`make cpython-asyncio PY=...` runs the same comparison (with a full stock
pass) on other interpreters and writes the counts table.
"""

import sys

import pytest

import fastio

import cpython_asyncio_suite as suite
from cpython_tests import has_test_module, subprocess_env

HAS_ASYNCIO_TESTS = has_test_module("test.test_asyncio")

pytestmark = [
    pytest.mark.skipif(not HAS_ASYNCIO_TESTS,
                       reason="this interpreter ships without the `test` package (test.test_asyncio)"),
    # The first test pays for the whole comparison (module-scoped fixture).
    pytest.mark.timeout(suite.MODULE_TIMEOUT * 2),
]

SKIPPED, MODULES = suite.available_modules() if HAS_ASYNCIO_TESTS else ({}, [])


@pytest.fixture(scope="module")
def report():
    """Compare every available module, fastio first, failures rerun on stock."""
    return suite.compare(MODULES, jobs=2, env=subprocess_env())


def _expected_loop_class():
    loop_cls, _ = suite.fastio_loop_classes()
    return "%s.%s" % (loop_cls.__module__, loop_cls.__qualname__)


@pytest.mark.parametrize("module", MODULES)
def test_module_ran_on_fastio(report, module):
    run = report["modules"][module]["fastio"]
    assert not run.get("crashed"), "the fastio run of %s died:\n%s" % (module, run.get("stderr_tail"))
    assert run["tests_run"] > 0
    assert run["fastio_implementation"] == fastio.IMPLEMENTATION


@pytest.mark.parametrize("module", MODULES)
def test_loop_under_test_is_fastio(report, module):
    run = report["modules"][module]["fastio"]
    expected = _expected_loop_class().replace("cpython_asyncio_suite.", "__main__.")
    # Every door the suites build loops through gives fastio's class ...
    for door in ("asyncio.new_event_loop", "asyncio.SelectorEventLoop"):
        assert run["probes"][door] == expected, (door, run["probes"])
        # ... and, while fastio.EventLoop is absent, a selector loop over fastio's selector.
        if door + " selector" in run["probes"]:
            assert run["probes"][door + " selector"].startswith("fastio."), run["probes"]
    if getattr(fastio, "EventLoop", None) is not None:
        assert run["loop_is_fastio_event_loop"]


def test_suites_built_fastio_loops(report):
    # Proof the patching reached the tests, not just the probes: loops built
    # through fastio's policy and through the test classes' loop factories.
    built = {name: report["modules"][name]["fastio"]["counts"] for name in MODULES}
    assert sum(c["policy"] for c in built.values()) > 100, built
    assert sum(c["test_case"] for c in built.values()) > 100, built
    for name in ("test_events", "test_sock_lowlevel", "test_sendfile", "test_server"):
        if name in built:
            assert built[name]["test_case"] > 0, (name, built[name])
    for name in ("test_streams", "test_tasks", "test_taskgroups", "test_subprocess"):
        if name in built:
            assert built[name]["policy"] > 0, (name, built[name])


@pytest.mark.parametrize("module", MODULES)
def test_fastio_fails_only_what_stock_fails(report, module):
    pair = report["modules"][module]
    details = pair["fastio"]["details"]
    only = sorted(suite.regressions(pair))
    assert only == [], "fail on fastio, pass on stock:\n" + "\n".join(
        "%s\n%s" % (test_id, details.get(test_id, "")) for test_id in only)


def test_every_listed_module_is_accounted_for():
    assert set(MODULES) | set(SKIPPED) == set(suite.MODULES)
    if sys.version_info >= (3, 11):
        assert {"test_taskgroups", "test_timeouts", "test_ssl"} <= set(MODULES)


def test_regressions_are_what_fails_on_fastio_but_not_on_stock():
    pair = {
        "fastio": {"outcomes": {"a": "failed", "b": "error", "c": "passed", "d": "unexpected-success"}},
        "stock": {"outcomes": {"a": "failed", "b": "passed", "d": "unexpected-success"}},
    }
    assert suite.regressions(pair) == {"b"}
    assert suite.regressions({"fastio": {"outcomes": {"a": "failed"}}, "stock": None}) == {"a"}
    assert suite.regressions({"fastio": {"crashed": True, "outcomes": {}}, "stock": None})


#: The modules that drive socket transports, servers, TLS and sendfile.
URING_MODULES = [m for m in ("test_events", "test_streams", "test_sslproto", "test_ssl", "test_sendfile",
                             "test_buffered_proto", "test_server", "test_sock_lowlevel") if m in MODULES]


@pytest.fixture(scope="module")
def uring_report():
    """The transport modules on fastio.EventLoop(backend="io_uring"), failures rerun on stock."""
    from loop_fixtures import uring_unavailable

    why = uring_unavailable()
    if why is not None:
        pytest.skip("io_uring unavailable: %s" % why)
    return suite.compare(URING_MODULES, jobs=2, env=subprocess_env(), loop="fastio-io_uring")


@pytest.mark.parametrize("module", URING_MODULES)
def test_module_on_io_uring_fails_only_where_stock_fails(uring_report, module):
    pair = uring_report["modules"][module]
    run = pair["fastio"]
    assert not run.get("crashed"), "the io_uring run of %s died:\n%s" % (module, run.get("stderr_tail"))
    assert run["tests_run"] > 0
    # The suites really ran on completion transports.
    assert run["probes"]["asyncio.new_event_loop completion transports"], run["probes"]
    assert not suite.regressions(pair), sorted(suite.regressions(pair))
