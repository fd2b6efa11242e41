"""Shared fixtures: every behaviour test runs on both of fastio's
implementations AND on the stdlib.

`implementation` ("c" | "py") is the one implementation fixture: the
compiled modules of fastio._impl, or their pure-Python twins, side by side
in one process (tests/implementations.py; "c" skips where the extension is
not built, and fails under FASTIO_REQUIRE_EXTENSIONS=1).

The stdlib classes are the reference model: a test that fails on a "stdlib-*"
param is a wrong test, one that fails only on "fastio-*" is a fastio bug.

`impl` ("fastio-c" | "fastio-py" | "stdlib") x `backend` ("epoll" | "poll" |
"select" | "io_uring", the last on the compiled core only) give `selector_cls` with ids such as ``fastio-c-epoll`` and
``stdlib-poll``. `epoll_cls` / `poll_cls` / `select_cls` give one backend for
the current impl.

The stdlib classes are captured when this file is imported, before any test
can call `fastio.install()`, so "stdlib" always means the stdlib's own class.
"""

import gc
import os
import selectors
import signal
import socket

try:
    import resource
except ImportError:  # not on Windows
    resource = None

import pytest

import fastio
import fastio.selectors as fastio_selectors
import implementations
from fastio import _pollers

# The loop tests' fixtures (any_loop, LoopAdapter) and the RabbitMQ ones
# (broker, connection_cls, queue) live beside this file.
pytest_plugins = ["loop_fixtures", "broker_fixtures"]

BACKENDS = ("epoll", "poll", "select", "io_uring")
IMPLS = ("fastio-c", "fastio-py", "stdlib")
CLASS_NAMES = {"epoll": "EpollSelector", "poll": "PollSelector", "select": "SelectSelector",
               "io_uring": "UringSelector"}

# Snapshot before any install(): install() rebinds these names in `selectors`.
STDLIB_CLASSES = {b: getattr(selectors, n, None) for b, n in CLASS_NAMES.items()}
STDLIB_DEFAULT = selectors.DefaultSelector
# fastio.selectors' classes: those of the implementation fastio._impl chose.
FASTIO_CLASSES = {b: getattr(fastio_selectors, n, None) for b, n in CLASS_NAMES.items()}


def selector_class(impl, backend):
    """Return the selector class of `backend` for `impl`, or skip if absent.

    :param impl: "fastio-c", "fastio-py" (see `implementation`) or "stdlib".
    """
    if impl == "stdlib":
        classes = STDLIB_CLASSES
    else:
        classes = implementations.selector_classes(impl[len("fastio-"):])
    cls = classes[backend]
    if cls is None:
        pytest.skip("%s has no %s on this platform" % (impl, CLASS_NAMES[backend]))
    if backend == "io_uring":
        poller, reason = _pollers.uring_poller()
        if poller is None:
            pytest.skip("io_uring is unavailable: %s" % reason)
        poller.close()
    return cls


def pytest_collection_modifyitems(config, items):
    # Only the compiled core has an io_uring selector (neither the stdlib nor
    # the pure-Python twin): no such cases to run or skip.
    items[:] = [item for item in items
                if getattr(item, "callspec", None) is None
                or item.callspec.params.get("backend") != "io_uring"
                or (item.callspec.params.get("impl", "fastio-c") == "fastio-c"
                    and item.callspec.params.get("implementation", "c") == "c"
                    and "stdlib_cls" not in item.fixturenames)]


def pytest_sessionstart(session):
    # CI sets FASTIO_REQUIRE_EXTENSIONS=1: a suite that silently tested the
    # pure-Python fallback there would prove nothing about the compiled core.
    if os.environ.get("FASTIO_REQUIRE_EXTENSIONS", "") not in ("", "0"):
        if fastio.IMPLEMENTATION != "cython":
            pytest.exit(
                "FASTIO_REQUIRE_EXTENSIONS=1 but fastio.IMPLEMENTATION == %r "
                "(expected 'cython'): build the extension first (make build)"
                % (fastio.IMPLEMENTATION,),
                returncode=3,
            )


def pytest_report_header(config):
    return "fastio IMPLEMENTATION=%s" % (fastio.IMPLEMENTATION,)


@pytest.fixture(params=implementations.IMPLEMENTATIONS)
def implementation(request):
    """Which of fastio's implementations the test runs on: "c" or "py".

    Get a pair's module with ``implementations.pair(implementation, "loop")``.
    """
    if request.param == "c":
        implementations.pair("c", "core")  # skips (or fails) without the extension
    return request.param


@pytest.fixture(params=IMPLS)
def impl(request):
    """The selectors under test: "fastio-c", "fastio-py" or the "stdlib" reference."""
    if request.param == "fastio-c":
        implementations.pair("c", "core")
    return request.param


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The readiness syscall: "epoll", "poll", "select" or "io_uring"."""
    return request.param


@pytest.fixture
def selector_cls(impl, backend):
    """The selector class for (impl, backend); ids read ``fastio-epoll``."""
    return selector_class(impl, backend)


@pytest.fixture
def epoll_cls(impl):
    return selector_class(impl, "epoll")


@pytest.fixture
def poll_cls(impl):
    return selector_class(impl, "poll")


@pytest.fixture
def select_cls(impl):
    return selector_class(impl, "select")


@pytest.fixture
def default_cls(impl):
    """`DefaultSelector` of the current impl."""
    if impl == "stdlib":
        return STDLIB_DEFAULT
    return implementations.default_selector(impl[len("fastio-"):])


@pytest.fixture
def fastio_cls(implementation, backend):
    """fastio's class of the current backend (for side-by-side comparisons)."""
    return selector_class("fastio-" + implementation, backend)


@pytest.fixture
def stdlib_cls(backend):
    """The stdlib's class of the current backend (the reference)."""
    return selector_class("stdlib", backend)


@pytest.fixture
def selector(selector_cls):
    """A fresh selector of `selector_cls`, closed after the test."""
    sel = selector_cls()
    yield sel
    sel.close()


@pytest.fixture
def socketpair():
    """Factory: ``socketpair()`` returns a connected pair, closed after the test."""
    made = []

    def make(*args):
        pair = socket.socketpair(*args)
        made.extend(pair)
        return pair

    yield make
    for sock in made:
        sock.close()


class _Pipes:
    """Pipe factory that remembers which ends it still owns.

    Close ends through `close()`, never `os.close()`: closing an fd number
    twice could close an unrelated file that reused the number.
    """

    def __init__(self):
        self._open = set()

    def __call__(self):
        r, w = os.pipe()
        self._open.update((r, w))
        return r, w

    def close(self, fd):
        self._open.discard(fd)
        os.close(fd)

    def close_all(self):
        while self._open:
            os.close(self._open.pop())


@pytest.fixture
def pipe():
    """Factory: ``pipe()`` returns (read_fd, write_fd); ``pipe.close(fd)`` closes an end."""
    pipes = _Pipes()
    yield pipes
    pipes.close_all()


@pytest.fixture
def fd_limit():
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit.

    The old soft limit is restored after the test (fds already open stay valid).
    """
    if resource is None:
        pytest.skip("needs the resource module (RLIMIT_NOFILE)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        target = soft
    yield target
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_fd_count():
    """Return how many fds this process has open (Linux /proc, else a guess)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def open_fds():
    """Return the set of fds this process has open (Linux /proc), after a collection.

    A test that checks for a leak compares these sets, not their sizes:
    objects of earlier tests that a collection frees meanwhile close fds too.
    """
    gc.collect()
    return set(os.listdir("/proc/self/fd"))


def fill_send_buffer(sock):
    """Send into non-blocking `sock` until the kernel's buffers are full; return the byte count."""
    total = 0
    chunk = b"f" * 65536
    while True:
        try:
            total += sock.send(chunk)
        except BlockingIOError:
            return total


def drain_socket(sock):
    """Make `sock` non-blocking and read what it holds, up to its end of stream."""
    sock.setblocking(False)
    try:
        while sock.recv(1 << 20):
            pass
    except BlockingIOError:
        pass


@pytest.fixture
def sigalrm():
    """Install a SIGALRM handler; ``sigalrm(handler, delay)`` arms a timer."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs signal.setitimer")
    original = signal.getsignal(signal.SIGALRM)

    def arm(handler, delay):
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, delay)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, original)
