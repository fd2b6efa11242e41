"""Pure-Python twin of fastio._impl.amqp_c: basic.publish frame encoding.

Same function, same bytes; used when the extension is not built
(FASTIO_NO_EXTENSIONS=1). See src/_amqp.pyx for the frame layout.
"""

import collections
import struct
import threading
from collections.abc import Mapping

__all__ = ["encode_publish", "encode_properties", "coerce_properties", "split_confirms",
           "Outbox", "EMPTY_PROPERTIES", "PROPERTY_NAMES"]

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

    Same contract as `fastio._impl.amqp_c.encode_publish`.
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
    if frame_max and 12 + len(properties) > frame_max - _OVERHEAD:
        raise ValueError("the message properties encode to %d bytes: more than a frame "
                         "carries (frame_max %d)" % (len(properties), frame_max))
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


PROPERTY_NAMES = frozenset((
    "content_type", "content_encoding", "headers", "delivery_mode", "priority",
    "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
    "user_id", "app_id", "cluster_id"))


def coerce_properties(properties):
    """Return `properties` as a `pika.BasicProperties`; a mapping is converted.

    The one conversion for both twins: `fastio._impl.amqp_c.coerce_properties`
    hands it what is not a BasicProperties already.

    :raises TypeError: neither a BasicProperties nor a mapping, or a
        mapping with a key that is not a basic property.
    """
    from pika.spec import BasicProperties

    if isinstance(properties, BasicProperties):
        return properties
    if isinstance(properties, Mapping):
        unknown = sorted(repr(key) for key in properties if key not in PROPERTY_NAMES)
        if unknown:
            raise TypeError("unknown message propert%s %s; the AMQP basic properties are: %s"
                            % ("y" if len(unknown) == 1 else "ies", ", ".join(unknown),
                               ", ".join(sorted(PROPERTY_NAMES))))
        return BasicProperties(**properties)
    raise TypeError("properties must be a pika.BasicProperties or a dict, not %s"
                    % type(properties).__name__)


def encode_properties(properties):
    """Return pika's encoding of a `pika.BasicProperties`, flags word first.

    Same contract as `fastio._impl.amqp_c.encode_properties`; here pika does it.
    """
    return b"".join(coerce_properties(properties).encode())


_CONFIRM = struct.Struct(">BHIHHQB")


def split_confirms(data, channel):
    """Take basic.ack/nack frames on `channel` out of `data`, keep the order.

    Same contract as `fastio._impl.amqp_c.split_confirms`.
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


# Smallest frame_max AMQP allows: a body up to _MIN_FRAME_MAX - 8 bytes
# encodes the same whatever frame_max the broker negotiates.
_MIN_FRAME_MAX = 4096


class Outbox:
    """The Publisher's queue and confirm window; see fastio._impl.amqp_c.Outbox."""

    def __init__(self, channel, frame_max, max_in_flight, new_future, wake,
                 wait_for_room, returnable, returned):
        self.channel = channel
        self.frame_max = frame_max
        self.max_in_flight = max_in_flight
        self.queue = collections.deque()
        self.unconfirmed = {}
        self._n_submitted = 0
        self._n_done = 0
        self._tag = 0
        self._lowest = 1
        self.wake_pending = False
        self.closed_error = None
        self._new_future = new_future
        self._wake = wake
        self._wait_for_room = wait_for_room
        self._returnable = returnable
        self._returned = returned
        # Reentrant: a signal handler may publish while the interrupted
        # publish() on the same thread holds it.
        self._lock = threading.RLock()

    def submit(self, exchange, routing_key, body, properties=None, mandatory=False):
        if self.closed_error is not None:
            raise self.closed_error
        props = EMPTY_PROPERTIES if properties is None else encode_properties(properties)
        frame_max = self.frame_max
        frames = encode_publish(self.channel, frame_max, exchange, routing_key, body,
                                props, mandatory)
        if mandatory or len(frames) > _MIN_FRAME_MAX:
            # Kept to match a basic.return or to re-encode: a copy of a
            # buffer the caller may reuse (or release) once this returns.
            if isinstance(body, str):
                body = body.encode("utf-8")  # len() counts bytes
            elif type(body) is not bytes:
                body = bytes(body)
            args = (exchange, routing_key, body, props, mandatory, frame_max)
        else:
            args = None
        if self._n_submitted - self._n_done >= self.max_in_flight:
            self._wait_for_room()
        future = self._new_future()
        # Queued before counted: a flush() that runs in between (a signal
        # handler, another thread) never waits for a message not yet queued.
        self.queue.append((future, frames, args))
        with self._lock:      # += is not atomic across Python threads
            self._n_submitted += 1
        # Closed meanwhile (a signal handler, another thread): wake() is
        # what settles the message when nothing will send it any more.
        if not self.wake_pending or self.closed_error is not None:
            self.wake_pending = True
            try:
                self._wake()
            except BaseException:
                # Interrupted (a signal handler's KeyboardInterrupt) maybe
                # before the drain was scheduled: the next submit() (or
                # flush()) wakes the loop again, rather than none ever.
                self.wake_pending = False
                raise
        return future

    def take(self, confirms):
        queue = self.queue
        frames, sent = [], []
        tag = self._tag
        frame_max = self.frame_max
        while queue:
            msg = queue.popleft()
            args = msg[2]
            if args is not None:
                if args[5] != frame_max:
                    try:
                        msg = (msg[0], encode_publish(self.channel, frame_max, *args[:5]),
                               args[:5] + (frame_max,))
                    except ValueError as exc:
                        msg[0]._resolve(exc)
                        self._n_done += 1
                        continue
                if args[4] and confirms:
                    self._returnable.append(tag + 1)
            frames.append(msg[1])
            if confirms:
                tag += 1
                self.unconfirmed[tag] = msg
            else:
                sent.append(msg[0])
        self._tag = tag
        return b"".join(frames), sent

    def confirm(self, tag, multiple, nack, on_failed):
        pop = self.unconfirmed.pop
        returned = self._returned
        n = 0
        if multiple:
            first = self._lowest
            self._lowest = max(first, tag + 1)
            tags = range(first, tag + 1)
        else:
            tags = (tag,)
        for t in tags:
            msg = pop(t, None)
            if msg is None:
                continue
            if nack or (returned and t in returned):
                if not on_failed(t, msg, nack):
                    n += 1      # settled; true means kept for another attempt
            else:
                msg[0]._resolve()
                n += 1
        while self._lowest <= self._tag and self._lowest not in self.unconfirmed:
            self._lowest += 1
        self._n_done += n
        return n

    def settle(self, n):
        if n < 0:
            raise ValueError("cannot settle %d messages" % n)
        self._n_done += n

    def take_unconfirmed(self):
        msgs = [self.unconfirmed[t] for t in sorted(self.unconfirmed)]
        self.unconfirmed.clear()
        return msgs

    def reset_tags(self):
        self._tag = 0
        self._lowest = 1

    # Read-only, as the compiled twin's: only the Outbox moves its counters.
    n_submitted = property(lambda self: self._n_submitted, doc="Messages submitted so far.")
    n_done = property(lambda self: self._n_done, doc="Messages settled so far (confirmed, sent or failed).")
    tag = property(lambda self: self._tag, doc="Delivery tag of the last message taken on this channel.")
    lowest = property(lambda self: self._lowest, doc="Lowest delivery tag that may still be unconfirmed.")
