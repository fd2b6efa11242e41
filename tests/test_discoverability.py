"""A new user finds their way: help(fastio), --version, --help texts, logging.

The command line runs in a subprocess, as a user runs it.
"""

import logging
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastio

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("echo", "client", "publish", "consume")


def _cli(*args, argv0=None):
    if argv0 is None:
        cmd = [sys.executable, "-m", "fastio", *args]
    else:
        # What the `fastio` console script does, under its own name.
        cmd = [sys.executable, "-c",
               "import sys; sys.argv[0] = %r; from fastio.__main__ import main; sys.exit(main())" % argv0,
               *args]
    return subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)


# --- help(fastio) ------------------------------------------------------------------


def test_help_lists_the_lazy_attributes_with_their_docs():
    text = pydoc.render_doc(fastio, renderer=pydoc.plaintext)
    for name in ("Loop", "EventLoop", "EventLoopPolicy", "SelectorEventLoop",
                 "new_event_loop", "run", "install", "uninstall", "installed"):
        assert re.search(r"^\s*(class )?%s\b" % name, text, re.M), name
    assert "Return a new `EventLoop`" in text  # new_event_loop's docstring
    assert "A callback event loop" in text  # Loop's docstring


def test_getattr_has_a_docstring_and_unknown_names_raise():
    assert fastio.__getattr__.__doc__.startswith("Import the lazy attributes")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastio.nope  # noqa: B018


def test_dir_lists_the_lazy_attributes():
    assert {"Loop", "new_event_loop", "run", "install", "__version__"} <= set(dir(fastio))


# --- the command line ----------------------------------------------------------------


def test_version_prints_version_and_implementation():
    result = _cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fastio %s (%s)" % (fastio.__version__, fastio.IMPLEMENTATION)


def test_console_script_names_itself_in_usage():
    result = _cli("--help", argv0="/somewhere/bin/fastio")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: fastio ")
    echo = _cli("echo", "--help", argv0="/somewhere/bin/fastio")
    assert echo.stdout.startswith("usage: fastio echo ")


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source checkout")
def test_pyproject_declares_the_console_script():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[project\.scripts\]\nfastio = "fastio\.__main__:main"$', text, re.M)


def test_top_level_help_is_plain_text():
    result = _cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m fastio ")
    assert "``" not in result.stdout and "`" not in result.stdout
    for command in COMMANDS:
        assert re.search(r"^\s+%s\s" % command, result.stdout, re.M), command


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_is_plain_and_speaks_of_the_tutorial_not_a_seed(command):
    result = _cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "seed" not in result.stdout.lower()
    assert "`" not in result.stdout  # plain text, no RST markup
    if command == "client":
        assert "the tutorial's multi-socket client" in result.stdout


def test_no_module_docstring_speaks_of_a_seed():
    import fastio.echo.client
    import fastio.echo.loadgen
    import fastio.echo.server
    import fastio.echo.tutorial

    for module in (fastio, fastio.echo.client, fastio.echo.loadgen, fastio.echo.server, fastio.echo.tutorial):
        assert "seed" not in (module.__doc__ or "").lower(), module.__name__


# --- logging ----------------------------------------------------------------------------


def test_fastio_logger_has_a_null_handler():
    import fastio.loop  # noqa: F401  (a module that logs)

    handlers = logging.getLogger("fastio").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_library_warnings_stay_silent_until_logging_is_configured():
    code = ("import logging, fastio.loop\n"
            "fastio.loop.logger.warning('unconfigured')\n"
            "logging.basicConfig()\n"
            "fastio.loop.logger.warning('configured')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "unconfigured" not in result.stderr
    assert "WARNING:fastio.loop:configured" in result.stderr


def test_every_logger_is_under_the_fastio_namespace():
    names = []
    for path in Path(fastio.__file__).parent.rglob("*.py"):
        names += re.findall(r"""get(?:_l|L)ogger\((['"][^)]*)\)""", path.read_text())
    assert names, "fastio has loggers"
    for name in names:
        assert re.fullmatch(r"""["']fastio(\.[\w.]+)?["']""", name), name
