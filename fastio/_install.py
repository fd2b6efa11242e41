"""Swap fastio's selector classes into the stdlib, and back.

The stdlib reads `selectors.DefaultSelector` when asyncio creates a loop, but
three modules bind a selector class at import time and never look again:
`subprocess._PopenSelector`, `socketserver._ServerSelector` and
`multiprocessing.connection._WaitSelector`. install() rebinds those too, to the
fastio class of the same kind; uninstall() puts back exactly what was there.
"""

import importlib
import selectors as _stdlib
import threading
from types import ModuleType
from typing import Any, List, Optional, Tuple

from fastio import selectors as _fast

__all__ = ["install", "uninstall", "installed"]

_SELECTOR_NAMES = ("SelectSelector", "PollSelector", "EpollSelector", "DefaultSelector")
_CAPTURED = (
    ("subprocess", "_PopenSelector"),
    ("socketserver", "_ServerSelector"),
    ("multiprocessing.connection", "_WaitSelector"),
)

_lock = threading.Lock()
_saved: Optional[List[Tuple[ModuleType, str, Any]]] = None  # (namespace, name, original) while installed


def _replacement(original: Any) -> Any:
    """Return the fastio class standing in for stdlib class `original`."""
    for name in _SELECTOR_NAMES:
        if original is getattr(_stdlib, name, None) and hasattr(_fast, name):
            return getattr(_fast, name)
    return None


def install() -> bool:
    """Make the stdlib use fastio's selectors. Calling it again does nothing.

    :returns: True if this call installed fastio, False if it already was.
    """
    global _saved
    with _lock:
        if _saved is not None:
            return False
        plan: List[Tuple[ModuleType, str, Any, Any]] = []  # (namespace, name, original, replacement)
        for name in _SELECTOR_NAMES:
            if hasattr(_stdlib, name) and hasattr(_fast, name):
                plan.append((_stdlib, name, getattr(_stdlib, name), getattr(_fast, name)))
        for modname, attr in _CAPTURED:
            try:
                module = importlib.import_module(modname)
            except ImportError:
                continue
            original = getattr(module, attr, None)
            new = _replacement(original)
            if new is not None:
                plan.append((module, attr, original, new))
        for ns, name, _original, new in plan:
            setattr(ns, name, new)
        saved = [(ns, name, original) for ns, name, original, _new in plan]
        _saved = saved
        return True


def uninstall() -> bool:
    """Restore exactly what install() replaced. Does nothing if not installed.

    :returns: True if this call uninstalled fastio.
    """
    global _saved
    with _lock:
        if _saved is None:
            return False
        for ns, name, original in reversed(_saved):
            setattr(ns, name, original)
        _saved = None
        return True


def installed() -> bool:
    """Return True while fastio's selectors are installed into the stdlib."""
    return _saved is not None
