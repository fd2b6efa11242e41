"""A user's script touching every public entry point of fastio but fastio.rabbitmq.

tests/test_typing.py runs `mypy --strict` and pyright (strict) on it, then
runs it: the types it relies on must hold at run time too.
"""

import argparse
import asyncio
import contextvars
import io
import selectors as stdlib_selectors
import signal
import socket
import sys
from typing import List, Optional, Tuple

import fastio
from fastio import selectors
from fastio._core import EpollPoller, PollPoller, SelectPoller, Waker
from fastio.echo import client as echo_client
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


# --- fastio._core: the pollers ------------------------------------------------------

poller_classes = (EpollPoller, PollPoller, SelectPoller)
with Waker() as waker:
    waker.wake()
    woken: bool = waker.drain()


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
fut: "asyncio.Future[Tuple[Transport, Client]]" = loop.create_connection(
    lambda: Client(loop), "127.0.0.1", port)
transport, client = loop.run_until_complete(fut)
transport.set_write_buffer_limits(high=1 << 16, low=1 << 12)
limits: Tuple[int, int] = transport.get_write_buffer_limits()
transport.write(b"pi")
transport.writelines([b"n", bytearray(b"g")])
buffered: int = transport.get_write_buffer_size()
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

echo = EchoServer("127.0.0.1", 0, upper=True, backend="poll" if "poll" in BACKENDS else None,
                  max_conns=10, drain_timeout=1.0)
host, echo_port = echo.start()
stats: EchoStats = echo.stats
echo.shutdown()
final: EchoStats = echo.serve_forever()
echo.close()
line: str = final.summary()
serve_fn = serve
parts: List[str] = echo_client.split_parts("hello", 2)
parser = argparse.ArgumentParser()
echo_client.add_arguments(parser)
lines: List[str] = []
out = io.StringIO()
talk_fn = echo_client.talk
bench_fn = echo_client.bench
text: str = echo_client.format_result({
    "connections": 1, "size": 1, "pipeline": 1, "duration_s": 1.0, "poller": "p",
    "req_per_s": 1.0, "mib_per_s": 1.0, "latency_us": {"p50": None, "p99": None, "max": None},
    "client_cpu_pct": 1.0, "errors": 0, "error_messages": []})
status: int = echo_client.main(["--help"]) if False else 0
