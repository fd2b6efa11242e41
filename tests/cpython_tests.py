"""Shared by the tests that run CPython's own test package (`test.*`) against
fastio in subprocesses: test_cpython_suite (test_selectors) and
test_cpython_asyncio (test_asyncio)."""

import importlib.util
import os

import fastio

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))


def has_test_module(name):
    """Return whether this interpreter ships CPython's test module `name`, e.g. "test.test_selectors"."""
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # no `test` package at all
        return False


def subprocess_env():
    """Return this process's environment with fastio's checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PROJECT_ROOT, env.get("PYTHONPATH")]))
    return env
