"""At-least-once on a 3-node RabbitMQ cluster, with the Publisher's defaults.

One private cluster (tests/cluster.py) serves the whole module; a test
that stops a node has it started again afterwards. Each test publishes
persistent messages with increasing ids at a steady pace from a thread
while it breaks something: the node leading the queue crashes (and comes
back, or never does), every node restarts in turn, the network between
the Publisher and its node goes silent, the queue's leader moves. Then it
waits for every confirm, reads the whole queue back and checks that every
id is there: duplicates are allowed (a message whose ack was lost is sent
again), losses are not, and no future may have failed.
"""

import signal
import threading
import time
import uuid

import pytest

pika = pytest.importorskip("pika")

import broker as broker_mod
from broker_fixtures import _unavailable
from cluster import Cluster
from rabbit_helpers import drain
from tcp_proxy import FreezableProxy

from fastio.rabbitmq import Publisher

RATE = 2000             # messages a second: steady load, CPU left for three nodes
WINDOW = 2000           # max_in_flight, as a busy publisher would use
STEP = 2000             # confirms to wait for between the steps of a test
PROPS = pika.BasicProperties(delivery_mode=2)


@pytest.fixture(scope="module")
def cluster():
    """The module's 3-node cluster (a `tests.cluster.Cluster`)."""
    if not broker_mod.installed():
        _unavailable("rabbitmq-server is not installed; as root: "
                     "apt-get install -y rabbitmq-server (or make broker-deps)")
    nodes = Cluster()
    try:
        nodes.start()
    except (broker_mod.BrokerUnavailable, OSError) as exc:
        nodes.cleanup()
        _unavailable("could not start a RabbitMQ cluster: %s" % (exc,))
    yield nodes
    nodes.cleanup()


@pytest.fixture
def healthy(cluster):
    """The cluster; every node that a test stopped runs again afterwards."""
    yield cluster
    cluster.heal()


def declare(cluster, kind, node=0):
    """Declare a fresh durable queue of `kind` through node `node`.

    A quorum queue's first leader, and a classic queue's home, is the node
    it is declared on.
    """
    name = "fastio-cluster-%s-%s" % (kind, uuid.uuid4().hex[:8])
    args = {"x-queue-type": "quorum"} if kind == "quorum" else {}
    conn = pika.BlockingConnection(pika.URLParameters(cluster.urls[node]))
    try:
        conn.channel().queue_declare(name, durable=True, arguments=args)
    finally:
        conn.close()
    return name


def leader_first(cluster, queue):
    """Return the queue's leader and all URLs, the leader's first.

    The Publisher connects to the first URL that answers: to the leader.
    """
    leader = cluster.queue_leader(queue)
    return leader, [leader.url] + [n.url for n in cluster.nodes if n is not leader]


def delete(cluster, queue):
    conn = pika.BlockingConnection(pika.URLParameters(cluster.live_node().url))
    try:
        conn.channel().queue_delete(queue)
    finally:
        conn.close()


class Stream:
    """Publish ids 0, 1, 2, ... to `queue` at RATE a second from a thread.

    A classic queue is published to with mandatory=True: while its node is
    down the broker finds no queue to route to, and would ack and drop a
    message that is not mandatory; a mandatory one comes back and is retried.
    """

    def __init__(self, pub, queue, kind="quorum"):
        self.pub = pub
        self.queue = queue
        self.mandatory = kind == "classic"
        self.futures = []
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                for _ in range(100):
                    n = len(self.futures)
                    self.futures.append(self.pub.publish("", self.queue, b"%d" % n, PROPS,
                                                      self.mandatory))
                ahead = len(self.futures) / RATE - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:    # reported by stop()
            self._error = exc

    @property
    def confirmed(self):
        """Messages published and settled (acked, or failed)."""
        return len(self.futures) - self.pub.outstanding

    def wait_confirmed(self, n, timeout=90):
        """Wait until `n` more messages than now are settled."""
        target = self.confirmed + n
        deadline = time.monotonic() + timeout
        while self.confirmed < target:
            assert self._error is None, self._error
            assert time.monotonic() < deadline, (
                "confirms stalled at %d (want %d)" % (self.confirmed, target))
            time.sleep(0.05)

    def stop(self):
        """Stop publishing, wait for every confirm; return how many were published."""
        self._stop.set()
        self._thread.join(60)
        assert self._error is None, self._error
        self.pub.flush(120)
        failed = [(i, f.exception()) for i, f in enumerate(self.futures)
                  if f.exception() is not None]
        assert failed == [], "%d futures failed, first: %r" % (len(failed), failed[:1])
        return len(self.futures)


def assert_all_arrived(cluster, queue, total):
    """Read `queue` back; every id below `total` must be there (repeats allowed)."""
    bodies = drain(cluster.live_node().url, queue, idle=2.0)
    ids = {int(b) for b in bodies}
    missing = set(range(total)) - ids
    assert not missing, "%d of %d ids lost, e.g. %s" % (
        len(missing), total, sorted(missing)[:10])
    assert ids <= set(range(total))
    return len(bodies) - total      # duplicates


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["quorum", "classic"])
def test_leader_killed_mid_stream_and_restarted_loses_nothing(healthy, kind):
    queue = declare(healthy, kind, node=0)
    leader, urls = leader_first(healthy, queue)
    try:
        with Publisher(urls, max_in_flight=WINDOW) as pub:
            stream = Stream(pub, queue, kind)
            stream.wait_confirmed(STEP)
            leader.kill()
            if kind == "quorum":
                # A new leader takes over: confirms go on without the node.
                stream.wait_confirmed(STEP)
            else:
                # A classic queue is down with its node: nacks, retried.
                time.sleep(2)
            healthy.restart_node(leader)
            stream.wait_confirmed(STEP)
            total = stream.stop()
        assert_all_arrived(healthy, queue, total)
    finally:
        delete(healthy, queue)


@pytest.mark.timeout(240)
def test_leader_killed_and_never_back_loses_nothing(healthy):
    queue = declare(healthy, "quorum", node=0)
    leader, urls = leader_first(healthy, queue)
    try:
        with Publisher(urls, max_in_flight=WINDOW) as pub:
            stream = Stream(pub, queue)
            stream.wait_confirmed(STEP)
            leader.kill()
            stream.wait_confirmed(2 * STEP)
            total = stream.stop()
        assert not leader.alive()
        assert_all_arrived(healthy, queue, total)
    finally:
        delete(healthy, queue)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["quorum", "classic"])
def test_rolling_restart_of_every_node_loses_nothing(healthy, kind):
    queue = declare(healthy, kind, node=0)
    try:
        with Publisher(healthy.urls, max_in_flight=WINDOW) as pub:
            stream = Stream(pub, queue, kind)
            stream.wait_confirmed(STEP)
            for node in healthy.nodes:
                if kind == "quorum":
                    # An operator's rolling restart keeps the quorum.
                    healthy.wait_not_quorum_critical(node)
                node.kill(signal.SIGTERM)     # a clean node shutdown
                healthy.restart_node(node)
                stream.wait_confirmed(STEP // 2)
            total = stream.stop()
        assert_all_arrived(healthy, queue, total)
    finally:
        delete(healthy, queue)


@pytest.mark.timeout(240)
def test_silent_network_cut_is_noticed_by_heartbeats_and_loses_nothing(healthy):
    queue = declare(healthy, "quorum", node=0)
    leader, urls = leader_first(healthy, queue)
    proxy = FreezableProxy(("127.0.0.1", leader.port))
    # The proxy keeps both TCP connections open and forwards nothing: only
    # the heartbeat (1 s here) tells the Publisher the node is gone.
    cut_url = "amqp://guest:guest@127.0.0.1:%d/%%2F?heartbeat=1" % proxy.port
    try:
        with Publisher([cut_url] + urls[1:], max_in_flight=WINDOW) as pub:
            stream = Stream(pub, queue)
            stream.wait_confirmed(STEP)
            proxy.freeze()
            stream.wait_confirmed(2 * STEP)
            total = stream.stop()
        assert_all_arrived(healthy, queue, total)
    finally:
        proxy.close()
        delete(healthy, queue)


@pytest.mark.timeout(240)
def test_queue_leader_moved_by_rabbitmq_queues_loses_nothing(healthy):
    queue = declare(healthy, "quorum", node=0)
    leader, urls = leader_first(healthy, queue)
    try:
        with Publisher(urls, max_in_flight=WINDOW) as pub:
            stream = Stream(pub, queue)
            stream.wait_confirmed(STEP)
            # Removing the leader's replica makes another member lead.
            healthy.queues_cli("delete_member", queue, leader.node)
            assert healthy.queue_leader(queue) is not leader
            stream.wait_confirmed(STEP)
            healthy.queues_cli("add_member", queue, leader.node)
            stream.wait_confirmed(STEP)
            total = stream.stop()
        assert_all_arrived(healthy, queue, total)
    finally:
        delete(healthy, queue)
