"""The compiled/Python pairs of fastio._impl, for tests that run on both.

Every pair (core, loop, amqp, echo) has a compiled module ("c") and its
pure-Python twin ("py"). Behaviour tests run on both in one process: "py"
always, "c" unless the extension is absent -- then the "c" cases skip,
except under FASTIO_REQUIRE_EXTENSIONS=1, where a missing extension fails.
"""

import importlib
import os

import pytest

from fastio import _impl

#: The implementations of every pair: the compiled module, the Python twin.
IMPLEMENTATIONS = ("c", "py")
PAIRS = ("core", "loop", "amqp", "echo")


def extensions_required():
    """Return whether FASTIO_REQUIRE_EXTENSIONS demands the compiled modules."""
    return os.environ.get("FASTIO_REQUIRE_EXTENSIONS", "") not in ("", "0")


def pair(impl, name):
    """Return pair `name`'s module for `impl` ("c" or "py"); skip "c" when it is not built."""
    if impl == "py":
        return importlib.import_module("fastio._impl.%s_py" % name)
    if impl != "c":
        raise ValueError("impl must be 'c' or 'py', not %r" % (impl,))
    module = _impl.compiled(name)
    if module is None:
        if extensions_required():
            pytest.fail("FASTIO_REQUIRE_EXTENSIONS=1 but fastio._impl.%s_c is not available" % name)
        pytest.skip("fastio._impl.%s_c is not built" % name)
    return module


_loop_classes = {}


def loop_class(impl):
    """Return fastio.loop.Loop's class for `impl`: Loop on the loop pair's "c" or "py" core.

    Loop itself is one of the two (the one fastio._impl chose); the other is
    built here the same way fastio.loop builds Loop.
    """
    core = pair(impl, "loop")
    from fastio import loop as loop_module

    if issubclass(loop_module.Loop, core.LoopCore):
        return loop_module.Loop
    try:
        return _loop_classes[impl]
    except KeyError:
        pass
    cls = type("Loop", (loop_module._LoopAPI, core.LoopCore), {
        "__module__": __name__,
        "__qualname__": "Loop[%s]" % impl,
        "__doc__": "fastio.loop.Loop on the %r loop core." % impl,
        "transport_class": core.Transport,
    })
    _loop_classes[impl] = cls
    return cls


def selector_classes(impl):
    """Return {"epoll": cls, "poll": cls, "select": cls, "io_uring": cls} of fastio's selectors on `impl`'s core.

    Absent backends map to None (io_uring exists compiled only). "c" is fastio.selectors when the compiled
    core is built (it is what fastio.selectors assembles from it); "py" the
    twin's whole classes.
    """
    core = pair(impl, "core")
    if impl == "c":
        import fastio.selectors as module

        assert module.IMPLEMENTATION == "cython"
    else:
        module = core
    return {b: getattr(module, n, None) for b, n in
            (("epoll", "EpollSelector"), ("poll", "PollSelector"), ("select", "SelectSelector"),
             ("io_uring", "UringSelector"))}


def default_selector(impl):
    """Return fastio's DefaultSelector on `impl`'s core (chosen as fastio.selectors chooses)."""
    import selectors

    classes = selector_classes(impl)
    if classes["epoll"] is not None:
        return classes["epoll"]
    if hasattr(selectors, "KqueueSelector"):
        return selectors.DefaultSelector
    return classes["poll"] or classes["select"]
