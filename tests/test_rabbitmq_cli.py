"""``python -m fastio publish`` / ``consume`` against the session broker."""

import os
import select
import signal
import subprocess
import sys
import time
import uuid

import pytest

pytest.importorskip("pika")

import broker as broker_mod

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
    assert "refused" in proc.stderr
    assert time.monotonic() - t0 < 20


# ------------------------------------------------------------------ consume


def _queue_with(admin, bodies):
    name = "fastio-cli-" + uuid.uuid4().hex[:8]
    admin.queue_declare(name)
    for body in bodies:
        admin.basic_publish("", name, body)
    return name


def _assert_one_line_failure(proc, status, *phrases):
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.parametrize("count", [1, 3])
def test_consume_count_takes_exactly_n_and_leaves_the_rest(amqp_url, admin, count):
    name = _queue_with(admin, [b"m%d" % i for i in range(5)])
    try:
        got = fastio("consume", "--url", amqp_url, "--queue", name, "--count", str(count))
        assert got.returncode == 0, got.stderr
        assert got.stdout.splitlines()[1:] == [" [x] Received b'm%d'" % i for i in range(count)]
        # Acknowledged, not requeued: the rest are the untouched tail, in order.
        left = []
        while True:
            method, _, body = admin.basic_get(name, auto_ack=True)
            if method is None:
                break
            assert not method.redelivered, body
            left.append(body)
        assert left == [b"m%d" % i for i in range(count, 5)]
    finally:
        admin.queue_delete(name)


def test_consume_count_larger_than_the_prefetch_window(amqp_url, admin):
    name = _queue_with(admin, [b"%d" % i for i in range(1500)])
    try:
        got = fastio("consume", "--url", amqp_url, "--queue", name, "--count", "1200",
                     timeout=60)
        assert got.returncode == 0, got.stderr
        assert len(got.stdout.splitlines()) == 1 + 1200
        assert admin.queue_declare(name, passive=True).method.message_count == 300
    finally:
        admin.queue_delete(name)


@pytest.mark.parametrize("bad", ["-1", "x"])
def test_consume_rejects_a_bad_count(bad):
    proc = fastio("consume", "--count", bad)
    assert proc.returncode == 2
    assert "--count" in proc.stderr and "Traceback" not in proc.stderr


def test_consume_missing_queue_fails_in_one_line(amqp_url):
    name = "fastio-absent-" + uuid.uuid4().hex[:8]
    proc = fastio("consume", "--url", amqp_url, "--queue", name)
    _assert_one_line_failure(proc, 1, repr(name), "does not exist", "--declare")


def test_consume_declare_creates_a_missing_queue(amqp_url, admin):
    name = "fastio-absent-" + uuid.uuid4().hex[:8]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "fastio", "consume", "--url", amqp_url,
                             "--queue", name, "--declare", "--count", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith(" [*] Waiting")
        sent = fastio("publish", "--url", amqp_url, "--routing-key", name, "late")
        assert sent.returncode == 0, sent.stderr
        out, err = proc.communicate(timeout=20)
        assert (proc.returncode, out) == (0, " [x] Received b'late'\n"), err
    finally:
        proc.kill()
        admin.queue_delete(name)


def test_tutorial_order_receive_before_send(amqp_url, admin):
    # receive.py runs first in the tutorial: `hello` does not exist yet.
    admin.queue_delete("hello")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "fastio", "consume", "--url", amqp_url,
                             "--count", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith(" [*] Waiting")
        assert fastio("publish", "--url", amqp_url).returncode == 0
        out, err = proc.communicate(timeout=20)
        assert (proc.returncode, out) == (0, " [x] Received b'Hello World!'\n"), err
    finally:
        proc.kill()
        admin.queue_delete("hello")


def test_existing_queue_is_used_whatever_its_arguments(amqp_url, admin):
    # A durable `hello` (not what the tutorial declares) is used, not re-declared.
    admin.queue_delete("hello")
    admin.queue_declare("hello", durable=True)
    try:
        assert fastio("publish", "--url", amqp_url, "kept").returncode == 0
        got = fastio("consume", "--url", amqp_url, "--count", "1")
        assert got.returncode == 0, got.stderr
        assert got.stdout.splitlines()[1:] == [" [x] Received b'kept'"]
    finally:
        admin.queue_delete("hello")


# ----------------------------------------------------- URLs and connect errors


@pytest.mark.parametrize("command", ["publish", "consume"])
@pytest.mark.parametrize("url", ["notaurl", "http://guest:pw@localhost/", "amqp://h:99999/"])
def test_bad_url_is_a_one_line_usage_error(command, url):
    proc = fastio(command, "--url", url)
    _assert_one_line_failure(proc, 2, "bad AMQP URL")
    assert "pw" not in proc.stderr


@pytest.mark.parametrize("command", ["publish", "consume"])
def test_refused_port_is_said_once(command):
    url = "amqp://guest:s3cret@127.0.0.1:%d/%%2F" % broker_mod.free_port()
    t0 = time.monotonic()
    extra = ["--routing-key", "k", "x"] if command == "publish" else []
    proc = fastio(command, "--url", url, "--timeout", "3", *extra)
    assert time.monotonic() - t0 < 15
    _assert_one_line_failure(proc, 1, "refused")
    assert "s3cret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("command", ["publish", "consume"])
def test_wrong_password_is_explained_and_masked(broker, command):
    url = "amqp://guest:s3cret@127.0.0.1:%d/%%2F" % broker.port
    proc = fastio(command, "--url", url)
    _assert_one_line_failure(proc, 1, "login refused", "'guest'")
    assert "s3cret" not in proc.stderr + proc.stdout


def test_missing_vhost_is_explained(broker):
    proc = fastio("consume", "--url", "amqp://guest:guest@127.0.0.1:%d/nohost" % broker.port)
    _assert_one_line_failure(proc, 1, "virtual host 'nohost'")


def test_tls_to_a_plain_port_is_explained(broker):
    proc = fastio("consume", "--url", "amqps://guest:guest@127.0.0.1:%d/%%2F" % broker.port)
    _assert_one_line_failure(proc, 1, "TLS")


def test_help_shows_no_password():
    for command in ("publish", "consume"):
        proc = fastio(command, "--help")
        assert proc.returncode == 0
        assert "guest:guest" not in proc.stdout


def test_publish_unroutable_message_is_reported(amqp_url):
    proc = fastio("publish", "--url", amqp_url, "--routing-key",
                  "fastio-nowhere-" + uuid.uuid4().hex[:8], "lost")
    _assert_one_line_failure(proc, 1, "unroutable")


@pytest.mark.parametrize("command, option, value, phrase", [
    ("publish", "--routing-key", b"bad\xff", "not valid UTF-8"),
    ("publish", "--exchange", b"\xfe", "not valid UTF-8"),
    ("publish", "--queue", b"q" * 256, "more than AMQP's 255"),
    ("consume", "--queue", b"\xff", "not valid UTF-8"),
])
def test_a_name_amqp_cannot_carry_is_a_usage_error(command, option, value, phrase):
    # It was a traceback (UnicodeEncodeError) or a lost connection.
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "fastio", command, option, value],
                          env=env, capture_output=True, timeout=30)
    assert proc.returncode == 2
    err = proc.stderr.decode("utf-8", "replace")
    assert phrase in err and "Traceback" not in err


def test_a_body_is_published_as_the_bytes_typed(amqp_url, admin):
    # Not valid UTF-8: argv decodes it with surrogates, publish sends the bytes back.
    queue = "fastio-cli-" + uuid.uuid4().hex[:8]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "fastio", "publish", "--url", amqp_url,
                           "--queue", queue, b"\xff\xfe raw", "plain"],
                          env=env, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    try:
        assert admin.basic_get(queue, auto_ack=True)[2] == b"\xff\xfe raw"
        assert admin.basic_get(queue, auto_ack=True)[2] == b"plain"
    finally:
        admin.queue_delete(queue)


def test_publish_says_when_the_broker_blocks_and_unblocks_it(amqp_url, broker, admin):
    # A broker low on memory blocks publishers: the command said nothing and
    # seemed to hang. It says so, waits, and finishes once unblocked.
    queue = "fastio-cli-" + uuid.uuid4().hex[:8]
    admin.queue_declare(queue)
    env = dict(os.environ, PYTHONPATH=ROOT)
    broker.set_memory_watermark(0.0000001)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "fastio", "publish", "--url", amqp_url,
                                 "--routing-key", queue, "held"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([proc.stderr], [], [], 60)
        if not ready:
            proc.kill()
            proc.communicate()
            pytest.fail("no line on stderr within 60 s while blocked")
        line = proc.stderr.readline()
        assert "the broker blocked publishing" in line, line
    finally:
        broker.set_memory_watermark(0.4)
    out, err = proc.communicate(timeout=60)
    try:
        assert proc.returncode == 0, err
        assert "unblocked" in err and out == " [x] Sent 'held'\n"
        assert admin.basic_get(queue, auto_ack=True)[2] == b"held"
    finally:
        admin.queue_delete(queue)
