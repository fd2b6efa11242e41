"""Process-per-connection echo server: fork per accepted connection, blocking sockets, sendall.

The parent reaps children on SIGCHLD (so their CPU time lands in its
cutime/cstime) and, on SIGTERM/SIGINT, terminates the children still alive.
"""

import os
import signal

import _common

children = set()


def reap(signum=None, frame=None):
    """Collect every exited child without blocking."""
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)


def child(server, conn, reply):
    """Echo on `conn` in a forked child; never returns."""
    server.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        while True:
            data = conn.recv(_common.BUFSIZE)
            if not data:
                break
            conn.sendall(reply(data))
    except OSError:
        pass
    os._exit(0)


def serve(args):
    """Accept forever, forking a child per connection."""
    reply = _common.reply_function(args.upper)
    server = _common.listen(args.host, args.port, blocking=True)
    signal.signal(signal.SIGCHLD, reap)
    _common.ready()
    try:
        while True:
            conn, _ = server.accept()  # EINTR from SIGCHLD is retried (PEP 475)
            _common.nodelay(conn)
            pid = os.fork()
            if pid == 0:
                child(server, conn, reply)
            children.add(pid)
            conn.close()
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


if __name__ == "__main__":
    args = _common.parse_args(__doc__.split("\n")[0])
    _common.run(lambda: serve(args))
