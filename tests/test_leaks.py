"""Leaks: long churn through the C paths must not grow memory or fds.

Each test warms up (so caches, free lists and table growth are paid for),
takes a baseline, runs a large churn, and bounds the growth of RSS, of
tracemalloc's traced Python memory and of the process's open fds. A leak
of one object or one fd per cycle would show as megabytes or thousands of
fds; the bounds leave room for allocator noise only.
"""

import gc
import os
import socket
import tracemalloc

import pytest

from fastio import selectors
from fastio.loop import Loop, Protocol

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")

MiB = 1024 * 1024


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def assert_no_growth(churn, full, traced, rss_bound=8 * MiB, traced_bound=512 * 1024):
    """Run churn(full) and bound RSS and fd growth, then churn(traced) under
    tracemalloc and bound the growth of traced Python memory.

    tracemalloc slows every allocation down, so it watches a shorter run;
    a per-cycle leak of even one small object still adds up to megabytes.
    """
    gc.collect()
    rss0, fds0 = rss(), open_fds()
    churn(full)
    gc.collect()
    assert open_fds() - fds0 == 0, "fds leaked: %d" % (open_fds() - fds0)
    assert rss() - rss0 < rss_bound, "RSS grew %d bytes over %d cycles" % (rss() - rss0, full)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        churn(traced)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < traced_bound, "traced memory grew %d bytes over %d cycles" % (grown, traced)


@pytest.mark.parametrize("name", ["EpollSelector", "PollSelector", "SelectSelector"])
def test_register_modify_unregister_churn_does_not_grow(name):
    cls = getattr(selectors, name)
    a, b = socket.socketpair()
    try:
        sel = cls()
        cycles = 1_000_000
        for _ in range(1000):  # warm-up
            sel.register(a, selectors.EVENT_READ, None)
            sel.modify(a, selectors.EVENT_WRITE, "x")
            sel.unregister(a)
        register, modify, unregister = sel.register, sel.modify, sel.unregister

        def churn(n):
            for i in range(n):
                register(a, selectors.EVENT_READ, i)
                modify(a, selectors.EVENT_WRITE, None)
                unregister(a)
            assert len(sel.get_map()) == 0

        assert_no_growth(churn, cycles, 50_000)
        sel.close()
    finally:
        a.close()
        b.close()


def test_select_with_results_does_not_grow():
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        sel = selectors.DefaultSelector()
        for a, b in pairs:
            sel.register(a, selectors.EVENT_READ | selectors.EVENT_WRITE, b)
        for _ in range(100):
            sel.select(0)
        def churn(n):
            for _ in range(n):
                assert len(sel.select(0)) == 50
                sel.select_fds(0)

        assert_no_growth(churn, 20_000, 2_000)
        sel.close()
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_timers_scheduled_and_cancelled_do_not_grow():
    loop = Loop()
    try:
        def never():
            raise AssertionError("a cancelled timer ran")

        for _ in range(10_000):
            loop.call_later(3600, never).cancel()
        loop.call_soon(loop.stop)
        loop.run_forever()
        def churn(n):
            for _ in range(n // 100_000 or 1):
                for _ in range(min(n, 100_000)):
                    loop.call_later(3600, never).cancel()
                loop.call_soon(loop.stop)
                loop.run_forever()  # lets the loop drop cancelled timers

        assert_no_growth(churn, 1_000_000, 100_000)
    finally:
        loop.close()


class _Counted(Protocol):
    open = 0  # connections made and not yet lost, both sides

    def connection_made(self, transport):
        _Counted.open += 1

    def connection_lost(self, exc):
        _Counted.open -= 1


class _Closer(_Counted):
    def connection_made(self, transport):
        super().connection_made(transport)
        transport.close()


# 107,000 connections: on a loaded machine that takes minutes, not seconds.
@pytest.mark.timeout(900)
def test_connections_opened_and_closed_do_not_grow():
    loop = Loop()
    server = loop.create_server(_Closer, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]

    def churn(count):
        state = {"started": 0, "done": 0}

        def one():
            state["started"] += 1
            loop.create_connection(_Counted, "127.0.0.1", port).add_done_callback(closed)

        def closed(fut):
            transport, _protocol = fut.result()
            transport.close()
            state["done"] += 1
            if state["started"] < count:
                one()
            elif state["done"] == count:
                stop_when_all_closed()

        def stop_when_all_closed():
            # A condition, not a delay: a loaded machine may need longer.
            if _Counted.open:
                loop.call_later(0.01, stop_when_all_closed)
            else:
                loop.stop()

        for _ in range(min(64, count)):
            one()
        loop.run_forever()
        return state["done"]

    try:
        churn(2_000)
        counts = []
        assert_no_growth(lambda n: counts.append(churn(n)), 100_000, 5_000)
        assert counts == [100_000, 5_000]
    finally:
        server.close()
        loop.close()
