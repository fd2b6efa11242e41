"""fastio.EventLoop beyond the transports, beside asyncio and uvloop: the
server API, create_connection (happy eyeballs), sock_* calls, TLS, UDP,
subprocesses, pipes, signals, executors, name resolution, sendfile, async
generators and eager tasks."""

import asyncio
import os
import signal
import socket
import ssl
import sys
import tempfile

import pytest

from eventloop_fixtures import aio_kind, aio_loop, run, selector_loop  # noqa: F401 (fixtures)


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def echo_once(loop, host, port, payload=b"ping", **kwargs):
    reader, writer = await asyncio.open_connection(host, port, **kwargs)
    writer.write(payload)
    await writer.drain()
    got = await reader.readexactly(len(payload))
    writer.close()
    await writer.wait_closed()
    return got


# ----------------------------------------------------------------- servers


def test_server_start_serving_serve_forever_close_wait_closed(aio_loop):
    async def main():
        server = await aio_loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        port = server.sockets[0].getsockname()[1]
        await server.start_serving()
        assert server.is_serving()
        assert server.get_loop() is aio_loop
        got = await echo_once(aio_loop, "127.0.0.1", port)
        forever = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        got2 = await echo_once(aio_loop, "127.0.0.1", port)
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        # serve_forever() cancelled closes the server.
        assert not server.is_serving()
        await server.wait_closed()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        return got, got2

    assert run(aio_loop, main()) == (b"ping", b"ping")


def test_server_async_with_closes(aio_loop):
    async def main():
        server = await aio_loop.create_server(Echo, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            got = await echo_once(aio_loop, "127.0.0.1", port, b"inside")
        assert not server.is_serving()
        return got

    assert run(aio_loop, main()) == b"inside"


def test_server_with_existing_socket_and_reuse_port(aio_loop):
    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await aio_loop.create_server(Echo, sock=sock)
        port = sock.getsockname()[1]
        got = await echo_once(aio_loop, "127.0.0.1", port, b"own socket")
        server.close()
        await server.wait_closed()
        return got

    assert run(aio_loop, main()) == b"own socket"


def test_many_connections_through_accept_loop(aio_loop):
    async def main():
        server = await aio_loop.create_server(Echo, "127.0.0.1", 0, backlog=200)
        port = server.sockets[0].getsockname()[1]
        got = await asyncio.gather(*(echo_once(aio_loop, "127.0.0.1", port, b"%d" % i) for i in range(150)))
        server.close()
        await server.wait_closed()
        return got

    assert run(aio_loop, main()) == [b"%d" % i for i in range(150)]


# ------------------------------------------------------- create_connection


def test_create_connection_happy_eyeballs_arguments(selector_loop):
    # uvloop has no happy_eyeballs_delay / interleave.
    aio_loop = selector_loop

    async def main():
        server = await aio_loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got = await echo_once(aio_loop, "localhost", port, b"eyeballs",
                              happy_eyeballs_delay=0.25, interleave=1)
        server.close()
        await server.wait_closed()
        return got

    assert run(aio_loop, main()) == b"eyeballs"


def test_create_connection_refused(aio_loop):
    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        with pytest.raises(ConnectionRefusedError):
            await aio_loop.create_connection(asyncio.Protocol, "127.0.0.1", port)

    run(aio_loop, main())


def test_create_connection_with_sock_and_local_addr(aio_loop):
    async def main():
        server = await aio_loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, _ = await aio_loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                                 local_addr=("127.0.0.1", 0))
        local = tr.get_extra_info("sockname")
        tr.close()
        server.close()
        await server.wait_closed()
        return local

    assert run(aio_loop, main())[0] == "127.0.0.1"


# ------------------------------------------------------------------ sock_*


def test_sock_connect_accept_sendall_recv_recv_into(aio_loop):
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        accept = asyncio.ensure_future(aio_loop.sock_accept(listener))
        await aio_loop.sock_connect(client, listener.getsockname())
        conn, addr = await accept
        conn.setblocking(False)
        payload = os.urandom(1 << 20)
        send = asyncio.ensure_future(aio_loop.sock_sendall(client, payload))
        got = bytearray()
        buf = bytearray(65536)
        while len(got) < len(payload) // 2:
            got += await aio_loop.sock_recv(conn, 65536)
        while len(got) < len(payload):
            n = await aio_loop.sock_recv_into(conn, buf)
            got += buf[:n]
        await send
        client_name = client.getsockname()
        client.close()
        assert await aio_loop.sock_recv(conn, 10) == b""
        conn.close()
        listener.close()
        return bytes(got) == payload, addr == client_name

    assert run(aio_loop, main()) == (True, True)


def test_sock_calls_refuse_blocking_sockets_in_debug(aio_loop, aio_kind):
    async def main():
        a, b = socket.socketpair()
        try:
            with pytest.raises(ValueError):
                await aio_loop.sock_recv(a, 1)
        finally:
            a.close()
            b.close()

    # asyncio checks for non-blocking sockets only in debug mode; uvloop always.
    aio_loop.set_debug(True)
    run(aio_loop, main())


# --------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_contexts():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def test_tls_echo_with_ssl_argument(aio_loop, tls_contexts):
    server_ctx, client_ctx = tls_contexts

    async def handle(reader, writer):
        data = await reader.read(100)
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                       server_hostname="localhost")
        writer.write(b"secret")
        got = await reader.read(100)
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got, version

    got, version = run(aio_loop, main())
    assert got == b"SECRET"
    assert version.startswith("TLS")


def test_start_tls_upgrades_a_plain_connection(aio_loop, tls_contexts):
    server_ctx, client_ctx = tls_contexts

    class Server(asyncio.Protocol):
        """Plain text until STARTTLS, then echo "tls:" + data over TLS."""

        def __init__(self):
            self.tls = None

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if self.tls is None:
                assert data == b"STARTTLS"
                self.transport.write(b"OK")
                # No plain-text read may take the client's hello.
                self.transport.pause_reading()
                self.tls = asyncio.ensure_future(aio_loop.start_tls(
                    self.transport, self, server_ctx, server_side=True))
            else:
                # Data can arrive before start_tls() has returned here.
                self.tls.add_done_callback(lambda t: t.result().write(b"tls:" + data))

    class Client(asyncio.Protocol):
        def __init__(self):
            self.data = bytearray()
            self.got_ok = aio_loop.create_future()
            self.got_reply = aio_loop.create_future()

        def data_received(self, data):
            self.data += data
            if not self.got_ok.done():
                self.got_ok.set_result(bytes(self.data))
                self.data.clear()
            elif len(self.data) >= 9:
                self.got_reply.set_result(bytes(self.data))

    async def main():
        server = await aio_loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Client()
        transport, _ = await aio_loop.create_connection(lambda: client, "127.0.0.1", port)
        transport.write(b"STARTTLS")
        assert await client.got_ok == b"OK"
        tls = await aio_loop.start_tls(transport, client, client_ctx, server_hostname="localhost")
        tls.write(b"hello")
        got = await client.got_reply
        cipher = tls.get_extra_info("cipher")
        tls.close()
        server.close()
        await server.wait_closed()
        return got, cipher

    got, cipher = run(aio_loop, main())
    assert got == b"tls:hello"
    assert cipher is not None


# --------------------------------------------------------------------- UDP


def test_udp_datagram_endpoint_round_trip(aio_loop):
    class Server(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data[::-1], addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = aio_loop.create_future()

        def datagram_received(self, data, addr):
            self.got.set_result(data)

    async def main():
        st, _ = await aio_loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", 0))
        addr = st.get_extra_info("sockname")
        ct, cp = await aio_loop.create_datagram_endpoint(Client, remote_addr=addr)
        ct.sendto(b"datagram")
        got = await cp.got
        ct.close()
        st.close()
        return got

    assert run(aio_loop, main()) == b"margatad"


# ---------------------------------------------------- subprocesses and pipes


def test_subprocess_exec_pipes_and_exit_code(aio_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; d = sys.stdin.read(); sys.stdout.write(d.upper()); sys.exit(3)",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(b"child")
        return out, proc.returncode

    assert run(aio_loop, main()) == (b"CHILD", 3)


def test_subprocess_shell(aio_loop):
    async def main():
        proc = await asyncio.create_subprocess_shell("echo shell", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out, await proc.wait()

    assert run(aio_loop, main()) == (b"shell\n", 0)


def test_read_and_write_pipes(aio_loop):
    async def main():
        rfd, wfd = os.pipe()
        reader = asyncio.StreamReader()
        rtr, _ = await aio_loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                  os.fdopen(rfd, "rb", 0))
        wtr, _ = await aio_loop.connect_write_pipe(asyncio.Protocol, os.fdopen(wfd, "wb", 0))
        wtr.write(b"through a pipe")
        wtr.close()
        got = await reader.read()
        rtr.close()
        return got

    assert run(aio_loop, main()) == b"through a pipe"


# ----------------------------------------------------------------- signals


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_add_and_remove_signal_handler(aio_loop, aio_kind):
    got = []

    def on_signal(tag):
        got.append(tag)
        aio_loop.stop()

    aio_loop.add_signal_handler(signal.SIGUSR1, on_signal, "usr1")
    aio_loop.call_later(0.01, os.kill, os.getpid(), signal.SIGUSR1)
    aio_loop.call_later(30, aio_loop.stop)
    aio_loop.run_forever()
    removed = aio_loop.remove_signal_handler(signal.SIGUSR1)
    if aio_kind != "uvloop":  # uvloop answers False once the loop stopped
        assert removed
    assert not aio_loop.remove_signal_handler(signal.SIGUSR1)
    with pytest.raises((ValueError, RuntimeError)):
        aio_loop.add_signal_handler(signal.SIGKILL, on_signal, "kill")
    assert got == ["usr1"]


class _Alarm(Exception):
    pass


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("wakeup", [False, True], ids=["no-wakeup-fd", "wakeup-fd"])
def test_signal_handler_raising_for_another_threads_signal_leaves_run(selector_loop, wakeup):
    # A signal the kernel gives another thread does not interrupt the
    # loop's wait; its Python handler runs when the wait returns, in
    # select() on asyncio, and what it raises leaves run_until_complete()
    # -- never inside a callback, whose work it would cut short.
    import threading
    import time

    loop = selector_loop
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def raise_alarm(signum, frame):
        raise _Alarm()

    def signal_a_thread():
        time.sleep(0.1)
        signal.pthread_kill(threading.get_ident(), signal.SIGALRM)

    old = signal.signal(signal.SIGALRM, raise_alarm)
    if wakeup:
        # Makes the loop set its self-pipe as the wakeup fd.
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    try:
        loop.call_later(30, loop.stop)  # a swallowed alarm would hang the sleep
        t = threading.Thread(target=signal_a_thread)
        t.start()
        with pytest.raises(_Alarm):
            loop.run_until_complete(asyncio.sleep(0.5))
        t.join()
    finally:
        if wakeup:
            loop.remove_signal_handler(signal.SIGUSR1)
        signal.signal(signal.SIGALRM, old)
    assert contexts == []


# --------------------------------------------------- executors and names


def test_run_in_executor_and_shutdown_default_executor(aio_loop):
    async def main():
        import threading

        name = await aio_loop.run_in_executor(None, lambda: threading.current_thread().name)
        await aio_loop.shutdown_default_executor()
        with pytest.raises(RuntimeError):
            await aio_loop.run_in_executor(None, print)
        return name

    assert run(aio_loop, main()) != "MainThread"


def test_getaddrinfo_and_getnameinfo(aio_loop):
    async def main():
        infos = await aio_loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        name = await aio_loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        return infos[0][4], name

    addr, name = run(aio_loop, main())
    assert addr == ("127.0.0.1", 80)
    assert name == ("127.0.0.1", "80")


# ---------------------------------------------------------------- sendfile


def test_sendfile_over_transport(selector_loop):
    # uvloop has no loop.sendfile().
    aio_loop = selector_loop

    class Sink(asyncio.Protocol):
        def __init__(self):
            self.data = bytearray()
            self.done = aio_loop.create_future()

        def data_received(self, data):
            self.data += data

        def eof_received(self):
            self.done.set_result(bytes(self.data))

    async def main():
        sink = Sink()
        server = await aio_loop.create_server(lambda: sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, _ = await aio_loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        payload = os.urandom(300_000)
        with tempfile.TemporaryFile() as f:
            f.write(payload)
            f.flush()
            f.seek(0)
            sent = await aio_loop.sendfile(tr, f, offset=1000, count=200_000)
        tr.write_eof()
        got = await sink.done
        tr.close()
        server.close()
        await server.wait_closed()
        return sent, got == payload[1000:201_000]

    assert run(aio_loop, main()) == (200_000, True)


# ------------------------------------------------------ tasks and asyncgens


def test_shutdown_asyncgens_finalizes_generators(aio_loop):
    closed = []

    async def gen():
        try:
            yield 1
            yield 2
        finally:
            closed.append("finalized")

    async def main():
        g = gen()
        assert await g.__anext__() == 1
        return g  # left suspended

    g = run(aio_loop, main())
    aio_loop.run_until_complete(aio_loop.shutdown_asyncgens())
    assert closed == ["finalized"]
    del g


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_eager_task_factory_runs_eagerly(selector_loop):
    # uvloop passes eager_start= to task factories, which asyncio's refuse.
    aio_loop = selector_loop
    order = []

    async def child():
        order.append("child started")
        return 5

    async def main():
        aio_loop.set_task_factory(asyncio.eager_task_factory)
        try:
            task = asyncio.create_task(child())
            order.append("after create_task")
            return await task
        finally:
            aio_loop.set_task_factory(None)

    assert run(aio_loop, main()) == 5
    assert order == ["child started", "after create_task"]


def test_wait_for_and_timeouts(aio_loop):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        return await asyncio.wait_for(asyncio.sleep(0, "fast"), 5)

    assert run(aio_loop, main()) == "fast"


def test_gather_many_tasks(aio_loop):
    async def one(i):
        await asyncio.sleep(0)
        return i

    async def main():
        return await asyncio.gather(*(one(i) for i in range(10_000)))

    assert run(aio_loop, main()) == list(range(10_000))
