"""Echo server on the stdlib `selectors` module: non-blocking, one buffer per connection."""

import selectors

import _common


def serve(args):
    """Echo on DefaultSelector until interrupted; stop reading a connection while its reply is unsent."""
    reply = _common.reply_function(args.upper)
    sel = selectors.DefaultSelector()
    server = _common.listen(args.host, args.port)
    sel.register(server, selectors.EVENT_READ)
    pending = {}  # socket -> bytes not yet written
    _common.ready()
    while True:
        for key, events in sel.select():
            sock = key.fileobj
            if sock is server:
                try:
                    conn, _ = server.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                _common.nodelay(conn)
                sel.register(conn, selectors.EVENT_READ)
                continue
            if events & selectors.EVENT_WRITE:
                data = pending.pop(sock)
            else:
                try:
                    data = sock.recv(_common.BUFSIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    continue
                data = reply(data)
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sel.unregister(sock)
                sock.close()
                continue
            if sent < len(data):
                # Reading pauses until the rest is written: memory per connection stays bounded.
                pending[sock] = data[sent:]
                sel.modify(sock, selectors.EVENT_WRITE)
            elif events & selectors.EVENT_WRITE:
                sel.modify(sock, selectors.EVENT_READ)


if __name__ == "__main__":
    args = _common.parse_args(__doc__)
    _common.run(lambda: serve(args))
