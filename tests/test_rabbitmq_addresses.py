"""Broker addresses: bad URLs are ValueError, credentials never shown,
pika's connection errors explained in one line."""

import logging
import time

import pytest

pika = pytest.importorskip("pika")

import broker as broker_mod

from fastio.rabbitmq import AsyncPublisher, ConnectError, Publisher
from fastio.rabbitmq._params import mask_url, parameters_list


@pytest.mark.parametrize("bad, phrase", [
    ("notaurl", "no scheme"), ("http://guest:pw@localhost/", "scheme 'http'"),
    ("amqp://", "no host"), ("amqp://h:99999/", "bad AMQP URL"),
    ("amqp://h:port/", "bad AMQP URL"), (5, "not int"), (None, "not NoneType"),
    ([], "no broker address"), (["amqp://h/", 7], "not int"), (b"amqp://h/", "not bytes"),
])
@pytest.mark.parametrize("cls", [Publisher, AsyncPublisher])
def test_bad_address_is_a_value_error(cls, bad, phrase):
    with pytest.raises(ValueError) as info:
        cls(bad)
    assert phrase in str(info.value)
    assert "pw" not in str(info.value)
    assert "\n" not in str(info.value)


NAN = float("nan")


@pytest.mark.parametrize("option, value", [
    ("connect_timeout", NAN), ("connect_timeout", -1), ("connect_timeout", float("inf")),
    ("close_timeout", NAN), ("close_timeout", -5), ("close_timeout", "3"),
    ("reconnect_delay", (NAN, 1)), ("reconnect_delay", (-1, -1)), ("reconnect_delay", (2, 1)),
    ("max_in_flight", NAN), ("max_in_flight", 0),
    ("max_attempts", NAN), ("retry_deadline", NAN), ("retry_delay", (NAN, 1)),
])
@pytest.mark.parametrize("cls", [Publisher, AsyncPublisher])
def test_an_option_out_of_range_is_a_value_error_before_connecting(cls, option, value):
    # A NaN timeout waited for ever, a negative one not at all; the broker
    # address is never tried.
    with pytest.raises(ValueError, match=option):
        cls("amqp://guest:guest@127.0.0.1:1/%2F", **{option: value})


@pytest.mark.parametrize("value", [NAN, -1, float("inf")])
def test_publish_timeout_out_of_range_is_a_value_error(value):
    with pytest.raises(ValueError, match="publish_timeout"):
        Publisher("amqp://guest:guest@127.0.0.1:1/%2F", publish_timeout=value)


def test_mask_url():
    assert mask_url("amqp://u:secret@h:5672/%2F") == "amqp://u:***@h:5672/%2F"
    assert mask_url("amqps://u@h/v") == "amqps://u@h/v"
    assert mask_url("amqp://h/") == "amqp://h/"


def test_parameters_list_accepts_urls_and_parameters():
    params = parameters_list(["amqp://u:p@h1:1/v", pika.ConnectionParameters("h2")])
    assert [(p.host, p.port) for p in params] == [("h1", 1), ("h2", 5672)]


def test_wrong_password_is_explained_without_the_password(broker, caplog):
    url = "amqp://guest:s3cret@127.0.0.1:%d/%%2F" % broker.port
    with caplog.at_level(logging.DEBUG, logger="fastio"):
        with pytest.raises(ConnectError) as info:
            Publisher(url, connect_timeout=20)
    text = str(info.value)
    assert "login refused" in text and "'guest'" in text and "s3cret" not in text
    assert "s3cret" not in caplog.text


def test_missing_vhost_fails_at_once(broker):
    t0 = time.monotonic()
    with pytest.raises(ConnectError, match="virtual host 'nohost'"):
        Publisher("amqp://guest:guest@127.0.0.1:%d/nohost" % broker.port, connect_timeout=20)
    assert time.monotonic() - t0 < 10


def test_refused_port_is_logged_once_and_explained(caplog):
    port = broker_mod.free_port()
    url = "amqp://guest:s3cret@127.0.0.1:%d/%%2F" % port
    with caplog.at_level(logging.WARNING, logger="fastio"):
        with pytest.raises(ConnectError) as info:
            Publisher(url, connect_timeout=1.5, reconnect_delay=(0.05, 0.1))
    assert "connection refused by 127.0.0.1:%d" % port in str(info.value)
    warnings = [r for r in caplog.records if r.name.startswith("fastio")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "s3cret" not in caplog.text + str(info.value)


def test_repr_masks_credentials(amqp_url, broker):
    with Publisher(amqp_url) as pub:
        text = repr(pub)
    assert "guest" not in text and "127.0.0.1:%d" % broker.port in text
    assert "guest" not in repr(AsyncPublisher(amqp_url))
