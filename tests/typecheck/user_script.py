"""A user's script touching every public entry point of fastio but fastio.rabbitmq.

tests/test_typing.py runs `mypy --strict` and pyright (strict) on it, then
runs it: the types it relies on must hold at run time too.
"""

import argparse
import asyncio
import contextvars
import selectors as stdlib_selectors
import signal
import socket
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import fastio
from fastio import selectors
from fastio.echo import client as echo_client
from fastio.echo import loadgen, tutorial
from fastio.echo.server import BACKENDS, EchoServer, EchoStats, serve
from fastio.loop import Handle, Loop, Protocol, Server, TimerHandle, Transport


# --- fastio: install/uninstall, the asyncio loop --------------------------------

implementation: str = fastio.IMPLEMENTATION
version: str = fastio.__version__
was_installed: bool = fastio.install()
is_installed: bool = fastio.installed()
was_uninstalled: bool = fastio.uninstall()


async def answer() -> int:
    await asyncio.sleep(0)
    return 42


result: int = fastio.run(answer())
aloop: asyncio.AbstractEventLoop = fastio.new_event_loop()
try:
    assert aloop.run_until_complete(answer()) == 42
finally:
    aloop.close()
eloop: asyncio.AbstractEventLoop = fastio.EventLoop()
eloop.close()
sloop: asyncio.AbstractEventLoop = fastio.SelectorEventLoop()
sloop.close()
policy: asyncio.AbstractEventLoopPolicy = fastio.EventLoopPolicy()
LoopClass: "type[Loop]" = fastio.Loop


# --- fastio.selectors -------------------------------------------------------------

def use_selector(sel: stdlib_selectors.BaseSelector) -> List[Tuple[stdlib_selectors.SelectorKey, int]]:
    a, b = socket.socketpair()
    try:
        key: selectors.SelectorKey = sel.register(a, selectors.EVENT_READ, data="a")
        b.send(b"x")
        ready = sel.select(timeout=1.0)
        sel.modify(a, selectors.EVENT_READ | selectors.EVENT_WRITE, data=key.data)
        sel.unregister(a)
        return ready
    finally:
        a.close()
        b.close()
        sel.close()


default_sel: selectors.DefaultSelector = selectors.DefaultSelector()
assert use_selector(default_sel)
select_sel = selectors.SelectSelector()
fds: List[Tuple[int, int]] = select_sel.select_fds(0)
select_sel.close()
if sys.platform == "linux":
    epoll_sel = selectors.EpollSelector()
    r, w = socket.socketpair()
    epoll_sel.register(r, selectors.EVENT_READ, flags=selectors.EPOLLONESHOT | selectors.EPOLLRDHUP)
    epoll_sel.modify(r, selectors.EVENT_READ, flags=selectors.EPOLLONESHOT)
    epoll_fd: int = epoll_sel.fileno()
    epoll_sel.close()
    poll_sel = selectors.PollSelector()
    poll_sel.register(r, selectors.EVENT_READ, flags=selectors.POLLPRI)
    poll_sel.close()
    r.close()
    w.close()
flag_bits: int = selectors.EPOLLET | selectors.EPOLLEXCLUSIVE | selectors.EPOLLPRI | selectors.POLLRDHUP
sel_impl: str = selectors.IMPLEMENTATION


# --- fastio._impl.core_c: the pollers ------------------------------------------------------

if fastio.IMPLEMENTATION == "cython":
    from fastio._impl.core_c import EpollPoller, PollPoller, SelectPoller, Waker

    with EpollPoller() as epoller, Waker() as waker:
        epoller.register(waker, 0x001)
        waker.wake()
        ready: List[Tuple[int, int]] = epoller.poll(1.0)
        assert ready == [(waker.fileno(), 0x001)]
        woken: bool = waker.drain()
    poller_classes = (PollPoller, SelectPoller)


# --- fastio.loop.Loop -------------------------------------------------------------

class Echo(Protocol):
    def __init__(self) -> None:
        self.transport: Optional[Transport] = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Client(Protocol):
    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.received = b""

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.received == b"ping":
            self.loop.stop()

    def eof_received(self) -> Optional[bool]:
        return None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        pass


var: "contextvars.ContextVar[str]" = contextvars.ContextVar("var", default="")


def tick(label: str) -> None:
    var.set(label)


loop = Loop()
loop2 = Loop(selectors.PollSelector) if sys.platform == "linux" else Loop(selectors.SelectSelector)
loop2.close()
handle: Handle = loop.call_soon(tick, "soon", context=contextvars.copy_context())
handle2: Handle = loop.call_soon_threadsafe(tick, "threadsafe")
timer: TimerHandle = loop.call_later(0.01, tick, "later")
timer_at: TimerHandle = loop.call_at(loop.time() + 60, tick, "at")
due: float = timer_at.when()
timer_at.cancel()
cancelled: bool = timer_at.cancelled()
loop.remove_timeout(timer_at)
loop.add_callback(lambda: None)
loop.add_callback_threadsafe(lambda: None)
future: "asyncio.Future[Any]" = loop.create_future()
loop.call_soon(future.set_result, 1)
assert loop.run_until_complete(future) == 1
handler: Optional[Callable[[Loop, Dict[str, Any]], object]] = loop.get_exception_handler()
loop.call_exception_handler({"message": "reported through the default handler"})
debug: bool = loop.get_debug()
loop.set_exception_handler(lambda lp, context: print(context["message"]))
loop.set_exception_handler(None)
loop.add_signal_handler(signal.SIGUSR1, tick, "signal")
removed: bool = loop.remove_signal_handler(signal.SIGUSR1)

rsock, wsock = socket.socketpair()
loop.add_reader(rsock, tick, "readable")
loop.add_writer(wsock.fileno(), tick, "writable")
was_reading: bool = loop.remove_reader(rsock)
was_writing: bool = loop.remove_writer(wsock.fileno())


def on_events(fd: int, events: int) -> None:
    loop.remove_handler(fd)


loop.add_handler(rsock.fileno(), on_events, loop.READ | loop.ERROR)
loop.update_handler(rsock.fileno(), loop.READ | loop.WRITE)
loop.remove_handler(rsock.fileno())
rsock.close()
wsock.close()

server: Server = loop.create_server(Echo, "127.0.0.1", 0, backlog=16)
sockets: Tuple[socket.socket, ...] = server.sockets
port: int = sockets[0].getsockname()[1]
serving: bool = server.is_serving()
server.pause_accepting()
server.resume_accepting()
server_loop: object = server.get_loop()
fut: "asyncio.Future[Tuple[Transport, Client]]" = loop.create_connection(
    lambda: Client(loop), "127.0.0.1", port)
transport, client = loop.run_until_complete(fut)
transport.set_write_buffer_limits(high=1 << 16, low=1 << 12)
limits: Tuple[int, int] = transport.get_write_buffer_limits()
transport.write(b"pi")
transport.writelines([b"n", bytearray(b"g")])
buffered: int = transport.get_write_buffer_size()
transport.pause_reading()
reading: bool = transport.is_reading()
transport.resume_reading()
can_eof: bool = transport.can_write_eof()
proto: object = transport.get_protocol()
transport.set_protocol(client)
peer: object = transport.get_extra_info("peername")
loop.call_later(30, loop.stop)
loop.run_forever()
assert client.received == b"ping"
transport.close()
closing: bool = transport.is_closing()
server.close()
closed: "asyncio.Future[None]" = server.wait_closed()
loop.run_until_complete(closed)
running: bool = loop.is_running()
loop.close()
is_closed: bool = loop.is_closed()


# --- fastio.echo ------------------------------------------------------------------

echo = EchoServer("127.0.0.1", 0, upper=True, backend="poll" if BACKENDS.get("poll") else None,
                  max_conns=10, drain_timeout=1.0)
host, echo_port = echo.start()
echo_thread = threading.Thread(target=echo.loop.run_forever, daemon=True)
echo_thread.start()
lines: List[str] = []
bad: int = tutorial.talk(host, echo_port, sockets=2, parts=3, upper=True, out=lines.append)
reports: List[Dict[str, Any]] = []
result_: Dict[str, Any] = loadgen.bench(host, echo_port, connections=2, duration=0.2, warmup=0.0,
                                        upper=True, progress=reports.append, progress_interval=0.05)
summary: str = loadgen.format_result(result_)
progress_lines: List[str] = [loadgen.format_progress(report) for report in reports]
stats: EchoStats = echo.stats
echo.loop.call_soon_threadsafe(echo.shutdown)
echo_thread.join(30)
echo.close()
assert bad == 0 and result_["errors"] == 0 and stats.connections == 4, (lines, result_, stats)
line: str = stats.summary()
serve_fn: Callable[..., EchoStats] = serve
parts: List[str] = tutorial.split_parts("hello", 2)
byte_parts: List[bytes] = tutorial.split_parts(b"hello", 2)
parser = argparse.ArgumentParser()
echo_client.add_arguments(parser)
status: int = echo_client.run(parser.parse_args(["--port", "1", "--sockets", "1", "--timeout", "1"]))
assert status == 1  # nothing listens on port 1
