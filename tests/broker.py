"""A private RabbitMQ node for one test session (or one benchmark run).

The Debian `rabbitmq-server` package's scripts re-exec as the `rabbitmq`
user (`su rabbitmq`), which keeps the environment: so everything that makes
the node private travels in RABBITMQ_* variables: its own node name, AMQP
and distribution ports, and data/log/config files in a temp dir that the
`rabbitmq` user owns. No plugins (the management plugin alone adds seconds
to every start). A cold start takes 10-20 s; `await_startup` waits for it.

`restart()` stops the Erlang node and starts a new one on the same data
dir: durable queues and persistent messages survive, client connections do
not, which is what the reliability tests need (stop_app/start_app keeps the
node and would not drop connections the same way).
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

CTL = "rabbitmqctl"
SERVER = "rabbitmq-server"


class BrokerUnavailable(RuntimeError):
    """The rabbitmq-server package is missing or the node did not start."""


def with_channel(url, action):
    """Return `action(channel)` on a short pika BlockingConnection to `url`."""
    import pika  # an optional peer: only the brokers' users need it
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return action(conn.channel())
    finally:
        conn.close()


def installed():
    """Return whether the rabbitmq-server package's commands are on PATH."""
    return shutil.which(SERVER) is not None and shutil.which(CTL) is not None


def free_port():
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """One private RabbitMQ node; `start()` it, `stop()` it.

    :param name: node name prefix; the pid is appended so that parallel
        sessions never share a node.
    """

    def __init__(self, name="fastio-test"):
        if not installed():
            raise BrokerUnavailable(
                "rabbitmq-server is not installed: as root run "
                "`apt-get install -y rabbitmq-server` (or `make broker-deps`)")
        self.node = "%s-%d@localhost" % (name, os.getpid())
        self.port = free_port()
        self.dist_port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fastio-rabbit-")
        self.url = "amqp://guest:guest@127.0.0.1:%d/%%2F" % self.port
        self._write_files()

    def _write_files(self):
        plugins = os.path.join(self.dir, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            # guest may log in from 127.0.0.1 only (the default), which is
            # all the tests need; a short heartbeat default is not set here:
            # tests that need one ask for it in their connection parameters.
            f.write("listeners.tcp.default = 127.0.0.1:%d\n" % self.port)
            f.write("loopback_users.guest = true\n")
        try:
            user = pwd.getpwnam("rabbitmq")
        except KeyError:
            return  # not the Debian package's layout; run as the current user
        if os.getuid() == 0:
            for root, dirs, files in os.walk(self.dir):
                for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                    os.chown(name, user.pw_uid, user.pw_gid)

    def env(self):
        """Return the environment that points the package's scripts at this node."""
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
            RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "enabled_plugins"),
            RABBITMQ_PID_FILE=os.path.join(self.dir, "node.pid"),
        )
        return env

    def ctl(self, *args, timeout=60, check=True):
        """Run ``rabbitmqctl -n NODE args...``; return its stdout.

        :raises BrokerUnavailable: it failed (with its output) or timed out.
        """
        cmd = [CTL, "-n", self.node] + list(args)
        try:
            proc = subprocess.run(cmd, env=self.env(), capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrokerUnavailable("%s timed out after %ss" % (" ".join(cmd), timeout))
        if check and proc.returncode != 0:
            raise BrokerUnavailable("%s failed (%d): %s%s" % (
                " ".join(cmd), proc.returncode, proc.stdout, proc.stderr))
        return proc.stdout

    def start(self, timeout=90):
        """Start the node detached and wait until it accepts AMQP connections.

        :raises BrokerUnavailable: it did not come up within `timeout` seconds.
        """
        self.launch()
        self.wait_started(timeout)

    def launch(self):
        """Start the node detached; return at once (see `wait_started`)."""
        pid_file = os.path.join(self.dir, "node.pid")
        if os.path.exists(pid_file):
            os.unlink(pid_file)     # a killed node's: not the new VM's pid
        subprocess.run([SERVER, "-detached"], env=self.env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_started(self, timeout=90):
        """Wait until a launched node accepts AMQP connections.

        :raises BrokerUnavailable: it did not come up within `timeout` seconds.
        """
        # -detached returns before the VM registers with epmd, and
        # await_startup fails at once on a node it cannot see yet: retry.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ctl("await_startup", "--timeout", str(timeout), timeout=timeout + 30)
                break
            except BrokerUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self._wait_port(timeout)

    def _wait_port(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable("port %d never opened" % self.port)
                time.sleep(0.1)

    def stop(self):
        """Stop the node (waits for the Erlang VM to exit); idempotent."""
        self.ctl("stop", timeout=60, check=False)

    def pid(self):
        """Return the Erlang VM's pid (from its pid file), or None."""
        try:
            with open(os.path.join(self.dir, "node.pid")) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def alive(self):
        """Return whether this node's VM is running (a zombie is not)."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
        except OSError:
            return False
        # Field 3 is the state; the name in field 2 may contain spaces.
        return stat.rsplit(")", 1)[1].split()[0] != "Z" and "beam" in stat

    def kill(self, sig=signal.SIGKILL, timeout=60):
        """Send `sig` to this node's VM (by pid) and wait until it is gone.

        SIGKILL is a crash; SIGTERM is a clean shutdown of the node.
        """
        pid = self.pid()
        if pid is None or not self.alive():
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                if sig == signal.SIGKILL:
                    raise BrokerUnavailable("node %s (pid %d) survived SIGKILL" % (self.node, pid))
                return self.kill(signal.SIGKILL, timeout)
            time.sleep(0.05)

    def restart(self):
        """Stop the whole node and start it again on the same data dir."""
        self.stop()
        self.start()

    def cleanup(self):
        """Stop the node and delete its data dir."""
        self.stop()
        self.cleanup_files()

    def wipe_data(self):
        """Delete the node's database (the node must be stopped); keep its config."""
        shutil.rmtree(os.path.join(self.dir, "mnesia"), ignore_errors=True)

    def cleanup_files(self):
        """Delete the node's data dir (the node must be stopped)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- small admin helpers used by tests and the benchmark

    def purge(self, queue):
        self.ctl("purge_queue", queue, check=False)

    def set_memory_watermark(self, value, timeout=60):
        """Set vm_memory_high_watermark: tiny blocks publishers, 0.4 unblocks.

        Returns once the node's memory alarm is raised (tiny) or cleared: the
        node tells its connections after the command returns, and a publish
        that reaches the broker before they know is not blocked (nor is the
        connection.blocked a test waits for sent until the next one).
        """
        self.ctl("set_vm_memory_high_watermark", str(value))
        raised = float(value) < 0.01
        deadline = time.monotonic() + timeout
        while ("resource_limit,memory" in self.ctl("eval", "rabbit_alarm:get_alarms().")) != raised:
            if time.monotonic() > deadline:
                raise BrokerUnavailable("node %s: the memory alarm is not %s after %ss" % (
                    self.node, "raised" if raised else "cleared", timeout))
            time.sleep(0.1)
