"""Differential test: fastio's selectors against the stdlib's, side by side.

A hypothesis state machine drives one random sequence of operations on a
fastio selector and a stdlib selector of the same backend, over one pool of
sockets (socketpairs, some with pending data, some later shut down or closed
and replaced), a regular file, and a few bad file objects. Every operation's
outcome must match: results compared as keys (fileobj identity, fd, events,
data identity) and select() as a multiset of (key, events) -- the order of
ready events is not part of the contract -- and failures by exception type
(and errno for OSError).

Each backend runs on both of fastio's implementations ("c" and "py", see
tests/implementations.py), twice: with the selectors kept open, and with `close()` in
the mix (use after close is where implementations tend to differ, so it gets
its own machine and does not hide other differences).
"""

import itertools
import selectors
import socket
import tempfile
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import implementations
from conftest import STDLIB_CLASSES

R = selectors.EVENT_READ
W = selectors.EVENT_WRITE

PAIRS = 2  # socket slots 0..3; slot 2j and 2j+1 are a connected pair

ODD_EVENTS = [0, 4, -1, 1 << 70, True, 1.0, None, "1"]
EVENTS = st.sampled_from([R, W, R | W, R, W, R | W] + ODD_EVENTS)


class NoFileno:
    def __repr__(self):
        return "<NoFileno>"


class FilenoRaises:
    def fileno(self):
        raise OSError("fileno failed")


BAD_FILEOBJS = [-5, 10**6, 2**31, NoFileno(), FilenoRaises()]

DATA = st.sampled_from([None, "d1", "d2", 7])

# ("sock", slot, by_fd) | ("file", by_fd) | ("bad", index). Sockets are drawn
# most often, so that calls keep landing on what is already registered.
_SOCK_TARGETS = [("sock", slot, by_fd) for slot in range(2 * PAIRS) for by_fd in (False, True)]
TARGETS = st.sampled_from(
    _SOCK_TARGETS * 3
    + [("file", False), ("file", True)]
    + [("bad", i) for i in range(len(BAD_FILEOBJS))]
)


def outcome(call):
    """Run `call`; return ("ok", value) or ("raise", type, errno)."""
    try:
        return ("ok", call())
    except Exception as exc:  # noqa: BLE001 - comparing what is raised
        return ("raise", type(exc), getattr(exc, "errno", None))


def describe_key(key):
    if not isinstance(key, selectors.SelectorKey):
        return ("not-a-key", type(key).__name__, key if key is None else None)
    return (id(key.fileobj), key.fd, describe_events(key.events), id(key.data))


def describe_events(events):
    # 2 and 2.0 compare equal, but a key holding 2.0 makes the stdlib's
    # select() raise TypeError later: keep the type. bool is an int for every
    # use a selector makes of it, so True and 1 are the same here.
    if type(events) is bool:
        events = int(events)
    return (type(events).__name__, events)


def describe_ready(ready):
    return Counter((describe_key(key), events) for key, events in ready)


class SelectorComparison(RuleBasedStateMachine):
    """Drive a fastio and a stdlib selector of `backend` with the same calls."""

    impl = None
    backend = None
    allow_close = False

    def __init__(self):
        super().__init__()
        self.fast = implementations.selector_classes(self.impl)[self.backend]()
        self.ref = STDLIB_CLASSES[self.backend]()
        self.fast_map0 = self.fast.get_map()  # maps taken before any close()
        self.ref_map0 = self.ref.get_map()
        self.everything = []  # every socket ever made, closed in teardown
        self.slots = [None] * (2 * PAIRS)
        for j in range(PAIRS):
            self._new_pair(j)
        self.slots[0].send(b"pending")  # slot 1 starts readable
        self.slots[2].send(b"pending")  # slot 3 too
        self.file = tempfile.TemporaryFile()
        self.closed = False

    def _new_pair(self, j):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        self.slots[2 * j], self.slots[2 * j + 1] = a, b
        self.everything.extend((a, b))

    def teardown(self):
        self.fast.close()
        self.ref.close()
        for sock in self.everything:
            sock.close()
        self.file.close()

    def resolve(self, where):
        kind = where[0]
        if kind == "sock":
            sock = self.slots[where[1]]
            return sock.fileno() if where[2] else sock
        if kind == "file":
            return self.file.fileno() if where[1] else self.file
        return BAD_FILEOBJS[where[1]]

    def same(self, what, fast, ref, describe=lambda v: v):
        if fast[0] == "ok":
            fast = ("ok", describe(fast[1]))
        if ref[0] == "ok":
            ref = ("ok", describe(ref[1]))
        assert fast == ref, "%s: fastio %r != stdlib %r" % (what, fast, ref)

    def both(self, what, op, describe=lambda v: v):
        fast = outcome(lambda: op(self.fast))
        ref = outcome(lambda: op(self.ref))
        self.same(what, fast, ref, describe)

    # --- registration ------------------------------------------------------

    @initialize(events=st.sampled_from([R, W, R | W]), data=DATA)
    def register_some(self, events, data):
        # Start with registrations so that modify/unregister have work to do.
        for slot in (0, 1):
            obj = self.slots[slot]
            self.both("register(%r, %r)" % (obj, events),
                      lambda s: s.register(obj, events, data), describe_key)

    @rule(where=TARGETS, events=EVENTS, data=DATA)
    def register(self, where, events, data):
        obj = self.resolve(where)
        self.both("register(%r, %r)" % (obj, events),
                  lambda s: s.register(obj, events, data), describe_key)

    @rule(where=TARGETS, events=EVENTS, data=DATA)
    def modify(self, where, events, data):
        obj = self.resolve(where)
        self.both("modify(%r, %r)" % (obj, events),
                  lambda s: s.modify(obj, events, data), describe_key)

    @rule(where=TARGETS, data=DATA)
    def modify_data_only(self, where, data):
        obj = self.resolve(where)
        current = outcome(lambda: self.ref.get_key(obj))
        events = current[1].events if current[0] == "ok" else R
        self.both("modify(%r, %r) data only" % (obj, events),
                  lambda s: s.modify(obj, events, data), describe_key)

    @rule(where=TARGETS)
    def unregister(self, where):
        obj = self.resolve(where)
        self.both("unregister(%r)" % (obj,), lambda s: s.unregister(obj), describe_key)

    # --- lookups -------------------------------------------------------------

    @rule(where=TARGETS)
    def get_key(self, where):
        obj = self.resolve(where)
        self.both("get_key(%r)" % (obj,), lambda s: s.get_key(obj), describe_key)

    @rule(where=TARGETS, fresh=st.booleans())
    def map_lookups(self, where, fresh):
        obj = self.resolve(where)
        if fresh:
            fast_map = outcome(self.fast.get_map)
            ref_map = outcome(self.ref.get_map)
            self.same("get_map()", fast_map, ref_map, lambda m: type(m) is type(None))
            if fast_map[0] != "ok":
                return
            fast_map, ref_map = fast_map[1], ref_map[1]
        else:
            fast_map, ref_map = self.fast_map0, self.ref_map0

        def check(what, op, describe=lambda v: v):
            self.same(what, outcome(lambda: op(fast_map)), outcome(lambda: op(ref_map)), describe)

        check("map[%r]" % (obj,), lambda m: m[obj], describe_key)
        check("%r in map" % (obj,), lambda m: obj in m)
        check("map.get(%r)" % (obj,), lambda m: m.get(obj),
              lambda k: None if k is None else describe_key(k))
        check("len(map)", len)
        check("bool(map)", bool)
        check("sorted(map)", sorted)
        check("map.values()", lambda m: Counter(describe_key(k) for k in m.values()))

    @invariant()
    def registrations_agree(self):
        # After every step, not only when a rule happens to look: a failed
        # call that leaves a different map shows up at once.
        def registrations(sel):
            mapping = sel.get_map()
            if mapping is None:
                return None
            return Counter(describe_key(k) for k in mapping.values())

        self.same("registrations", outcome(lambda: registrations(self.fast)),
                  outcome(lambda: registrations(self.ref)))

    # --- waiting -------------------------------------------------------------

    @rule()
    def select_now(self):
        self.both("select(0)", lambda s: s.select(0), describe_ready)

    @precondition(lambda self: hasattr(self.fast, "select_fds"))
    @rule()
    def select_fds_now(self):
        fast = outcome(lambda: Counter(self.fast.select_fds(0)))
        ref = outcome(lambda: Counter((k.fd, ev) for k, ev in self.ref.select(0)))
        if ref[:2] == ("raise", TypeError):
            # Only a key holding non-int events (the stdlib's modify() stores
            # e.g. 1.0 as given) makes select() raise TypeError, when it masks
            # with key.events; select_fds() builds no keys and need not.
            return
        self.same("select_fds(0)", fast, ref)

    # --- the world changes under the selectors -------------------------------

    @rule(slot=st.integers(0, 2 * PAIRS - 1))
    def send(self, slot):
        try:
            self.slots[slot].send(b"x")
        except OSError:
            pass  # closed or peer gone: the same for both selectors

    @rule(slot=st.integers(0, 2 * PAIRS - 1))
    def drain(self, slot):
        try:
            while self.slots[slot].recv(65536):
                pass
        except OSError:
            pass

    @rule(slot=st.integers(0, 2 * PAIRS - 1))
    def shutdown_write(self, slot):
        try:
            self.slots[slot].shutdown(socket.SHUT_WR)
        except OSError:
            pass

    @rule(slot=st.integers(0, 2 * PAIRS - 1))
    def close_socket(self, slot):
        self.slots[slot].close()

    @rule(pair=st.integers(0, PAIRS - 1))
    def replace_pair(self, pair):
        # New sockets are likely to reuse the numbers of closed ones.
        self._new_pair(pair)

    @precondition(lambda self: self.allow_close)
    @rule()
    def close_selectors(self):
        self.both("close()", lambda s: s.close())
        self.closed = True


SETTINGS = settings(
    max_examples=75,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _machine(impl, backend, allow_close):
    name = "%s%sComparison" % (backend.capitalize(), "Close" if allow_close else "")
    return type(name, (SelectorComparison,), {"impl": impl, "backend": backend,
                                              "allow_close": allow_close})


def _fastio_class(impl, backend):
    try:
        return implementations.selector_classes(impl)[backend]
    except pytest.skip.Exception:  # "c" where the extension is not built
        return None


# One TestCase per implementation, backend and close mode:
# TestCEpollDifferential, TestPyPollDifferentialWithClose...
for _impl in implementations.IMPLEMENTATIONS:
    for _backend in ("epoll", "poll", "select"):
        for _close in (False, True):
            _name = "Test%s%sDifferential%s" % (_impl.capitalize(), _backend.capitalize(),
                                                "WithClose" if _close else "")
            _case = type(_name, (_machine(_impl, _backend, _close).TestCase,), {"settings": SETTINGS})
            if _fastio_class(_impl, _backend) is None or STDLIB_CLASSES[_backend] is None:
                _case = pytest.mark.skip(reason="no %s %s selector here" % (_impl, _backend))(_case)
            globals()[_name] = _case
del _impl, _backend, _close, _name, _case


def test_fastio_and_stdlib_share_one_world():
    # Sanity of the harness: the two sides are different classes of the same
    # backend, so a passing machine is a comparison, not a tautology.
    for backend, impl in itertools.product(("epoll", "poll", "select"),
                                           implementations.IMPLEMENTATIONS):
        fast, ref = _fastio_class(impl, backend), STDLIB_CLASSES[backend]
        if fast is None or ref is None:
            continue
        assert fast is not ref
        assert fast.__module__.startswith("fastio")
        assert ref.__module__ == "selectors"
