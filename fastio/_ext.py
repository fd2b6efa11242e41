"""Find the compiled core, honouring FASTIO_NO_EXTENSIONS / FASTIO_REQUIRE_EXTENSIONS.

`core` is the `fastio._core` extension module, or None when fastio runs on
its pure-Python fallback. `IMPLEMENTATION` names which: "cython" or "python".
"""

import os
import platform

__all__ = ["core", "IMPLEMENTATION"]


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _load():
    require = _flag("FASTIO_REQUIRE_EXTENSIONS")
    if _flag("FASTIO_NO_EXTENSIONS") or platform.python_implementation() != "CPython":
        if require:
            raise ImportError(
                "FASTIO_REQUIRE_EXTENSIONS is set, but the extension is disabled "
                "(FASTIO_NO_EXTENSIONS or a non-CPython interpreter)"
            )
        return None
    try:
        from fastio import _core
    except ImportError as exc:
        if require:
            raise ImportError(
                "FASTIO_REQUIRE_EXTENSIONS is set, but fastio._core could not be "
                "imported: %s (build it with `make build` or reinstall fastio)" % (exc,)
            ) from exc
        return None
    return _core


core = _load()
IMPLEMENTATION = "cython" if core is not None else "python"
