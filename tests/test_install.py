"""fastio.install(): the stdlib's own users end up on fastio's selectors.

Each user is driven for real (TCP echo, a child process, a Pipe) and a
counting wrapper on the fastio class proves its select() did the waiting.
install() is always undone by the `installed` fixture, so other tests see the
stdlib untouched.
"""

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import selectors
import socket
import socketserver
import subprocess
import sys
import threading

import pytest

import fastio
import fastio.selectors as fsel

# The seven names install() rebinds, with what the stdlib had at import.
SELECTOR_NAMES = ("SelectSelector", "PollSelector", "EpollSelector", "DefaultSelector")
CAPTURED = (
    (subprocess, "_PopenSelector"),
    (socketserver, "_ServerSelector"),
    (multiprocessing.connection, "_WaitSelector"),
)


def _snapshot():
    names = [(selectors, n) for n in SELECTOR_NAMES if hasattr(selectors, n)]
    names += [(mod, attr) for mod, attr in CAPTURED if hasattr(mod, attr)]
    return {(ns.__name__, name): getattr(ns, name) for ns, name in names}


def _current(snapshot):
    import importlib

    return {(mod, name): getattr(importlib.import_module(mod), name) for mod, name in snapshot}


@pytest.fixture
def installed():
    """fastio installed for the test, uninstalled after whatever happens."""
    assert not fastio.installed(), "a previous test left fastio installed"
    assert fastio.install() is True
    try:
        yield
    finally:
        fastio.uninstall()


@pytest.fixture
def count_selects(monkeypatch):
    """``count_selects(cls)`` wraps ``cls.select``; returns the list of what each call returned."""

    def wrap(cls):
        calls = []
        original = cls.select

        def select(self, timeout=None):
            ready = original(self, timeout)
            calls.append(ready)
            return ready

        monkeypatch.setattr(cls, "select", select)
        return calls

    return wrap


def _payload(n):
    return os.urandom(n)


# --- install / uninstall bookkeeping -----------------------------------------


def test_install_rebinds_all_seven_names_to_fastio():
    before = _snapshot()
    assert len(before) == 7
    assert fastio.install() is True
    try:
        now = _current(before)
        for (mod, name), value in now.items():
            expected = fsel.PollSelector if mod != "selectors" else getattr(fsel, name)
            assert value is expected, (mod, name, value)
    finally:
        fastio.uninstall()


def test_install_twice_returns_false(installed):
    assert fastio.install() is False
    assert fastio.installed() is True


def test_uninstall_restores_exact_original_objects():
    before = _snapshot()
    fastio.install()
    fastio.install()
    assert fastio.uninstall() is True
    after = _current(before)
    for key, original in before.items():
        assert after[key] is original, key
    assert fastio.installed() is False


def test_uninstall_when_not_installed_returns_false():
    assert fastio.installed() is False
    before = _snapshot()
    assert fastio.uninstall() is False
    assert _current(before) == before


# --- asyncio -----------------------------------------------------------------


def test_asyncio_new_loop_uses_fastio_selector(installed):
    loop = asyncio.new_event_loop()
    try:
        assert type(loop._selector) is fsel.DefaultSelector
        assert type(loop._selector).__module__.startswith("fastio")
    finally:
        loop.close()


def test_asyncio_tcp_echo_round_trip_over_fastio(installed, count_selects):
    calls = count_selects(fsel.DefaultSelector)
    payload = _payload(256 * 1024)

    async def handle(reader, writer):
        data = await reader.readexactly(len(payload))
        writer.write(data)
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        writer.close()
        server.close()
        await server.wait_closed()
        return echoed

    loop = asyncio.new_event_loop()
    try:
        echoed = loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()
    assert echoed == payload
    assert any(calls)  # the loop learned of readiness through fastio


# --- socketserver ------------------------------------------------------------


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        self.wfile.write(line.upper())


@pytest.mark.parametrize("server_cls", [socketserver.TCPServer, socketserver.ThreadingTCPServer])
def test_socketserver_serve_forever_uses_fastio(installed, count_selects, server_cls):
    assert socketserver._ServerSelector is fsel.PollSelector
    calls = count_selects(fsel.PollSelector)
    server = server_cls(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.sendall(b"hello fastio\n")
            reply = client.makefile("rb").readline()
        assert reply == b"HELLO FASTIO\n"
        # The connection was noticed by fastio's select(): a call returned
        # the listening socket as ready.
        listener = server.socket.fileno()
        assert any(key.fd == listener for ready in calls for key, _ in ready)
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


# --- subprocess --------------------------------------------------------------


def test_subprocess_communicate_uses_fastio(installed, count_selects):
    assert subprocess._PopenSelector is fsel.PollSelector
    calls = count_selects(fsel.PollSelector)
    payload = _payload(512 * 1024)  # more than a pipe buffer: many select() rounds
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = child.communicate(input=payload, timeout=5)
    assert child.returncode == 0, err
    assert out == payload
    assert any(calls)  # fastio's select() reported the pipes ready


# --- multiprocessing ---------------------------------------------------------


def test_multiprocessing_connection_wait_uses_fastio(installed, count_selects):
    assert multiprocessing.connection._WaitSelector is fsel.PollSelector
    calls = count_selects(fsel.PollSelector)
    a, b = multiprocessing.Pipe()
    c, d = multiprocessing.Pipe()
    try:
        b.send_bytes(b"ping")
        ready = multiprocessing.connection.wait([a, c], timeout=5)
        assert ready == [a]
        assert a.recv_bytes() == b"ping"
        assert any(key.fileobj is a for ready in calls for key, _ in ready)
    finally:
        for conn in (a, b, c, d):
            conn.close()


def test_multiprocessing_connection_wait_times_out_with_nothing_ready(installed, count_selects):
    calls = count_selects(fsel.PollSelector)
    a, b = multiprocessing.Pipe()
    try:
        assert multiprocessing.connection.wait([a], timeout=0.05) == []
        assert len(calls) > 0 and not any(calls)
    finally:
        a.close()
        b.close()
