"""The asyncio benchmark's pieces: its peers echo right on every loop, wrk's report parses, targets judge.

No timing here: the numbers belong to `make bench`. These tests keep the
suite's servers and parsing honest, so a benchmark run cannot report numbers
for a server that echoes wrong bytes or a load generator it misread.
"""

import importlib.util
import os
import sys
import urllib.request

import pytest

from echo_support import echo_once

# The benchmarks package sits beside tests/. Appended, not prepended: a run
# from another directory (the sanitizer build's) keeps the fastio it imported.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_asyncio, harness  # noqa: E402
from benchmarks.peers import _common  # noqa: E402

LOOPS = [pytest.param(loop, marks=pytest.mark.skipif(
    loop == "uvloop" and importlib.util.find_spec("uvloop") is None, reason="uvloop not installed"))
    for loop in _common.ASYNCIO_LOOPS]


@pytest.mark.parametrize("style", bench_asyncio.STYLES)
@pytest.mark.parametrize("loop", LOOPS)
def test_echo_peer_echoes_every_byte(loop, style):
    server = harness.RunningServer("%s-%s" % (loop, style), bench_asyncio.echo_server(loop, style))
    try:
        payload = os.urandom(300_000)  # several reads and a full socket buffer
        assert echo_once(server.port, payload) == payload
    finally:
        assert server.stop() in (0, -15)


@pytest.mark.skipif(importlib.util.find_spec("aiohttp") is None, reason="aiohttp not installed")
@pytest.mark.parametrize("loop", LOOPS)
def test_aiohttp_peer_says_hello_over_keep_alive(loop):
    server = harness.RunningServer("%s-aiohttp" % loop, bench_asyncio.http_server(loop))
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/" % server.port, timeout=10) as reply:
            assert reply.status == 200
            assert reply.read() == b"Hello, World!"
    finally:
        assert server.stop() in (0, -15)


def test_fastio_loop_factory_builds_fastio_loop():
    import fastio

    loop = _common.loop_factory("fastio")()
    try:
        event_loop = getattr(fastio, "EventLoop", None)
        if event_loop is not None:
            assert type(loop) is event_loop
        else:
            assert type(loop._selector).__module__.startswith("fastio.")
    finally:
        loop.close()


def test_loop_factory_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown loop 'tokio'"):
        _common.loop_factory("tokio")


def test_micro_benchmarks_run_and_report_positive_costs():
    got = bench_asyncio.run_micro(["asyncio"], repeats=1, scale=0.05)
    assert set(got) == set(bench_asyncio.MICRO_OPS)
    assert all(per_loop["asyncio"]["median_ns"] > 0 for per_loop in got.values())


WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:18999/
  1 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.06ms    0.96ms  12.66ms   80.66%
    Req/Sec    32.32k     1.65k   33.95k    90.00%
  Latency Distribution
     50%  850.00us
     75%    3.23ms
     90%    3.71ms
     99%    1.02s
  64163 requests in 2.01s, 4.63MB read
{errors}Requests/sec:  31769.79
Transfer/sec:      4.58MB
"""


def test_parse_wrk_reads_counts_and_latencies():
    got = bench_asyncio.parse_wrk(WRK_OUTPUT.format(errors=""))
    assert got == {"requests": 64163, "req_per_s": 31769.79, "latency_us": {"p50": 850.0, "p99": 1020000.0},
                   "errors": 0}


def test_parse_wrk_counts_socket_errors_and_bad_statuses():
    errors = "  Socket errors: connect 1, read 2, write 0, timeout 4\n  Non-2xx or 3xx responses: 5\n"
    assert bench_asyncio.parse_wrk(WRK_OUTPUT.format(errors=errors))["errors"] == 12


def test_parse_wrk_rejects_what_it_cannot_read():
    with pytest.raises(ValueError, match="unexpected wrk output"):
        bench_asyncio.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def _summary(*cpu_per_round):
    return {"samples": [{"round": r, "server_cpu_us_per_req": v} for r, v in enumerate(cpu_per_round)]}


def test_targets_compare_same_round_ratios_against_their_goals():
    cases = [
        {"style": "protocol", "label": "protocol 1 KiB × 100",
         "loops": {"fastio": _summary(4.0, 8.0, 4.4), "uvloop": _summary(5.0, 10.0, 4.0),
                   "asyncio": _summary(8.0, 8.0, 8.0)}},
        {"style": "streams", "label": "streams 1 KiB × 100",
         "loops": {"fastio": _summary(6.0), "asyncio": _summary(6.0)}},
    ]
    checks = {(c["case"], c["vs"]): c for c in bench_asyncio.evaluate_targets(cases)}
    # Per-round ratios 0.8, 0.8, 1.1: median 0.8 <= 0.90 although the means differ.
    assert checks[("protocol 1 KiB × 100", "uvloop")]["ratio"] == 0.8
    assert checks[("protocol 1 KiB × 100", "uvloop")]["pass"] is True
    assert checks[("protocol 1 KiB × 100", "asyncio")]["ratio"] == 0.55
    assert checks[("protocol 1 KiB × 100", "asyncio")]["pass"] is True
    assert checks[("streams 1 KiB × 100", "asyncio")]["pass"] is False  # 1.00x > 0.85x
    # No uvloop in that case: no ratio, no verdict (reported as "-").
    assert checks[("streams 1 KiB × 100", "uvloop")]["ratio"] is None
    assert checks[("streams 1 KiB × 100", "uvloop")]["pass"] is None


def test_targets_carry_the_c_servers_ratio_to_the_same_loop_where_it_ran():
    cases = [
        {"style": "protocol", "label": "protocol 1 KiB × 100",
         "loops": {"fastio": _summary(4.6, 4.8), "uvloop": _summary(5.0, 5.0), "asyncio": _summary(6.0, 6.0),
                   bench_asyncio.REFERENCE: _summary(4.5, 4.0)}},
        {"style": "streams", "label": "streams 1 KiB × 100",
         "loops": {"fastio": _summary(6.0), "uvloop": _summary(6.5)}},
    ]
    checks = {(c["case"], c["vs"]): c for c in bench_asyncio.evaluate_targets(cases)}
    assert checks[("protocol 1 KiB × 100", "uvloop")]["reference_ratio"] == 0.85  # median of 0.9, 0.8
    assert checks[("protocol 1 KiB × 100", "asyncio")]["reference_ratio"] == 0.708
    assert checks[("streams 1 KiB × 100", "uvloop")]["reference_ratio"] is None


def test_the_report_shows_the_c_server_beside_the_loops():
    cases = [{"style": "protocol", "size": 1024, "connections": 100, "label": "protocol 1 KiB × 100",
              "loops": {loop: dict(_summary(5.0), server_cpu_us_per_req=5.0, req_per_s=1000.0, p99_us=100.0,
                                   client_cpu_pct=90.0)
                        for loop in ("fastio", "uvloop", bench_asyncio.REFERENCE)}}]
    result = {"warnings": [], "errors": [], "machine": harness.machine_info(), "cases": cases, "micro": {},
              "skipped": [], "wall_s": 1.0, "targets": bench_asyncio.evaluate_targets(cases),
              "config": {"loops": ["fastio", "uvloop"], "client_cpu": 1, "server_cpu": 0, "fastio_loop": "x",
                         "duration_s": 1.0, "http_duration_s": 2.0, "rounds": 1, "micro_repeats": 1}}
    text = bench_asyncio.to_markdown(result)
    assert "| protocol echo | protocol 1 KiB × 100 | fastio | uvloop | 1.00x | <= 0.90x | **FAIL** | 1.00x |" in text
    assert "| case | fastio | uvloop | c-epoll |" in text
