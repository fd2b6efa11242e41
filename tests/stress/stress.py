"""A short stress run of fastio's C paths, for valgrind/sanitizer runs.

    python tests/stress/stress.py [--scale 1.0]

Selector churn on every backend (register/modify/unregister/select, closed
fds, the batch call, waits in several threads at once), the Waker from threads, the Loop serving 1,000 echo
connections, and, when FASTIO_AMQP_URL names a broker, the RabbitMQ
Publisher with confirms. Exits non-zero if any echoed byte is wrong or any
message is not confirmed. It is a
driver, not a test: `make valgrind` runs it under memcheck and reads the
report.
"""

import argparse
import os
import resource
import socket
import sys
import threading

import fastio
from fastio import selectors
from fastio._impl import compiled
from fastio.loop import Loop, Protocol


def churn_selectors(rounds):
    """Register/modify/unregister/select on every backend, with closed fds."""
    for cls in (selectors.EpollSelector, selectors.PollSelector, selectors.SelectSelector):
        sel = cls()
        pairs = [socket.socketpair() for _ in range(64)]
        for a, _b in pairs:
            a.setblocking(False)
        for r in range(rounds):
            for i, (a, b) in enumerate(pairs):
                sel.register(a, selectors.EVENT_READ, i)
                if i % 3 == 0:
                    b.send(b"x")
                sel.modify(a, selectors.EVENT_READ | selectors.EVENT_WRITE, r)
            ready = sel.select(0)
            assert len(ready) == len(pairs), (cls, len(ready))
            sel.select_fds(0)
            for a, b in pairs:
                sel.unregister(a)
            for a, _b in pairs:
                try:
                    a.recv(4096)
                except BlockingIOError:
                    pass
        # Closed and reused fds.
        a, b = pairs.pop()
        sel.register(a, selectors.EVENT_READ)
        a.close()
        sel.unregister(a)
        b.close()
        for a, b in pairs:
            a.close()
            b.close()
        sel.close()


def select_from_threads(cls, rounds, threads=3):
    """Threads wait in one selector's select() at once while this thread
    registers, modifies, unregisters, sends and drains; on epoll it also
    closes fds while a dup of each lives (stale kernel entries). Returns
    what went wrong."""
    sel = cls()
    stop = threading.Event()
    socks = set()  # every socket ever made: select() reports no other
    errors = []
    # select(2) fails with EBADF if an fd is closed as a wait starts (the
    # stdlib's too): only the epoll selectors see fds closed meanwhile.
    close_now = cls.__name__ == "EpollSelector"
    to_close = []

    def wait():
        try:
            while not stop.is_set():
                for key, events in sel.select(0.005):
                    # (events may be 0: the stdlib's too masks a report
                    # with the key registered when it is read)
                    if key.fileobj not in socks or events & ~key.events:
                        errors.append((key, events))
        except Exception as exc:  # reported, not swallowed
            errors.append(exc)

    waiters = [threading.Thread(target=wait) for _ in range(threads)]
    for t in waiters:
        t.start()
    pairs = [socket.socketpair() for _ in range(16)]
    socks.update(a for a, _ in pairs)
    try:
        for r in range(rounds):
            for i, (a, b) in enumerate(pairs):
                sel.register(a, selectors.EVENT_READ | selectors.EVENT_WRITE * (i % 2), r)
                b.send(b"x")
            for i, (a, b) in enumerate(pairs):
                if i % 3 == 0:
                    sel.modify(a, selectors.EVENT_READ, -r)
                sel.unregister(a)
                a.recv(16)
            a, b = pairs[r % len(pairs)]
            dup = a.dup()
            sel.register(a, selectors.EVENT_READ)
            sel.unregister(a)
            pairs[r % len(pairs)] = socket.socketpair()
            socks.add(pairs[r % len(pairs)][0])
            if close_now:
                a.close()
                b.send(b"y")
                a = None
            to_close.extend(s for s in (a, b, dup) if s is not None)
            if close_now:
                for s in to_close:
                    s.close()
                to_close.clear()
    finally:
        stop.set()
        for t in waiters:
            t.join()
        sel.close()
        for s in to_close:
            s.close()
        for a, b in pairs:
            a.close()
            b.close()
    return errors


def churn_waker(threads=4, wakes=20000):
    core = compiled("core")
    waker = core.Waker() if core is not None else None
    if waker is None:
        return
    workers = [threading.Thread(target=lambda: [waker.wake() for _ in range(wakes)]) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert waker.drain()
    waker.close()


class _Echo(Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def loop_echo(connections, rounds):
    """Serve `connections` clients on a Loop; every byte must come back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * connections + 64)), hard))
    loop = Loop()
    server = loop.create_server(_Echo, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    errors = []

    def clients():
        socks = []
        try:
            for i in range(connections):
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                socks.append(s)
            for r in range(rounds):
                for i, s in enumerate(socks):
                    s.sendall(b"%d:%d;" % (i, r) * 8)
                for i, s in enumerate(socks):
                    want = b"%d:%d;" % (i, r) * 8
                    got = b""
                    while len(got) < len(want):
                        got += s.recv(len(want) - len(got))
                    if got != want:
                        errors.append((i, r))
        except Exception as exc:  # reported, not swallowed
            errors.append(exc)
        finally:
            for s in socks:
                s.close()
            loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=clients)
    t.start()
    loop.run_forever()
    t.join()
    server.close()
    loop.close()
    return errors


def publish_confirmed(url, count):
    """Publish `count` confirmed messages through Publisher; return failures."""
    from fastio.rabbitmq import Publisher

    # No queue is bound to this key: the broker confirms and drops the
    # messages, which is all the C paths need to be exercised.
    queue = "fastio-stress-%d" % os.getpid()
    with Publisher(url) as pub:
        futures = [pub.publish("", queue, b"%d" % i) for i in range(count)]
        pub.flush(timeout=120)
    return [f for f in futures if not f.done() or f.exception() is not None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="work multiplier")
    args = parser.parse_args(argv)
    rounds = max(1, int(20 * args.scale))
    churn_selectors(rounds)
    for cls in (selectors.EpollSelector, selectors.SelectSelector):
        errors = select_from_threads(cls, rounds * 10)
        if errors:
            print("stress: %s from threads: %r" % (cls.__name__, errors[:5]), file=sys.stderr)
            return 1
    churn_waker()
    errors = loop_echo(connections=1000, rounds=max(1, int(3 * args.scale)))
    if errors:
        print("stress: %d echo errors: %r" % (len(errors), errors[:5]), file=sys.stderr)
        return 1
    url = os.environ.get("FASTIO_AMQP_URL")
    if url:
        count = max(100, int(20_000 * args.scale))
        failed = publish_confirmed(url, count)
        if failed:
            print("stress: %d of %d messages not confirmed" % (len(failed), count), file=sys.stderr)
            return 1
        print("stress: %d messages published and confirmed" % count)
    print("stress: ok (fastio %s, pid %d)" % (fastio.IMPLEMENTATION, os.getpid()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
