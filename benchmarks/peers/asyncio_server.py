"""asyncio echo server: a Protocol, a BufferedProtocol or streams, on asyncio's loop, uvloop or fastio's."""

import asyncio
import signal

import _common


class EchoProtocol(asyncio.Protocol):
    """Write back what arrives; pause reading while the transport's buffer is over its high mark."""

    def __init__(self, reply):
        self.reply = reply

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(self.reply(data))

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


class BufferedEchoProtocol(asyncio.BufferedProtocol):
    """EchoProtocol receiving into one reused buffer (get_buffer/buffer_updated)."""

    def __init__(self, reply):
        self.reply = reply
        self.view = memoryview(bytearray(_common.BUFSIZE))

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        # bytes(): the buffer is reused by the next read, and a transport may
        # keep what it could not send yet by reference (3.12+ asyncio does).
        self.transport.write(self.reply(bytes(self.view[:nbytes])))

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def streams_handler(reply):
    """Return a start_server callback echoing through StreamReader/StreamWriter."""
    async def handle(reader, writer):
        try:
            while True:
                data = await reader.read(_common.BUFSIZE)
                if not data:
                    break
                writer.write(reply(data))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
    return handle


async def wait_for_signal():
    """Return once SIGTERM or SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    await stop


async def serve(args):
    """Listen until SIGTERM/SIGINT."""
    reply = _common.reply_function(args.upper)
    loop = asyncio.get_running_loop()
    sock = _common.listen(args.host, args.port)
    if args.style == "streams":
        server = await asyncio.start_server(streams_handler(reply), sock=sock, limit=_common.BUFSIZE)
    else:
        protocol = EchoProtocol if args.style == "protocol" else BufferedEchoProtocol
        server = await loop.create_server(lambda: protocol(reply), sock=sock)
    _common.ready()
    await wait_for_signal()
    server.close()


def main():
    args = _common.parse_args(__doc__, lambda p: (
        p.add_argument("--style", choices=("protocol", "buffered", "streams"), default="protocol",
                       help="asyncio.Protocol, asyncio.BufferedProtocol or StreamReader/StreamWriter"),
        p.add_argument("--loop", choices=_common.ASYNCIO_LOOPS, default="asyncio"),
    ))
    _common.run_on(args.loop, serve(args))


if __name__ == "__main__":
    main()
