"""Choose, for each compiled/Python pair, the implementation fastio runs on.

Every compiled module (built from ``src/``) has a pure-Python twin beside it:

    core_c  (src/_core.pyx)  <->  core_py  pollers, waker; the selectors' core
    loop_c  (src/_loop.pyx)  <->  loop_py  the Loop's core and its transports
    amqp_c  (src/_amqp.pyx)  <->  amqp_py  basic.publish frames, the Outbox
    echo_c  (src/_echo.pyx)  <->  echo_py  the echo server's and load
                                           generator's per-chunk paths

This module is the one place that chooses between them:

* `core`, `loop`, `amqp`, `echo`: the pair's implementation fastio runs on,
  the compiled module or else its twin (``from fastio._impl import loop``).
* `compiled(name)`: the compiled module of pair `name`, or None, for what
  exists only compiled (the asyncio face in loop_c, io_uring in echo_c).
* `IMPLEMENTATION`: "cython" with the compiled core, else "python".

FASTIO_NO_EXTENSIONS=1 (or a non-CPython interpreter) chooses the twins;
FASTIO_REQUIRE_EXTENSIONS=1 makes a missing compiled module an ImportError.
A compiled module that fails to import when nobody asked for the twins is a
broken install: fastio still works, slower, and says so once with a
RuntimeWarning. Not an ImportWarning: the default warning filters hide
those, and this one is for the user, not for developers.

Only the core is loaded with this module (`IMPLEMENTATION` depends on it);
the others on first use, so that importing fastio for its selectors does not
pay for the loop's, AMQP's and the echo server's modules (and what they
import, such as socket).
"""

import os
import sys

__all__ = ["core", "loop", "amqp", "echo", "compiled", "IMPLEMENTATION"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

    # The typed twins are the type source of the chosen implementation.
    from fastio._impl import amqp_py as amqp, core_py as core, echo_py as echo, loop_py as loop

#: pair -> the pair it needs compiled: both are compiled, or neither.
_NEEDS = {
    "core": None,
    # The loop waits on the core's pollers through their C API.
    "loop": "core",
    # The Publisher's hot path (frames, confirms, the Outbox). It uses nothing
    # of the core; it is tied to it so that fastio is compiled or pure Python
    # as a whole, as IMPLEMENTATION says.
    "amqp": "core",
    # The echo protocol's per-chunk path writes through the loop's C API.
    "echo": "loop",
}

_compiled = {}  # type: Dict[str, Any]


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _import(name):
    __import__(name)
    return sys.modules[name]


def _load(name):
    require = _flag("FASTIO_REQUIRE_EXTENSIONS")
    # sys.implementation, not the platform module: that one costs ms at startup.
    if _flag("FASTIO_NO_EXTENSIONS") or sys.implementation.name != "cpython":
        if require:
            raise ImportError(
                "FASTIO_REQUIRE_EXTENSIONS is set, but the extension is disabled "
                "(FASTIO_NO_EXTENSIONS or a non-CPython interpreter)"
            )
        return None
    module_name = "fastio._impl.%s_c" % name
    try:
        module = _import(module_name)
    except ImportError as exc:
        if require:
            raise ImportError(
                "FASTIO_REQUIRE_EXTENSIONS is set, but %s could not be "
                "imported: %s (build it with `make build` or reinstall fastio)"
                % (module_name, exc)
            ) from exc
        _warn_fallback(module_name, exc)
        return None
    return module


_warned = False


def _warn_fallback(module_name, exc):
    global _warned
    if _warned:
        return
    _warned = True
    import warnings  # not at the top: interpreter start does not load it

    warnings.warn(
        "%s could not be imported (%s): fastio runs on its pure-Python "
        "fallback, which is much slower. Rebuild fastio (`make build`, or "
        "reinstall it with a C compiler); set FASTIO_NO_EXTENSIONS=1 to choose "
        "the fallback and silence this warning." % (module_name, exc),
        RuntimeWarning,
        stacklevel=3,
    )


def compiled(name):
    # type: (str) -> Any
    """Return the compiled module of pair `name` ("core", "loop", "amqp", "echo"), or None.

    :raises KeyError: `name` is not a pair.
    :raises ImportError: FASTIO_REQUIRE_EXTENSIONS is set and it is not available.
    """
    try:
        return _compiled[name]
    except KeyError:
        pass
    needs = _NEEDS[name]
    module = _load(name) if needs is None or compiled(needs) is not None else None
    _compiled[name] = module
    return module


IMPLEMENTATION = "cython" if compiled("core") is not None else "python"


def __getattr__(name):
    """Return pair `name`'s implementation (compiled, else the twin), loading it on first use.

    :raises AttributeError: `name` is not a pair.
    """
    if name not in _NEEDS:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    module = compiled(name)
    if module is None:
        module = _import("fastio._impl.%s_py" % name)
    globals()[name] = module
    return module
