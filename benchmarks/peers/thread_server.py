"""Thread-per-connection echo server: blocking sockets, sendall."""

import threading

import _common


def handle(conn, reply):
    """Echo on one connection until the peer closes it."""
    with conn:
        try:
            while True:
                data = conn.recv(_common.BUFSIZE)
                if not data:
                    return
                conn.sendall(reply(data))
        except OSError:
            return


def serve(args):
    """Accept forever, one daemon thread per connection (daemon: SIGTERM needs no join)."""
    reply = _common.reply_function(args.upper)
    server = _common.listen(args.host, args.port, blocking=True)
    _common.ready()
    while True:
        conn, _ = server.accept()
        _common.nodelay(conn)
        threading.Thread(target=handle, args=(conn, reply), daemon=True).start()


if __name__ == "__main__":
    args = _common.parse_args(__doc__)
    _common.run(lambda: serve(args))
