"""Swap fastio's selector classes into the stdlib, and back.

The stdlib reads `selectors.DefaultSelector` when asyncio creates a loop, but
four modules bind a selector class at import time and never look again:
`subprocess._PopenSelector`, `socketserver._ServerSelector`,
`multiprocessing.connection._WaitSelector` and (until 3.12)
`telnetlib._TelnetSelector`. install() rebinds those too, to the fastio class
of the same kind; uninstall() puts back exactly what was there.

install() must not make interpreter start slower, so it imports none of
these modules (nor fastio's selectors): it rebinds the ones already imported,
and an import hook (a finder at the head of `sys.meta_path`) rebinds the
others when, and if, they are imported. uninstall() removes the hook.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` costs more at start than install() may
    from typing import Any, List, Optional, Tuple

# _thread, not threading: it is already loaded when the interpreter starts.
from _thread import RLock

__all__ = ["install", "uninstall", "installed"]

_SELECTOR_NAMES = ("SelectSelector", "PollSelector", "EpollSelector", "DefaultSelector")
# module name -> the attribute it binds a selector class to at import time.
_CAPTURED = {
    "subprocess": "_PopenSelector",
    "socketserver": "_ServerSelector",
    "multiprocessing.connection": "_WaitSelector",
    "telnetlib": "_TelnetSelector",  # until 3.12 (removed in 3.13)
}
_HOOKED = ("selectors",) + tuple(_CAPTURED)

_lock = RLock()
_saved: Optional[List[Tuple[Any, str, Any]]] = None  # (namespace, name, original) while installed


def _rebind_selectors(stdlib):
    """Put fastio's classes into the stdlib `selectors` (caller holds `_lock`)."""
    from fastio import selectors as fast

    for name in _SELECTOR_NAMES:
        if hasattr(stdlib, name) and hasattr(fast, name):
            _saved.append((stdlib, name, getattr(stdlib, name)))
            setattr(stdlib, name, getattr(fast, name))


def _rebind_captured(module):
    """Rebind `module`'s captured selector class (caller holds `_lock`)."""
    attr = _CAPTURED[module.__name__]
    original = getattr(module, attr, None)
    stdlib = sys.modules["selectors"]
    fast = sys.modules.get("fastio.selectors")
    if fast is None:
        return  # `selectors` was mid-import at install(): left as it was
    for ns, name, stdlib_cls in _saved:
        if ns is not stdlib:
            continue
        if original is getattr(fast, name, None):
            # Imported while installed, it took fastio's class from
            # `selectors`; uninstall() gives it the stdlib's.
            _saved.append((module, attr, stdlib_cls))
            return
        if original is stdlib_cls:
            setattr(module, attr, getattr(fast, name))
            _saved.append((module, attr, original))
            return


def _rebind(module):
    if module.__name__ == "selectors":
        _rebind_selectors(module)
    elif "selectors" in sys.modules:
        _rebind_captured(module)


class _Loader:
    """Run a module's own loader, then rebind its selector classes."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # Put the real loader back first, so reload() and introspection see it.
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        if module.__name__ == "selectors":
            # Outside the lock: importing takes the import system's locks.
            import fastio.selectors  # noqa: F401
        with _lock:
            if _saved is not None:
                _rebind(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder:
    """A meta path finder that only wraps the loaders of the hooked modules."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname not in _HOOKED:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _Finder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None

    @staticmethod
    def invalidate_caches():
        pass


_finder = _Finder()


def _imported(name):
    """Return module `name` if its import has finished, else None."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    if module is None or getattr(spec, "_initializing", False):
        # Being imported by another thread, by a loader the hook did not
        # wrap: it keeps the stdlib's class, as if install() came later.
        return None
    return module


def install() -> bool:
    """Make the stdlib use fastio's selectors. Calling it again does nothing.

    :returns: True if this call installed fastio, False if it already was.
    """
    global _saved
    stdlib = _imported("selectors")
    if stdlib is not None:
        import fastio.selectors  # noqa: F401  (outside the lock, as in _Loader)
    with _lock:
        if _saved is not None:
            return False
        _saved = []
        if stdlib is not None:
            _rebind_selectors(stdlib)
            for name in _CAPTURED:
                module = _imported(name)
                if module is not None:
                    _rebind_captured(module)
        sys.meta_path.insert(0, _finder)
        return True


def uninstall() -> bool:
    """Restore exactly what install() replaced. Does nothing if not installed.

    :returns: True if this call uninstalled fastio.
    """
    global _saved
    with _lock:
        if _saved is None:
            return False
        while _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        for ns, name, original in reversed(_saved):
            setattr(ns, name, original)
        _saved = None
        return True


def installed() -> bool:
    """Return True while fastio's selectors are installed into the stdlib."""
    return _saved is not None
