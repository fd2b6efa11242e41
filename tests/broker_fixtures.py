"""RabbitMQ fixtures (a pytest plugin loaded by conftest.py).

`broker` is one private node for the whole session (tests/broker.py),
started on first use, so a run that selects no RabbitMQ test never pays
its 10-20 s start. Without the rabbitmq-server package the RabbitMQ tests
skip, or fail when FASTIO_REQUIRE_BROKER=1 (CI).

`connection_cls` runs an adapter test on fastio's FastioConnection and on
pika's SelectConnection, the reference.
"""

import os
import uuid

import pytest

import broker as broker_mod

REQUIRE_BROKER = os.environ.get("FASTIO_REQUIRE_BROKER", "") not in ("", "0")


def _unavailable(reason):
    if REQUIRE_BROKER:
        pytest.fail("FASTIO_REQUIRE_BROKER=1: " + reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def broker():
    """The session's private RabbitMQ node (a `tests.broker.Broker`)."""
    pytest.importorskip("pika")
    if not broker_mod.installed():
        _unavailable("rabbitmq-server is not installed; as root: "
                     "apt-get install -y rabbitmq-server (or make broker-deps)")
    try:
        node = broker_mod.Broker()
        node.start()
    except (broker_mod.BrokerUnavailable, OSError) as exc:
        _unavailable("could not start a private RabbitMQ node: %s" % (exc,))
    yield node
    node.cleanup()


@pytest.fixture
def amqp_url(broker):
    return broker.url


@pytest.fixture
def amqp_params(broker):
    import pika
    return pika.URLParameters(broker.url)


@pytest.fixture
def admin(broker):
    """A pika BlockingConnection channel for set-up and checks."""
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    yield conn.channel()
    conn.close()


@pytest.fixture
def queue(broker):
    """A fresh, empty, auto-named durable queue; deleted after the test.

    Own short connections, not `admin`'s: a test may restart the broker.
    """
    name = "fastio-test-" + uuid.uuid4().hex[:12]
    broker_mod.with_channel(broker.url, lambda ch: ch.queue_declare(name, durable=True))
    yield name
    broker_mod.with_channel(broker.url, lambda ch: ch.queue_delete(name))


@pytest.fixture(params=["fastio-c", "fastio-py", "select"])
def connection_cls(request):
    """FastioConnection (on the Cython and on the pure-Python loop core), or
    pika.SelectConnection as the reference. ``cls.new_ioloop()`` makes a
    loop of the kind the class runs on."""
    import pika
    if request.param == "select":
        from pika.adapters.select_connection import IOLoop

        class Select(pika.SelectConnection):
            new_ioloop = IOLoop
        return Select
    import implementations
    from fastio.rabbitmq import FastioConnection

    loop_cls = implementations.loop_class(request.param[len("fastio-"):])

    class Fastio(FastioConnection):
        new_ioloop = loop_cls

        def __init__(self, parameters=None, on_open_callback=None,
                     on_open_error_callback=None, on_close_callback=None,
                     custom_ioloop=None, internal_connection_workflow=True):
            super().__init__(parameters, on_open_callback, on_open_error_callback,
                             on_close_callback,
                             custom_ioloop if custom_ioloop is not None else loop_cls(),
                             internal_connection_workflow)
    return Fastio
