"""Publisher.close()/flush(): bounded by close_timeout, never silent (messages
waiting for a retry included), safe in signal handlers and finally blocks;
on the compiled and the pure-Python outbox."""

import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

pytest.importorskip("pika")

from tcp_proxy import FreezableProxy

from fastio.rabbitmq import CloseTimeoutError, Publisher, PublisherClosed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _proxied_url(broker, proxy):
    return "amqp://guest:guest@127.0.0.1:%d/%%2F" % proxy.port


@pytest.mark.timeout(60)
def test_leaving_with_block_after_broker_is_gone_raises_with_the_count(broker, queue):
    proxy = FreezableProxy(("127.0.0.1", broker.port))
    url = _proxied_url(broker, proxy)
    futures = []
    t0 = None
    with pytest.raises(CloseTimeoutError) as info:
        with Publisher(url, close_timeout=1.0, reconnect_delay=(0.05, 0.2)) as pub:
            pub.publish("", queue, b"confirmed").result(10)
            proxy.close()           # the broker is gone: connections cut, port refused
            futures = [pub.publish("", queue, b"stuck %d" % i) for i in range(3)]
            t0 = time.monotonic()
    assert time.monotonic() - t0 < 15
    assert info.value.unconfirmed == 3
    assert "3 messages still unconfirmed" in str(info.value)
    for fut in futures:             # failed, not dropped
        assert isinstance(fut.exception(0), PublisherClosed)


@pytest.mark.timeout(60)
def test_close_returns_when_the_broker_goes_silent(broker, queue):
    # The connection stays open but nothing answers: neither the confirms
    # nor the connection's close-ok ever come.
    proxy = FreezableProxy(("127.0.0.1", broker.port))
    try:
        pub = Publisher(_proxied_url(broker, proxy), close_timeout=1.0)
        pub.publish("", queue, b"confirmed").result(10)
        proxy.freeze()
        fut = pub.publish("", queue, b"never confirmed")
        t0 = time.monotonic()
        with pytest.raises(CloseTimeoutError) as info:
            pub.close()
        assert time.monotonic() - t0 < 15
        assert info.value.unconfirmed == 1
        assert isinstance(fut.exception(0), PublisherClosed)
        # Its socket is closed, not left open while the Publisher lives.
        assert _sockets_connected_to(proxy.port) == []
        pub.close()                 # idempotent
    finally:
        proxy.close()


def _sockets_connected_to(port):
    """Return this process's fds of TCP sockets connected to 127.0.0.1:`port`."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink("/proc/self/fd/" + name).startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with sock:
            try:
                if sock.type == socket.SOCK_STREAM and sock.getpeername() == ("127.0.0.1", port):
                    found.append(int(name))
            except OSError:
                pass
    return found


@pytest.mark.timeout(60)
def test_close_fails_and_counts_messages_waiting_for_retry(amqp_url, admin, implementation,
                                                          monkeypatch):
    # A queue that nacks every publish past its one message, no retry
    # bound: the message waits for its next retry when close() gives up.
    import implementations
    from fastio.rabbitmq import publisher

    module = implementations.pair(implementation, "amqp")
    monkeypatch.setattr(publisher, "Outbox", module.Outbox)
    monkeypatch.setattr(publisher, "split_confirms", module.split_confirms)
    full = "fastio-full-" + uuid.uuid4().hex[:8]
    admin.queue_declare(full, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    try:
        pub = Publisher(amqp_url, close_timeout=0.5, retry_deadline=None,
                        retry_delay=(0.01, 0.05))
        pub.publish("", full, b"fits").result(10)
        futures = [pub.publish("", full, b"nacked %d" % i) for i in range(3)]
        deadline = time.monotonic() + 10
        while not all(f._attempts for f in futures):
            assert time.monotonic() < deadline, "the broker never nacked them"
            time.sleep(0.01)
        with pytest.raises(CloseTimeoutError) as info:
            pub.close()
        assert info.value.unconfirmed == 3
        for fut in futures:             # failed, not dropped
            assert isinstance(fut.exception(0), PublisherClosed)
        assert pub.outstanding == 0
    finally:
        admin.queue_delete(full)


def test_close_timeout_argument_overrides_the_default(broker, queue):
    proxy = FreezableProxy(("127.0.0.1", broker.port))
    try:
        pub = Publisher(_proxied_url(broker, proxy), close_timeout=None)
        pub.publish("", queue, b"confirmed").result(10)
        proxy.freeze()
        pub.publish("", queue, b"never confirmed")
        with pytest.raises(CloseTimeoutError):
            pub.close(timeout=0.5)
    finally:
        proxy.close()


def test_close_after_clean_flush_raises_nothing(amqp_url, queue):
    pub = Publisher(amqp_url, close_timeout=5)
    fut = pub.publish("", queue, b"x")
    pub.close()
    assert fut.result(0) is None
    pub.close()
    with pytest.raises(PublisherClosed):
        pub.publish("", queue, b"late")


_SIGNAL_SCRIPT = textwrap.dedent("""
    import signal, sys
    from fastio._impl import amqp_py
    from fastio.rabbitmq import Publisher, PublisherClosed, publisher

    url, queue, implementation = sys.argv[1:4]
    if implementation == "py":
        publisher.Outbox = amqp_py.Outbox
        publisher.split_confirms = amqp_py.split_confirms
    # A tiny window: publish() keeps waiting for room, so the handlers land
    # inside its wait, inside the outbox and between its steps.
    pub = Publisher(url, max_in_flight=8, close_timeout=30)
    calls = [0]
    depth = [0]

    def flush_handler(signum, frame):
        calls[0] += 1
        # Handlers nest, each flushing inside the wait of the one it
        # interrupted. Under a slow broker every timer tick would add a level
        # until the recursion limit: nesting stops at a fixed depth.
        if depth[0] >= 20:
            return
        depth[0] += 1
        try:
            pub.flush(30)
        finally:
            depth[0] -= 1

    signal.signal(signal.SIGALRM, flush_handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    futures = [pub.publish("", queue, b"%d" % i) for i in range(3000)]
    pub.flush(30)
    signal.setitimer(signal.ITIMER_REAL, 0)

    def close_handler(signum, frame):
        pub.close()

    signal.signal(signal.SIGALRM, close_handler)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    late = []
    try:
        while True:
            late.append(pub.publish("", queue, b"late"))
    except PublisherClosed:
        pass
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    finally:
        pub.close()             # again, from a finally block
    # Every late future is settled: confirmed or failed, none pending.
    assert all(f.done() for f in late), sum(not f.done() for f in late)
    assert all(f.exception(0) is None for f in futures)
    print(calls[0], len(late), sum(f.exception(0) is None for f in late))
""")


@pytest.mark.timeout(120)
def test_flush_and_close_from_signal_handlers(amqp_url, queue, implementation):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_SCRIPT, amqp_url, queue, implementation],
                          env=env, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    handler_calls, n_late, _ = map(int, proc.stdout.split())
    assert handler_calls > 10       # the handlers did interrupt publishing
    assert n_late >= 1
