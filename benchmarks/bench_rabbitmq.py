"""RabbitMQ publishing: fastio's Publisher vs pika, aio-pika and a raw-frames bound.

    python -m benchmarks --only rabbitmq [--quick | --full] [--repeats N]

Starts its own private broker (tests/broker.py), pinned to CPU 0; the
client runs pinned to CPU 1. Every contender publishes the same number of
100-byte bodies to one queue through the default exchange, in rotating
order, several repeats, the queue purged between runs; medians reported.

Contenders:
  raw-frames+confirms   the broker's bound: a minimal socket client that
                        writes prebuilt basic.publish frames in a window and
                        counts basic.ack (no futures, no per-message work)
  Publisher+confirms    fastio.rabbitmq.Publisher, a future per message
  AsyncPublisher+confirms
                        fastio.rabbitmq.AsyncPublisher on asyncio's loop:
                        ``publish_nowait`` in the window, every future awaited
  AsyncPublisher+confirms, await each
                        ``await pub.publish()`` one at a time
  select+confirms       pika SelectConnection, confirms pipelined in the
                        same window
  blocking              pika BlockingConnection, no confirms
  blocking+confirms     pika BlockingConnection, confirms (one at a time)
  aio-pika+confirms     aio-pika, ``await exchange.publish`` (one at a time)
  aio-pika+confirms, pipelined
                        aio-pika, publish tasks in a window, every one awaited

Client CPU is time.process_time() of this process (all its threads,
the Publisher's loop thread included) per message.
"""

import asyncio
import collections
import os
import socket
import struct

import pika
from pika import frame as pika_frame, spec

from benchmarks import harness

try:
    import aio_pika
except ImportError:  # optional peer
    aio_pika = None

BODY = b"x" * 100
QUEUE = "fastio-bench"
WINDOW = 10_000

#: Targets. The Publisher runs at the broker's pace: at least 90% of a
#: client that only writes prebuilt frames, at no more than 1/4 of pika
#: SelectConnection's client CPU per message. AsyncPublisher, against
#: aio-pika's usual ``await exchange.publish()`` with confirms: at least 10x
#: its messages per second at no more than 1/10 of its CPU per message.
TARGET_OF_RAW = 0.90
TARGET_CPU_OF_SELECT = 0.25
TARGET_AIO_RATE = 10.0
TARGET_AIO_CPU = 0.10
AIO_PIKA_WINDOW = 1000      # concurrent publish tasks, pipelined aio-pika


# ---------------------------------------------------------------- contenders
# Each takes (url, n) and returns (seconds, cpu seconds) for n messages,
# measured after the connection is up and before it is closed.


def pub_fastio(url, n):
    from fastio.rabbitmq import Publisher

    with Publisher(url, max_in_flight=WINDOW) as pub:
        start = harness.clock()
        publish = pub.publish
        for _ in range(n):
            publish("", QUEUE, BODY)
        pub.flush()
        return harness.since(start)


def pub_async(url, n):
    from fastio.rabbitmq import AsyncPublisher

    async def main():
        async with AsyncPublisher(url, max_in_flight=WINDOW) as pub:
            start = harness.clock()
            publish = pub.publish_nowait
            pending = collections.deque()
            for _ in range(n):
                if len(pending) >= WINDOW:
                    await pending.popleft()
                pending.append(publish("", QUEUE, BODY))
            for fut in pending:
                await fut
            return harness.since(start)

    return asyncio.run(main())


def pub_async_each(url, n):
    from fastio.rabbitmq import AsyncPublisher

    async def main():
        async with AsyncPublisher(url) as pub:
            start = harness.clock()
            for _ in range(n):
                await pub.publish("", QUEUE, BODY)
            return harness.since(start)

    return asyncio.run(main())


def pub_blocking(url, n, confirms=False):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    if confirms:
        ch.confirm_delivery()
    start = harness.clock()
    for _ in range(n):
        ch.basic_publish("", QUEUE, BODY)
    conn.process_data_events(0)
    result = harness.since(start)
    conn.close()
    return result


def pub_blocking_confirms(url, n):
    return pub_blocking(url, n, confirms=True)


def pub_select(url, n):
    state = {"sent": 0, "acked": 0}

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch):
        state["ch"] = ch
        ch.confirm_delivery(on_confirm, callback=lambda frame: begin())

    def begin():
        state["start"] = harness.clock()
        fill()

    def fill():
        ch = state["ch"]
        while state["sent"] < n and state["sent"] - state["acked"] < WINDOW:
            ch.basic_publish("", QUEUE, BODY)
            state["sent"] += 1

    def on_confirm(frame):
        m = frame.method
        state["acked"] = m.delivery_tag if m.multiple else state["acked"] + 1
        if state["acked"] >= n:
            state["result"] = harness.since(state["start"])
            state["ch"].connection.close()
        else:
            fill()

    conn = pika.SelectConnection(pika.URLParameters(url), on_open_callback=on_open,
                                 on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.start()
    return state["result"]


def pub_aio_pika(url, n):
    async def main():
        conn = await aio_pika.connect(url)
        ch = await conn.channel(publisher_confirms=True)
        exchange = ch.default_exchange
        start = harness.clock()
        for _ in range(n):
            await exchange.publish(aio_pika.Message(BODY), routing_key=QUEUE)
        result = harness.since(start)
        await conn.close()
        return result

    return asyncio.run(main())


def pub_aio_pika_pipelined(url, n):
    async def main():
        conn = await aio_pika.connect(url)
        ch = await conn.channel(publisher_confirms=True)
        exchange = ch.default_exchange
        start = harness.clock()
        pending = collections.deque()
        for _ in range(n):
            if len(pending) >= AIO_PIKA_WINDOW:
                await pending.popleft()
            pending.append(asyncio.ensure_future(
                exchange.publish(aio_pika.Message(BODY), routing_key=QUEUE)))
        for fut in pending:
            await fut
        result = harness.since(start)
        await conn.close()
        return result

    return asyncio.run(main())


# --------------------------------------------------------- raw-frames bound


def _send_frame(sock, frame):
    sock.sendall(frame.marshal())


def _recv_method(sock, buf, expect):
    while True:
        consumed, frame = pika_frame.decode_frame(buf)
        if frame is not None:
            del buf[:consumed]
            if isinstance(frame, pika_frame.Method) and isinstance(frame.method, expect):
                return frame.method
            continue
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("broker closed during the handshake")
        buf += data


def _raw_handshake(params):
    sock = socket.create_connection((params.host, params.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    _recv_method(sock, buf, spec.Connection.Start)
    cred = params.credentials
    _send_frame(sock, pika_frame.Method(0, spec.Connection.StartOk(
        client_properties={"product": "fastio-bench-raw"}, mechanism="PLAIN",
        response="\0%s\0%s" % (cred.username, cred.password))))
    tune = _recv_method(sock, buf, spec.Connection.Tune)
    _send_frame(sock, pika_frame.Method(0, spec.Connection.TuneOk(
        channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0)))
    _send_frame(sock, pika_frame.Method(0, spec.Connection.Open(virtual_host=params.virtual_host)))
    _recv_method(sock, buf, spec.Connection.OpenOk)
    _send_frame(sock, pika_frame.Method(1, spec.Channel.Open()))
    _recv_method(sock, buf, spec.Channel.OpenOk)
    _send_frame(sock, pika_frame.Method(1, spec.Confirm.Select()))
    _recv_method(sock, buf, spec.Confirm.SelectOk)
    return sock, buf


_ACK_HEAD = struct.Struct(">BHIHHQB")   # an ack frame's 20 bytes before frame-end


def pub_raw(url, n):
    from fastio._impl.amqp_py import encode_publish

    sock, buf = _raw_handshake(pika.URLParameters(url))
    one = encode_publish(1, 131072, "", QUEUE, BODY)
    batch = 1000
    chunk = one * batch
    sent = acked = 0
    start = harness.clock()
    while acked < n:
        while sent < n and sent - acked < WINDOW:
            k = min(batch, n - sent)
            sock.sendall(chunk if k == batch else one * k)
            sent += k
        buf += sock.recv(1 << 20)
        off = 0
        while len(buf) - off >= 8:
            kind, ch, size = struct.unpack_from(">BHI", buf, off)
            if len(buf) - off < size + 8:
                break
            if kind == 1 and size == 13:
                _, _, _, cls, meth, tag, bits = _ACK_HEAD.unpack_from(buf, off)
                if (cls, meth) == (60, 80):
                    acked = tag if bits & 1 else acked + 1
                elif (cls, meth) == (60, 120):
                    raise AssertionError("raw publisher got a nack")
            off += size + 8
        del buf[:off]
    result = harness.since(start)
    sock.close()
    return result


CONTENDERS = {
    "raw-frames+confirms": (pub_raw, False),
    "Publisher+confirms": (pub_fastio, False),
    "AsyncPublisher+confirms": (pub_async, False),
    "AsyncPublisher+confirms, await each": (pub_async_each, False),
    "select+confirms": (pub_select, False),
    "blocking": (pub_blocking, False),
    "blocking+confirms": (pub_blocking_confirms, True),     # slow: fewer messages
    "aio-pika+confirms": (pub_aio_pika, True),
    "aio-pika+confirms, pipelined": (pub_aio_pika_pipelined, True),
}
_AIO_PIKA = ("aio-pika+confirms", "aio-pika+confirms, pipelined")


def _purge(url):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(QUEUE)
    ch.queue_purge(QUEUE)
    conn.close()


def _pin_broker(broker, cpu=0):
    # Every thread of the Erlang VM onto one core, the client on the other.
    try:
        with open(os.path.join(broker.dir, "node.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    return harness.pin_process(pid, cpu)


def run(config):
    """Start a private broker, run every contender; return JSON-able results."""
    profile = getattr(config, "profile", "default")
    repeats = getattr(config, "repeats", None) or {"quick": 2, "full": 7}.get(profile, 3)
    n = {"quick": 10_000, "full": 100_000}.get(profile, 30_000)
    n_slow = {"quick": 1_000, "full": 5_000}.get(profile, 2_000)
    broker_mod = harness.tests_module("broker")
    broker = broker_mod.Broker("fastio-bench")
    contenders = dict(CONTENDERS)
    if aio_pika is None:
        for name in _AIO_PIKA:
            del contenders[name]
    samples = {name: [] for name in contenders}
    errors = []
    harness.progress("starting a private RabbitMQ node ...")
    broker.start()
    try:
        pinned_broker = _pin_broker(broker)
        with harness.pinned(1) as cpu:
            machine = harness.machine_info()
            names = list(contenders)
            for r in range(repeats):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    fn, slow = contenders[name]
                    count = n_slow if slow else n
                    _purge(broker.url)
                    try:
                        elapsed, cpu_s = fn(broker.url, count)
                    except Exception as exc:     # report, keep the others' numbers
                        errors.append("%s: %r" % (name, exc))
                        harness.progress("!! %s failed: %r" % (name, exc))
                        continue
                    samples[name].append({"msgs_per_s": count / elapsed,
                                          "cpu_us_per_msg": cpu_s / count * 1e6})
                    harness.progress("  %-22s %9.0f msgs/s %7.2f µs CPU/msg" % (
                        name, count / elapsed, cpu_s / count * 1e6))
            _purge(broker.url)
    finally:
        broker.cleanup()
    results = {}
    for name, runs in samples.items():
        if runs:
            rates = sorted(s["msgs_per_s"] for s in runs)
            cpus = sorted(s["cpu_us_per_msg"] for s in runs)
            results[name] = {"msgs_per_s": rates[len(rates) // 2],
                             "cpu_us_per_msg": cpus[len(cpus) // 2], "runs": runs}
    return {
        "suite": "rabbitmq",
        "machine": machine,
        "config": {"repeats": repeats, "n": n, "n_slow": n_slow, "window": WINDOW,
                   "body_bytes": len(BODY), "pinned_cpu": cpu,
                   "broker_pinned_cpu": 0 if pinned_broker else None, "profile": profile},
        "results": results,
        "errors": errors,
    }


def to_markdown(result):
    """Render the results as a Markdown report (targets first)."""
    res = result["results"]
    cfg = result["config"]
    lines = ["# fastio RabbitMQ publishing", "",
             harness.machine_line(result["machine"], cfg["pinned_cpu"]), "",
             "%d-byte bodies, default exchange, one queue; %d messages per run (%d for the "
             "one-at-a-time contenders), window %d; medians of %d repeats in rotating "
             "order; broker pinned to CPU %s." % (
                 cfg["body_bytes"], cfg["n"], cfg["n_slow"], cfg["window"], cfg["repeats"],
                 cfg["broker_pinned_cpu"]), ""]
    pub, raw, sel = (res.get(k) for k in ("Publisher+confirms", "raw-frames+confirms",
                                          "select+confirms"))
    if pub and raw and sel:
        of_raw = pub["msgs_per_s"] / raw["msgs_per_s"]
        of_sel = pub["cpu_us_per_msg"] / sel["cpu_us_per_msg"]
        lines += [
            "| target | value | goal | |", "|---|---|---|---|",
            "| Publisher msgs/s vs raw frames | %.0f%% | >= %.0f%% | %s |" % (
                of_raw * 100, TARGET_OF_RAW * 100, "PASS" if of_raw >= TARGET_OF_RAW else "**FAIL**"),
            "| Publisher CPU/msg vs SelectConnection | %.2fx | <= %.2fx | %s |" % (
                of_sel, TARGET_CPU_OF_SELECT,
                "PASS" if of_sel <= TARGET_CPU_OF_SELECT else "**FAIL**"), ""]
    apub, aio = res.get("AsyncPublisher+confirms"), res.get("aio-pika+confirms")
    if apub and aio:
        rate = apub["msgs_per_s"] / aio["msgs_per_s"]
        cpu = apub["cpu_us_per_msg"] / aio["cpu_us_per_msg"]
        if not (pub and raw and sel):
            lines += ["| target | value | goal | |", "|---|---|---|---|"]
        else:
            del lines[-1]
        lines += [
            "| AsyncPublisher msgs/s vs aio-pika | %.1fx | >= %.0fx | %s |" % (
                rate, TARGET_AIO_RATE, "PASS" if rate >= TARGET_AIO_RATE else "**FAIL**"),
            "| AsyncPublisher CPU/msg vs aio-pika | %.3fx | <= %.2fx | %s |" % (
                cpu, TARGET_AIO_CPU, "PASS" if cpu <= TARGET_AIO_CPU else "**FAIL**"), ""]
        piped = res.get("aio-pika+confirms, pipelined")
        if piped:
            lines += ["Against aio-pika with %d publish tasks in flight: %.1fx its "
                      "msgs/s at %.3fx its CPU per message." % (
                          AIO_PIKA_WINDOW, apub["msgs_per_s"] / piped["msgs_per_s"],
                          apub["cpu_us_per_msg"] / piped["cpu_us_per_msg"]), ""]
    lines += ["| publisher | msgs/s | client CPU µs/msg |", "|---|---|---|"]
    for name, r in res.items():
        lines.append("| %s | %.0f | %.2f |" % (name, r["msgs_per_s"], r["cpu_us_per_msg"]))
    for err in result.get("errors", []):
        lines.append("\n**error:** %s" % err)
    return "\n".join(lines)


if __name__ == "__main__":
    print(to_markdown(run(harness.Config())))
