"""The loop without the extension: FASTIO_NO_EXTENSIONS=1 in a subprocess.

In-process, every loop test already runs on the pure-Python core (the
"fastio-py" loops), and CI runs the whole suite under FASTIO_NO_EXTENSIONS=1;
this checks the switch itself: that `fastio.loop.Loop` *is* the Python core
under FASTIO_NO_EXTENSIONS=1, with the stdlib-backed pollers and waker.
"""

import os
import subprocess
import sys

SMOKE = r"""
import fastio, fastio.loop
from fastio._impl import loop_py
assert fastio.IMPLEMENTATION == "python", fastio.IMPLEMENTATION
assert issubclass(fastio.loop.Loop, loop_py.LoopCore)
assert fastio.loop.Loop.transport_class is loop_py.Transport
loop = fastio.loop.Loop()
assert type(loop._poller_ref).__module__ == "fastio._impl.core_py"
assert type(loop._waker_ref).__module__ == "fastio._impl.core_py"
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

