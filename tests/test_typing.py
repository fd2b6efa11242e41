"""mypy accepts the package (with its stubs) and the README's examples."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

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
