"""asyncio loop fixtures: every asyncio behaviour runs on fastio.EventLoop and
on the references, stock asyncio and uvloop.

A test that fails on "asyncio" or "uvloop" is a wrong test; one that fails
only on "fastio" is a fastio bug. Import the fixture into a test module with
``from eventloop_fixtures import aio_kind, aio_loop, run``.
"""

import asyncio
import sys

import pytest

import fastio
from fastio import _pollers

try:
    import uvloop
except ImportError:  # not on Windows
    uvloop = None

AIO_KINDS = ["fastio", "fastio-io_uring", "asyncio", "uvloop"]
# The loops with asyncio's internals (`_scheduled`, `_selector`, Handle classes).
SELECTOR_KINDS = ["fastio", "fastio-io_uring", "asyncio"]


def make_loop(kind):
    """Return a new loop of `kind`: "fastio", "fastio-io_uring" (EventLoop
    on fastio.selectors.UringSelector; skipped where io_uring is refused),
    "asyncio" or "uvloop"."""
    if kind == "fastio":
        return fastio.new_event_loop()
    if kind == "fastio-io_uring":
        poller, reason = _pollers.uring_poller()
        if poller is None:
            pytest.skip("io_uring is unavailable: %s" % reason)
        poller.close()
        return fastio.EventLoop(backend="io_uring")
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    if uvloop is None:
        pytest.fail("uvloop is a test dependency (pyproject.toml's test extra)")
    return uvloop.new_event_loop()


def close_loop(loop):
    if not loop.is_closed():
        loop.run_until_complete(loop.shutdown_asyncgens())
        if sys.version_info >= (3, 9):
            loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture(params=AIO_KINDS)
def aio_kind(request):
    """The loop under test: "fastio", or the "asyncio" / "uvloop" reference."""
    return request.param


@pytest.fixture
def aio_loop(aio_kind):
    """A fresh event loop of `aio_kind`, also set as the thread's current loop."""
    loop = make_loop(aio_kind)
    asyncio.set_event_loop(loop)
    yield loop
    close_loop(loop)


@pytest.fixture(params=SELECTOR_KINDS)
def selector_loop(request):
    """fastio.EventLoop and stock asyncio: for asyncio internals uvloop lacks."""
    loop = make_loop(request.param)
    asyncio.set_event_loop(loop)
    yield loop
    close_loop(loop)


def run(loop, coro, timeout=30.0):
    """Run `coro` on `loop`; fail (not hang) after `timeout` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def echo_stream(reader, writer):
    """Echo a stream client's bytes until its EOF, then close: an asyncio.start_server callback."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def stream_round_trip(reader, writer, body):
    """Send `body` and EOF, read the reply to EOF, close; return whether it was `body`."""
    writer.write(body)
    await writer.drain()
    writer.write_eof()
    got = await reader.read()
    writer.close()
    await writer.wait_closed()
    return got == body


def assert_replies_before_the_end(order, end, exc):
    """Check a connection's last events: each chunk's reply (recorded as
    "data", then "reply closing=False") before the end, on an open
    transport; then eof_received ("eof", `end` "eof") or not, then
    connection_lost ("lost") with None after an EOF, else a reset."""
    assert order[-1] == "lost"
    assert order[-2] == ("eof" if end == "eof" else "reply closing=False"), order
    assert set(order[:-2]) <= {"data", "reply closing=False"}, order
    assert order.count("data") == order.count("reply closing=False")
    if end == "eof":
        assert exc is None
    else:
        assert isinstance(exc, ConnectionResetError), exc
