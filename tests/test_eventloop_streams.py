"""asyncio streams on fastio.EventLoop, beside asyncio and uvloop: what arrives for a StreamReader.

fastio's transport hands a chunk to asyncio's StreamReaderProtocol and
StreamReader with their steps compiled; these tests hold it to what
asyncio's Python methods do, and check that a patched class, a method set on
an instance or a subclass is called as Python would call it.
"""

import asyncio
import weakref

import pytest

from eventloop_fixtures import aio_kind, aio_loop, run, selector_loop  # noqa: F401 (fixtures)


async def _serve(loop, handler, limit=2 ** 16):
    """Start a stream server running `handler`; return (server, reader, writer) of a client."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, limit=limit)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return server, reader, writer


async def _close(server, writer):
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


def _echo_until_eof(seen=None):
    async def handler(reader, writer):
        if seen is not None:
            seen.append(reader)
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    return handler


async def _round_trip(reader, writer, body):
    writer.write(body)
    await writer.drain()
    return await reader.readexactly(len(body))


def test_reader_pauses_the_transport_over_twice_its_limit_and_resumes(aio_loop):
    async def main():
        got = asyncio.Event()
        state = {}

        async def handler(reader, writer):
            # Read nothing until the client's 64 KiB are all there.
            while len(reader._buffer) < 65536:
                await asyncio.sleep(0.01)
            state["paused"] = (reader._paused, writer.transport.is_reading())
            data = await reader.readexactly(65536)
            state["after"] = (len(data), reader._paused, writer.transport.is_reading())
            got.set()
            writer.close()

        server, reader, writer = await _serve(aio_loop, handler, limit=1024)
        writer.write(b"x" * 65536)
        await writer.drain()
        await got.wait()
        await _close(server, writer)
        return state

    state = run(aio_loop, main())
    assert state["paused"] == (True, False)
    assert state["after"] == (65536, False, True)


def test_feed_data_after_feed_eof_is_a_fatal_protocol_error(aio_loop):
    async def main():
        errors = []
        aio_loop.set_exception_handler(lambda loop, context: errors.append(context))
        done = asyncio.Event()
        kept = []

        async def handler(reader, writer):
            # Held past the handler: 3.13's StreamWriter closes its transport
            # when collected, and the server must still be reading.
            kept.append(writer)
            reader.feed_eof()
            assert await reader.read() == b""
            done.set()

        server, reader, writer = await _serve(aio_loop, handler)
        await done.wait()
        writer.write(b"after eof")
        # The server side closes on the error: the client reads EOF.
        assert await reader.read() == b""
        await _close(server, writer)
        return errors

    errors = run(aio_loop, main())
    assert [type(c.get("exception")) for c in errors] == [AssertionError]
    assert str(errors[0]["exception"]) == "feed_data after feed_eof"


# uvloop binds protocol.data_received once per connection; asyncio looks it up per chunk.
def test_patched_class_methods_are_called_even_after_the_first_chunks(selector_loop, monkeypatch):
    async def main():
        server, reader, writer = await _serve(selector_loop, _echo_until_eof())
        first = await _round_trip(reader, writer, b"before the patch")
        calls = []
        original_received = asyncio.StreamReaderProtocol.data_received
        original_feed = asyncio.StreamReader.feed_data

        def data_received(self, data):
            calls.append(("data_received", bytes(data)))
            original_received(self, data)

        def feed_data(self, data):
            calls.append(("feed_data", bytes(data)))
            original_feed(self, data)

        monkeypatch.setattr(asyncio.StreamReaderProtocol, "data_received", data_received)
        second = await _round_trip(reader, writer, b"patched")
        monkeypatch.setattr(asyncio.StreamReader, "feed_data", feed_data)
        third = await _round_trip(reader, writer, b"both")
        monkeypatch.undo()
        await _close(server, writer)
        return first, second, third, calls

    first, second, third, calls = run(selector_loop, main())
    assert (first, second, third) == (b"before the patch", b"patched", b"both")
    # Both ends are asyncio streams: each patched call is seen once per end.
    assert calls.count(("data_received", b"patched")) == 2
    assert calls.count(("feed_data", b"both")) == 2
    assert calls.count(("data_received", b"both")) == 2


# (uvloop binds protocol.data_received once per connection, as above.)
def test_methods_set_on_the_instances_are_called(selector_loop):
    async def main():
        seen = []
        server, reader, writer = await _serve(selector_loop, _echo_until_eof(seen))
        await _round_trip(reader, writer, b"warm")
        calls = []
        server_reader = seen[0]
        protocol = reader._transport.get_protocol()
        original_feed = server_reader.feed_data
        original_wakeup = reader._wakeup_waiter
        original_received = protocol.data_received

        def feed_data(data):
            calls.append(("server feed_data", data))
            original_feed(data)

        def wakeup_waiter():
            calls.append(("client _wakeup_waiter",))
            original_wakeup()

        def data_received(data):
            calls.append(("client data_received", data))
            original_received(data)

        server_reader.feed_data = feed_data
        reader._wakeup_waiter = wakeup_waiter
        protocol.data_received = data_received
        got = await _round_trip(reader, writer, b"shadowed")
        await _close(server, writer)
        return got, calls

    got, calls = run(selector_loop, main())
    assert got == b"shadowed"
    assert ("server feed_data", b"shadowed") in calls
    assert ("client data_received", b"shadowed") in calls
    assert ("client _wakeup_waiter",) in calls


def test_reader_subclass_feed_data_is_called(aio_loop):
    class CountingReader(asyncio.StreamReader):
        fed = []

        def feed_data(self, data):
            self.fed.append(bytes(data))
            super().feed_data(data)

    async def main():
        got = aio_loop.create_future()

        async def on_client(reader, writer):
            got.set_result(await reader.readexactly(5))
            writer.close()

        def factory():
            reader = CountingReader(loop=aio_loop)
            return asyncio.StreamReaderProtocol(reader, on_client)

        server = await aio_loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        data = await got
        await _close(server, writer)
        return data

    assert run(aio_loop, main()) == b"hello"
    assert b"".join(CountingReader.fed) == b"hello"


@pytest.mark.parametrize("gone", ["no weakref", "dead weakref"])
def test_data_for_a_reader_that_is_gone_is_dropped(aio_loop, gone, monkeypatch):
    # Without a reader eof_received() keeps the connection open: close it then.
    monkeypatch.setattr(asyncio.StreamReaderProtocol, "eof_received", lambda self: False)

    async def main():
        errors = []
        aio_loop.set_exception_handler(lambda loop, context: errors.append(context))
        protocols = []

        def factory():
            protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=aio_loop))
            # No strong reference to the reader but the weak one.
            protocol._strong_reader = None
            if gone == "no weakref":
                protocol._stream_reader_wr = None
            else:
                protocol._stream_reader_wr = weakref.ref(asyncio.StreamReader(loop=aio_loop))
            protocols.append(protocol)
            return protocol

        server = await aio_loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"nobody reads this")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        while not protocols:
            await asyncio.sleep(0.01)
        await protocols[0]._closed  # the server side saw the data, then EOF
        server.close()
        await server.wait_closed()
        return errors

    assert run(aio_loop, main()) == []
