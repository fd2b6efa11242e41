"""The echo server and client: bytes on the wire, limits, signals, the command line.

Servers run in-process (`InProcessServer`: an EchoServer on a Loop in a
thread) where only the bytes matter, and as ``python -m fastio echo --port 0``
(`ServerProcess`) where signals, memory, workers or the command line are
under test. Every socket and subprocess call has a timeout.
"""

import json
import os
import select
import signal
import socket
import sys
import threading
import time

import pytest

from echo_support import (
    InProcessServer, Pump, ServerProcess, ascii_upper, child_pids, connect, established_on_port,
    fill_until_server_owes, parse_summary, raise_nofile, recv_exactly, recv_until_eof, reset, round_trip,
    rss_kib, run_cli, socket_inodes, stream_prefix, uring_unavailable)
from fastio.echo import loadgen
from fastio.echo.tutorial import TUTORIAL_MESSAGE

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SO_REUSEPORT"),
]

# Every byte value, then text whose letters Unicode would uppercase but ASCII
# must not ("é" -> "É" would change the UTF-8 bytes).
NON_ASCII_TEXT = "héllo wörld straße ĳ ﬀ ǆ µ ÿ — done".encode("utf-8")
ALL_BYTES = bytes(range(256))


IO_URING = pytest.param("io_uring", marks=pytest.mark.skipif(
    uring_unavailable() is not None, reason="io_uring unavailable: %s" % uring_unavailable()))


def split_at(data, cuts):
    """Split `data` at the given offsets."""
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def free_port_held():
    """Return a socket bound (not listening) to a free port: connecting to it is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


# --- byte-exact echo ------------------------------------------------------------


@pytest.mark.parametrize("upper", [False, True], ids=["plain", "upper"])
@pytest.mark.parametrize("backend", ["epoll", "poll", "select", IO_URING])
def test_echo_is_byte_exact_with_messages_split_across_writes(backend, upper):
    messages = [
        b"This is the message.  It will be sent in parts.",
        ALL_BYTES + NON_ASCII_TEXT,
        NON_ASCII_TEXT + ALL_BYTES[::-1] + b"mixed Case 123 zZ aA",
    ]
    want = [ascii_upper(m) if upper else m for m in messages]
    if upper:
        assert want[1] != messages[1]  # the upper case really is exercised
    with InProcessServer(backend=backend, upper=upper) as srv:
        socks = [connect(srv.address) for _ in messages]
        try:
            # Like the tutorial's multi-socket client: the parts of every message interleaved
            # over the sockets, with a pause so each part is its own segment.
            parts = [split_at(m, [1, len(m) // 3, len(m) // 2 + 7]) for m in messages]
            for step in range(4):
                for sock, pieces in zip(socks, parts):
                    sock.sendall(pieces[step])
                time.sleep(0.005)
            got = [recv_exactly(sock, len(m)) for sock, m in zip(socks, want)]
            for sock in socks:
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)  # not one byte more than was sent
        finally:
            for sock in socks:
                sock.close()
    assert got == want
    # Non-ASCII bytes come back as they were, in both modes.
    for message, reply in zip(messages, got):
        assert [b for b in reply if b >= 0x80] == [b for b in message if b >= 0x80]
    assert srv.errors == []


@pytest.mark.parametrize("upper", [False, True], ids=["plain", "upper"])
@pytest.mark.parametrize("backend", ["epoll", "poll", "select", IO_URING])
def test_large_message_in_irregular_writes_comes_back_reassembled(backend, upper):
    payload = (ALL_BYTES + NON_ASCII_TEXT) * 4000  # ~1.2 MB, more than one recv and one buffer
    want = ascii_upper(payload) if upper else payload
    cuts = []
    pos = 0
    for size in [1, 2, 3, 1000, 65535, 65537, 7, 300000, 5]:
        pos += size
        cuts.append(pos)
    with InProcessServer(backend=backend, upper=upper) as srv:
        with connect(srv.address) as sock:
            def send_parts():
                for piece in split_at(payload, cuts):
                    sock.sendall(piece)
            sender = threading.Thread(target=send_parts, daemon=True)
            sender.start()
            got = recv_exactly(sock, len(want), timeout=10)
            sender.join(5)
    assert len(got) == len(want)
    assert got == want
    assert (srv.stats.bytes_in, srv.stats.connections) == (len(payload), 1)


# --- many clients -------------------------------------------------------------


def test_a_thousand_concurrent_clients_each_get_their_own_bytes():
    import selectors

    clients = 1000
    old = raise_nofile(2 * clients + 200)
    if old is None:
        pytest.skip("RLIMIT_NOFILE's hard limit is below %d" % (2 * clients + 200))
    messages = [b"client %04d: " % i + os.urandom(16) + b" %d end" % i for i in range(clients)]
    socks = []
    try:
        with InProcessServer() as srv:
            for _ in range(clients):
                sock = connect(srv.address)
                sock.setblocking(False)
                socks.append(sock)
            # Every connection is open before any byte is sent: 1000 at once.
            for half in (0, 1):
                for sock, m in zip(socks, messages):
                    cut = len(m) // 2
                    sock.send(m[:cut] if half == 0 else m[cut:])
            received = [b""] * clients
            pending = set(range(clients))
            sel = selectors.DefaultSelector()
            for i in pending:
                sel.register(socks[i], selectors.EVENT_READ, i)
            deadline = time.monotonic() + 10
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(0.5):
                    i = key.data
                    chunk = socks[i].recv(4096)
                    received[i] += chunk
                    if not chunk or len(received[i]) >= len(messages[i]):
                        pending.discard(i)
                        sel.unregister(socks[i])
            sel.close()
    finally:
        for sock in socks:
            sock.close()
        if old is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, old)
    wrong = [i for i in range(clients) if received[i] != messages[i]]
    assert wrong == [], "%d clients got wrong bytes, e.g. #%d" % (len(wrong), wrong[0])
    assert srv.stats.connections == clients
    assert srv.stats.bytes_in == srv.stats.bytes_out == sum(map(len, messages))


# --- a client that never reads --------------------------------------------------


def test_client_that_never_reads_cannot_grow_server_memory_and_others_are_served():
    limit = 200 << 20
    with ServerProcess() as srv:
        other = connect(srv.address)
        assert round_trip(other, b"warm up " * 4096) == b"warm up " * 4096
        baseline = peak = rss_kib(srv.pid)
        hog = connect(srv.address)
        hog.setblocking(False)
        chunk = memoryview(b"never read me " * 75000)  # ~1 MiB
        pushed = 0
        last_progress = time.monotonic()
        # Push until 200 MiB went out or the server stopped taking bytes for 0.5 s.
        while pushed < limit and time.monotonic() - last_progress < 0.5:
            if select.select([], [hog], [], 0.05)[1]:
                try:
                    pushed += hog.send(chunk)
                    last_progress = time.monotonic()
                except BlockingIOError:
                    pass
            peak = max(peak, rss_kib(srv.pid))
        # The hog is stalled and still connected: another client is answered.
        replies = [round_trip(other, b"still there? %d" % i, timeout=30) for i in range(20)]
        fresh = connect(srv.address)
        fresh_reply = round_trip(fresh, b"newcomer", timeout=30)
        peak = max(peak, rss_kib(srv.pid))
        alive = srv.proc.poll() is None
        for sock in (hog, other, fresh):
            sock.close()
        code, lines, err = srv.stop()
    assert alive
    assert pushed < limit, "the server took all %d MiB: it never stopped reading" % (pushed >> 20)
    assert (peak - baseline) < 30 * 1024, "server RSS grew by %d KiB" % (peak - baseline)
    assert replies == [b"still there? %d" % i for i in range(20)]
    assert fresh_reply == b"newcomer"
    assert code == 0, err


# --- abrupt resets and half-close --------------------------------------------------


def test_abrupt_resets_do_not_disturb_other_clients():
    steady_payload = os.urandom(200000)
    with InProcessServer() as srv:
        steady = connect(srv.address)
        steady.sendall(steady_payload[:1000])
        # Reset while the server owes replies it cannot send (the peer never reads).
        for _ in range(3):
            victim = connect(srv.address)
            victim.setblocking(False)
            try:
                while True:
                    victim.send(b"v" * 65536)
            except BlockingIOError:
                pass
            reset(victim)
        # Reset in the middle of a message, and right after connecting.
        victim = connect(srv.address)
        victim.sendall(b"half a mess")
        reset(victim)
        reset(connect(srv.address))
        steady.sendall(steady_payload[1000:])
        got = recv_exactly(steady, len(steady_payload), timeout=10)
        after = round_trip(steady, b"after the resets")
        newcomer = connect(srv.address)
        newcomer_reply = round_trip(newcomer, b"new connection")
        running = srv.thread.is_alive()
        steady.close()
        newcomer.close()
    assert running
    assert got == steady_payload
    assert after == b"after the resets"
    assert newcomer_reply == b"new connection"
    assert srv.errors == []  # a reset is not an error the loop has to report


def test_half_close_still_gets_every_reply_then_eof():
    pattern = ALL_BYTES + NON_ASCII_TEXT
    with InProcessServer() as srv:
        with connect(srv.address) as sock:
            # Replies are owed in the server's own buffer when the client
            # shuts its side down: they must still all arrive, then EOF.
            sent, owed = fill_until_server_owes(sock, srv, pattern)
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.1)  # the server sees the EOF before the client reads a byte
            got, saw_eof = recv_until_eof(sock, timeout=10)
    assert owed > 0
    assert len(got) == sent
    assert got == stream_prefix(pattern, sent)
    assert saw_eof


def test_half_close_after_backpressure_still_gets_every_reply_then_eof():
    payload = os.urandom(8 << 20)  # far more than the server buffers: it pauses reading on the way

    with InProcessServer(upper=True) as srv:
        with connect(srv.address) as sock:
            def send_then_shut():
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            sender = threading.Thread(target=send_then_shut, daemon=True)
            sender.start()
            got, saw_eof = recv_until_eof(sock, timeout=15)
            sender.join(5)
    assert len(got) == len(payload)
    assert got == ascii_upper(payload)
    assert saw_eof


# --- shutdown ---------------------------------------------------------------


def test_shutdown_flushes_replies_owed_to_a_client_not_reading():
    pattern = os.urandom(1009)
    with InProcessServer() as srv:
        with connect(srv.address) as sock:
            sent, owed = fill_until_server_owes(sock, srv, pattern)
            srv.shutdown_threadsafe()  # what SIGTERM calls
            time.sleep(0.1)  # the shutdown starts before the client reads a byte
            got, saw_eof = recv_until_eof(sock, timeout=10)
            stopped = srv.stop()
    assert owed > 0
    assert stopped
    assert len(got) == sent
    assert got == stream_prefix(pattern, sent)
    assert saw_eof
    assert srv.stats.bytes_in == srv.stats.bytes_out == sent


def test_sigterm_while_busy_echoes_every_byte_read_and_prints_summary():
    with ServerProcess() as srv:
        pumps = [Pump(srv.address, bytes([65 + i]) + os.urandom(250)).start() for i in range(4)]
        deadline = time.monotonic() + 10
        while min(len(p.received) for p in pumps) < 256 * 1024 and time.monotonic() < deadline:
            time.sleep(0.01)
        code, lines, err = srv.stop(signal.SIGTERM)
        finished = [p.join() for p in pumps]
        for p in pumps:
            p.close()
    assert min(len(p.received) for p in pumps) >= 256 * 1024, "no traffic before the signal"
    # The clients were still sending when the server stopped reading.
    assert sum(p.sent for p in pumps) > sum(len(p.received) for p in pumps)
    assert finished == [True] * 4
    assert code == 0
    assert "Traceback" not in err
    assert len(lines) == 1, lines  # the ready line was already read: only the summary is left
    connections, bytes_in, bytes_out = parse_summary(lines)
    assert connections == 4
    assert bytes_in == bytes_out
    for p in pumps:
        assert bytes(p.received) == p.expected(len(p.received)), "the replies differ from what was sent"
    got = [len(p.received) for p in pumps]
    assert sum(got) == bytes_out, "the server read and echoed %d bytes, the clients got %d (%s), then %s" % (
        bytes_out, sum(got), got, [p.recv_end for p in pumps])


def test_sigterm_with_a_slow_reader_still_delivers_every_byte_read():
    # The client fills every buffer on the way (the server pauses reading
    # it), the server is told to stop, and only then does the client drain
    # its replies, slowly: all the bytes the server read must arrive.
    pattern = os.urandom(997)
    with ServerProcess() as srv:
        sock = connect(srv.address)
        sock.setblocking(False)
        stream = memoryview(pattern * 70)
        sent = 0
        last_progress = time.monotonic()
        while time.monotonic() - last_progress < 0.3:
            if select.select([], [sock], [], 0.05)[1]:
                try:
                    sent += sock.send(stream[sent % len(pattern):])
                    last_progress = time.monotonic()
                except BlockingIOError:
                    pass
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        received = bytearray()
        end = "timeout"
        sock.setblocking(True)
        sock.settimeout(5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(16384)
            except ConnectionResetError:
                end = "reset"
                break
            if not chunk:
                end = "eof"
                break
            received += chunk
            time.sleep(0.001)
        sock.close()
        code, lines, err = srv.stop(None)
    connections, bytes_in, bytes_out = parse_summary(lines)
    got = len(received)
    assert code == 0
    assert bytes_in == bytes_out > 0
    assert bytes(received) == stream_prefix(pattern, got), "the replies differ from what was sent"
    assert got == bytes_out, "the server read and echoed %d bytes, the client got %d, then %s" % (
        bytes_out, got, end)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigint_stops_the_server_like_sigterm(workers):
    with ServerProcess("--workers", workers) as srv:
        with connect(srv.address) as sock:
            reply = round_trip(sock, b"before ^C")
        code, lines, err = srv.stop(signal.SIGINT)
    assert reply == b"before ^C"
    assert code == 0, err
    assert "Traceback" not in err
    assert parse_summary(lines) == (1, 9, 9)


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_right_after_the_ready_line_is_a_clean_shutdown(workers, sig):
    # The ready line promises the server is up: a signal sent the moment it
    # appears must reach the shutdown handler, not kill a worker mid-start.
    for _ in range(3):
        with ServerProcess("--workers", workers) as srv:
            code, lines, err = srv.stop(sig)
        assert code == 0, err
        assert "Traceback" not in err
        assert parse_summary(lines) == (0, 0, 0)


# --- --workers --------------------------------------------------------------


def test_two_workers_share_connections_and_sigterm_sums_their_stats():
    clients = 32
    with ServerProcess("--workers", "2") as srv:
        assert "2 workers" in srv.ready_line
        socks = [connect(srv.address) for _ in range(clients)]
        payloads = [b"worker check %02d " % i + os.urandom(32) for i in range(clients)]
        replies = [round_trip(s, p) for s, p in zip(socks, payloads)]
        workers = child_pids(srv.pid)
        established = established_on_port(srv.port)
        per_worker = {pid: len(socket_inodes(pid) & established) for pid in workers}
        in_parent = len(socket_inodes(srv.pid) & established)
        for sock in socks:
            sock.close()
        code, lines, err = srv.stop(signal.SIGTERM)
        workers_left = [pid for pid in workers if os.path.exists("/proc/%d" % pid)]
    assert replies == payloads
    assert len(workers) == 2
    assert all(n > 0 for n in per_worker.values()), "connections per worker: %r" % per_worker
    assert sum(per_worker.values()) == clients
    assert in_parent == 0
    assert code == 0, err
    assert workers_left == []
    assert parse_summary(lines) == (clients, sum(map(len, payloads)), sum(map(len, payloads)))


# --- --max-conns ------------------------------------------------------------


def test_max_conns_keeps_a_third_client_waiting_until_one_leaves():
    with ServerProcess("--max-conns", "2") as srv:
        first, second = connect(srv.address), connect(srv.address)
        served = [round_trip(first, b"one"), round_trip(second, b"two")]
        third = connect(srv.address)  # completes: the kernel's backlog takes it
        third.sendall(b"three")
        early = recv_exactly(third, 5, timeout=0.5)
        still_served = round_trip(second, b"two again")
        first.close()
        late = recv_exactly(third, 5, timeout=30)
        for sock in (second, third):
            sock.close()
        code, lines, err = srv.stop()
    assert served == [b"one", b"two"]
    assert early == b""
    assert still_served == b"two again"
    assert late == b"three"
    assert code == 0
    assert parse_summary(lines)[0] == 3


def test_max_conns_holds_when_clients_arrive_in_one_burst():
    with ServerProcess("--max-conns", "2") as srv:
        # Stopped, the server cannot accept: all three wait in the backlog
        # and are seen in one readiness event when it resumes.
        os.kill(srv.pid, signal.SIGSTOP)
        try:
            socks = [connect(srv.address) for _ in range(3)]
            for i, sock in enumerate(socks):
                sock.sendall(b"burst %d" % i)
        finally:
            os.kill(srv.pid, signal.SIGCONT)
        served = [recv_exactly(sock, 7, timeout=30 if i < 2 else 0.5) for i, sock in enumerate(socks)]
        socks[0].close()
        # (Already answered, the third has nothing left to wait for.)
        late = served[2] or recv_exactly(socks[2], 7, timeout=30)
        for sock in socks[1:]:
            sock.close()
        code, lines, err = srv.stop()
    assert served == [b"burst 0", b"burst 1", b""]
    assert late == b"burst 2"
    assert code == 0, err


# --- command line: the server -------------------------------------------------


@pytest.mark.parametrize("args, option", [
    (["--port", "70000"], "--port"),
    (["--workers", "0"], "--workers"),
    (["--backend", "kqueue"], "--backend"),
    (["--max-conns", "-1"], "--max-conns"),
])
def test_bad_server_option_exits_2_naming_the_option(args, option):
    result = run_cli("echo", *args, timeout=10)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    # The usage line names every option: the error line must name this one.
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert "argument %s" % option in errors[0]


def assert_one_line_failure(result, port, phrase):
    """Exit status 1, nothing on stdout, one stderr line naming `port` and `phrase`."""
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(port) in lines[0]
    assert phrase in lines[0].lower()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_exits_1_with_one_line(workers):
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        result = run_cli("echo", "--port", str(port), "--workers", workers, timeout=10)
    finally:
        holder.close()
    assert_one_line_failure(result, port, "in use")


# --- command line: the client -------------------------------------------------


@pytest.fixture(scope="module")
def plain_server():
    with ServerProcess() as srv:
        yield srv
        srv.stop()


@pytest.mark.parametrize("upper", [False, True], ids=["plain", "upper"])
def test_client_tutorial_mode_prints_each_reply(upper):
    with ServerProcess(*(["--upper"] if upper else [])) as srv:
        result = run_cli("client", "--port", str(srv.port), "--sockets", "3", "--parts", "4",
                         *(["--upper"] if upper else []))
        srv.stop()
    want = TUTORIAL_MESSAGE.upper() if upper else TUTORIAL_MESSAGE
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert sum(1 for line in lines if ": sending " in line) == 3 * 4
    received = [line for line in lines if ": received " in line]
    assert received == ["socket %d: received %r" % (i, want) for i in range(3)]
    assert "MISMATCH" not in result.stdout


def test_client_bench_reports_no_errors(plain_server):
    result = run_cli("client", "--port", str(plain_server.port), "--bench", "--duration", "0.5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].rstrip().endswith(", 0 errors")


def test_client_bench_json_reports_requests_and_no_errors(plain_server):
    result = run_cli("client", "--port", str(plain_server.port), "--bench", "--duration", "0.5",
                     "--connections", "10", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == 0
    assert report["error_messages"] == []
    assert report["connections"] == 10
    assert report["requests"] > 0
    assert report["req_per_s"] > 0


def test_client_bench_counts_wrong_replies_as_errors(plain_server):
    # A plain server does not uppercase: every reply differs from what --upper expects.
    result = run_cli("client", "--port", str(plain_server.port), "--bench", "--upper", "--duration", "0.2",
                     "--warmup", "0", "--connections", "3", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["errors"] == 3


def test_bench_core_names_the_sizes_it_refuses():
    # The compiled BenchCore checks the sizes it is given (the Python twin
    # relies on bench()'s checks).
    from fastio._impl import compiled

    core, echo = compiled("core"), compiled("echo")
    if echo is None:
        pytest.skip("fastio._impl.echo_c is not built")
    poller = core.EpollPoller() if core.HAVE_EPOLL else core.PollPoller()
    try:
        with pytest.raises(ValueError, match=r"got size=0 pipeline=1 ring_len=4 recv_size=8$"):
            echo.BenchCore(poller, 0, 1, b"x" * 8, b"x" * 8, 4, 8, print)
    finally:
        poller.close()


@pytest.fixture
def bench_core(implementation, monkeypatch):
    """Run loadgen.bench on the echo pair's compiled BenchCore, then on its Python twin."""
    import implementations

    monkeypatch.setattr(loadgen, "_core", implementations.pair(implementation, "core"))
    monkeypatch.setattr(loadgen, "_echo_impl", implementations.pair(implementation, "echo"))
    return implementation


def test_bench_partial_writes_wait_for_pollout_and_verify(plain_server, bench_core):
    # 4 x 256 KiB in flight per connection: more than a socket takes at
    # once, so sends are partial and the rest goes out on POLLOUT.
    report = loadgen.bench("127.0.0.1", plain_server.port, connections=2, size=256 * 1024,
                           pipeline=4, duration=0.3, warmup=0.1)
    assert report["errors"] == 0, report["error_messages"]
    assert report["requests"] > 0


def test_bench_reports_wrong_and_missing_replies(bench_core):
    # A server that echoes one byte wrong, then goes silent.
    listener = socket.create_server(("127.0.0.1", 0))
    conns = []

    def serve():
        for _ in range(2):
            conn, _ = listener.accept()
            conns.append(conn)
            data = conn.recv(16)
            conn.sendall(b"?" + data[1:] if len(conns) == 1 else b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        report = loadgen.bench("127.0.0.1", listener.getsockname()[1], connections=2, size=16,
                               duration=0.2, warmup=0.0, timeout=1.0)
    finally:
        thread.join(5)
        for conn in conns:
            conn.close()
        listener.close()
    assert report["errors"] == 2
    assert any("echoed bytes differ" in m for m in report["error_messages"]), report["error_messages"]
    assert any("no reply within" in m for m in report["error_messages"]), report["error_messages"]


@pytest.mark.parametrize("mode", [[], ["--bench", "--duration", "0.5"]], ids=["tutorial", "bench"])
def test_client_against_closed_port_exits_1_with_one_line(mode):
    holder = free_port_held()
    port = holder.getsockname()[1]
    try:
        result = run_cli("client", "--port", str(port), *mode, timeout=10)
    finally:
        holder.close()
    assert_one_line_failure(result, port, "refused")
