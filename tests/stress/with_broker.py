"""Run a command with a private RabbitMQ node; its URL in FASTIO_AMQP_URL.

    python tests/stress/with_broker.py COMMAND [ARGS...]

Without rabbitmq-server the command runs without the variable, unless
FASTIO_REQUIRE_BROKER=1 makes that an error.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from broker import Broker, BrokerUnavailable  # noqa: E402  (tests/broker.py)


def main(argv):
    try:
        broker = Broker(name="fastio-stress")
    except BrokerUnavailable as exc:
        if os.environ.get("FASTIO_REQUIRE_BROKER", "") not in ("", "0"):
            print("with_broker: %s" % exc, file=sys.stderr)
            return 1
        print("with_broker: no broker (%s); running without one" % exc, file=sys.stderr)
        return subprocess.call(argv)
    broker.start()
    try:
        return subprocess.call(argv, env=dict(os.environ, FASTIO_AMQP_URL=broker.url))
    finally:
        broker.stop()
        broker.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
