"""basic.publish frames from fastio._impl.amqp_c (C) and amqp_py (Python)
are byte-identical to pika's own marshalling, and pika decodes them back."""

import pytest

pika = pytest.importorskip("pika")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st
from pika import frame as pika_frame, spec

import implementations


@pytest.fixture
def encode(implementation):
    return implementations.pair(implementation, "amqp").encode_publish


def pika_frames(channel, frame_max, exchange, routing_key, body, props, mandatory):
    """What pika's Connection._send_message writes for one basic_publish."""
    out = [pika_frame.Method(channel, spec.Basic.Publish(
               exchange=exchange, routing_key=routing_key, mandatory=mandatory)).marshal(),
           pika_frame.Header(channel, len(body), props).marshal()]
    step = frame_max - 8
    out += [pika_frame.Body(channel, body[i:i + step]).marshal()
            for i in range(0, len(body), step)]
    return b"".join(out)


def decode_all(data):
    frames = []
    while data:
        consumed, frame = pika_frame.decode_frame(data)
        assert frame is not None, "truncated frame"
        frames.append(frame)
        data = data[consumed:]
    return frames


shortstr = st.text(max_size=60).filter(lambda s: len(s.encode()) <= 255)
properties = st.builds(
    pika.BasicProperties,
    content_type=st.none() | shortstr,
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 9),
    correlation_id=st.none() | shortstr,
    message_id=st.none() | shortstr,
    timestamp=st.none() | st.integers(0, 2**40),
    headers=st.none() | st.dictionaries(shortstr, st.integers(-2**31, 2**31 - 1)
                                        | shortstr, max_size=3),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(channel=st.integers(1, 65535), frame_max=st.sampled_from([4096, 8192, 131072]),
       exchange=shortstr, routing_key=shortstr, props=properties,
       body=st.binary(max_size=20000), mandatory=st.booleans())
def test_frames_match_pika_and_round_trip(encode, channel, frame_max, exchange,
                                          routing_key, props, body, mandatory):
    encoded = encode(channel, frame_max, exchange, routing_key, body,
                     b"".join(props.encode()), mandatory)
    assert encoded == pika_frames(channel, frame_max, exchange, routing_key, body,
                                  props, mandatory)
    method, header, *bodies = decode_all(encoded)
    assert method.method.exchange == exchange
    assert method.method.routing_key == routing_key
    assert method.method.mandatory == mandatory
    assert header.body_size == len(body)
    assert header.properties.__dict__ == props.__dict__
    assert all(len(f.fragment) <= frame_max - 8 for f in bodies)
    assert b"".join(f.fragment for f in bodies) == body
    assert {f.channel_number for f in [method, header] + bodies} == {channel}


def test_body_larger_than_frame_max_is_split(encode):
    body = bytes(range(256)) * 1000
    frames = decode_all(encode(1, 4096, "", "q", body))
    assert [len(f.fragment) for f in frames[2:]] == [4088] * 62 + [256000 - 4088 * 62]


def test_str_body_is_sent_utf8(encode):
    assert encode(1, 131072, "", "q", "héllo") == encode(1, 131072, "", "q", "héllo".encode())


def test_empty_body_has_no_body_frame(encode):
    assert len(decode_all(encode(1, 131072, "", "q", b""))) == 2


def test_short_string_over_255_bytes_is_refused(encode):
    with pytest.raises(ValueError):
        encode(1, 131072, "", "é" * 128, b"x")


def test_non_string_exchange_is_refused(encode):
    with pytest.raises(TypeError):
        encode(1, 131072, 5, "q", b"x")


def test_frame_max_too_small_is_refused(encode):
    with pytest.raises(ValueError):
        encode(1, 8, "", "q", b"x")


def test_properties_larger_than_a_frame_are_refused(encode):
    # The broker closes the connection on such a header frame (501
    # FRAME_ERROR): a publish() retried on every reconnect, holding up all
    # the messages behind it. Refused when it is encoded instead.
    props = b"".join(pika.BasicProperties(headers={"h": "v" * 200000}).encode())
    with pytest.raises(ValueError, match="properties encode to %d bytes" % len(props)):
        encode(1, 131072, "", "q", b"x", props)
    assert encode(1, 0, "", "q", b"x", props)             # frame_max 0: no limit
    fits = b"".join(pika.BasicProperties(headers={"h": "v" * 4000}).encode())
    assert encode(1, 4096, "", "q", b"x", fits)


any_properties = st.builds(
    pika.BasicProperties,
    content_type=st.none() | shortstr | st.binary(max_size=20),
    content_encoding=st.none() | shortstr,
    headers=st.none() | st.dictionaries(shortstr, st.integers(0, 100), max_size=2),
    delivery_mode=st.none() | st.sampled_from([1, 2, pika.DeliveryMode.Persistent]),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | shortstr,
    reply_to=st.none() | shortstr,
    expiration=st.none() | st.integers(0, 10**6).map(str),
    message_id=st.none() | shortstr,
    timestamp=st.none() | st.integers(0, 2**64 - 1),
    type=st.none() | shortstr,
    user_id=st.none() | shortstr,
    app_id=st.none() | shortstr,
    cluster_id=st.none() | shortstr,
)


@pytest.fixture
def encode_properties(implementation):
    return implementations.pair(implementation, "amqp").encode_properties


@settings(max_examples=400, deadline=None,
          suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(props=any_properties)
def test_properties_encode_like_pika(encode_properties, props):
    assert encode_properties(props) == b"".join(props.encode())


def test_long_property_string_raises_pikas_error(encode_properties):
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        encode_properties(pika.BasicProperties(message_id="x" * 256))
