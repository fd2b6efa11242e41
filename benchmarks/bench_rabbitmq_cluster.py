"""Publishing to a quorum queue on a 3-node RabbitMQ cluster, and a failover.

    python -m benchmarks --only rabbitmq-cluster [--quick | --full]

Starts a private 3-node cluster (tests/cluster.py) and declares a durable
quorum queue led by the first node. Persistent 100-byte messages.

Throughput, one run per contender, each given all three nodes' URLs (or
the first, for the clients that take one):
  Publisher          fastio.rabbitmq.Publisher, a future per message
  select+confirms    pika SelectConnection, confirms pipelined in the same window
  aio-pika+confirms  aio-pika, publishes pipelined in batches of 1,000
                     (``asyncio.gather`` of ``exchange.publish``)
Client CPU is time.process_time() of this process per message. The three
Erlang nodes share the machine's cores with the client, so the rates are
the cluster's, and CPU per message is the client comparison.

Failover, once on the quorum queue and once on a durable classic queue
(published with mandatory=True, see the README): the Publisher (library
defaults) publishes at a steady rate; the node it is connected to, which
leads (or hosts) the queue, is SIGKILLed, and started again a few seconds
later. A sampler records the confirmed count every 10 ms: the report
gives the longest gap without a confirm, the time from the node's return
until everything published by then is confirmed (the drain), failed
futures, and the ids missing from the queue afterwards. The quorum queue
fails over to a new leader while the node is down; the classic queue
cannot, so its messages are retried until the node is back.
"""

import asyncio
import threading
import time

import pika

from benchmarks import harness

try:
    import aio_pika
except ImportError:  # optional peer
    aio_pika = None

BODY = b"x" * 100
QUEUE = "fastio-bench-quorum"
CLASSIC = "fastio-bench-classic"
WINDOW = 5_000
FAILOVER_RATE = 4_000      # msgs/s during the failover run
PROPS = pika.BasicProperties(delivery_mode=2)


# ---------------------------------------------------------------- contenders
# Each takes (urls, n) and returns (seconds, cpu seconds) for n confirmed
# messages, measured after the connection is up and before it is closed.


def pub_fastio(urls, n):
    from fastio.rabbitmq import Publisher

    with Publisher(urls, max_in_flight=WINDOW) as pub:
        start = harness.clock()
        publish = pub.publish
        for _ in range(n):
            publish("", QUEUE, BODY, PROPS)
        pub.flush()
        return harness.since(start)


def pub_select(urls, n):
    state = {"sent": 0, "acked": 0, "nacked": 0}

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
            ch.basic_publish("", QUEUE, BODY, PROPS)
            state["sent"] += 1

    def on_confirm(frame):
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            state["nacked"] += 1
        state["acked"] = m.delivery_tag if m.multiple else state["acked"] + 1
        if state["acked"] >= n:
            state["result"] = harness.since(state["start"])
            state["ch"].connection.close()
        else:
            fill()

    conn = pika.SelectConnection(pika.URLParameters(urls[0]), on_open_callback=on_open,
                                 on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.start()
    if state["nacked"]:
        raise AssertionError("%d nacks" % state["nacked"])
    return state["result"]


def pub_aio_pika(urls, n):
    async def main():
        conn = await aio_pika.connect(urls[0])
        ch = await conn.channel(publisher_confirms=True)
        exchange = ch.default_exchange
        start = harness.clock()
        sent = 0
        while sent < n:
            k = min(1000, n - sent)
            await asyncio.gather(*[exchange.publish(
                aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=QUEUE) for _ in range(k)])
            sent += k
        result = harness.since(start)
        await conn.close()
        return result

    return asyncio.run(main())


CONTENDERS = {
    "Publisher": pub_fastio,
    "select+confirms": pub_select,
    "aio-pika+confirms": pub_aio_pika,
}


def _with_channel(url, action):
    return harness.tests_module("broker").with_channel(url, action)


def _declare(url):
    _with_channel(url, lambda ch: ch.queue_declare(
        QUEUE, durable=True, arguments={"x-queue-type": "quorum"}))


def _purge(url):
    _with_channel(url, lambda ch: ch.queue_purge(QUEUE))


def _count_ids(url, queue, total):
    """Consume `queue`; return (ids missing below `total`, messages read)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=2000)
        seen = set()
        read = 0
        for method, _props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=2.0):
            if method is None:
                break
            seen.add(int(body))
            read += 1
        ch.cancel()
    finally:
        conn.close()
    return total - len(seen & set(range(total))), read


# ----------------------------------------------------------------- failover


def failover(cluster, queue, mandatory, seconds_before=3.0, seconds_down=5.0,
             seconds_after=3.0):
    """Kill the Publisher's node (the queue's leader) mid-stream; return the timeline."""
    from fastio.rabbitmq import Publisher

    leader = cluster.queue_leader(queue)
    urls = [leader.url] + [n.url for n in cluster.nodes if n is not leader]
    futures = []
    samples = []        # (seconds since start, confirmed)
    stop = threading.Event()
    with Publisher(urls, max_in_flight=WINDOW) as pub:
        t0 = time.monotonic()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic() - t0, len(futures) - pub.outstanding))
                time.sleep(0.01)

        def publish():
            while not stop.is_set():
                for _ in range(100):
                    futures.append(pub.publish("", queue, b"%d" % len(futures), PROPS,
                                               mandatory))
                ahead = len(futures) / FAILOVER_RATE - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

        threads = [threading.Thread(target=sample), threading.Thread(target=publish)]
        for t in threads:
            t.start()
        time.sleep(seconds_before)
        t_kill = time.monotonic() - t0
        leader.kill()
        time.sleep(seconds_down)
        cluster.restart_node(leader)
        t_back = time.monotonic() - t0
        due = len(futures)
        while len(futures) - pub.outstanding < due and time.monotonic() - t0 < t_back + 120:
            time.sleep(0.01)
        t_drained = time.monotonic() - t0
        time.sleep(max(0.0, seconds_after - (t_drained - t_back)))
        stop.set()
        for t in threads:
            t.join()
        pub.flush(120)
        total = len(futures)
        failed = sum(1 for f in futures if f.exception() is not None)
    gap, gap_at, last_t, last_n = 0.0, 0.0, None, -1
    for t, n in samples:
        if n != last_n:
            if last_t is not None and t - last_t > gap:
                gap, gap_at = t - last_t, last_t
            last_t, last_n = t, n
    missing, read = _count_ids(cluster.live_node().url, queue, total)
    return {"messages": total, "rate": FAILOVER_RATE, "killed_at_s": t_kill,
            "node_back_at_s": t_back, "longest_gap_s": gap, "longest_gap_from_s": gap_at,
            "drain_after_return_s": t_drained - t_back, "failed_futures": failed,
            "missing_ids": missing, "duplicates": read - (total - missing)}


def run(config):
    """Start a 3-node cluster, run the contenders and the failover; return results."""
    profile = getattr(config, "profile", "default")
    n = {"quick": 5_000, "full": 100_000}.get(profile, 30_000)
    cluster_mod = harness.tests_module("cluster")
    contenders = dict(CONTENDERS)
    if aio_pika is None:
        del contenders["aio-pika+confirms"]
    results, errors, fo = {}, [], None
    harness.progress("starting a private 3-node RabbitMQ cluster ...")
    cluster = cluster_mod.Cluster(name="fastio-bench-cluster")
    t = time.monotonic()
    cluster.start()
    started_in = time.monotonic() - t
    try:
        machine = harness.machine_info()
        _declare(cluster.urls[0])
        for name, fn in contenders.items():
            _purge(cluster.urls[0])
            try:
                elapsed, cpu_s = fn(cluster.urls, n)
            except Exception as exc:     # report, keep the others' numbers
                errors.append("%s: %r" % (name, exc))
                harness.progress("!! %s failed: %r" % (name, exc))
                continue
            results[name] = {"msgs_per_s": n / elapsed, "cpu_us_per_msg": cpu_s / n * 1e6}
            harness.progress("  %-18s %8.0f msgs/s %7.2f µs CPU/msg" % (
                name, n / elapsed, cpu_s / n * 1e6))
        _purge(cluster.urls[0])
        _with_channel(cluster.urls[0], lambda ch: ch.queue_declare(CLASSIC, durable=True))
        fo = {}
        for kind, queue, mandatory in (("quorum", QUEUE, False), ("classic", CLASSIC, True)):
            harness.progress("failover run, %s queue ..." % kind)
            run_ = fo[kind] = failover(cluster, queue, mandatory)
            harness.progress("  longest gap %.2f s, drain %.2f s, %d failed, %d missing" % (
                run_["longest_gap_s"], run_["drain_after_return_s"], run_["failed_futures"],
                run_["missing_ids"]))
            if run_["failed_futures"] or run_["missing_ids"]:
                errors.append("%s failover lost messages: %d failed futures, %d ids missing"
                              % (kind, run_["failed_futures"], run_["missing_ids"]))
    finally:
        cluster.cleanup()
    return {
        "suite": "rabbitmq-cluster",
        "machine": machine,
        "config": {"n": n, "window": WINDOW, "body_bytes": len(BODY), "nodes": 3,
                   "queue": "quorum, durable; persistent messages",
                   "cluster_start_s": started_in, "profile": profile},
        "results": results,
        "failover": fo,
        "errors": errors,
    }


def to_markdown(result):
    """Render the results as a Markdown report."""
    cfg, res, fo = result["config"], result["results"], result.get("failover")
    lines = ["# fastio RabbitMQ publishing on a 3-node cluster", "",
             harness.machine_line(result["machine"], None).replace(
                 "pinned to CPU None", "not pinned (the nodes need every core)"), "",
             "Durable quorum queue on a %d-node cluster of the Debian rabbitmq-server "
             "package on this machine (started in %.1f s); persistent %d-byte bodies; "
             "%d messages per contender, one run each, window %d. The nodes share the "
             "cores with the client: compare CPU per message." % (
                 cfg["nodes"], cfg["cluster_start_s"], cfg["body_bytes"], cfg["n"],
                 cfg["window"]), "",
             "| publisher | msgs/s | client CPU µs/msg |", "|---|---|---|"]
    for name, r in res.items():
        lines.append("| %s | %.0f | %.2f |" % (name, r["msgs_per_s"], r["cpu_us_per_msg"]))
    if fo:
        runs = list(fo.values())
        lines += ["", "## Failover: the Publisher's node, which leads the queue, SIGKILLed", "",
                  "Publisher with library defaults and the three URLs, %d msgs/s "
                  "(mandatory=True on the classic queue); the node is started again 5 s "
                  "after the kill." % runs[0]["rate"], "",
                  "| measure | " + " | ".join("%s queue" % k for k in fo) + " |",
                  "|---|" + "---|" * len(fo)]
        rows = [("node killed at", "%.1f s", "killed_at_s"),
                ("node back at", "%.1f s", "node_back_at_s"),
                ("longest gap without a confirm", "%.2f s", "longest_gap_s"),
                ("... starting at", "%.1f s", "longest_gap_from_s"),
                ("drain after the node returned", "%.2f s", "drain_after_return_s"),
                ("messages published", "%d", "messages"),
                ("failed futures", "%d", "failed_futures"),
                ("ids missing from the queue", "%d", "missing_ids"),
                ("duplicates in the queue", "%d", "duplicates")]
        for label, fmt, key in rows:
            lines.append("| %s | %s |" % (label, " | ".join(fmt % r[key] for r in runs)))
    for err in result.get("errors", []):
        lines.append("\n**error:** %s" % err)
    return "\n".join(lines)


if __name__ == "__main__":
    print(to_markdown(run(harness.Config())))
