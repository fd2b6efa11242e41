"""The io_uring benchmark's C reference server echoes right and holds its memory bound.

No timing here: the numbers belong to `make bench`. These tests keep the
reference row honest, so the suite cannot compare fastio with a server that
echoes wrong bytes or buffers without bound.
"""

import os
import shutil
import socket
import sys
import time

import pytest

from echo_support import echo_once

# The benchmarks package sits beside tests/. Appended, not prepended: a run
# from another directory (the sanitizer build's) keeps the fastio it imported.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_uring, harness  # noqa: E402
from fastio.echo import uring  # noqa: E402

pytestmark = [
    pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler"),
    pytest.mark.skipif(uring.status()[0] is None, reason="io_uring unavailable: %s" % (uring.status()[1],)),
    # The server is built from src/fastio_uring.h, absent beside an installed wheel.
    pytest.mark.skipif(not bench_uring.C_URING_HEADER.exists(), reason="needs the source checkout"),
]


@pytest.fixture
def c_uring_server(request):
    """Start the C io_uring server (argument: --upper or not); stop it after the test."""
    bench_uring.build_c_uring_server()
    server = harness.RunningServer("c-io_uring", bench_uring.SERVERS["c-io_uring"],
                                   upper=getattr(request, "param", False))
    yield server
    assert server.stop() == 0  # SIGTERM ends its loop


def test_c_uring_server_echoes_every_byte(c_uring_server):
    payload = os.urandom(3_000_000)  # many provided buffers, short sends, a full socket buffer
    assert echo_once(c_uring_server.port, payload) == payload


def test_c_uring_server_serves_connections_at_once(c_uring_server):
    socks = [socket.create_connection(("127.0.0.1", c_uring_server.port), timeout=10) for _ in range(50)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"%d:" % i + b"x" * (i * 997))
        for i, sock in enumerate(socks):
            want = b"%d:" % i + b"x" * (i * 997)
            got = bytearray()
            while len(got) < len(want):
                got += sock.recv(65536)
            assert bytes(got) == want
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("c_uring_server", [True], indirect=True)
def test_c_uring_server_upper_replies_in_ascii_uppercase(c_uring_server):
    payload = bytes(range(256)) * 2000
    assert echo_once(c_uring_server.port, payload) == payload.upper()


def test_c_uring_server_stops_reading_a_client_that_never_reads(c_uring_server):
    with socket.create_connection(("127.0.0.1", c_uring_server.port), timeout=10) as sock:
        sock.setblocking(False)
        chunk, sent, last_progress = b"y" * 65536, 0, time.monotonic()
        # Send until nothing moves for a while: the server has stopped reading.
        while time.monotonic() - last_progress < 1.0:
            try:
                sent += sock.send(chunk)
                last_progress = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
            assert sent < 256 * 1024 * 1024, "the server kept reading a client that never reads"
        # What it owes stays bounded: its unsent bytes fit in the kernel's
        # socket buffers and its 64 KiB high water, far below what was sent
        # had it buffered everything.
        with open("/proc/%d/status" % c_uring_server.proc.pid) as status:
            rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
        assert rss_kib < 64 * 1024
