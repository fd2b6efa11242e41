"""A failed compile never silently becomes the pure-Python fallback.

At build time setup.py ends with a warning banner; at import, fastio warns
once (RuntimeWarning) when the compiled core cannot be imported and nobody
asked for the fallback (FASTIO_NO_EXTENSIONS unset).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

import fastio

# Where the fastio under test was imported from (the sanitizer run imports
# its own build), and the checkout whose sources a build starts from.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Hide the compiled modules as a broken install would: their import fails.
HIDDEN = r"""
import json, sys, warnings

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name in ("fastio._impl.core_c", "fastio._impl.loop_c", "fastio._impl.amqp_c",
                    "fastio._impl.echo_c"):
            raise ImportError("hidden for the test: %s" % name)
        return None

sys.meta_path.insert(0, Hide())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastio
    implementation = fastio.IMPLEMENTATION
    from fastio._impl import loop, amqp, echo
    import fastio.selectors, fastio.loop
    sel = fastio.selectors.DefaultSelector()
    sel.close()
print(json.dumps([implementation, [(w.category.__name__, str(w.message)) for w in caught]]))
"""


def _env(**extra):
    env = dict(os.environ)
    for name in ("FASTIO_NO_EXTENSIONS", "FASTIO_REQUIRE_EXTENSIONS", "PYTHONWARNINGS"):
        env.pop(name, None)
    env["PYTHONPATH"] = PROJECT_ROOT
    env.update(extra)
    return env


def _run_hidden(**extra):
    proc = subprocess.run([sys.executable, "-c", HIDDEN], capture_output=True, text=True,
                          env=_env(**extra), cwd=PROJECT_ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_unexpected_fallback_warns_once_at_import():
    implementation, caught = _run_hidden()
    assert implementation == "python"
    assert len(caught) == 1, caught
    category, message = caught[0]
    assert category == "RuntimeWarning"
    assert "fastio._impl.core_c could not be imported" in message
    assert "pure-Python fallback" in message and "FASTIO_NO_EXTENSIONS=1" in message


def test_requested_fallback_does_not_warn():
    implementation, caught = _run_hidden(FASTIO_NO_EXTENSIONS="1")
    assert implementation == "python"
    assert caught == []


def test_default_filters_show_the_warning():
    # RuntimeWarning, not ImportWarning: the default filters show it.
    code = HIDDEN.replace('warnings.simplefilter("always")', "pass")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(), cwd=PROJECT_ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])[1] != []


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    """A copy of what setup.py builds from, without any compiled module."""
    if not os.path.exists(os.path.join(SOURCE_ROOT, "setup.py")):
        pytest.skip("needs the source checkout (the tests run beside an installed wheel)")
    root = tmp_path_factory.mktemp("fastio-src")
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "LICENSE"):
        if os.path.exists(os.path.join(SOURCE_ROOT, name)):
            shutil.copy(os.path.join(SOURCE_ROOT, name), root)
    ignore = shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "build")
    shutil.copytree(os.path.join(SOURCE_ROOT, "src"), root / "src", ignore=ignore)
    shutil.copytree(os.path.join(SOURCE_ROOT, "fastio"), root / "fastio", ignore=ignore)
    return root


def _build(root, **extra):
    env = _env(CC="/bin/false", CXX="/bin/false", **extra)
    env.pop("PYTHONPATH")
    return subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=600)


def test_failed_compile_warns_at_build_time(source_copy):
    pytest.importorskip("Cython")
    proc = _build(source_copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING: fastio's C extension could not be built" in proc.stderr
    assert "failed: fastio._impl.core_c" in proc.stderr
    assert "FASTIO_REQUIRE_EXTENSIONS=1" in proc.stderr
    assert not list((source_copy / "fastio" / "_impl").glob("core_c*.so"))


def test_failed_compile_is_an_error_when_extensions_are_required(source_copy):
    pytest.importorskip("Cython")
    proc = _build(source_copy, FASTIO_REQUIRE_EXTENSIONS="1")
    assert proc.returncode != 0
    assert "could not be built" not in proc.stderr
