"""Loop fixtures (a pytest plugin loaded by conftest.py): every loop behaviour
runs on fastio and on asyncio.
`any_loop` is parametrized over fastio's Loop on its compiled core
("fastio-c", skipped where it is not built), the same Loop on io_uring
("fastio-io_uring", `Loop(backend="io_uring")`: completion-based transports;
skipped where the kernel refuses io_uring), on its pure-Python core
("fastio-py", what FASTIO_NO_EXTENSIONS=1 gives) and asyncio's default loop
as the reference, behind `LoopAdapter`: the few calls
whose shape differs (asyncio's coroutines vs fastio's synchronous
create_server / future-returning create_connection) go through it, the rest
of a test talks to `adapter.loop` directly.
"""

import asyncio
import os
import signal
import threading
import time

import pytest

import fastio
import implementations
from fastio import _pollers
from fastio.loop import Loop, Protocol

LOOP_KINDS = ["fastio-c", "fastio-io_uring", "fastio-py", "asyncio"]
FASTIO_KINDS = ["fastio-c", "fastio-io_uring", "fastio-py"]


def child_exit_code(pid, timeout=120.0):
    """Return the exit code of forked child `pid`; kill it and fail if it hangs.

    A child forked from a threaded test process can deadlock; the suite must
    fail then, not hang.
    """
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("forked child %d still running after %.0f s" % (pid, timeout))
        time.sleep(0.01)


def write_from_another_thread(loop, transport, peer, size):
    """Start a thread that writes `size` bytes on `transport` once the loop
    waits, reads them from `peer` (blocking), and only then wakes the loop;
    return (a future of the byte count read, the thread).

    Nothing but the write itself can have sent the bytes before the future
    is set: the loop is woken only after the peer has had them.
    """
    done = loop.create_future()

    def other():
        time.sleep(0.2)  # (let the loop block in its wait first)
        transport.write(b"w" * size)
        n = 0
        try:
            while n < size:
                chunk = peer.recv(1 << 20)
                if not chunk:
                    break
                n += len(chunk)
        finally:
            loop.call_soon_threadsafe(done.set_result, n)

    thread = threading.Thread(target=other)
    thread.start()
    return done, thread


def uring_unavailable():
    """Return why a Loop cannot run on io_uring here, or None if it can."""
    poller, reason = _pollers.uring_poller(8)
    if poller is not None:
        poller.close()
        if fastio.IMPLEMENTATION != "cython":
            return "the pure-Python Loop has no completion transports"
    return reason


class LoopAdapter:
    """A loop under test plus the calls that differ between fastio and asyncio."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "fastio-io_uring":
            reason = uring_unavailable()
            if reason is not None:
                pytest.skip("io_uring is unavailable: %s" % reason)
            self.loop = Loop(backend="io_uring")
        elif kind in FASTIO_KINDS:
            self.loop = implementations.loop_class(kind[len("fastio-"):])()
        elif kind == "fastio-asyncio":
            self.loop = fastio.new_event_loop()  # fastio.EventLoop
        else:
            self.loop = asyncio.new_event_loop()
        self.is_asyncio = kind in ("asyncio", "fastio-asyncio")

    def _complete(self, aw, timeout):
        fut = asyncio.ensure_future(aw, loop=self.loop) if self.is_asyncio else aw
        return self.run_until(fut, timeout)

    def run_until(self, fut, timeout=10.0):
        """Run until `fut` is done; fail (not hang) after `timeout` seconds."""
        def expire():
            if not fut.done():
                fut.cancel()
        timer = self.loop.call_later(timeout, expire)
        try:
            return self.loop.run_until_complete(fut)
        except asyncio.CancelledError:
            raise AssertionError("timed out after %ss" % timeout) from None
        finally:
            timer.cancel()

    def create_server(self, factory, host="127.0.0.1", port=0, **kwargs):
        if self.is_asyncio:
            return self._complete(
                self.loop.create_server(factory, host, port, **kwargs), 10)
        return self.loop.create_server(factory, host, port, **kwargs)

    def start_connection(self, factory, host, port):
        """Start connecting; return a future of (transport, protocol)."""
        aw = self.loop.create_connection(factory, host, port)
        return asyncio.ensure_future(aw, loop=self.loop) if self.is_asyncio else aw

    def connect(self, factory, host, port, timeout=10.0):
        return self.run_until(self.start_connection(factory, host, port), timeout)

    def wait_server_closed(self, server, timeout=10.0):
        if self.is_asyncio:
            return self._complete(server.wait_closed(), timeout)
        return self.run_until(server.wait_closed(), timeout)

    def close(self):
        if not self.loop.is_closed():
            self.loop.close()


class Collector(Protocol):
    """Record everything a connection sees; futures for the milestones."""

    def __init__(self, loop, expect=None):
        self.loop = loop
        self.expect = expect
        self.data = bytearray()
        self.events = []
        self.transport = None
        self.got_all = loop.create_future()
        self.lost = loop.create_future()
        self.eof = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.data += data
        if self.expect is not None and len(self.data) >= self.expect and not self.got_all.done():
            self.got_all.set_result(bytes(self.data))

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(bytes(self.data))

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.fixture(params=LOOP_KINDS)
def any_loop(request):
    adapter = LoopAdapter(request.param)
    yield adapter
    adapter.close()


@pytest.fixture(params=FASTIO_KINDS)
def fastio_loop(request):
    adapter = LoopAdapter(request.param)
    yield adapter
    adapter.close()
