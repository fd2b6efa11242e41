"""asyncio echo server: a Protocol (default) or streams (--streams), on asyncio's loop or uvloop (--uvloop)."""

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


async def serve(args):
    """Listen until SIGTERM/SIGINT."""
    reply = _common.reply_function(args.upper)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    sock = _common.listen(args.host, args.port)
    if args.streams:
        server = await asyncio.start_server(streams_handler(reply), sock=sock, limit=_common.BUFSIZE)
    else:
        server = await loop.create_server(lambda: EchoProtocol(reply), sock=sock)
    _common.ready()
    await stop
    server.close()


def main():
    args = _common.parse_args(__doc__, lambda p: (
        p.add_argument("--streams", action="store_true", help="StreamReader/StreamWriter instead of a Protocol"),
        p.add_argument("--uvloop", action="store_true", help="run on uvloop"),
    ))
    if args.uvloop:
        import uvloop
        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
