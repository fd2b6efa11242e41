"""A user's script over fastio.rabbitmq's whole public API type-checks strictly.

mypy --strict reports nothing (no untyped call, no Any leaking out) and
pyright in strict mode reports nothing, in particular nothing "partially
unknown"; a script with wrong argument types is flagged on every wrong line.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "typing_scripts"
USER = SCRIPTS / "rabbitmq_user.py"
MISUSE = SCRIPTS / "rabbitmq_misuse.py"
MISUSE_LINES = {8, 9, 10, 12, 13, 14}
# pika ships no type information, so for mypy pika.BasicProperties is Any
# and a `properties` of the wrong type (line 9) passes; pyright reads pika's
# source and flags it. At run time it is a TypeError either way.
MYPY_MISUSE_LINES = MISUSE_LINES - {9}

pytest.importorskip("pika")
pytestmark = pytest.mark.skipif(not (ROOT / "fastio").is_dir(),
                                reason="needs the source checkout")


def _mypy(*args):
    pytest.importorskip("mypy")
    # From the checkout root: the project's mypy settings (pika has no
    # type information) apply, as they would for a user with fastio installed.
    env = dict(os.environ, MYPY_CACHE_DIR=str(ROOT / "build" / "mypy-cache-rabbitmq"))
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--strict",
                           "--follow-imports=silent", *args],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def _pyright(tmp_path, script):
    exe = shutil.which("pyright", path=os.path.dirname(sys.executable)) or shutil.which("pyright")
    if exe is None:
        pytest.skip("pyright is not installed (pip install pyright)")
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({
        "typeCheckingMode": "strict", "extraPaths": [str(ROOT)],
        "pythonVersion": "%d.%d" % sys.version_info[:2]}))
    target = tmp_path / script.name
    shutil.copy(script, target)
    try:
        proc = subprocess.run([exe, "--outputjson", "--pythonpath", sys.executable,
                               str(target)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip("pyright could not run here: %s" % exc)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        # The PyPI wrapper fetches node and pyright on first use; without
        # network it cannot.
        pytest.skip("pyright did not start: %s" % (proc.stderr or proc.stdout)[-300:])
    return report["generalDiagnostics"]


def test_user_script_passes_mypy_strict():
    result = _mypy(str(USER))
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_flags_every_wrong_argument():
    result = _mypy(str(MISUSE))
    flagged = {int(m) for m in re.findall(r"rabbitmq_misuse\.py:(\d+): error", result.stdout)}
    assert flagged == MYPY_MISUSE_LINES, result.stdout


def test_user_script_passes_pyright_strict(tmp_path):
    diagnostics = _pyright(tmp_path, USER)
    assert diagnostics == [], "\n".join(d["message"] for d in diagnostics)


def test_pyright_flags_every_wrong_argument(tmp_path):
    diagnostics = _pyright(tmp_path, MISUSE)
    flagged = {d["range"]["start"]["line"] + 1 for d in diagnostics if d["severity"] == "error"}
    assert flagged == MISUSE_LINES, "\n".join(d["message"] for d in diagnostics)
    assert not any("partially unknown" in d["message"] for d in diagnostics)
