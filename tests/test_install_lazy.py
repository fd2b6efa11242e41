"""`import fastio; fastio.install()` imports nothing it does not need.

install() rebinds the stdlib modules already imported and hooks the import
of the others (selectors, subprocess, socketserver, multiprocessing.connection)
so they are rebound when, and if, the program imports them; uninstall()
removes the hook and restores everything. Each case runs in a fresh
interpreter, where nothing has imported those modules yet.
"""

import json
import os
import subprocess
import sys

import pytest

import fastio

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))

HEAVY = ["selectors", "subprocess", "socketserver", "multiprocessing.connection",
         "multiprocessing", "platform", "socket", "threading", "warnings", "importlib",
         "fastio._impl", "fastio.selectors", "asyncio"]

CAPTURED = (
    ("subprocess", "_PopenSelector"),
    ("socketserver", "_ServerSelector"),
    ("multiprocessing.connection", "_WaitSelector"),
)


def _run(code):
    env = dict(os.environ)
    env["PYTHONPATH"] = PROJECT_ROOT
    # FASTIO_REQUIRE_EXTENSIONS (CI) loads the extensions at import on purpose.
    for name in ("FASTIO_NO_EXTENSIONS", "FASTIO_REQUIRE_EXTENSIONS", "PYTHONWARNINGS"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=PROJECT_ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_install_imports_nothing_heavy():
    before, after = _run(
        "import json, sys\n"
        "heavy = %r\n"
        "before = [m for m in heavy if m in sys.modules]\n"
        "import fastio\n"
        "fastio.install()\n"
        "print(json.dumps([before, [m for m in heavy if m in sys.modules]]))\n" % (HEAVY,))
    assert before == []
    assert after == []


CLASSES = r"""
import json, sys
def classes():
    out = {}
    sel = sys.modules.get("selectors")
    if sel is not None:
        for n in ("PollSelector", "EpollSelector", "DefaultSelector"):
            out["selectors." + n] = getattr(sel, n).__module__
    for mod, attr in %r:
        if mod in sys.modules:
            out[mod + "." + attr] = getattr(sys.modules[mod], attr).__module__
    return out
""" % (CAPTURED,)


def test_modules_imported_after_install_are_rebound_and_restored():
    installed, after_uninstall, imported_later, hooks = _run(CLASSES + r"""
import fastio
fastio.install()
import subprocess, socketserver, multiprocessing.connection, asyncio
installed = classes()
loop = asyncio.new_event_loop()
installed["asyncio loop"] = type(loop._selector).__module__
loop.close()
fastio.uninstall()
after_uninstall = classes()
import xmlrpc.server  # imports socketserver's users: nothing new is hooked
hooks = [type(f).__name__ for f in sys.meta_path if type(f).__module__.startswith("fastio")]
print(json.dumps([installed, after_uninstall, classes(), hooks]))
""")
    assert set(installed.values()) == {"fastio.selectors"}
    assert len(installed) == 7
    assert set(after_uninstall.values()) == {"selectors"}
    assert len(after_uninstall) == 6
    assert set(imported_later.values()) == {"selectors"}
    assert hooks == []


def test_module_first_imported_after_uninstall_keeps_the_stdlib_class():
    result = _run(CLASSES + r"""
import fastio
fastio.install()
import selectors
fastio.uninstall()
import subprocess
print(json.dumps(classes()))
""")
    assert set(result.values()) == {"selectors"} and "subprocess._PopenSelector" in result


def test_modules_imported_before_install_are_rebound_and_restored():
    installed, restored = _run(CLASSES + r"""
import subprocess, socketserver, multiprocessing.connection
import fastio
fastio.install()
installed = classes()
fastio.uninstall()
print(json.dumps([installed, classes()]))
""")
    assert set(installed.values()) == {"fastio.selectors"} and len(installed) == 6
    assert set(restored.values()) == {"selectors"} and len(restored) == 6


def test_hooked_module_keeps_its_own_loader_and_reloads():
    result = _run(CLASSES + r"""
import importlib
import fastio
fastio.install()
import subprocess
loader = type(subprocess.__loader__).__module__
same = subprocess.__spec__.loader is subprocess.__loader__
importlib.reload(subprocess)
after_reload = subprocess._PopenSelector.__module__
code = subprocess.run([sys.executable, "-c", "pass"]).returncode
fastio.uninstall()
print(json.dumps([loader, same, after_reload, code, subprocess._PopenSelector.__module__]))
""")
    # The module's loader is the real one (SourceFileLoader), not the hook's.
    assert result == ["_frozen_importlib_external", True, "fastio.selectors", 0, "selectors"]


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="telnetlib is gone in 3.13")
@pytest.mark.parametrize("first", ["install", "import"])
def test_telnetlib_selector_is_rebound_and_restored(first):
    # telnetlib binds its selector class at import, as subprocess does.
    steps = ["import fastio; fastio.install()", "import telnetlib"]
    if first == "import":
        steps.reverse()
    installed, restored = _run("""
import json, warnings
warnings.simplefilter("ignore", DeprecationWarning)
%s
%s
installed = telnetlib._TelnetSelector.__module__
fastio.uninstall()
print(json.dumps([installed, telnetlib._TelnetSelector.__module__]))
""" % tuple(steps))
    assert (installed, restored) == ("fastio.selectors", "selectors")

