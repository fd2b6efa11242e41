"""Message properties: pika.BasicProperties or a dict, identically on the
compiled outbox and its pure-Python twin; anything else is a TypeError."""

import pytest

pika = pytest.importorskip("pika")

from fastio.rabbitmq import Publisher, publisher

from amqp_twins import TWINS, amqp  # noqa: F401 (fixture)

FIELDS = dict(content_type="text/plain", content_encoding="utf-8", headers={"k": "v", "n": 1},
              delivery_mode=2, priority=5, correlation_id="c", reply_to="r",
              expiration="60000", message_id="m", timestamp=1700000000, type="t",
              user_id="guest", app_id="a", cluster_id="x")


@pytest.mark.parametrize("fields", [{"delivery_mode": 2}, {}, FIELDS],
                         ids=["persistent", "empty", "all"])
def test_dict_encodes_like_basic_properties(amqp, fields):
    expected = b"".join(pika.BasicProperties(**fields).encode())
    assert amqp.encode_properties(dict(fields)) == expected
    assert amqp.encode_properties(pika.BasicProperties(**fields)) == expected


@pytest.mark.parametrize("bad, message", [
    (5, "not int"), ("delivery_mode=2", "not str"), ([("delivery_mode", 2)], "not list"),
    ({"delivery_mod": 2}, "unknown message property 'delivery_mod'"),
    ({1: 2}, "unknown message property 1"),
])
def test_other_properties_are_a_type_error_in_both_twins(bad, message):
    errors = []
    for twin in TWINS.values():
        with pytest.raises(TypeError) as info:
            twin.encode_properties(bad)
        errors.append(str(info.value))
    assert message in errors[0]
    assert len(set(errors)) == 1, errors       # the same words from both


@pytest.fixture
def outbox_twin(amqp, monkeypatch):
    monkeypatch.setattr(publisher, "Outbox", amqp.Outbox)
    monkeypatch.setattr(publisher, "split_confirms", amqp.split_confirms)
    return amqp


def test_dict_properties_reach_the_consumer(amqp_url, queue, admin, outbox_twin):
    with Publisher(amqp_url) as pub:
        assert type(pub._outbox) is outbox_twin.Outbox
        pub.publish("", queue, b"persistent", {"delivery_mode": 2,
                                               "headers": {"h": "1"}}).result(10)
    _, props, body = admin.basic_get(queue, auto_ack=True)
    assert body == b"persistent"
    assert (props.delivery_mode, props.headers) == (2, {"h": "1"})


def test_bad_properties_raise_and_publish_nothing(amqp_url, queue, admin, outbox_twin):
    with Publisher(amqp_url) as pub:
        with pytest.raises(TypeError):
            pub.publish("", queue, b"x", {"persistent": True})
        with pytest.raises(TypeError):
            pub.publish("", queue, b"x", "delivery_mode=2")
        assert pub.outstanding == 0
        pub.publish("", queue, b"after").result(10)
    assert admin.queue_declare(queue, passive=True).method.message_count == 1
