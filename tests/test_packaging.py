"""Packaging: the license ships, the metadata is PEP 639, `make develop` works.

The builds run setuptools' PEP 517 backend (what pip and `python -m build`
call) on a copy of the checkout, without the C extension so they take
seconds; the extension build itself is covered by `make wheel`.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import fastio

ROOT = Path(__file__).resolve().parent.parent
LICENSE = ROOT / "LICENSE"

pytestmark = pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source checkout")


def _copy_checkout(dest):
    """Copy the files a build reads (no build output) to `dest`."""
    ignore = shutil.ignore_patterns("build", "dist", "wheelhouse", "*.egg-info", "*.so", "*.c",
                                    "__pycache__", ".pytest_cache", ".hypothesis", ".venv", ".git")
    shutil.copytree(ROOT, dest, ignore=ignore)
    # benchmarks/c_echo's C source is a source, not build output.
    for c_file in (ROOT / "benchmarks" / "c_echo").glob("*.c"):
        shutil.copy(c_file, dest / "benchmarks" / "c_echo" / c_file.name)
    return dest


def _backend(tree, hook, outdir):
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.%s(sys.argv[1]))" % hook)
    env = dict(os.environ, FASTIO_NO_EXTENSIONS="1")
    env.pop("FASTIO_REQUIRE_EXTENSIONS", None)  # CI's demand, not this build's
    result = subprocess.run([sys.executable, "-c", code, str(outdir)], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return outdir / result.stdout.strip().splitlines()[-1]


def test_license_file_is_mit_for_the_fastio_authors():
    text = LICENSE.read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The fastio authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_dependencies_are_listed_once_in_pyproject():
    listed = subprocess.run([sys.executable, str(ROOT / ".ci" / "requirements"), "build", "dev", "bench"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for wanted in ("Cython>=3.0.8", "pytest>=7", "hypothesis>=6", "pika>=1.3", "trustme", "mypy",
                   "pyright", "aiohttp", "aio-pika", "matplotlib"):
        assert wanted in listed
    # The Makefile's pip installs take those lists (-r), the checkout, or
    # the two packaging tools pyproject.toml has no reason to list.
    makefile = (ROOT / "Makefile").read_text()
    installs = [line.split("$(PIP)", 1)[1].split() for line in makefile.splitlines()
                if "$(PIP)" in line and ":=" not in line]
    assert installs
    for args in installs:
        packages = [a for a in args if not a.startswith("-") and a != "." and not a.startswith("$(VENV)")]
        assert set(packages) <= {"wheel", "build"}, args


def test_pyproject_uses_an_spdx_license_and_a_setuptools_that_reads_it():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', text, re.M)
    assert re.search(r'^license-files = \["LICENSE"\]$', text, re.M)
    assert '"setuptools>=77"' in text  # PEP 639 support
    # The Makefile installs the build requirements from pyproject.toml.
    listed = subprocess.run([sys.executable, str(ROOT / ".ci" / "requirements"), "build"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert "setuptools>=77" in listed


def test_sdist_and_wheel_carry_the_license_and_the_console_script(tmp_path):
    tree = _copy_checkout(tmp_path / "src")
    sdist = _backend(tree, "build_sdist", tmp_path)
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        assert "%s/LICENSE" % top in names
        pkg_info = tar.extractfile("%s/PKG-INFO" % top).read().decode()
    assert "License-Expression: MIT" in pkg_info
    assert "License-File: LICENSE" in pkg_info

    wheel = _backend(tree, "build_wheel", tmp_path)
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        dist_info = "fastio-%s.dist-info" % fastio.__version__
        assert dist_info + "/licenses/LICENSE" in names
        metadata = whl.read(dist_info + "/METADATA").decode()
        entry_points = whl.read(dist_info + "/entry_points.txt").decode()
        assert "fastio/py.typed" in names and "fastio/_impl/loop_c.pyi" in names
    assert "License-Expression: MIT" in metadata
    assert re.search(r"^\[console_scripts\]\nfastio = fastio\.__main__:main$", entry_points, re.M)


def test_make_develop_installs_the_checkout_editable_with_the_command(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    tree = _copy_checkout(tmp_path / "checkout")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # The new venv sees this one's packages (pip, setuptools, Cython): what
    # `make develop` would install from PyPI is already here.
    vpy = venv / "bin" / "python"
    site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (venv / ".deps-stamp").touch()  # the dependencies are in place: skip their install
    env = dict(os.environ, FASTIO_NO_EXTENSIONS="1")
    env.pop("FASTIO_REQUIRE_EXTENSIONS", None)  # CI's demand, not this build's
    env.pop("MAKEFLAGS", None)
    result = subprocess.run(["make", "develop", "VENV=%s" % venv], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    version = subprocess.run([str(venv / "bin" / "fastio"), "--version"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "fastio %s (python)" % fastio.__version__
    where = subprocess.run([str(vpy), "-c", "import fastio; print(fastio.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()) == tree / "fastio" / "__init__.py", where.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc symbol versions are Linux's")
def test_compiled_modules_need_no_glibc_newer_than_manylinux2014():
    # Wheels are repaired to manylinux2014 (glibc 2.17): a symbol versioned
    # later (glibc 2.28 headers turn fcntl() into fcntl64@GLIBC_2.28) makes
    # auditwheel refuse the wheel.
    from fastio._impl import compiled

    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    modules = [compiled(name) for name in ("core", "loop", "amqp", "echo")]
    if None in modules:
        pytest.skip("the extension is not built")
    for module in modules:
        out = subprocess.run([objdump, "-T", module.__file__], capture_output=True, text=True,
                             check=True).stdout
        versions = {tuple(int(p) for p in v.split(".")): sym
                    for v, sym in re.findall(r"GLIBC_([0-9.]+)\)?\s+(\S+)\s*$", out, re.M)}
        too_new = {sym: ".".join(map(str, v)) for v, sym in versions.items() if v > (2, 17)}
        assert not too_new, "%s needs %s" % (os.path.basename(module.__file__), too_new)
