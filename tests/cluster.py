"""A private 3-node RabbitMQ cluster on this machine, for tests and benchmarks.

Each node is a `broker.Broker`: its own node name (pid-suffixed), AMQP and
distribution ports, and data/log dirs in a temp dir owned by the
`rabbitmq` user (the package's scripts re-exec as that user, so nothing
may live under root's home). The nodes share the Erlang cookie of the
`rabbitmq` user (/var/lib/rabbitmq/.erlang.cookie, which every node and
rabbitmqctl started through the package's scripts read), which is what
lets them and the CLI talk to each other.

`start()` launches the three VMs in parallel, waits for them, then joins
the second and third to the first, one after the other (stop_app,
join_cluster, start_app): about 20 s here. Joins run one at a time because
two nodes joining at once can crash Mnesia on one of them (`start_app`
then fails with ``{mnesia_app, start, ...}``); a join that fails anyway
is retried on a wiped node. Nodes are stopped by pid (SIGTERM, then
SIGKILL), so only this cluster's VMs are touched.

Run ``python tests/cluster.py`` (``make cluster``) for a cluster to try
things on: it prints the URLs and runs until Ctrl-C.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from broker import Broker, BrokerUnavailable  # noqa: E402

QUEUES = "rabbitmq-queues"


def _parallel(func, items):
    """Run func(item) for every item in threads; re-raise the first error."""
    errors = []

    def run(item):
        try:
            func(item)
        except BaseException as exc:    # reported in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class Cluster:
    """Three private RabbitMQ nodes joined into one cluster.

    :param size: number of nodes.
    :param name: node name prefix (the pid and a letter are appended).
    """

    def __init__(self, size=3, name="fastio-cluster"):
        self.nodes = [Broker("%s-%s" % (name, chr(ord("a") + i))) for i in range(size)]

    @property
    def urls(self):
        """The AMQP URLs of all nodes, first node first."""
        return [n.url for n in self.nodes]

    def start(self, timeout=120):
        """Start every node in parallel and join them; return when all run.

        :raises BrokerUnavailable: a node did not start or join.
        """
        try:
            for node in self.nodes:
                node.launch()
            _parallel(lambda n: n.wait_started(timeout), self.nodes)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                self._join(node, first, timeout)
            self.wait_clustered(timeout)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _join(node, first, timeout=120, attempts=3):
        """Join `node` to `first`'s cluster; retry on a wiped node if it fails."""
        for attempt in range(attempts):
            try:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.node)
                node.ctl("start_app")
                node.wait_started(timeout)
                return
            except BrokerUnavailable:
                if attempt == attempts - 1:
                    raise
            # A half-made join leaves Mnesia state on both sides: start the
            # node again from nothing, and make the first node forget it.
            node.kill(signal.SIGKILL)
            node.wipe_data()
            first.ctl("forget_cluster_node", node.node, check=False)
            node.launch()
            node.wait_started(timeout)

    def wait_clustered(self, timeout=120):
        """Wait until a node reports every node of the cluster running."""
        want = sorted(n.node for n in self.nodes)
        deadline = time.monotonic() + timeout
        while True:
            live = self.live_node()
            status = json.loads(live.ctl("cluster_status", "--formatter", "json"))
            if sorted(status.get("running_nodes", [])) == want:
                return
            if time.monotonic() > deadline:
                raise BrokerUnavailable("cluster never formed: %r" % (status,))
            time.sleep(0.5)

    def live_node(self):
        """Return a node whose VM runs (for admin commands)."""
        for node in self.nodes:
            if node.alive():
                return node
        raise BrokerUnavailable("no node of the cluster is running")

    def node_named(self, name):
        """Return the node called `name` (``prefix-pid-x@localhost``)."""
        for node in self.nodes:
            if node.node == name:
                return node
        raise KeyError(name)

    def restart_node(self, node, timeout=120):
        """Start a stopped or killed node again on its data dir; wait for it."""
        node.launch()
        node.wait_started(timeout)
        self.wait_clustered(timeout)

    def heal(self):
        """Start every node that is not running (after a test killed one)."""
        dead = [n for n in self.nodes if not n.alive()]
        for node in dead:
            node.launch()
        _parallel(lambda n: n.wait_started(), dead)
        if dead:
            self.wait_clustered()

    # --- queues

    def queue_leader(self, queue, timeout=60):
        """Return the node that leads (quorum) or hosts (classic) `queue`.

        Waits while the queue has no leader (an election after a node died).

        :raises BrokerUnavailable: it still has none after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            node = self._find_leader(queue)
            if node is not None:
                return node
            if time.monotonic() > deadline:
                raise BrokerUnavailable("queue %s has no leader" % queue)
            time.sleep(0.5)

    def _find_leader(self, queue):
        rows = json.loads(self.live_node().ctl(
            "list_queues", "name", "type", "leader", "--formatter", "json"))
        row = next((r for r in rows if r["name"] == queue), None)
        if row is None:
            return None
        if row.get("type") == "quorum":
            for node in self.nodes:
                if node.node == row.get("leader") and node.alive():
                    return node
            return None
        # A classic queue's pid prints without its node: ask each node for
        # the queues it hosts.
        for node in self.nodes:
            if node.alive() and queue in node.ctl("list_queues", "name", "--local",
                                                  "--silent").split():
                return node
        return None

    def queues_cli(self, *args, timeout=60):
        """Run ``rabbitmq-queues -n LIVE_NODE args...``; return its stdout."""
        node = self.live_node()
        cmd = [QUEUES, "-n", node.node] + list(args)
        proc = subprocess.run(cmd, env=node.env(), capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise BrokerUnavailable("%s failed (%d): %s%s" % (
                " ".join(cmd), proc.returncode, proc.stdout, proc.stderr))
        return proc.stdout

    def wait_not_quorum_critical(self, node, timeout=120):
        """Wait until stopping `node` would leave every quorum queue a majority."""
        deadline = time.monotonic() + timeout
        while True:
            cmd = [QUEUES, "-n", node.node, "check_if_node_is_quorum_critical"]
            proc = subprocess.run(cmd, env=node.env(), capture_output=True, text=True,
                                  timeout=60)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise BrokerUnavailable("%s stays quorum critical: %s" % (node.node, proc.stdout))
            time.sleep(0.5)

    # --- teardown

    def stop(self):
        """Stop this cluster's nodes (by pid: SIGTERM, then SIGKILL)."""
        _parallel(lambda n: n.kill(signal.SIGTERM, timeout=30), self.nodes)

    def cleanup(self):
        """Stop the nodes and delete their data dirs."""
        self.stop()
        for node in self.nodes:
            node.cleanup_files()


def main():
    """Start a cluster, print its URLs, stop it on Ctrl-C or SIGTERM."""
    cluster = Cluster()
    started = time.monotonic()
    cluster.start()
    print("cluster of %d nodes up in %.1f s:" % (len(cluster.nodes), time.monotonic() - started))
    for node in cluster.nodes:
        print("  %s  %s  pid %s" % (node.node, node.url, node.pid()))
    print("Ctrl-C stops it.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    main()
