"""The public API is typed: mypy and pyright (strict) accept a user's script.

mypy accepts the package (with its stubs) and the README's examples;
tests/typecheck/user_script.py, which uses every public entry point but
fastio.rabbitmq, passes `mypy --strict` and pyright's strict mode with
nothing unknown, and runs; tests/typecheck/misuse.py gets each wrong use
flagged by both.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
USER_SCRIPT = ROOT / "tests" / "typecheck" / "user_script.py"
MISUSE = ROOT / "tests" / "typecheck" / "misuse.py"
CONTRACTS = ROOT / "tests" / "typecheck" / "contracts.py"

pytest.importorskip("mypy")
pytestmark = pytest.mark.skipif(
    not (ROOT / "fastio").is_dir() or not README.exists(),
    reason="needs the source checkout (package dir and README)",
)


def _mypy(*args, cwd=ROOT):
    env = dict(os.environ, MYPY_CACHE_DIR=str(ROOT / "build" / "mypy-cache"))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", *args],
        cwd=cwd, capture_output=True, text=True, env=env, timeout=300,
    )


def test_package_type_checks():
    result = _mypy()
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_examples_type_check(tmp_path):
    blocks = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)]
    assert blocks, "README has python examples"
    for i, block in enumerate(blocks):
        # Examples may elide with "..." lines or use names defined elsewhere
        # in the README; give them a context so each checks on its own.
        prelude = (
            "import socket\nfrom typing import Any\n"
            "from fastio import selectors\n"
            "sel = selectors.DefaultSelector()\nsock = socket.socket()\n"
            "async def main() -> None: ...\n"
        )
        path = tmp_path / ("example_%d.py" % i)
        path.write_text(prelude + block)
        result = _mypy("--follow-imports=silent", str(path))
        assert result.returncode == 0, "README example %d:\n%s\n%s" % (i, block, result.stdout)


def _pyright(tmp_path, script):
    """Run pyright in strict mode on `script`; return its diagnostics."""
    pytest.importorskip("pyright")
    config = tmp_path / "pyrightconfig.json"
    config.write_text(json.dumps({
        "typeCheckingMode": "strict",
        "pythonVersion": "%d.%d" % sys.version_info[:2],
        "extraPaths": [str(ROOT)],
    }))
    result = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable,
         "-p", str(config), str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["filesAnalyzed"] == 1, report
    return report["generalDiagnostics"]


def _marked_lines(path):
    return {i for i, line in enumerate(path.read_text().splitlines(), 1) if line.endswith("# wrong")}


def test_user_script_passes_mypy_strict():
    # follow-imports=silent: what a user sees with fastio installed (mypy
    # reports nothing inside site-packages), with fastio's types in force.
    result = _mypy("--strict", "--follow-imports=silent", str(USER_SCRIPT))
    assert result.returncode == 0, result.stdout + result.stderr


def test_user_script_passes_pyright_strict_with_nothing_unknown(tmp_path):
    diagnostics = _pyright(tmp_path, USER_SCRIPT)
    assert diagnostics == [], "\n".join(
        "%d: %s" % (d["range"]["start"]["line"] + 1, d["message"]) for d in diagnostics)


@pytest.mark.parametrize("no_extensions", ["0", "1"], ids=["cython", "python"])
def test_user_script_runs(no_extensions):
    env = dict(os.environ, PYTHONPATH=str(ROOT), FASTIO_NO_EXTENSIONS=no_extensions)
    if no_extensions == "1":
        env.pop("FASTIO_REQUIRE_EXTENSIONS", None)  # CI's demand, not this run's
    result = subprocess.run([sys.executable, str(USER_SCRIPT)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_implementations_satisfy_the_contracts():
    result = _mypy("--strict", "--follow-imports=silent", str(CONTRACTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_flags_each_wrong_use():
    result = _mypy("--strict", "--follow-imports=silent", str(MISUSE))
    flagged = {int(m) for m in re.findall(r"misuse\.py:(\d+): error:", result.stdout, re.M)}
    assert flagged == _marked_lines(MISUSE), result.stdout


def test_pyright_flags_each_wrong_use(tmp_path):
    diagnostics = _pyright(tmp_path, MISUSE)
    flagged = {d["range"]["start"]["line"] + 1 for d in diagnostics if d["severity"] == "error"}
    assert flagged == _marked_lines(MISUSE), diagnostics
