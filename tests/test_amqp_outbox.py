"""The Publisher's C pieces and their Python twins behave the same:
split_confirms (confirm frames out of the byte stream), Outbox (window,
delivery tags, settling), and PublishFuture's lazy condition."""

import collections
import concurrent.futures
import threading

import pytest

pika = pytest.importorskip("pika")
from pika import frame as pika_frame, spec

from fastio.rabbitmq._future import new_future

from amqp_twins import amqp  # noqa: F401 (fixture)


def method(channel, m):
    return pika_frame.Method(channel, m).marshal()


def test_split_confirms_keeps_other_frames_in_order(amqp):
    ret = method(1, spec.Basic.Return(312, "NO_ROUTE", "x", "k"))
    other_channel = method(2, spec.Basic.Ack(1, False))
    data = (method(1, spec.Basic.Ack(5, True)) + ret
            + method(1, spec.Basic.Nack(7, False, True)) + other_channel
            + pika_frame.Heartbeat().marshal())
    consumed, events = amqp.split_confirms(data, 1)
    assert consumed == len(data)
    assert events == [(5, True, False), ret, (7, False, True),
                      other_channel + pika_frame.Heartbeat().marshal()]


def test_split_confirms_leaves_a_partial_frame(amqp):
    ack = method(1, spec.Basic.Ack(2**40 + 3, False))
    consumed, events = amqp.split_confirms(ack + ack[:10], 1)
    assert (consumed, events) == (len(ack), [(2**40 + 3, False, False)])
    assert amqp.split_confirms(ack[:6], 1) == (0, [])


def make_outbox(amqp, max_in_flight=100, wake=None):
    returnable, returned = collections.deque(), {}
    box = amqp.Outbox(1, 131072, max_in_flight, new_future, wake or (lambda: None),
                      lambda: (_ for _ in ()).throw(RuntimeError("window full")),
                      returnable, returned)
    return box, returnable, returned


def test_outbox_numbers_settles_and_counts(amqp):
    wakes = []
    box, returnable, returned = make_outbox(amqp, wake=lambda: wakes.append(1))
    futures = [box.submit("", "q", b"%d" % i, mandatory=(i == 2)) for i in range(5)]
    assert wakes == [1]                   # one wake until the loop drains
    data, sent = box.take(True)
    assert sent == [] and sorted(box.unconfirmed) == [1, 2, 3, 4, 5]
    assert list(returnable) == [3]
    assert data == b"".join(amqp.encode_publish(1, 131072, "", "q", b"%d" % i,
                                                mandatory=(i == 2)) for i in range(5))
    failed = []
    returned[3] = ValueError("returned")
    assert box.confirm(3, True, False, lambda t, m, nack: failed.append((t, nack))) == 3
    assert failed == [(3, False)]
    assert [f.done() for f in futures] == [True, True, False, False, False]
    assert box.confirm(5, False, True, lambda t, m, nack: failed.append((t, nack))) == 1
    assert failed[-1] == (5, True)
    assert box.lowest == 4 and box.n_done == 4 and box.n_submitted == 5
    box.confirm(4, False, False, None)
    assert box.lowest == 6 and box.unconfirmed == {}


def test_outbox_message_kept_for_retry_is_not_settled(amqp):
    box, _, _ = make_outbox(amqp)
    futures = [box.submit("", "q", b"%d" % i) for i in range(3)]
    box.take(True)
    kept = []
    # on_failed returning true keeps the nacked message: not done, not counted.
    assert box.confirm(3, True, True, lambda t, m, nack: kept.append(m) or True) == 0
    assert [m[0] for m in kept] == futures
    assert box.n_done == 0 and box.unconfirmed == {} and box.lowest == 4
    assert not any(f.done() for f in futures)


def test_outbox_keeps_its_own_copy_of_a_body_the_caller_reuses(amqp):
    # What a basic.return is matched against, and what a smaller frame_max
    # re-encodes, is the body as published: not a buffer the caller
    # changes, or releases, once submit() returned.
    box, _, _ = make_outbox(amqp)
    buf, big = bytearray(b"payload"), bytearray(b"b" * 200000)
    view = memoryview(bytearray(b"viewed"))
    box.submit("", "q", buf, mandatory=True)
    box.submit("", "q", big)
    box.submit("", "q", view, mandatory=True)
    buf[:] = b"reused!"
    big[:10] = b"x" * 10
    view.release()
    bodies = [msg[2][2] for msg in box.queue]
    assert bodies == [b"payload", b"b" * 200000, b"viewed"]
    assert all(type(b) is bytes for b in bodies)
    # A str is kept encoded: a re-encode for a smaller frame_max is decided
    # on its length in bytes, not in characters.
    box.submit("", "q", "\u00e9" * 3000)
    assert box.queue[-1][2][2] == ("\u00e9" * 3000).encode("utf-8")


def test_a_smaller_frame_max_re_encodes_or_fails_what_no_longer_fits(amqp):
    # A reconnect may negotiate a smaller frame_max than the messages were
    # encoded for. A body is split again; a header too large for the new
    # frame would make the broker close the connection each time it is
    # sent (FRAME_ERROR), stalling everything behind it: that message
    # fails instead, with the reason, and counts as done.
    box, returnable, _ = make_outbox(amqp)
    big_header = {"headers": {"h": "x" * 5000}}
    body = bytes(range(256)) * 40
    futures = [box.submit("", "q", b"small", mandatory=True),
               box.submit("", "q", b"big header", big_header, mandatory=True),
               box.submit("", "q", body),
               box.submit("", "q", b"plain")]
    box.frame_max = 4096
    data, sent = box.take(True)
    assert sent == []
    with pytest.raises(ValueError, match="more than a frame carries \\(frame_max 4096\\)"):
        futures[1].result(0)
    assert not any(f.done() for f in futures[:1] + futures[2:])
    assert box.n_done == 1 and sorted(box.unconfirmed) == [1, 2, 3]
    assert list(returnable) == [1]
    assert data == b"".join((amqp.encode_publish(1, 4096, "", "q", b"small", mandatory=True),
                             amqp.encode_publish(1, 4096, "", "q", body),
                             amqp.encode_publish(1, 131072, "", "q", b"plain")))


def test_a_wake_interrupted_by_a_signal_is_made_again_by_the_next_submit(amqp):
    # A KeyboardInterrupt raised in wake() (a signal handler runs as it is
    # called) left wake_pending set with no drain scheduled: no later
    # publish() woke the loop, and the window filled with unsent messages.
    wakes = []

    def wake():
        wakes.append(1)
        if len(wakes) == 1:
            raise KeyboardInterrupt

    box, _, _ = make_outbox(amqp, wake=wake)
    with pytest.raises(KeyboardInterrupt):
        box.submit("", "q", b"1")
    assert len(box.queue) == 1 and not box.wake_pending
    box.submit("", "q", b"2")
    assert len(wakes) == 2 and box.wake_pending and len(box.queue) == 2


def test_outbox_counters_are_read_only(amqp):
    box, _, _ = make_outbox(amqp)
    box.submit("", "q", b"x")
    for name in ("n_submitted", "n_done", "tag", "lowest"):
        with pytest.raises(AttributeError):
            setattr(box, name, 7)
    assert (box.n_submitted, box.n_done, box.tag, box.lowest) == (1, 0, 0, 1)


def test_outbox_settle_counts_what_the_caller_resolved(amqp):
    box, _, _ = make_outbox(amqp, max_in_flight=2)
    box.submit("", "q", b"1")
    box.submit("", "q", b"2")
    _, sent = box.take(False)             # no confirms: sent is settled by the caller
    assert len(sent) == 2 and box.n_done == 0
    box.settle(len(sent))
    assert box.n_done == 2
    box.submit("", "q", b"3")             # the window has room again
    with pytest.raises(ValueError, match="-1"):
        box.settle(-1)
    assert box.n_done == 2 and box.n_submitted == 3


def test_outbox_full_window_calls_wait_for_room(amqp):
    box, _, _ = make_outbox(amqp, max_in_flight=2)
    box.submit("", "q", b"1")
    box.submit("", "q", b"2")
    with pytest.raises(RuntimeError, match="window full"):
        box.submit("", "q", b"3")


def test_outbox_requeue_keeps_order_and_restarts_tags(amqp):
    box, _, _ = make_outbox(amqp)
    for i in range(3):
        box.submit("", "q", b"%d" % i)
    first, _ = box.take(True)
    pending = box.take_unconfirmed()
    box.queue.extendleft(reversed(pending))
    box.reset_tags()
    again, _ = box.take(True)
    assert again == first and sorted(box.unconfirmed) == [1, 2, 3]


def test_outbox_closed_error_is_raised(amqp):
    box, _, _ = make_outbox(amqp)
    box.closed_error = LookupError("closed")
    with pytest.raises(LookupError):
        box.submit("", "q", b"x")


def test_publish_future_is_a_future_that_cannot_be_cancelled():
    fut = new_future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.running() and not fut.cancel()


def test_publish_future_wakes_result_wait_and_callbacks():
    a, b, c = new_future(), new_future(), new_future()
    called = []
    c.add_done_callback(called.append)
    threading.Timer(0.05, lambda: (a._resolve(), b._resolve(KeyError("k")), c._resolve())).start()
    assert a.result(5) is None
    done, _ = concurrent.futures.wait([b], 5)
    assert done == {b} and isinstance(b.exception(0), KeyError)
    assert called == [c]
    late = []
    a.add_done_callback(late.append)
    assert late == [a]


def test_a_channel_close_reply_names_the_publishes_it_refused(amqp):
    # The Publisher fails only the messages a non-transient channel.close
    # names (by exchange or body size) and sends the others again.
    from types import SimpleNamespace

    from fastio.rabbitmq import publisher

    frames = amqp.encode_publish(1, 4096, "ex-1", "rk", b"x" * 10000)
    other = amqp.encode_publish(1, 4096, "", "rk", b"y" * 10)
    assert publisher._exchange_of(frames) == b"ex-1"
    assert publisher._body_size_of(frames) == 10000

    def test(text):
        return publisher._refused_test(SimpleNamespace(reply_code=0, reply_text=text))

    no_exchange = test("NOT_FOUND - no exchange 'ex-1' in vhost '/'")
    refused = test("ACCESS_REFUSED - access to exchange 'ex-1' in vhost '/' refused for user 'u'")
    too_big = test("PRECONDITION_FAILED - message size 10000 is larger than configured max size 4096")
    for check in (no_exchange, refused, too_big):
        assert check(frames) and not check(other)
    assert test("PRECONDITION_FAILED - inequivalent arg 'durable'") is None
