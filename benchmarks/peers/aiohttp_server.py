"""aiohttp web server answering every GET / with "Hello, World!" (HTTP/1.1 keep-alive), on any asyncio loop."""

import _common
from aiohttp import web
from asyncio_server import wait_for_signal

BODY = b"Hello, World!"


async def hello(request):
    return web.Response(body=BODY, content_type="text/plain")


async def serve(args):
    """Listen until SIGTERM/SIGINT."""
    app = web.Application()
    app.router.add_get("/", hello)
    # No access log: it would measure logging, the same on every loop.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, _common.listen(args.host, args.port))
    await site.start()
    _common.ready()
    await wait_for_signal()
    await runner.cleanup()


def main():
    args = _common.parse_args(__doc__, lambda p: p.add_argument(
        "--loop", choices=_common.ASYNCIO_LOOPS, default="asyncio"))
    _common.run_on(args.loop, serve(args))


if __name__ == "__main__":
    main()
