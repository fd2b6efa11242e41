"""The echo command lines say what they do: addresses, warnings, hints, progress.

Each test runs ``python -m fastio echo|client`` in a subprocess
(tests/echo_support.py) and checks what a user reads.
"""

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import warnings

import pytest

from echo_support import ROOT, ServerProcess, read_line, run_cli
from fastio.echo.server import SELECT_MAX_CONNS, EchoServer


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")


# --- addresses ------------------------------------------------------------------


@needs_ipv6
def test_ipv6_ready_line_puts_the_address_in_brackets():
    with ServerProcess("--host", "::1") as srv:
        assert "listening on [::1]:%d " % srv.port in srv.ready_line
        with socket.create_connection(("::1", srv.port), timeout=5) as sock:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        srv.stop()


@needs_ipv6
def test_ipv6_errors_put_the_address_in_brackets():
    holder = socket.create_server(("::1", 0), family=socket.AF_INET6)
    port = holder.getsockname()[1]
    try:
        result = run_cli("echo", "--host", "::1", "--port", str(port), timeout=10)
    finally:
        holder.close()
    assert result.returncode == 1
    assert "cannot listen on [::1]:%d:" % port in result.stderr
    refused = run_cli("client", "--host", "::1", "--port", str(port), timeout=10)
    assert refused.returncode == 1
    assert "cannot talk to [::1]:%d:" % port in refused.stderr


# --- --backend select --max-conns ------------------------------------------------


def test_select_backend_warns_when_max_conns_is_lowered():
    with ServerProcess("--backend", "select", "--max-conns", "5000") as srv:
        code, _lines, err = srv.stop()
    assert code == 0
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 1, err
    assert "5000" in warned[0] and str(SELECT_MAX_CONNS) in warned[0]


def test_select_backend_within_the_limit_does_not_warn():
    with ServerProcess("--backend", "select", "--max-conns", "10") as srv:
        code, _lines, err = srv.stop()
    assert code == 0
    assert err == ""


def test_echo_server_api_warns_when_max_conns_is_lowered():
    with pytest.warns(RuntimeWarning, match="lowered to %d" % SELECT_MAX_CONNS):
        server = EchoServer(port=0, backend="select", max_conns=5000)
    try:
        assert server.max_conns == SELECT_MAX_CONNS
    finally:
        server.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EchoServer(port=0, backend="select", max_conns=10).close()


# --- the tutorial client's hints -------------------------------------------------


@pytest.mark.parametrize("server_upper, client_upper, hint", [
    (True, False, "--upper too"),
    (False, True, "drop --upper"),
], ids=["server-upper", "client-upper"])
def test_mismatch_from_upper_on_one_side_only_hints_at_upper(server_upper, client_upper, hint):
    with ServerProcess(*(["--upper"] if server_upper else [])) as srv:
        result = run_cli("client", "--port", str(srv.port), *(["--upper"] if client_upper else []))
        srv.stop()
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert sum("MISMATCH" in line for line in lines) == 2
    hints = [line for line in lines if line.startswith("hint:")]
    assert len(hints) == 1 and hint in hints[0], result.stdout


def test_mismatch_of_another_kind_gives_no_upper_hint():
    # A server that answers with something else entirely: no --upper hint.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = subprocess.Popen(
            [sys.executable, "-m", "fastio", "client", "--port", str(port), "--sockets", "1",
             "--timeout", "2"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            listener.settimeout(10)
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"something else")
                out, err = client.communicate(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
    assert client.returncode == 1, err
    assert "MISMATCH" in out
    assert "hint:" not in out


# --- client --bench: progress and Ctrl-C ------------------------------------------


@pytest.fixture(scope="module")
def echo_server():
    with ServerProcess() as srv:
        yield srv
        srv.stop()


PROGRESS_RE = re.compile(r"^fastio client: \d+\.\d s of 1\.5 s, \d+ requests, \d+ req/s, 0 errors$")


def test_bench_progress_prints_lines_on_stderr(echo_server):
    result = run_cli("client", "--port", str(echo_server.port), "--bench", "--connections", "2",
                     "--duration", "1.5", "--warmup", "0", "--progress", "0.2", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["errors"] == 0
    measuring = [line for line in result.stderr.splitlines() if PROGRESS_RE.match(line)]
    assert len(measuring) >= 2, result.stderr


def test_bench_prints_progress_by_default_when_stderr_is_a_terminal(echo_server):
    master, slave = pty.openpty()
    try:
        client = subprocess.Popen(
            [sys.executable, "-m", "fastio", "client", "--port", str(echo_server.port), "--bench",
             "--connections", "2", "--duration", "2.5", "--warmup", "0", "--json"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = None
        out, _ = client.communicate(timeout=60)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the client closed the terminal's other end
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert client.returncode == 0, err
    assert json.loads(out)["errors"] == 0
    assert re.search(rb"fastio client: \d\.\d s of 2\.5 s, \d+ requests", err), err


def test_bench_without_a_terminal_or_progress_prints_no_progress(echo_server):
    result = run_cli("client", "--port", str(echo_server.port), "--bench", "--connections", "2",
                     "--duration", "0.3", "--warmup", "0")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_progress_needs_bench():
    result = run_cli("client", "--progress")
    assert result.returncode == 2
    assert "--progress needs --bench" in result.stderr


@pytest.mark.parametrize("option", ["--duration", "--warmup", "--timeout", "--progress"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_durations_and_timeouts_that_are_not_finite_are_refused(option, value):
    # NaN passed the range check (it compares false with the bound): a bench
    # ran for no time and printed made-up rates.
    result = run_cli("client", "--port", "1", "--bench", option, value)
    assert result.returncode == 2
    assert "argument %s: not a finite number: '%s'" % (option, value) in result.stderr


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_ctrl_c_during_bench_prints_what_completed(echo_server, as_json):
    client = subprocess.Popen(
        [sys.executable, "-m", "fastio", "client", "--port", str(echo_server.port), "--bench",
         "--connections", "2", "--duration", "600", "--warmup", "0", "--progress", "0.1",
         *(["--json"] if as_json else [])],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The first line in the window: requests are being measured.
        while not read_line(client.stderr, 30).startswith("fastio client: 0."):
            pass
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 130, err
    assert b"Traceback" not in err
    if as_json:
        result = json.loads(out)
        assert result["interrupted"] is True
        assert result["requests"] > 0 and result["errors"] == 0
        assert 0 < result["duration_s"] < 600
    else:
        lines = out.decode().splitlines()
        assert len(lines) == 2, out
        assert "(interrupted" in lines[0]
        assert re.search(r"\b[1-9]\d* req/s", lines[1]), lines[1]
