"""The echo server on io_uring: test_echo's server tests again, plus what only
io_uring has (EMFILE on a completion-based accept, setup refused, fallback).

The server tests of tests/test_echo.py and the 10k-connection test of
tests/test_reliability.py are imported here and run with
``echo_support.BACKEND = "io_uring"``: InProcessServer then builds a
UringEchoServer and ServerProcess passes ``--backend io_uring``. They skip
only where the kernel has no usable io_uring (uring_unavailable()).
"""

import errno
import os
import signal
import socket
import sys
import time

import pytest

import echo_support
from echo_support import ServerProcess, connect, parse_summary, recv_exactly, round_trip, uring_unavailable
from fastio._impl import compiled

# The server tests, by name: each runs here on io_uring.
from test_echo import (  # noqa: F401
    test_a_thousand_concurrent_clients_each_get_their_own_bytes,
    test_abrupt_resets_do_not_disturb_other_clients,
    test_client_that_never_reads_cannot_grow_server_memory_and_others_are_served,
    test_half_close_after_backpressure_still_gets_every_reply_then_eof,
    test_half_close_still_gets_every_reply_then_eof,
    test_max_conns_holds_when_clients_arrive_in_one_burst,
    test_max_conns_keeps_a_third_client_waiting_until_one_leaves,
    test_shutdown_flushes_replies_owed_to_a_client_not_reading,
    test_sigint_stops_the_server_like_sigterm,
    test_signal_right_after_the_ready_line_is_a_clean_shutdown,
    test_sigterm_while_busy_echoes_every_byte_read_and_prints_summary,
    test_sigterm_with_a_slow_reader_still_delivers_every_byte_read,
    test_two_workers_share_connections_and_sigterm_sums_their_stats,
)
from test_reliability import test_ten_thousand_concurrent_echo_connections_every_byte_verified  # noqa: F401

# io_uring exists compiled only.
_echo_ext = compiled("echo")

UNAVAILABLE = uring_unavailable()

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="io_uring is Linux-only"),
]

needs_uring = pytest.mark.skipif(UNAVAILABLE is not None, reason="io_uring unavailable: %s" % UNAVAILABLE)


@pytest.fixture(autouse=True)
def _on_io_uring(request, monkeypatch):
    """Run every server of the test on io_uring (the fallback tests excepted)."""
    if "falls_back" not in request.node.name:
        if UNAVAILABLE is not None:
            pytest.skip("io_uring unavailable: %s" % UNAVAILABLE)
        monkeypatch.setattr(echo_support, "BACKEND", "io_uring")


# --- what only io_uring has ---------------------------------------------------


def test_echo_server_on_a_loop_refuses_io_uring_naming_the_alternative():
    from fastio.echo.server import EchoServer

    with pytest.raises(ValueError, match="UringEchoServer"):
        EchoServer(port=0, backend="io_uring")


def test_cli_serves_on_io_uring_and_says_so():
    with ServerProcess() as srv:
        with connect(srv.address) as sock:
            reply = round_trip(sock, bytes(range(256)) * 64)
        code, lines, err = srv.stop()
    assert "(backend io_uring," in srv.ready_line
    assert reply == bytes(range(256)) * 64
    assert code == 0, err
    assert err == ""
    assert parse_summary(lines) == (1, 16384, 16384)


def test_many_pipelined_requests_take_fewer_enters_than_requests():
    # The mechanism, not a timing: requests that are waiting together are
    # answered together, as SQEs of one io_uring_enter. Each round's requests
    # are sent while this thread holds the GIL (libc's send through
    # ctypes.PyDLL keeps it), so the server thread, which needs the GIL
    # between its enters, finds them all waiting however the machine
    # schedules the two threads; sent with socket.send (which releases the
    # GIL), a loaded machine can run the server between any two requests.
    import ctypes
    import threading

    from fastio.echo.uring import UringEchoServer

    send_holding_gil = ctypes.PyDLL(None).send
    send_holding_gil.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
    send_holding_gil.restype = ctypes.c_ssize_t
    server = UringEchoServer(port=0)
    host, port = server.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    socks = [connect((host, port)) for _ in range(20)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(30.0)  # no forced GIL hand-off inside a round's sends
    try:
        for _ in range(50):
            for sock in socks:
                assert send_holding_gil(sock.fileno(), b"x" * 100, 100, 0) == 100
            for sock in socks:
                assert recv_exactly(sock, 100) == b"x" * 100
    finally:
        sys.setswitchinterval(interval)
        for sock in socks:
            sock.close()
        server.shutdown()
        thread.join(10)
        server.close()
    assert not thread.is_alive()
    assert server.stats.bytes_in == server.stats.bytes_out == 20 * 50 * 100
    # About 3 per round (the first request's recv, the rest's, their sends'
    # completions); one per request without the batching.
    assert server.engine.enters < 20 * 50 / 2


@pytest.mark.parametrize("mode", ["defer_taskrun", "coop_taskrun", "plain"])
def test_every_setup_mode_echoes_byte_exact_and_flushes_on_shutdown(mode):
    # Older kernels get the lesser modes: completions then arrive without
    # DEFER_TASKRUN's batching, and the loop must not depend on it.
    import threading

    from fastio.echo import uring
    from fastio.echo.uring import UringEchoServer

    order = ["plain", "coop_taskrun", "defer_taskrun"]
    if order.index(mode) > order.index(uring.status()[0]):
        pytest.skip("this kernel's best io_uring setup mode is %s" % uring.status()[0])
    payload = (bytes(range(256)) + b"mixed Case zZ") * 3000
    server = UringEchoServer(port=0, upper=True, mode=mode, drain_timeout=5)
    host, port = server.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with connect((host, port)) as sock:
            sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
            sender.start()
            got = recv_exactly(sock, len(payload), timeout=10)
            sender.join(5)
            sock.sendall(b"owed at shutdown")
            assert echo_support.wait_until(lambda: server.stats.bytes_in == len(payload) + 16)
            server.shutdown()
            rest, saw_eof = echo_support.recv_until_eof(sock, timeout=10)
        thread.join(10)
    finally:
        server.shutdown()
        thread.join(10)
        server.close()
    assert server.mode == mode
    assert got == echo_support.ascii_upper(payload)
    assert rest == b"OWED AT SHUTDOWN"
    assert saw_eof
    assert not thread.is_alive()


def _echo_then_eof(address, payload):
    """One client: `payload` echoed, then its half-close answered with EOF."""
    with connect(address) as sock:
        reply = round_trip(sock, payload)
        sock.shutdown(socket.SHUT_WR)
        rest, saw_eof = echo_support.recv_until_eof(sock, timeout=10)
    return reply, rest, saw_eof


@pytest.mark.skipif(_echo_ext is None, reason="needs fastio's C extension")
@pytest.mark.parametrize("table", ["registered", "refused"])
def test_sockets_in_the_registered_file_table_still_close_for_the_client(table):
    # Registered, a connection's ops name its socket by slot and the table
    # holds a reference: its slot must be emptied before close(), or the
    # socket outlives it and the client never sees EOF. Refused (an older
    # kernel), the ops use plain fds. Slots are reused with their fd numbers.
    _echo_ext._uring_fake_files_errno(errno.EINVAL if table == "refused" else 0)
    try:
        with echo_support.InProcessServer() as srv:
            results = [_echo_then_eof(srv.address, b"client %d" % i) for i in range(6)]
            with connect(srv.address) as a, connect(srv.address) as b:
                both = [round_trip(a, b"a" * 5000), round_trip(b, b"b" * 5000)]
            engine = srv.server.engine
            assert echo_support.wait_until(lambda: engine.nconns == 0)
    finally:
        _echo_ext._uring_fake_files_errno(0)
    assert srv.errors == []
    assert results == [(b"client %d" % i, b"", True) for i in range(6)]
    assert both == [b"a" * 5000, b"b" * 5000]
    if table == "registered":
        assert engine.files > 0
        assert engine.fixed_connections == engine.connections == 8
    else:
        assert engine.files == 0
        assert engine.fixed_connections == 0
        assert engine.connections == 8


@pytest.mark.skipif(_echo_ext is None, reason="needs fastio's C extension")
def test_a_socket_numbered_past_the_file_table_runs_on_its_plain_fd():
    # The table is sized from RLIMIT_NOFILE at setup; the limit raised later,
    # an accepted fd can be past it.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    filler = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 32, hard))
    try:
        with echo_support.InProcessServer() as srv:
            # serve_forever makes the ring, and its table, in the server's thread.
            assert echo_support.wait_until(lambda: srv.server.mode is not None)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            engine = srv.server.engine
            files = engine.files
            while not filler or filler[-1] < files:
                filler.append(os.open(os.devnull, os.O_RDONLY))
            # The accept armed under the low limit fails on a high fd (EMFILE)
            # and is retried within a second under the raised one.
            reply, rest, saw_eof = _echo_then_eof(srv.address, b"past the table")
            assert echo_support.wait_until(lambda: engine.nconns == 0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in filler:
            os.close(fd)
    assert srv.errors == []
    assert 0 < files <= highest + 32
    assert (reply, rest, saw_eof) == (b"past the table", b"", True)
    assert engine.connections == 1
    assert engine.fixed_connections == 0


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accept_emfile_keeps_serving_without_spinning_then_serves_the_backlog():
    import resource

    def few_fds():
        # A limit set before the accept is armed: io_uring's accept reads
        # RLIMIT_NOFILE when the SQE is prepared.
        resource.setrlimit(resource.RLIMIT_NOFILE, (24, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    with ServerProcess(preexec_fn=few_fds) as srv:
        served = []
        while len(served) < 40:
            sock = connect(srv.address)
            if round_trip(sock, b"client %02d" % len(served), timeout=0.5) != b"client %02d" % len(served):
                break
            served.append(sock)
        pending = [sock] + [connect(srv.address) for _ in range(2)]
        for i, sock in enumerate(pending[1:], 1):
            sock.sendall(b"client %02d" % (len(served) + i))
        cpu0, t0 = _cpu_seconds(srv.pid), time.monotonic()
        early = [recv_exactly(sock, 9, timeout=0.2) for sock in pending[1:]]
        # The connected clients are still served meanwhile.
        still = [round_trip(served[0], b"again %03d" % i) for i in range(20)]
        time.sleep(max(0.0, t0 + 1.5 - time.monotonic()))
        cpu_share = (_cpu_seconds(srv.pid) - cpu0) / (time.monotonic() - t0)
        # Three fds free up; the retry (within a second) accepts the backlog.
        for sock in served[-3:]:
            sock.close()
        late = [recv_exactly(sock, 9, timeout=5) for sock in pending]
        for sock in served[:-3] + pending:
            sock.close()
        code, lines, err = srv.stop()
    assert 3 <= len(served) < 40, "the server accepted %d connections under a limit of 24 fds" % len(served)
    assert early == [b"", b""]
    assert still == [b"again %03d" % i for i in range(20)]
    assert cpu_share < 0.3, "the server used %.0f%% of a core while accept() failed" % (100 * cpu_share)
    assert late == [b"client %02d" % (len(served) + i) for i in range(3)]
    assert code == 0, err
    assert parse_summary(lines)[0] == len(served) + 3


def test_short_sends_to_a_slow_reader_resume_where_they_stopped():
    # The client's receive buffer is tiny and it reads in small steps: the
    # server's sends complete short, again and again.
    payload = os.urandom(3 << 20)
    with echo_support.InProcessServer() as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(srv.address)
        import threading

        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        got = bytearray()
        sock.settimeout(10)
        while len(got) < len(payload):
            chunk = sock.recv(1000)
            if not chunk:
                break
            got += chunk
        sender.join(5)
        sock.close()
    assert bytes(got) == payload
    assert srv.errors == []


# --- refused and fallback -------------------------------------------------------


@pytest.mark.skipif(_echo_ext is None, reason="needs fastio's C extension")
@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOSYS, errno.EINVAL], ids=["EPERM", "ENOSYS", "EINVAL"])
def test_setup_refused_is_reported_and_serve_falls_back_to_epoll_with_one_notice(err, monkeypatch, capsys):
    from fastio.echo import server as server_module
    from fastio.echo import uring

    _echo_ext._uring_fake_errno(err)
    try:
        mode, reason = uring.status()
        with pytest.raises(OSError, match="io_uring is unavailable"):
            uring.UringEchoServer(port=0)
        backend = server_module._resolve_backend("io_uring")
        silent = server_module._resolve_backend(None)
    finally:
        _echo_ext._uring_fake_errno(0)
    out, errtext = capsys.readouterr()
    assert mode is None
    assert os.strerror(err) in reason
    assert backend == "epoll"
    assert silent is None
    assert out == ""
    assert errtext.count("\n") == 1
    assert errtext.startswith("fastio echo: io_uring unavailable (io_uring_setup: %s" % os.strerror(err))


def test_cli_falls_back_to_epoll_when_io_uring_is_disabled():
    env = dict(os.environ, FASTIO_IO_URING="0")
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "fastio", "echo", "--port", "0", "--backend", "io_uring"],
        cwd=echo_support.ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        line = echo_support.read_line(proc.stdout, 10)
        host, port = echo_support.READY_RE.match(line).groups()
        with connect((host, int(port))) as sock:
            reply = round_trip(sock, b"over epoll")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "(backend epoll," in line
    assert reply == b"over epoll"
    assert proc.returncode == 0
    # Without the extension there is no io_uring to disable: that is the reason then.
    reason = ("disabled by FASTIO_IO_URING=0" if _echo_ext is not None
              else "fastio's C extension is not available")
    assert err.decode().splitlines() == ["fastio echo: io_uring unavailable (%s); using epoll" % reason]
    assert parse_summary(out.decode().splitlines()) == (1, 10, 10)



def test_uring_echo_names_the_sizes_it_refuses():
    # Checked before any io_uring call: no ring, no listening socket needed.
    with pytest.raises(ValueError, match=r"got high_water=65536 max_conns=0 entries=4 bufsize=65536$"):
        _echo_ext.UringEcho(-1, -1, entries=4)
