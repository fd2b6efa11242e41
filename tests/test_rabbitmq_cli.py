"""``python -m fastio publish`` / ``consume`` against the session broker."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

pytest.importorskip("pika")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fastio(*args, timeout=30, **kwargs):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "fastio"] + list(args), env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def test_publish_defaults_reproduce_send_py(amqp_url, admin):
    admin.queue_delete("hello")
    proc = fastio("publish", "--url", amqp_url)
    assert (proc.returncode, proc.stdout) == (0, " [x] Sent 'Hello World!'\n")
    _, _, body = admin.basic_get("hello", auto_ack=True)
    assert body == b"Hello World!"
    admin.queue_delete("hello")


def test_publish_then_consume_count(amqp_url):
    queue = "fastio-cli-" + uuid.uuid4().hex[:8]
    sent = fastio("publish", "--url", amqp_url, "--queue", queue, "one", "two")
    assert sent.stdout.splitlines() == [" [x] Sent 'one'", " [x] Sent 'two'"]
    got = fastio("consume", "--url", amqp_url, "--queue", queue, "--count", "2")
    assert got.returncode == 0
    assert got.stdout.splitlines()[1:] == [" [x] Received b'one'", " [x] Received b'two'"]


def test_consume_exits_cleanly_on_sigint(amqp_url):
    queue = "fastio-cli-" + uuid.uuid4().hex[:8]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "fastio", "consume", "--url", amqp_url,
                             "--queue", queue, "--declare"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith(" [*] Waiting")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_publish_to_unreachable_broker_fails_with_message():
    t0 = time.monotonic()
    proc = fastio("publish", "--url", "amqp://guest:guest@127.0.0.1:1/%2F")
    assert proc.returncode == 1
    assert "cannot connect" in proc.stderr
    assert time.monotonic() - t0 < 20
