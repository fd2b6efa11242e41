"""Readers and writers, the sock_*() coroutines and the accept loop of
fastio.EventLoop, beside asyncio and uvloop: results, exceptions and their
messages, cancellation, a closed loop, sockets owned by transports, running
out of file descriptors while accepting."""

import asyncio
import errno
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import fill_send_buffer
from eventloop_fixtures import aio_kind, aio_loop, run, selector_loop  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def _spin(n=5):
    for _ in range(n):
        await asyncio.sleep(0)


def _registered(loop, fd):
    """(reader, writer) handles asyncio's selector holds for `fd`, or None."""
    key = loop._selector.get_map().get(fd)
    return None if key is None else key.data


# ---------------------------------------------------------------- coroutines


def test_sock_methods_are_coroutine_functions(aio_loop):
    for name in ("sock_recv", "sock_recv_into", "sock_sendall", "sock_connect", "sock_accept"):
        assert asyncio.iscoroutinefunction(getattr(aio_loop, name)), name


def test_sock_recv_ready_and_waiting(aio_loop):
    async def main():
        a, b = _pair()
        b.send(b"ready")
        first = await aio_loop.sock_recv(a, 100)        # data already there
        later = asyncio.ensure_future(aio_loop.sock_recv(a, 3))
        await _spin()
        pending = not later.done()
        b.send(b"abcdef")
        second = await later                             # woken by readiness
        rest = await aio_loop.sock_recv(a, 100)
        b.close()
        eof = await aio_loop.sock_recv(a, 100)
        a.close()
        return first, pending, second, rest, eof

    assert run(aio_loop, main()) == (b"ready", True, b"abc", b"def", b"")


def test_sock_recv_into_ready_and_waiting(aio_loop):
    async def main():
        a, b = _pair()
        buf = bytearray(4)
        b.send(b"xy")
        n1 = await aio_loop.sock_recv_into(a, buf)
        got1 = bytes(buf[:n1])
        view = memoryview(buf)[1:]
        later = asyncio.ensure_future(aio_loop.sock_recv_into(a, view))
        await _spin()
        b.send(b"123456")
        n2 = await later
        a.close()
        b.close()
        return n1, got1, n2, bytes(buf)

    assert run(aio_loop, main()) == (2, b"xy", 3, b"x123")


def test_sock_recv_errors(selector_loop):
    aio_loop = selector_loop

    async def main():
        a, b = _pair()
        errors = []
        with pytest.raises(ValueError) as e:
            await aio_loop.sock_recv(a, -1)
        errors.append(str(e.value))
        with pytest.raises(TypeError):
            await aio_loop.sock_recv(a, "1")
        with pytest.raises(TypeError):
            await aio_loop.sock_recv_into(a, b"read-only")
        a.close()
        with pytest.raises(OSError) as e:
            await aio_loop.sock_recv(a, 1)
        errors.append(e.value.errno)
        b.close()
        return errors

    # (uvloop waits on a closed socket.)
    assert run(aio_loop, main()) == ["negative buffersize in recv", errno.EBADF]


def test_sock_recv_on_a_reset_connection(aio_loop):
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        conn.setblocking(False)
        waiting = asyncio.ensure_future(aio_loop.sock_recv(conn, 10))
        await _spin()
        # SO_LINGER 0: close() sends a reset.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
        try:
            with pytest.raises(ConnectionResetError):
                await waiting
        finally:
            conn.close()
            listener.close()

    run(aio_loop, main())


def test_ssl_sockets_are_refused(selector_loop):
    # (uvloop tries the socket first.)
    aio_loop = selector_loop

    async def main():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        raw = socket.socket()
        sock = ctx.wrap_socket(raw, do_handshake_on_connect=False, server_hostname="x")
        try:
            for call in (lambda: aio_loop.sock_recv(sock, 1),
                         lambda: aio_loop.sock_recv_into(sock, bytearray(1)),
                         lambda: aio_loop.sock_sendall(sock, b"x"),
                         lambda: aio_loop.sock_connect(sock, ("127.0.0.1", 1)),
                         lambda: aio_loop.sock_accept(sock)):
                with pytest.raises(TypeError, match="SSLSocket"):
                    await call()
        finally:
            sock.close()

    run(aio_loop, main())


def test_blocking_sockets_are_refused_in_debug_mode(aio_loop):
    async def main():
        a, b = socket.socketpair()
        listener = socket.create_server(("127.0.0.1", 0))
        try:
            for call in (lambda: aio_loop.sock_recv(a, 1),
                         lambda: aio_loop.sock_recv_into(a, bytearray(1)),
                         lambda: aio_loop.sock_sendall(a, b"x"),
                         lambda: aio_loop.sock_connect(socket.socket(), ("127.0.0.1", 1)),
                         lambda: aio_loop.sock_accept(listener)):
                with pytest.raises(ValueError, match="the socket must be non-blocking"):
                    await call()
        finally:
            a.close()
            b.close()
            listener.close()

    aio_loop.set_debug(True)
    run(aio_loop, main())


def test_cancelled_sock_recv_leaves_no_reader(aio_loop, aio_kind):
    async def main():
        a, b = _pair()
        for call in (lambda: aio_loop.sock_recv(a, 10),
                     lambda: aio_loop.sock_recv_into(a, bytearray(10))):
            task = asyncio.ensure_future(call())
            await _spin()
            if aio_kind != "uvloop":
                assert _registered(aio_loop, a.fileno())[0] is not None
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _spin()
            if aio_kind != "uvloop":
                assert _registered(aio_loop, a.fileno()) is None
        # Nothing is left reading the socket: the next recv gets the data.
        b.send(b"after")
        got = await aio_loop.sock_recv(a, 10)
        a.close()
        b.close()
        return got

    assert run(aio_loop, main()) == b"after"


def test_sock_sendall_partial_progress_and_order(aio_loop):
    async def main():
        a, b = _pair()
        payload = os.urandom(3 << 20)
        send = asyncio.ensure_future(aio_loop.sock_sendall(a, memoryview(payload)))
        got = bytearray()
        while len(got) < len(payload):
            got += await aio_loop.sock_recv(b, 1 << 16)
        result = await send
        await aio_loop.sock_sendall(a, bytearray(b"tail"))
        tail = await aio_loop.sock_recv(b, 10)
        a.close()
        b.close()
        return result, bytes(got) == payload, tail

    assert run(aio_loop, main()) == (None, True, b"tail")


def test_sock_sendall_to_a_half_closed_peer_waits_without_spinning(aio_loop):
    # The peer shut down its side and reads nothing: the pending
    # sock_sendall() waits for room, costing no CPU (io_uring's polls
    # report POLLRDHUP on such a socket, which is not room to write), and
    # finishes once the peer reads.
    async def main():
        a, b = _pair()
        sent = fill_send_buffer(a)
        b.shutdown(socket.SHUT_WR)
        send = asyncio.ensure_future(aio_loop.sock_sendall(a, b"z" * 100000))
        await _spin()
        cpu = time.thread_time()
        await asyncio.sleep(0.5)
        cpu = time.thread_time() - cpu
        assert not send.done()
        got = 0
        while got < sent + 100000:
            got += len(await aio_loop.sock_recv(b, 1 << 20))
        await send
        a.close()
        b.close()
        return cpu

    assert run(aio_loop, main()) < 0.1


def test_sock_sendall_of_non_bytes_is_a_type_error(aio_loop):
    async def main():
        a, b = _pair()
        try:
            with pytest.raises(TypeError):
                await aio_loop.sock_sendall(a, "text")
        finally:
            a.close()
            b.close()

    run(aio_loop, main())


def test_cancelled_sock_sendall_leaves_no_writer(aio_loop, aio_kind):
    async def main():
        a, b = _pair()
        filled = fill_send_buffer(a)
        send = asyncio.ensure_future(aio_loop.sock_sendall(a, b"z" * (1 << 20)))
        await _spin()
        if aio_kind != "uvloop":
            assert _registered(aio_loop, a.fileno())[1] is not None
        send.cancel()
        with pytest.raises(asyncio.CancelledError):
            await send
        await _spin()
        if aio_kind != "uvloop":
            assert _registered(aio_loop, a.fileno()) is None
        # Draining the peer wakes nothing: no more "z" bytes are sent.
        got = 0
        while got < filled:
            got += len(await aio_loop.sock_recv(b, 1 << 16))
        await _spin(20)
        try:
            extra = b.recv(1 << 20)
        except BlockingIOError:
            extra = b""
        a.close()
        b.close()
        return got == filled, set(extra) <= {ord("z")}

    assert run(aio_loop, main()) == (True, True)


def test_sock_sendall_to_a_closed_peer_raises(aio_loop):
    async def main():
        a, b = _pair()
        fill_send_buffer(a)
        send = asyncio.ensure_future(aio_loop.sock_sendall(a, b"z" * (1 << 20)))
        await _spin()
        b.close()
        try:
            with pytest.raises(ConnectionError):
                await send
        finally:
            a.close()

    run(aio_loop, main())


def test_sock_connect_paths(aio_loop, aio_kind, tmp_path):
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        results = []
        # An IP address, and a name resolved through getaddrinfo().
        for host in ("127.0.0.1", "localhost"):
            client = socket.socket()
            client.setblocking(False)
            results.append(await aio_loop.sock_connect(client, (host, port)))
            conn, _ = await aio_loop.sock_accept(listener)
            results.append(client.getpeername() == conn.getsockname())
            conn.close()
            client.close()
        # A Unix socket path is not resolved.
        path = str(tmp_path / "s")
        unix_listener = socket.socket(socket.AF_UNIX)
        unix_listener.bind(path)
        unix_listener.listen()
        client = socket.socket(socket.AF_UNIX)
        client.setblocking(False)
        results.append(await aio_loop.sock_connect(client, path))
        client.close()
        unix_listener.close()
        # Refused: the error the connect ended with.
        listener.close()
        client = socket.socket()
        client.setblocking(False)
        with pytest.raises(ConnectionRefusedError) as e:
            await aio_loop.sock_connect(client, ("127.0.0.1", port))
        client.close()
        return results, str(e.value), port

    results, refused, port = run(aio_loop, main())
    assert results == [None, True, None, True, None]
    if aio_kind != "uvloop":
        assert refused == "[Errno %d] Connect call failed ('127.0.0.1', %d)" % (
            errno.ECONNREFUSED, port)


def test_cancelled_sock_connect_leaves_no_writer(aio_loop, aio_kind):
    async def main():
        # A listener whose accept queue is full drops SYNs: the connect
        # stays in progress.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = []
        client = None
        for _ in range(16):
            s = socket.socket()
            s.setblocking(False)
            fillers.append(s)
            if s.connect_ex(address) == errno.EINPROGRESS:
                client = socket.socket()
                client.setblocking(False)
                break
        assert client is not None, "the accept queue never filled"
        task = asyncio.ensure_future(aio_loop.sock_connect(client, address))
        await _spin(10)
        pending = not task.done()
        if aio_kind != "uvloop" and pending:
            assert _registered(aio_loop, client.fileno())[1] is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _spin()
        if aio_kind != "uvloop" and pending:
            assert _registered(aio_loop, client.fileno()) is None
        for s in fillers + [client, listener]:
            s.close()
        return pending

    assert run(aio_loop, main()) is True


def test_sock_accept_many_connections(aio_loop):
    async def main():
        listener = socket.create_server(("127.0.0.1", 0), backlog=200)
        listener.setblocking(False)
        address = listener.getsockname()
        clients = []
        accepted = []

        async def connect():
            s = socket.socket()
            s.setblocking(False)
            clients.append(s)
            await aio_loop.sock_connect(s, address)

        connects = asyncio.gather(*(connect() for _ in range(100)))
        while len(accepted) < 100:
            conn, addr = await aio_loop.sock_accept(listener)
            accepted.append((conn.gettimeout(), conn.family, conn.type, addr))
            conn.close()
        await connects
        names = sorted(s.getsockname() for s in clients)
        for s in clients:
            s.close()
        listener.close()
        return accepted, names

    accepted, names = run(aio_loop, main())
    assert {a[:3] for a in accepted} == {(0.0, socket.AF_INET, socket.SOCK_STREAM)}
    assert sorted(a[3] for a in accepted) == names


def test_cancelled_sock_accept_leaves_no_reader(aio_loop, aio_kind):
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        task = asyncio.ensure_future(aio_loop.sock_accept(listener))
        await _spin()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _spin()
        if aio_kind != "uvloop":
            assert _registered(aio_loop, listener.fileno()) is None
        client = socket.create_connection(listener.getsockname())
        conn, _ = await aio_loop.sock_accept(listener)
        ok = conn.getpeername() == client.getsockname()
        for s in (conn, client, listener):
            s.close()
        return ok

    assert run(aio_loop, main()) is True


# --------------------------------------------------------- closed loop


def test_closed_loop(selector_loop):
    a, b = _pair()
    loop = selector_loop
    loop.close()
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.add_reader(a, lambda: None)
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.add_writer(a, lambda: None)
        assert loop.remove_reader(a) is False
        assert loop.remove_writer(a) is False
        # sock_recv tries the socket first: data that is there comes back;
        # waiting for more needs the loop.
        b.send(b"x")
        coro = loop.sock_recv(a, 10)
        with pytest.raises(StopIteration) as stop:
            coro.send(None)
        assert stop.value.value == b"x"
        coro = loop.sock_recv(a, 10)
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            coro.send(None)
    finally:
        a.close()
        b.close()


# --------------------------------------------------- readers and writers


def test_add_reader_replaces_the_handle(aio_loop, aio_kind):
    async def main():
        a, b = _pair()
        calls = []
        aio_loop.add_reader(a, calls.append, "first")
        old = _registered(aio_loop, a.fileno())[0] if aio_kind != "uvloop" else None
        aio_loop.add_reader(a.fileno(), calls.append, "second")
        if old is not None:
            assert old.cancelled()
            assert _registered(aio_loop, a.fileno())[0] is not old
        b.send(b"!")
        while not calls:
            await asyncio.sleep(0.001)
        aio_loop.remove_reader(a)
        a.close()
        b.close()
        return set(calls)

    assert run(aio_loop, main()) == {"second"}


def test_add_writer_replaces_the_handle_and_keeps_the_reader(aio_loop, aio_kind):
    async def main():
        a, b = _pair()
        calls = []
        aio_loop.add_reader(a, calls.append, "reader")
        aio_loop.add_writer(a, calls.append, "w1")
        aio_loop.add_writer(a, calls.append, "w2")
        b.send(b"!")
        while "reader" not in calls or "w2" not in calls:
            await asyncio.sleep(0.001)
        aio_loop.remove_writer(a)
        aio_loop.remove_reader(a)
        a.close()
        b.close()
        return set(calls)

    assert run(aio_loop, main()) == {"reader", "w2"}


def test_remove_reader_and_writer_return_values(selector_loop):
    # (uvloop's return None.)
    aio_loop = selector_loop
    a, b = _pair()
    try:
        got = [aio_loop.remove_reader(a), aio_loop.remove_writer(a)]
        aio_loop.add_writer(a, lambda: None)
        got += [aio_loop.remove_reader(a), aio_loop.remove_writer(a), aio_loop.remove_writer(a)]
        aio_loop.add_reader(a.fileno(), lambda: None)
        aio_loop.add_writer(a.fileno(), lambda: None)
        got += [aio_loop.remove_reader(a), aio_loop.remove_reader(a), aio_loop.remove_writer(a)]
    finally:
        a.close()
        b.close()
    assert got == [False, False, False, True, False, True, False, True]


def test_reader_callback_args_and_repr(selector_loop):
    a, b = _pair()
    try:
        selector_loop.add_reader(a, print, 1, 2)
        handle = _registered(selector_loop, a.fileno())[0]
        assert type(handle) is asyncio.Handle
        assert (handle._callback, handle._args) == (print, (1, 2))
        # (3.13 shows the arguments only in debug mode.)
        assert repr(handle) == repr(asyncio.Handle(print, (1, 2), selector_loop))
        assert selector_loop.remove_reader(a) is True
        assert handle.cancelled()
    finally:
        a.close()
        b.close()


def test_bad_file_objects(aio_loop, aio_kind):
    for call in (aio_loop.add_reader, aio_loop.add_writer):
        with pytest.raises((ValueError, TypeError)):
            call(object(), lambda: None)
    for call in (aio_loop.remove_reader, aio_loop.remove_writer):
        with pytest.raises((ValueError, TypeError)):
            call(object())
    if aio_kind != "uvloop":
        with pytest.raises(ValueError, match="Invalid file object: 'x'"):
            aio_loop.add_reader("x", lambda: None)
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            aio_loop.add_reader(-1, lambda: None)


def test_fds_owned_by_transports_are_refused(aio_loop, aio_kind):
    async def main():
        a, b = _pair()
        transport, _ = await aio_loop.create_connection(asyncio.Protocol, sock=a)
        errors = []
        for call in (lambda: aio_loop.add_reader(a, lambda: None),
                     lambda: aio_loop.add_writer(a.fileno(), lambda: None),
                     lambda: aio_loop.remove_reader(a),
                     lambda: aio_loop.remove_writer(a)):
            with pytest.raises(RuntimeError) as e:
                call()
            errors.append(str(e.value))
        # sock_recv tries the socket first, then refuses to wait on it.
        with pytest.raises(RuntimeError) as e:
            await aio_loop.sock_recv(a, 10)
        errors.append(str(e.value))
        owner = repr(transport)
        transport.close()
        await _spin()
        # A closing transport no longer owns the fd.
        b.close()
        return errors, owner

    errors, transport = run(aio_loop, main())
    assert all(msg.startswith("File descriptor ") for msg in errors), errors
    if aio_kind != "uvloop":
        assert errors[0].endswith("is used by transport %s" % transport)


# ------------------------------------------------------------ accept loop


def test_server_accepts_many_concurrent_connections(aio_loop):
    async def main():
        accepted = []

        async def handle(reader, writer):
            accepted.append(writer.get_extra_info("peername"))
            writer.write(await reader.readexactly(2))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=300)
        port = server.sockets[0].getsockname()[1]

        async def client(i):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"%02d" % (i % 100))
            got = await reader.read()
            name = writer.get_extra_info("sockname")
            writer.close()
            return got, name

        results = await asyncio.gather(*(client(i) for i in range(250)))
        server.close()
        await server.wait_closed()
        return results, accepted

    results, accepted = run(aio_loop, main())
    assert [r[0] for r in results] == [b"%02d" % (i % 100) for i in range(250)]
    assert sorted(accepted) == sorted(r[1] for r in results)


def test_server_start_serving_close_and_async_with(aio_loop):
    async def main():
        made = []
        server = await aio_loop.create_server(
            lambda: made.append(1) or asyncio.Protocol(), "127.0.0.1", 0, start_serving=False)
        serving_before = server.is_serving()
        async with server:
            await server.start_serving()
            serving = server.is_serving()
            port = server.sockets[0].getsockname()[1]
            for _ in range(3):
                s = socket.create_connection(("127.0.0.1", port))
                while len(made) < _ + 1:
                    await asyncio.sleep(0.001)
                s.close()
        await server.wait_closed()
        refused = False
        try:
            socket.create_connection(("127.0.0.1", port)).close()
        except ConnectionRefusedError:
            refused = True
        return serving_before, serving, len(made), server.is_serving(), refused

    assert run(aio_loop, main()) == (False, True, 3, False, True)


def test_protocol_factory_error_drops_the_connection(selector_loop):
    # (uvloop leaves the connection open.)
    aio_loop = selector_loop

    async def main():
        calls = []

        def factory():
            calls.append(1)
            raise ZeroDivisionError

        server = await aio_loop.create_server(factory, "127.0.0.1", 0)
        s = socket.create_connection(server.sockets[0].getsockname())
        s.settimeout(10)
        got = await aio_loop.run_in_executor(None, s.recv, 10)
        s.close()
        server.close()
        await server.wait_closed()
        return calls, got

    assert run(aio_loop, main()) == ([1], b"")


_EMFILE_SCRIPT = textwrap.dedent("""
    import asyncio, json, os, resource, socket, sys, time
    sys.path[:0] = json.loads(sys.argv[2])
    import fastio

    kind = sys.argv[1]
    loop = fastio.new_event_loop() if kind == "fastio" else asyncio.SelectorEventLoop()
    errors = []
    loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))

    async def main():
        accepted = []
        server = await loop.create_server(
            lambda: accepted.append(1) or asyncio.Protocol(), "127.0.0.1", 0, backlog=4)
        listener = server.sockets[0]
        clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        # Use up every fd below a new, low limit: accept() gets EMFILE.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 4, hard))
        filler = []
        try:
            while True:
                filler.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        while not errors:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        paused = loop._selector.get_map().get(listener.fileno()) is None
        first_burst = len(errors)
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        t0 = time.monotonic()
        while len(accepted) < 3:
            await asyncio.sleep(0.01)
        waited = time.monotonic() - t0
        for c in clients:
            c.close()
        server.close()
        await server.wait_closed()
        e = errors[0]
        return {"first_burst": first_burst, "paused": paused, "accepted": len(accepted),
                "message": e["message"], "errno": e["exception"].errno,
                "socket": type(e["socket"]).__name__, "resumed_after_delay": waited > 0.5}

    print(json.dumps(loop.run_until_complete(asyncio.wait_for(main(), 60))))
    loop.close()
""")


def _emfile_run(kind):
    import json
    import fastio

    paths = [os.path.dirname(os.path.dirname(fastio.__file__))] + sys.path
    out = subprocess.run([sys.executable, "-c", _EMFILE_SCRIPT, kind, json.dumps(paths)],
                         capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_NOFILE and /proc/self/fd")
def test_accept_loop_out_of_file_descriptors_pauses_and_resumes():
    got = {kind: _emfile_run(kind) for kind in ("fastio", "asyncio")}
    assert got["fastio"] == got["asyncio"], got
    assert got["fastio"]["message"] == "socket.accept() out of system resource"
    assert got["fastio"]["errno"] == errno.EMFILE
    assert got["fastio"]["socket"] == "TransportSocket"
    assert got["fastio"]["paused"] is True
    assert got["fastio"]["accepted"] == 3
    assert got["fastio"]["resumed_after_delay"] is True


# ------------------------------------------------ compiled, debug, subclasses


def test_compiled_twins_are_installed_under_asyncios_names():
    import fastio

    if fastio.IMPLEMENTATION != "cython":
        pytest.skip("the pure-Python fallback is asyncio's loop itself")
    for name in ("add_reader", "remove_reader", "add_writer", "remove_writer", "_add_reader",
                 "_remove_reader", "_add_writer", "_remove_writer", "sock_recv", "sock_recv_into",
                 "sock_sendall", "sock_connect", "sock_accept", "_accept_connection",
                 "_accept_connection2"):
        ours, theirs = getattr(fastio.EventLoop, name), getattr(asyncio.SelectorEventLoop, name)
        assert ours is not theirs, name
        assert ours.__qualname__ == theirs.__qualname__, name


def test_debug_mode_handles_carry_source_tracebacks(selector_loop):
    async def main():
        a, b = _pair()
        task = asyncio.ensure_future(selector_loop.sock_recv(a, 1))
        await _spin()
        handle = _registered(selector_loop, a.fileno())[0]
        traced = bool(handle._source_traceback)
        b.send(b"x")
        got = await task
        a.close()
        b.close()
        return traced, got

    selector_loop.set_debug(True)
    assert run(selector_loop, main()) == (True, b"x")


def test_subclass_overrides_of_private_helpers_are_called(selector_loop):
    calls = []

    class Loop(type(selector_loop)):
        def _add_reader(self, fd, callback, *args):
            calls.append(("add", callback.__name__))
            return super()._add_reader(fd, callback, *args)

        def _remove_reader(self, fd):
            calls.append(("remove",))
            return super()._remove_reader(fd)

    loop = Loop()
    try:
        async def main():
            del calls[:]  # the loop's own self-pipe reader
            a, b = _pair()
            task = asyncio.ensure_future(loop.sock_recv(a, 1))
            await _spin()
            b.send(b"x")
            got = await task
            await _spin()
            loop.add_reader(a, print)
            loop.remove_reader(a)
            a.close()
            b.close()
            return got, list(calls)

        got, seen = run(loop, main())
    finally:
        loop.close()
    assert got == b"x"
    assert seen == [("add", "_sock_recv"), ("remove",), ("add", "print"), ("remove",)]


def test_debug_mode_accept_loop_logs_each_connection(selector_loop, caplog):
    async def main():
        made = selector_loop.create_future()
        server = await selector_loop.create_server(
            lambda: made.set_result(None) or asyncio.Protocol(), "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        await made
        client.close()
        server.close()
        await server.wait_closed()

    selector_loop.set_debug(True)
    with caplog.at_level("DEBUG", logger="asyncio"):
        run(selector_loop, main())
    assert any("got a new connection from" in r.getMessage() for r in caplog.records)
