"""The loop without the extension: FASTIO_NO_EXTENSIONS=1 in a subprocess.

In-process, every loop test already runs on the pure-Python core
(`_PyLoop`); this checks the switch itself: that `fastio.loop.Loop` *is* the
Python core under FASTIO_NO_EXTENSIONS=1 and that the loop and pika tests pass
on it, with the stdlib-backed pollers and waker.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

SMOKE = r"""
import fastio, fastio.loop, fastio._pollers, fastio._pyloop
assert fastio.IMPLEMENTATION == "python", fastio.IMPLEMENTATION
assert issubclass(fastio.loop.Loop, fastio._pyloop.LoopCore), fastio.loop.Loop.__mro__
assert fastio.loop.Loop.transport_class is fastio._pyloop.Transport
loop = fastio.loop.Loop()
assert type(loop._poller_ref).__module__ == "fastio._pollers"
out = []
loop.call_later(0.01, out.append, 2)
loop.call_soon(out.append, 1)
loop.call_soon_threadsafe(out.append, 0)
loop.call_later(0.02, loop.stop)
loop.run_forever()
loop.close()
print(sorted(out))
"""


def _env():
    env = dict(os.environ, FASTIO_NO_EXTENSIONS="1")
    env.pop("FASTIO_REQUIRE_EXTENSIONS", None)
    return env


def test_fallback_loop_smoke():
    proc = subprocess.run([sys.executable, "-c", SMOKE], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 1, 2]"


@pytest.mark.skipif(os.environ.get("FASTIO_NO_EXTENSIONS") not in (None, "", "0"),
                    reason="this whole session already runs on the fallback")
def test_fallback_loop_suite():
    files = ["test_loop_callbacks.py", "test_loop_tcp.py", "test_loop_backends.py",
             "test_pika_ioloop.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "-k", "not asyncio and not fastio-python"] + [os.path.join(HERE, f) for f in files],
        env=_env(), capture_output=True, text=True, timeout=110, cwd=os.path.dirname(HERE))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
