"""asyncio (streams, servers, subprocesses) on fastio.new_event_loop()."""

import asyncio
import os
import sys

import pytest

import fastio
import fastio.selectors

from eventloop_fixtures import echo_stream, stream_round_trip


def test_new_event_loop_is_a_selector_loop_over_fastio():
    loop = fastio.new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert type(loop._selector) is fastio.selectors.DefaultSelector
    finally:
        loop.close()


async def _echo_streams(n_clients, payload):
    server = await asyncio.start_server(echo_stream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def client(i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return await stream_round_trip(reader, writer, payload + b"%d" % i)

    results = await asyncio.gather(*(client(i) for i in range(n_clients)))
    server.close()
    await server.wait_closed()
    return results, type(asyncio.get_running_loop()._selector)


def test_streams_and_server_on_fastio_run():
    payload = os.urandom(200_000)
    results, selector_type = fastio.run(_echo_streams(20, payload))
    assert results == [True] * 20
    assert selector_type is fastio.selectors.DefaultSelector


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_loop_factory():
    results, selector_type = asyncio.run(
        _echo_streams(3, b"abc"), loop_factory=fastio.new_event_loop)
    assert results == [True] * 3
    assert selector_type is fastio.selectors.DefaultSelector


def test_subprocess_on_fastio():
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(b"hello fastio"), 30)
        return out, proc.returncode

    assert fastio.run(main()) == (b"HELLO FASTIO", 0)


def test_timers_and_sleep_on_fastio():
    async def main():
        loop = asyncio.get_running_loop()
        order = []
        for d in (0.03, 0.01, 0.02):
            loop.call_later(d, order.append, d)
        t0 = loop.time()
        await asyncio.sleep(0.05)
        return order, loop.time() - t0

    order, elapsed = fastio.run(main())
    assert order == [0.01, 0.02, 0.03]
    assert elapsed >= 0.05
