"""Talk to an echo server as the tutorial's multi-socket client does.

Several sockets each send one message in parts, then each reads back what the
server echoed. Blocking sockets and ``sendall``/``recv`` keep it readable: this
is the client to read first. The load generator (`fastio.echo.loadgen`) is
the one built for speed.
"""

import socket
from typing import Callable, List, TypeVar

__all__ = ["TUTORIAL_MESSAGE", "split_parts", "talk"]

TUTORIAL_MESSAGE = "This is the message.  It will be sent in parts."
_Text = TypeVar("_Text", str, bytes)


def split_parts(message: _Text, parts: int) -> List[_Text]:
    """Split `message` into at most `parts` nearly equal, non-empty pieces."""
    step = -(-len(message) // max(1, parts))
    return [message[i:i + step] for i in range(0, len(message), step)] or [message]


def talk(host: str = "127.0.0.1", port: int = 10000, sockets: int = 2, parts: int = 3,
         message: str = TUTORIAL_MESSAGE, upper: bool = False, timeout: float = 5.0,
         out: Callable[[str], object] = print) -> int:
    """Send `message` in parts on each of `sockets` connections; print and check what comes back.

    :param upper: expect the ASCII uppercase of the message (a server run with --upper).
    :param out: where the lines go (print by default).
    :returns: the number of sockets whose reply differed from what was expected.
    :raises OSError: when a connection cannot be made (ConnectionRefusedError...).
    """
    data = message.encode()
    want = data.upper() if upper else data
    socks = [socket.create_connection((host, port), timeout=timeout) for _ in range(sockets)]
    try:
        for part in split_parts(data, parts):
            for i, sock in enumerate(socks):
                out("socket %d: sending %r" % (i, part.decode(errors="replace")))
                sock.sendall(part)
        bad = 0
        hint = None
        for i, sock in enumerate(socks):
            got = b""
            try:
                while len(got) < len(want):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except socket.timeout:
                pass
            out("socket %d: received %r" % (i, got.decode(errors="replace")))
            if got != want:
                bad += 1
                out("socket %d: MISMATCH, expected %r" % (i, want.decode(errors="replace")))
                if not upper and got == data.upper() != data:
                    hint = ("the replies are in uppercase: is the server running with --upper? "
                            "Then pass --upper too")
                elif upper and got == data != want:
                    hint = ("the replies are unchanged: the server is not running with --upper; "
                            "drop --upper")
        if hint is not None:
            out("hint: " + hint)
        return bad
    finally:
        for sock in socks:
            sock.close()
