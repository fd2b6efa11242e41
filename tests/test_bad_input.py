"""Bad input: fastio raises what the stdlib raises, and never crashes.

Each case runs the same call on fastio's class and on the stdlib class of the
same backend; the stdlib's outcome is computed live (never hardcoded), so the
tests hold on every Python version whatever that version raises. Compared:
the outcome (exception type, errno for OSError, or the shape of the result)
and the registrations left behind (a failed call must leave the same map).

`test_bad_input_never_crashes_the_interpreter` replays every case on fastio
in a child process: a segfault there is a failed test, not a dead test run.
"""

import decimal
import fractions
import os
import selectors
import signal
import socket
import subprocess
import sys
import warnings

import pytest

R = selectors.EVENT_READ
W = selectors.EVENT_WRITE


class Hung(Exception):
    """A call blocked although the stdlib returns (or raises) at once."""


class FilenoRaises:
    def __init__(self, exc):
        self.exc = exc

    def fileno(self):
        raise self.exc

    def __repr__(self):
        return "<fileno raises %s>" % type(self.exc).__name__


class FilenoReturns:
    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value

    def __repr__(self):
        return "<fileno returns %r>" % (self.value,)


class World:
    """Sockets shared by both sides of a comparison (no case mutates them)."""

    def __init__(self):
        self.rd, self.wr = socket.socketpair()  # wr writable, rd not readable
        self.closed_sock, other = socket.socketpair()
        other.close()
        self.closed_sock.close()

    def close(self):
        self.rd.close()
        self.wr.close()

    def role(self, fd):
        return {self.rd.fileno(): "rd", self.wr.fileno(): "wr"}.get(fd, fd)


# --- the cases ---------------------------------------------------------------

BAD_FILEOBJS = {
    "neg1": lambda w: -1,
    "neg10": lambda w: -10,
    "neg2p63": lambda w: -(2**63),
    "closed_socket": lambda w: w.closed_sock,
    "fd_1e6": lambda w: 10**6,
    "fd_2p31m1": lambda w: 2**31 - 1,
    "fd_2p31": lambda w: 2**31,
    "fd_2p40": lambda w: 2**40,
    "fd_2p64": lambda w: 2**64,
    "float_fd": lambda w: 3.0,
    "str_fd": lambda w: "3",
    "none_fd": lambda w: None,
    "no_fileno": lambda w: object(),
    "fileno_raises_oserror": lambda w: FilenoRaises(OSError("boom")),
    "fileno_raises_valueerror": lambda w: FilenoRaises(ValueError("boom")),
    "fileno_raises_zerodivision": lambda w: FilenoRaises(ZeroDivisionError()),
    "fileno_returns_str": lambda w: FilenoReturns("3"),
    "fileno_returns_none": lambda w: FilenoReturns(None),
    "fileno_returns_float": lambda w: FilenoReturns(3.5),
    "fileno_returns_neg1": lambda w: FilenoReturns(-1),
    "fileno_returns_2p40": lambda w: FilenoReturns(2**40),
}


def _register_then_select(sel, obj):
    try:
        sel.register(obj, R | W)
    except Exception:
        return "register refused"  # compared by the "register" op
    return sel.select(0)


FILEOBJ_OPS = {
    "register": lambda sel, obj: sel.register(obj, R),
    "register_then_select": _register_then_select,
    "unregister": lambda sel, obj: sel.unregister(obj),
    "modify": lambda sel, obj: sel.modify(obj, R),
    "get_key": lambda sel, obj: sel.get_key(obj),
    "map_getitem": lambda sel, obj: sel.get_map()[obj],
    "map_contains": lambda sel, obj: obj in sel.get_map(),
    "map_get": lambda sel, obj: sel.get_map().get(obj),
}

BAD_EVENTS = {
    "0": 0,
    "4": 4,
    "R_or_4": R | 4,
    "neg1": -1,
    "2p70": 1 << 70,
    "2p64": 1 << 64,
    "true": True,
    "false": False,
    "float1": 1.0,
    "float3": 3.0,
    "none": None,
    "str1": "1",
}

TIMEOUTS = {
    "nan": float("nan"),
    "inf": float("inf"),
    "neg_inf": float("-inf"),
    "1e300": 1e300,
    "2p31": 2**31,
    "2p63": 2**63,
    "str": "x",
    "none": None,
    "0": 0,
    "neg1": -1,
    "true": True,
    "tiny": 1e-300,
    # Numbers that are neither float nor int: select.select() refuses them
    # (after SelectSelector's max(timeout, 0)), epoll and poll take them.
    "fraction": fractions.Fraction(1, 10),
    "fraction_0": fractions.Fraction(0),
    "decimal": decimal.Decimal("0.1"),
}
if sys.version_info >= (3, 10):
    # Just past select(2)'s range: rounding the range to a double must not
    # let it through (it wrapped to a negative, endless wait). 3.9's select
    # overflows there itself, to ValueError("timeout must be non-negative").
    TIMEOUTS["past_select_range"] = 9223372036.854776
# With nothing ready, only values the stdlib does not block on (select(2)
# really waits 2**31 s; None and True wait too).
TIMEOUTS_NOTHING_READY = ("nan", "inf", "neg_inf", "1e300", "2p63", "str", "0", "neg1", "tiny",
                          "fraction", "fraction_0", "decimal", "past_select_range")
TIMEOUTS_NOTHING_READY = tuple(name for name in TIMEOUTS_NOTHING_READY if name in TIMEOUTS)


def _select_fds(sel, timeout):
    """fastio's select_fds(); the stdlib reference is the same from select()."""
    if hasattr(sel, "select_fds"):
        return sel.select_fds(timeout)
    return [(key.fd, events) for key, events in sel.select(timeout)]


def _cases():
    cases = {}
    for name, make in BAD_FILEOBJS.items():
        for op_name, op in FILEOBJ_OPS.items():
            cases["%s-%s" % (op_name, name)] = (lambda op, make: lambda sel, w: op(sel, make(w)))(
                op, make
            )
    for name, events in BAD_EVENTS.items():
        cases["register-events-%s" % name] = (lambda ev: lambda sel, w: sel.register(w.rd, ev))(
            events
        )
        for start_name, start in (("R", R), ("RW", R | W)):
            cases["modify-from-%s-events-%s" % (start_name, name)] = (
                lambda ev, start: lambda sel, w: (sel.register(w.rd, start), sel.modify(w.rd, ev))[1]
            )(events, start)
            # Same-valued events with new data: the data-only path.
            cases["modify-newdata-from-%s-events-%s" % (start_name, name)] = (
                lambda ev, start: lambda sel, w: (
                    sel.register(w.rd, start, "old"),
                    sel.modify(w.rd, ev, "new"),
                )[1]
            )(events, start)
    for name, timeout in TIMEOUTS.items():

        def ready(sel, w, timeout=timeout):
            sel.register(w.wr, W)
            return sel.select(timeout)

        def ready_fds(sel, w, timeout=timeout):
            sel.register(w.wr, W)
            return _select_fds(sel, timeout)

        cases["select-ready-timeout-%s" % name] = ready
        cases["select_fds-ready-timeout-%s" % name] = ready_fds
        if name in TIMEOUTS_NOTHING_READY:

            def idle(sel, w, timeout=timeout):
                sel.register(w.rd, R)
                return sel.select(timeout)

            def idle_fds(sel, w, timeout=timeout):
                sel.register(w.rd, R)
                return _select_fds(sel, timeout)

            cases["select-idle-timeout-%s" % name] = idle
            cases["select_fds-idle-timeout-%s" % name] = idle_fds
    cases.update(_after_close_cases())
    return cases


def _closed_then(call):
    """A case: register the pair's ends, close() the selector, then `call`."""

    def case(sel, w):
        sel.register(w.rd, R)
        sel.register(w.wr, W)
        sel.close()
        return call(sel, w)

    return case


def _select_with_fd_closed_after_close(sel, w):
    a, b = socket.socketpair()
    try:
        sel.register(a, R)
        sel.close()
    finally:
        a.close()
        b.close()
    return sel.select(0)


def _after_close_cases():
    # Use after close(): nothing a program should do, so the more reason to
    # fail (or not) the way the stdlib does.
    return {
        "after_close-select": _closed_then(lambda sel, w: sel.select(0)),
        "after_close-select_fds": _closed_then(lambda sel, w: _select_fds(sel, 0)),
        "after_close-register": _closed_then(lambda sel, w: sel.register(w.closed_sock, R)),
        "after_close-register_fd": _closed_then(lambda sel, w: sel.register(10**6, R)),
        "after_close-modify": _closed_then(lambda sel, w: sel.modify(w.rd, W)),
        "after_close-unregister": _closed_then(lambda sel, w: sel.unregister(w.rd)),
        "after_close-get_key": _closed_then(lambda sel, w: sel.get_key(w.rd)),
        "after_close-get_map": _closed_then(lambda sel, w: sel.get_map()),
        "after_close-select-fd-closed": _select_with_fd_closed_after_close,
    }


CASES = _cases()


# --- running a case ----------------------------------------------------------


def _on_alarm(signum, frame):
    raise Hung


def shape(value):
    if isinstance(value, list):
        return ("list", len(value))
    if isinstance(value, selectors.SelectorKey):
        return ("key", value.events)
    return (type(value).__name__, value if isinstance(value, (bool, str, type(None))) else None)


def _events(events):
    # 2 and 2.0 are equal, but a key holding 2.0 makes select() raise later;
    # bool is an int for all a selector does with it.
    return (type(events).__name__ if type(events) is not bool else "int", int(events) if type(events) is bool else events)


def run_case(cls, case, world, guard=2.0):
    """Return (outcome, registrations left) of `case` on a fresh `cls()`."""
    sel = cls()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, guard)
        try:
            result = ("ok",) + shape(case(sel, world))
        except Exception as exc:  # noqa: BLE001 - the type is what we compare
            result = ("raise", type(exc), getattr(exc, "errno", None))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            left = sorted(
                (world.role(k.fd), _events(k.events), k.data) for k in sel.get_map().values()
            )
        except Exception as exc:  # noqa: BLE001
            left = ("get_map raised", type(exc))
        return result, left
    finally:
        signal.signal(signal.SIGALRM, previous)
        sel.close()


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_input_matches_stdlib(case_id, fastio_cls, stdlib_cls, world):
    case = CASES[case_id]
    expected = run_case(stdlib_cls, case, world)
    got = run_case(fastio_cls, case, world)
    assert got[0] == expected[0], "outcome: fastio %r, stdlib %r" % (got[0], expected[0])
    assert got[1] == expected[1], "registrations left: fastio %r, stdlib %r" % (got[1], expected[1])


# --- no crash ----------------------------------------------------------------

CRASH_CHECK = r"""
import sys
import warnings
sys.path.insert(0, sys.argv[1])
import test_bad_input as t
from conftest import FASTIO_CLASSES
world = t.World()
ran = 0
for backend, cls in FASTIO_CLASSES.items():
    if cls is None:
        continue
    for case_id in sorted(t.CASES):
        t.run_case(cls, t.CASES[case_id], world)
        ran += 1
print("survived", ran)
"""


def test_bad_input_never_crashes_the_interpreter():
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    project = os.path.dirname(tests_dir)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_CHECK, tests_dir],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, "child died (rc=%d): %s" % (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split()[:1] == [b"survived"]
    assert int(proc.stdout.split()[1]) >= len(CASES)


def _bool_fd_story(cls):
    # What each step does with a bool for an fd: the warnings it gives (3.13+:
    # "bool is used as a file descriptor") and what it raises, the warning
    # included once warnings are errors; then what is left registered.
    story = []
    sel = cls()
    try:
        for warn in ("always", "error"):
            for step in ("register", "select", "modify", "modify-data", "unregister"):
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter(warn)
                    try:
                        if step == "register":
                            sel.register(False, R)
                        elif step == "select":
                            sel.select(0)
                        elif step == "modify":
                            sel.modify(False, R | W)
                        elif step == "modify-data":
                            sel.modify(False, R | W, "data")
                        else:
                            sel.unregister(False)
                        raised = None
                    except (OSError, KeyError, RuntimeWarning) as exc:
                        raised = type(exc).__name__
                story.append((warn, step, [str(w.message) for w in seen], raised,
                              sorted(sel.get_map())))
    finally:
        sel.close()
    return story


def test_a_bool_for_an_fd_warns_where_the_stdlib_does(fastio_cls, stdlib_cls):
    assert _bool_fd_story(fastio_cls) == _bool_fd_story(stdlib_cls)
