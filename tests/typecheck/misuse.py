"""Wrong uses of fastio's API: every line marked `# wrong` must be flagged.

tests/test_typing.py checks that mypy and pyright report each marked line
(and nothing else): the public names are typed, not Any.
"""

import fastio
from fastio import selectors
from fastio.echo.server import EchoServer
from fastio.loop import Loop, Protocol


async def answer() -> int:
    return 42


text: str = fastio.run(answer())  # wrong
loop: Loop = fastio.Loop()
Loop(42)  # wrong
later: str = loop.call_later(1.0, print)  # wrong
loop.call_soon("not callable")  # wrong
loop.create_server(42, "127.0.0.1", 0)  # wrong
now: str = loop.time()  # wrong
fastio.install(True)  # wrong
flag: str = fastio.installed()  # wrong
aloop: int = fastio.new_event_loop()  # wrong
port: str = EchoServer(port=0).start()[1]  # wrong
keys: int = selectors.DefaultSelector().select()  # wrong


class Bad(Protocol):
    def data_received(self, data: str) -> None:  # wrong
        pass
