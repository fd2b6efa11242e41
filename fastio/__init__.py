"""fastio: C-accelerated IO multiplexing for CPython.

`fastio.selectors` is a drop-in, faster `selectors`; `install()` makes the
stdlib (asyncio, socketserver, subprocess, multiprocessing) use it unchanged.
`IMPLEMENTATION` is "cython" with the compiled core, "python" on the fallback.
"""

from fastio._ext import IMPLEMENTATION
from fastio._install import install, installed, uninstall

__all__ = ["IMPLEMENTATION", "install", "installed", "uninstall", "__version__"]

__version__ = "0.1.0"
