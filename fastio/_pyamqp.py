"""Pure-Python twin of fastio._amqp: basic.publish frame encoding.

Same function, same bytes; used when the extension is not built
(FASTIO_NO_EXTENSIONS=1). See src/_amqp.pyx for the frame layout.
"""

import struct

__all__ = ["encode_publish", "split_confirms", "EMPTY_PROPERTIES"]

EMPTY_PROPERTIES = b"\x00\x00"
_FRAME_END = b"\xce"
_OVERHEAD = 8
_METHOD_HEAD = struct.Struct(">BHIHHH")   # frame head + class, method, reserved
_HEADER_HEAD = struct.Struct(">BHIHHQ")   # frame head + class, weight, body size
_FRAME_HEAD = struct.Struct(">BHI")


def _shortstr(value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif not isinstance(value, bytes):
        raise TypeError("exchange and routing key must be str or bytes, not %s"
                        % type(value).__name__)
    if len(value) > 255:
        raise ValueError("AMQP short string longer than 255 bytes: %d" % len(value))
    return bytes((len(value),)) + value


def encode_publish(channel, frame_max, exchange, routing_key, body,
                   properties=EMPTY_PROPERTIES, mandatory=False):
    """Return the frames of one basic.publish as one bytes object.

    Same contract as `fastio._amqp.encode_publish`.
    """
    ex = _shortstr(exchange)
    rk = _shortstr(routing_key)
    if isinstance(body, str):
        body = body.encode("utf-8")
    body = memoryview(body).cast("B")
    if frame_max == 0:
        chunk = max(len(body), 1)
    elif frame_max <= _OVERHEAD:
        raise ValueError("frame_max %d leaves no room for a body" % frame_max)
    else:
        chunk = frame_max - _OVERHEAD
    method_args = ex + rk + (b"\x01" if mandatory else b"\x00")
    parts = [
        _METHOD_HEAD.pack(1, channel, 6 + len(method_args), 60, 40, 0),
        method_args, _FRAME_END,
        _HEADER_HEAD.pack(2, channel, 12 + len(properties), 60, 0, len(body)),
        properties, _FRAME_END,
    ]
    for off in range(0, len(body), chunk):
        piece = body[off:off + chunk]
        parts += (_FRAME_HEAD.pack(3, channel, len(piece)), piece, _FRAME_END)
    return b"".join(parts)


_CONFIRM = struct.Struct(">BHIHHQB")


def split_confirms(data, channel):
    """Take basic.ack/nack frames on `channel` out of `data`, keep the order.

    Same contract as `fastio._amqp.split_confirms`.
    """
    data = bytes(data)
    off = run_start = 0
    events = []
    while len(data) - off >= 7:
        kind, chan, size = _FRAME_HEAD.unpack_from(data, off)
        if len(data) - off < size + 8:
            break
        if kind == 1 and size == 13 and chan == channel:
            _, _, _, cls, meth, tag, bits = _CONFIRM.unpack_from(data, off)
            if cls == 60 and meth in (80, 120):
                if off > run_start:
                    events.append(data[run_start:off])
                events.append((tag, bool(bits & 1), meth == 120))
                run_start = off + size + 8
        off += size + 8
    if off > run_start:
        events.append(data[run_start:off])
    return off, events
