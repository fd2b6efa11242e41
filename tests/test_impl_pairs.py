"""Each compiled module of fastio._impl and its pure-Python twin expose the
same public names, with the same signatures.

What one side has and the other has not is listed below with the reason;
anything else that differs fails. Signatures are compared by parameter
names, kinds and defaults (not annotations: the compiled side has none).
Cython methods are introspectable (binding); a compiled constructor is read
from the signature `embedsignature` writes on the class docstring's first
line, and where there is none (a ``__cinit__``) the test calls both
constructors with the same arguments.
"""

import inspect
import re
import socket
import types

import pytest

import implementations

#: pair -> {name: why only the compiled module has it}.
COMPILED_ONLY = {
    "core": {
        "SelectorCore": "fastio.selectors builds its selectors on it; the twin's selectors are "
                        "whole classes (EpollSelector, ...)",
        "FD_SETSIZE": "select(2)'s compile-time limit, which the twin (the stdlib's select) "
                      "does not expose",
        "UringPoller": "io_uring exists compiled only",
    },
    "loop": dict.fromkeys(("UringTransportCore", "UringTransport", "UringDriver", "UringStream",
                           "AioUringStream"), "io_uring exists compiled only"),
    "amqp": {},
    "echo": dict.fromkeys(("UringEcho", "uring_status"), "io_uring exists compiled only"),
}

#: pair -> {name: why only the twin has it}.
TWIN_ONLY = {
    "core": {
        "SelectSelector": "the twin's whole selectors (see SelectorCore)",
        "PollSelector": "the twin's whole selectors (see SelectorCore)",
        "EpollSelector": "the twin's whole selectors (see SelectorCore)",
        "EVENT_READ": "imported from selectors for the twin's selectors",
        "EVENT_WRITE": "imported from selectors for the twin's selectors",
    },
    "loop": dict.fromkeys(("POLLIN", "POLLOUT", "POLLERR", "POLLHUP", "MAX_WAIT"),
                          "a C enum in the compiled module"),
    "amqp": {},
    "echo": {},
}

#: Dunder methods whose presence is part of a class's behaviour.
DUNDERS = ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__hash__", "__len__",
           "__iter__", "__contains__", "__bool__", "__call__", "__enter__", "__exit__",
           "__getitem__")


def public_names(module):
    """Return the public names `module` defines (not the modules and typing names it imports)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or name == "TYPE_CHECKING" or isinstance(value, types.ModuleType):
            continue
        if getattr(value, "__module__", None) in ("typing", "typing_extensions", "collections.abc"):
            continue
        if isinstance(value, type) and value.__module__ != module.__name__:
            continue  # a class imported from elsewhere (fastio._transport's mixin)
        names.add(name)
    return names


def parameters(signature, skip_self=True):
    """Return a signature's parameters as (name, kind, default repr) tuples."""
    params = list(signature.parameters.values())
    if skip_self and params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind.name, None if p.default is p.empty else repr(p.default))
            for p in params]


_C_TYPES = re.compile(r"^(?:(?:unsigned|signed|long|const)\s+)*\w+\s+(?=\w)")


def documented_constructor(cls):
    """Return the parameters of `Name(...)` on the first docstring line (embedsignature), or None."""
    first = (cls.__doc__ or "").lstrip().split("\n", 1)[0]
    match = re.fullmatch(r"%s\((.*)\)" % re.escape(cls.__name__), first.strip())
    if match is None:
        return None
    out = []
    for raw in filter(None, (a.strip() for a in match.group(1).split(","))):
        name, _, default = raw.partition("=")
        name = _C_TYPES.sub("", name.strip())  # "Py_ssize_t size" -> "size"
        out.append((name, "POSITIONAL_OR_KEYWORD", default.strip() or None))
    return out


def members(cls):
    """Return {name: attribute} of `cls`'s public methods and properties, and its DUNDERS."""
    out = {}
    for klass in reversed(cls.__mro__[:-1]):  # not object's
        for name, value in vars(klass).items():
            if name.startswith("_") and name not in DUNDERS:
                continue
            if name == "__hash__" and value is None:
                continue
            out[name] = value
    return out


def is_method(value):
    return callable(value) and not isinstance(value, type)


@pytest.fixture(params=implementations.PAIRS)
def pair(request):
    """(name, compiled module, twin module) of each pair."""
    name = request.param
    return name, implementations.pair("c", name), implementations.pair("py", name)


#: Prefix of the names of asyncio's face (fastio._aio), which exists compiled
#: only: without the extension EventLoop is asyncio's own loop.
ASYNCIO_FACE = "aio_"


def test_the_pairs_expose_the_same_public_names(pair):
    name, c, py = pair
    only_c = {n for n in public_names(c) - public_names(py)
              if not (name == "loop" and n.startswith(ASYNCIO_FACE))}
    assert only_c == set(COMPILED_ONLY[name])
    assert public_names(py) - public_names(c) == set(TWIN_ONLY[name])


def test_the_pairs_functions_have_the_same_signatures(pair):
    name, c, py = pair
    for attr in sorted(public_names(c) & public_names(py)):
        c_obj, py_obj = getattr(c, attr), getattr(py, attr)
        if isinstance(c_obj, type) or not callable(c_obj):
            continue
        assert parameters(inspect.signature(c_obj), False) == \
            parameters(inspect.signature(py_obj), False), "%s.%s" % (name, attr)


def shared_classes(c, py):
    for attr in sorted(public_names(c) & public_names(py)):
        if isinstance(getattr(c, attr), type):
            yield attr, getattr(c, attr), getattr(py, attr)


def test_the_pairs_classes_have_the_same_methods_and_signatures(pair):
    name, c, py = pair
    compared = 0
    for attr, c_cls, py_cls in shared_classes(c, py):
        c_members, py_members = members(c_cls), members(py_cls)
        c_methods = {n for n, v in c_members.items() if is_method(v)}
        py_methods = {n for n, v in py_members.items() if is_method(v)}
        assert c_methods == py_methods, "%s.%s" % (name, attr)
        for method in sorted(c_methods - set(DUNDERS)):
            assert parameters(inspect.signature(c_members[method])) == \
                parameters(inspect.signature(py_members[method])), \
                "%s.%s.%s" % (name, attr, method)
            compared += 1
        # The twin's properties are properties or C attributes there (the
        # twin sets its plain attributes in __init__: not in its class).
        py_props = {n for n, v in py_members.items() if isinstance(v, property)}
        assert py_props <= set(c_members), "%s.%s: %s" % (name, attr, py_props - set(c_members))
    assert compared


def test_the_pairs_constructors_take_the_same_arguments(pair):
    name, c, py = pair
    for attr, c_cls, py_cls in shared_classes(c, py):
        documented = documented_constructor(c_cls)
        if documented is None:
            continue
        assert documented == parameters(inspect.signature(py_cls.__init__)), "%s.%s" % (name, attr)


def _loop_args(impl):
    core = implementations.pair(impl, "core")
    loop_module = implementations.pair(impl, "loop")
    loop = loop_module.LoopCore(core.SelectPoller(), core.Waker())
    return loop_module, loop


@pytest.mark.parametrize("cls_name", ["Handle", "TimerHandle"])
def test_handle_constructors_take_callback_args_loop_in_both(cls_name):
    # Cython's __cinit__ has no introspectable signature: call both the same ways.
    outcomes = {}
    for impl in implementations.IMPLEMENTATIONS:
        loop_module, loop = _loop_args(impl)
        cls = getattr(loop_module, cls_name)
        got = []
        handle = cls(print, (1,), loop)
        got.append((type(handle).__name__, handle.cancelled()))
        for args, kwargs in ((), {}), ((print, (1,)), {}), ((print, (1,), loop, None), {}):
            try:
                cls(*args, **kwargs)
            except TypeError:
                got.append("TypeError")
            else:
                got.append("ok")
        outcomes[impl] = got
    assert outcomes["c"] == outcomes["py"]
    assert outcomes["py"] == [(cls_name, False), "TypeError", "TypeError", "TypeError"]


def test_classes_without_documented_constructors_take_no_arguments_in_both():
    checked = []
    for name in implementations.PAIRS:
        c, py = implementations.pair("c", name), implementations.pair("py", name)
        for attr, c_cls, py_cls in shared_classes(c, py):
            if documented_constructor(c_cls) is not None or attr in ("Handle", "TimerHandle"):
                continue
            if attr in ("Transport", "TransportCore"):
                continue  # made by the loop, as Transport(loop, sock, protocol, extra)
            if attr == "Poller":
                continue  # an abstract base on both sides
            results = []
            for cls in (c_cls, py_cls):
                obj = cls()
                results.append(type(obj).__name__)
                if hasattr(obj, "close"):
                    obj.close()
            assert results[0] == results[1] == attr
            checked.append(attr)
    assert {"EpollPoller", "PollPoller", "SelectPoller", "Waker", "EchoCore"} <= set(checked)


def test_timer_handles_order_by_the_loop_not_by_comparison():
    # The compiled TimerHandle has no __lt__: its heap compares (when, seq)
    # in C. The twin must not add an ordering users could come to rely on.
    for impl in implementations.IMPLEMENTATIONS:
        loop_module, loop = _loop_args(impl)
        a = loop_module.TimerHandle(print, (), loop)
        b = loop_module.TimerHandle(print, (), loop)
        with pytest.raises(TypeError):
            a < b  # noqa: B015


def test_compiled_and_twin_pollers_report_the_same_events():
    a, b = socket.socketpair()
    try:
        b.send(b"x")
        reports = []
        for impl in implementations.IMPLEMENTATIONS:
            core = implementations.pair(impl, "core")
            for cls_name in ("EpollPoller", "PollPoller", "SelectPoller"):
                if not getattr(core, "HAVE_" + cls_name[:-6].upper(), True):
                    continue
                with getattr(core, cls_name)() as poller:
                    poller.register(a.fileno(), core.POLLIN | core.POLLOUT)
                    reports.append((cls_name, sorted(poller.poll(1))))
        assert len(reports) % 2 == 0
        half = len(reports) // 2
        assert reports[:half] == reports[half:]
        assert all(events == [(a.fileno(), 0x001 | 0x004)] for _, events in reports)
    finally:
        a.close()
        b.close()
