"""The pure-Python fallback (FASTIO_NO_EXTENSIONS=1), in child processes.

The environment is read once, at `import fastio`, so each configuration runs
in its own interpreter. One child runs every probe and reports JSON; each
test asserts one of its results, so one broken behaviour fails one test.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import fastio

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))

PROBES = r"""
import json, selectors, socket, sys

results = {}


def probe(name):
    def run(fn):
        try:
            results[name] = ["ok", fn()]
        except Exception as exc:
            results[name] = ["raise", type(exc).__name__, str(exc)[:200]]
        return fn
    return run


import fastio
import fastio.selectors as fsel

R, W = selectors.EVENT_READ, selectors.EVENT_WRITE


@probe("implementation")
def _():
    return [fastio.IMPLEMENTATION, fsel.IMPLEMENTATION]


@probe("subclasses")
def _():
    return {
        name: issubclass(getattr(fsel, name), getattr(selectors, name))
        for name in ("EpollSelector", "PollSelector", "SelectSelector")
    }


@probe("default_is_epoll")
def _():
    return fsel.DefaultSelector is fsel.EpollSelector


def round_trip(cls):
    a, b = socket.socketpair()
    with a, b, cls() as sel:
        key = sel.register(a, R, "data")
        b.send(b"ping")
        ready = sel.select(1)
        fds = sel.select_fds(0)
        return [
            [[k.fd == a.fileno(), k.data, ev] for k, ev in ready],
            [[fd == a.fileno(), ev] for fd, ev in fds],
            a.recv(10).decode(),
        ]


@probe("round_trip")
def _():
    return {n: round_trip(getattr(fsel, n)) for n in ("EpollSelector", "PollSelector", "SelectSelector")}


@probe("epollet")
def _():
    a, b = socket.socketpair()
    with a, b, fsel.EpollSelector() as sel:
        sel.register(a, R, flags=fsel.EPOLLET)
        b.send(b"x")
        return [len(sel.select(0)), len(sel.select(0))]


@probe("oneshot_rearm")
def _():
    a, b = socket.socketpair()
    with a, b, fsel.EpollSelector() as sel:
        sel.register(a, R, flags=fsel.EPOLLONESHOT)
        b.send(b"x")
        first, second = len(sel.select(0)), len(sel.select(0))
        sel.modify(a, R, flags=fsel.EPOLLONESHOT)
        return [first, second, len(sel.select(0))]


@probe("modify_without_flags_no_rearm")
def _():
    a, b = socket.socketpair()
    with a, b, fsel.EpollSelector() as sel:
        sel.register(a, R, flags=fsel.EPOLLONESHOT)
        b.send(b"x")
        first = len(sel.select(0))
        sel.modify(a, R, "new data")  # flags=None, same events: no syscall
        return [first, len(sel.select(0)), sel.get_key(a).data]


@probe("select_rejects_flags")
def _():
    a, b = socket.socketpair()
    with a, b, fsel.SelectSelector() as sel:
        try:
            sel.register(a, R, flags=fsel.EPOLLET)
        except ValueError:
            return ["ValueError", len(sel.get_map())]
        return ["accepted", len(sel.get_map())]


@probe("installed_round_trip")
def _():
    assert fastio.install() is True
    try:
        return {
            n: round_trip(getattr(selectors, n))
            for n in ("EpollSelector", "PollSelector", "SelectSelector", "DefaultSelector")
        }
    finally:
        fastio.uninstall()


print("@@RESULT@@" + json.dumps(results))
"""


def _env(**overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTIO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PROJECT_ROOT, env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


def _run(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        env=_env(**env),
        cwd=PROJECT_ROOT,
        timeout=60,
    )


@pytest.fixture(scope="module")
def probes():
    proc = _run(PROBES, FASTIO_NO_EXTENSIONS="1")
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("@@RESULT@@")]
    assert proc.returncode == 0 and lines, proc.stderr.decode()[-3000:]
    return json.loads(lines[-1][len("@@RESULT@@"):])


def test_no_extensions_gives_python_implementation(probes):
    assert probes["implementation"] == ["ok", ["python", "python"]]


def test_fallback_classes_subclass_the_stdlib_classes(probes):
    assert probes["subclasses"] == [
        "ok",
        {"EpollSelector": True, "PollSelector": True, "SelectSelector": True},
    ]


def test_fallback_default_selector_is_epoll(probes):
    assert probes["default_is_epoll"] == ["ok", True]


def test_fallback_register_select_round_trip(probes):
    expected = [[[True, "data", 1]], [[True, 1]], "ping"]
    assert probes["round_trip"] == [
        "ok",
        {"EpollSelector": expected, "PollSelector": expected, "SelectSelector": expected},
    ]


def test_fallback_epollet_reports_once(probes):
    assert probes["epollet"] == ["ok", [1, 0]]


def test_fallback_epolloneshot_rearmed_by_modify_with_flags(probes):
    assert probes["oneshot_rearm"] == ["ok", [1, 0, 1]]


def test_fallback_modify_without_flags_does_not_rearm(probes):
    assert probes["modify_without_flags_no_rearm"] == ["ok", [1, 0, "new data"]]


def test_fallback_select_selector_rejects_flags(probes):
    assert probes["select_rejects_flags"] == ["ok", ["ValueError", 0]]


def test_fallback_classes_work_after_install(probes):
    expected = [[[True, "data", 1]], [[True, 1]], "ping"]
    assert probes["installed_round_trip"] == [
        "ok",
        {
            "EpollSelector": expected,
            "PollSelector": expected,
            "SelectSelector": expected,
            "DefaultSelector": expected,
        },
    ]


IMPORT_PROBE = r"""
try:
    import fastio
except ImportError as exc:
    print("ImportError:", exc)
else:
    print("imported:", fastio.IMPLEMENTATION)
"""


def test_no_extensions_plus_require_extensions_fails_import():
    proc = _run(IMPORT_PROBE, FASTIO_NO_EXTENSIONS="1", FASTIO_REQUIRE_EXTENSIONS="1")
    assert proc.stdout.decode().startswith("ImportError:"), proc.stdout + proc.stderr


def test_require_extensions_alone_loads_the_compiled_core():
    if importlib.util.find_spec("fastio._impl.core_c") is None:
        pytest.skip("fastio._impl.core_c is not built for this interpreter")
    proc = _run(IMPORT_PROBE, FASTIO_REQUIRE_EXTENSIONS="1")
    assert proc.stdout.decode().strip() == "imported: cython", proc.stdout + proc.stderr

