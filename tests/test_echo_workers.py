"""``python -m fastio echo --workers N``: supervision and the port it owns.

A worker that dies is reaped, logged and replaced (with a growing delay when
it keeps dying right after its start); SIGTERM still ends in exit status 0
and the survivors' summary. A port another server listens on is refused
unless --reuse-port asks to share it.
"""

import os
import re
import signal
import sys

import pytest

from echo_support import (ServerProcess, child_pids, connect, parse_summary, round_trip, run_cli,
                          wait_until)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SO_REUSEPORT"),
]

DEATH_RE = re.compile(r"worker (\d+) was killed by SIGKILL after ([\d.]+) s; starting a new one"
                      r"(?: in ([\d.]+) s)?")


def _gone(pid):
    """True once `pid` no longer exists, not even as a zombie."""
    return not os.path.exists("/proc/%d" % pid)


def _replacement(srv, dead, alive, timeout=30.0):
    """Wait until the server runs `alive` plus one new worker, none of `dead`;
    return the new worker's pid."""
    def fresh():
        pids = set(child_pids(srv.pid))
        new = pids - set(alive)
        ok = len(new) == 1 and not pids & set(dead) and set(alive) <= pids
        return new.pop() if ok else None
    new = wait_until(fresh, timeout)
    assert new, "no replacement worker within %.0f s (workers: %r)" % (timeout, child_pids(srv.pid))
    return new


def test_killed_worker_is_reaped_replaced_and_logged():
    with ServerProcess("--workers", "2") as srv:
        workers = child_pids(srv.pid)
        assert len(workers) == 2
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: _gone(victim), 30), "the killed worker was not reaped"
        new = _replacement(srv, [victim], [workers[1]])
        # Every connection from now on is served, by the survivor or the new one.
        payloads = [b"after the kill %02d" % i for i in range(8)]
        replies = []
        for payload in payloads:
            with connect(srv.address) as sock:
                replies.append(round_trip(sock, payload))
        code, lines, err = srv.stop(signal.SIGTERM)
    assert replies == payloads
    assert code == 0, err
    assert "Traceback" not in err
    assert "worker %d was killed by SIGKILL" % victim in err
    assert "started (replacing one that died)" in err
    # The totals are the survivors': every connection made after the kill.
    n = sum(map(len, payloads))
    assert parse_summary(lines) == (len(payloads), n, n)
    assert all(_gone(pid) for pid in workers + [new])


def test_worker_dying_right_after_its_start_is_replaced_ever_later():
    with ServerProcess("--workers", "2") as srv:
        workers = child_pids(srv.pid)
        survivor = workers[1]
        victim = workers[0]
        for _ in range(3):
            os.kill(victim, signal.SIGKILL)
            victim = _replacement(srv, [victim], [survivor])
        assert survivor in child_pids(srv.pid)
        code, lines, err = srv.stop(signal.SIGTERM)
    assert code == 0, err
    deaths = [(float(up), float(delay or 0)) for _pid, up, delay in DEATH_RE.findall(err)]
    assert len(deaths) == 3, err
    # Deaths right after a start (uptime < 1 s) wait longer each time;
    # the replacements of the second and third deaths were such deaths.
    quick = [delay for up, delay in deaths[1:] if up < 1.0]
    assert quick and all(d > 0 for d in quick), err
    assert quick == sorted(quick) and (len(quick) < 2 or quick[1] >= 2 * quick[0]), err


def test_second_server_on_a_held_port_is_refused():
    with ServerProcess("--workers", "2") as srv:
        for args in (["--workers", "2"], []):
            proc = run_cli("echo", "--port", str(srv.port), *args, timeout=60)
            assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
            assert "Address already in use" in proc.stderr, proc.stderr
            assert "--reuse-port" in proc.stderr
            assert "Traceback" not in proc.stderr
        # The first server is untouched.
        with connect(srv.address) as sock:
            assert round_trip(sock, b"still mine") == b"still mine"
        code, lines, err = srv.stop()
    assert code == 0, err
    assert parse_summary(lines)[0] == 1


def test_single_process_server_refuses_a_held_port_too():
    with ServerProcess() as srv:
        for args in (["--workers", "2"], [], ["--reuse-port"]):
            # The first server did not ask to share: even --reuse-port fails.
            proc = run_cli("echo", "--port", str(srv.port), *args, timeout=60)
            assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
            assert "Address already in use" in proc.stderr, proc.stderr
        assert srv.stop()[0] == 0


@pytest.mark.parametrize("second", [["--workers", "2"], []], ids=["workers", "single"])
def test_reuse_port_shares_the_port_when_asked(second):
    with ServerProcess("--workers", "2", "--reuse-port") as first:
        with ServerProcess("--port", str(first.port), "--reuse-port", *second) as other:
            assert other.port == first.port
            with connect(first.address) as sock:
                assert round_trip(sock, b"shared") == b"shared"
            code2, _, err2 = other.stop()
        code1, _, err1 = first.stop()
    assert (code1, code2) == (0, 0), err1 + err2


def test_help_documents_reuse_port():
    proc = run_cli("echo", "--help")
    assert proc.returncode == 0
    assert "--reuse-port" in proc.stdout and "address in use" in proc.stdout
