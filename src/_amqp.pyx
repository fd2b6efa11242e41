# cython: language_level=3
"""AMQP 0-9-1 basic.publish frame encoding: the Publisher's hot path.

One call turns one message into the bytes of its three kinds of frame,
laid out exactly as pika's `Connection._send_message` marshals them, in a
single bytes object allocated once:

    method frame   type 1, basic.publish (class 60, method 40):
                   reserved short, exchange shortstr, routing key shortstr,
                   bits (mandatory = 1, immediate = 2)
    header frame   type 2, class 60, weight 0, body size (u64),
                   property flags + property list (encoded by the caller)
    body frames    type 3, the body cut into pieces of frame_max - 8 bytes;
                   none at all for an empty body

Every frame is ``type:u8 channel:u16 size:u32 payload 0xCE`` in network
byte order. The frames carry no delivery tag (the broker numbers publishes
per channel), so encoded bytes can be written again unchanged after a
reconnect: the Publisher keeps them for re-publication.

fastio._impl.amqp_py is the pure-Python twin; tests fuzz both against pika.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.unicode cimport PyUnicode_AsUTF8String
from libc.string cimport memcpy


cdef enum:
    FRAME_METHOD = 1
    FRAME_HEADER = 2
    FRAME_BODY = 3
    FRAME_END = 0xCE
    FRAME_OVERHEAD = 8          # 7-byte frame header + frame-end octet
    BASIC_CLASS = 60
    BASIC_PUBLISH = 40

# A header frame with no properties set: flags word 0.
EMPTY_PROPERTIES = b"\x00\x00"


cdef inline char *_u16(char *p, unsigned int v) noexcept:
    p[0] = <char>((v >> 8) & 0xFF)
    p[1] = <char>(v & 0xFF)
    return p + 2


cdef inline char *_u32(char *p, unsigned long long v) noexcept:
    p[0] = <char>((v >> 24) & 0xFF)
    p[1] = <char>((v >> 16) & 0xFF)
    p[2] = <char>((v >> 8) & 0xFF)
    p[3] = <char>(v & 0xFF)
    return p + 4


cdef inline char *_frame_start(char *p, int kind, unsigned int channel,
                               unsigned long long size) noexcept:
    p[0] = <char>kind
    p = _u16(p + 1, channel)
    return _u32(p, size)


cdef inline bytes _shortstr(object value):
    cdef bytes raw
    if isinstance(value, str):
        raw = PyUnicode_AsUTF8String(value)
    elif isinstance(value, bytes):
        raw = <bytes>value
    else:
        raise TypeError("exchange and routing key must be str or bytes, not %s"
                        % type(value).__name__)
    if len(raw) > 255:
        raise ValueError("AMQP short string longer than 255 bytes: %d" % len(raw))
    return raw


cdef int _properties_too_large(Py_ssize_t nprops, Py_ssize_t frame_max) except -1:
    raise ValueError("the message properties encode to %d bytes: more than a frame "
                     "carries (frame_max %d)" % (nprops, frame_max))


def encode_publish(unsigned int channel, Py_ssize_t frame_max, exchange,
                   routing_key, body, bytes properties=EMPTY_PROPERTIES,
                   bint mandatory=False):
    """Return the frames of one basic.publish as one bytes object.

    :param channel: the channel number (1..65535).
    :param frame_max: the negotiated frame_max; bodies are split into
        frames of at most frame_max - 8 bytes (0: no limit).
    :param exchange: str or bytes (UTF-8), at most 255 bytes.
    :param routing_key: str or bytes (UTF-8), at most 255 bytes.
    :param body: bytes-like, or str (sent UTF-8 encoded, as pika does).
    :param properties: the encoded property flags and list, as
        ``b"".join(pika.BasicProperties(...).encode())``.
    :param mandatory: set the mandatory bit (unroutable -> basic.return).
    :raises ValueError: a short string longer than 255 bytes, a
        frame_max too small to carry a body byte, or properties that do
        not fit in one frame (the broker would close the connection).
    :raises TypeError: exchange/routing key/body of the wrong type.
    """
    cdef bytes ex = _shortstr(exchange)
    cdef bytes rk = _shortstr(routing_key)
    cdef Py_ssize_t nex = len(ex), nrk = len(rk), nprops = len(properties)
    cdef Py_ssize_t chunk, nframes, method_size, header_size, total, off, n
    cdef Py_buffer view
    cdef bytes out
    cdef char *p
    if isinstance(body, str):
        body = PyUnicode_AsUTF8String(body)
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        if frame_max == 0:
            chunk = view.len if view.len > 0 else 1
        elif frame_max <= FRAME_OVERHEAD:
            raise ValueError("frame_max %d leaves no room for a body" % frame_max)
        else:
            chunk = frame_max - FRAME_OVERHEAD
        nframes = (view.len + chunk - 1) // chunk
        method_size = 4 + 2 + 1 + nex + 1 + nrk + 1
        header_size = 2 + 2 + 8 + nprops
        if frame_max and header_size > frame_max - FRAME_OVERHEAD:
            _properties_too_large(nprops, frame_max)
        total = (method_size + header_size + 2 * FRAME_OVERHEAD
                 + nframes * FRAME_OVERHEAD + view.len)
        out = PyBytes_FromStringAndSize(NULL, total)
        p = PyBytes_AS_STRING(out)

        p = _frame_start(p, FRAME_METHOD, channel, method_size)
        p = _u16(p, BASIC_CLASS)
        p = _u16(p, BASIC_PUBLISH)
        p = _u16(p, 0)                              # reserved-1 (ticket)
        p[0] = <char>nex
        memcpy(p + 1, PyBytes_AS_STRING(ex), nex)
        p += 1 + nex
        p[0] = <char>nrk
        memcpy(p + 1, PyBytes_AS_STRING(rk), nrk)
        p += 1 + nrk
        p[0] = <char>(1 if mandatory else 0)        # immediate is never set
        p[1] = <char>FRAME_END
        p += 2

        p = _frame_start(p, FRAME_HEADER, channel, header_size)
        p = _u16(p, BASIC_CLASS)
        p = _u16(p, 0)                              # weight
        p = _u32(p, (<unsigned long long>view.len) >> 32)
        p = _u32(p, (<unsigned long long>view.len) & 0xFFFFFFFF)
        memcpy(p, PyBytes_AS_STRING(properties), nprops)
        p += nprops
        p[0] = <char>FRAME_END
        p += 1

        off = 0
        while off < view.len:
            n = view.len - off if view.len - off < chunk else chunk
            p = _frame_start(p, FRAME_BODY, channel, n)
            memcpy(p, <char *>view.buf + off, n)
            p[n] = <char>FRAME_END
            p += n + 1
            off += n
    finally:
        PyBuffer_Release(&view)
    return out


# ---------------------------------------------------------------- properties
#
# pika's BasicProperties.encode() costs about 3 µs: as much as the rest of
# a publish. The common properties (strings, delivery mode, priority,
# timestamp) are encoded here; anything else (a headers table, values of
# unexpected types, strings over 255 bytes) goes to pika's own encoder,
# which also raises pika's errors for invalid values.

# (attribute, kind, flag bit): kind 0 = short string, 1 = octet, 2 = u64,
# in the order AMQP lays them out.
_PROPERTY_FIELDS = (
    ("content_type", 0, 15), ("content_encoding", 0, 14), ("headers", 3, 13),
    ("delivery_mode", 1, 12), ("priority", 1, 11), ("correlation_id", 0, 10),
    ("reply_to", 0, 9), ("expiration", 0, 8), ("message_id", 0, 7),
    ("timestamp", 2, 6), ("type", 0, 5), ("user_id", 0, 4), ("app_id", 0, 3),
    ("cluster_id", 0, 2),
)


PROPERTY_NAMES = frozenset(field[0] for field in _PROPERTY_FIELDS)

# pika.spec.BasicProperties, imported on first use: the frame functions
# above work without pika.
_BasicProperties = None


def coerce_properties(properties):
    """Return `properties` as a `pika.BasicProperties`; a mapping is converted.

    Same contract as `fastio._impl.amqp_py.coerce_properties`, which does the
    conversion for both twins (it is not on the per-message path of a
    BasicProperties); this one also caches the class for
    `encode_properties`' type check.
    """
    global _BasicProperties
    if _BasicProperties is None:
        from pika.spec import BasicProperties
        _BasicProperties = BasicProperties
    if type(properties) is _BasicProperties:
        return properties
    from fastio._impl.amqp_py import coerce_properties as convert
    return convert(properties)


def encode_properties(properties):
    """Return pika's encoding of a `pika.BasicProperties`, flags word first.

    Byte-identical to ``b"".join(properties.encode())``. A dict of property
    names is converted first (see `coerce_properties`).

    :raises TypeError: see `coerce_properties`.
    """
    cdef list pieces = []
    cdef unsigned int flags = 0
    cdef int kind
    cdef bytes raw
    cdef char head[8]
    if _BasicProperties is None or type(properties) is not _BasicProperties:
        properties = coerce_properties(properties)
    for name, kind, bit in _PROPERTY_FIELDS:
        value = getattr(properties, name, None)
        if value is None:
            continue
        if kind == 0:
            if isinstance(value, str):
                raw = PyUnicode_AsUTF8String(value)
            elif type(value) is bytes:
                raw = <bytes>value
            else:
                return b"".join(properties.encode())
            if len(raw) > 255:
                return b"".join(properties.encode())
            head[0] = <char>len(raw)
            pieces.append(PyBytes_FromStringAndSize(head, 1))
            pieces.append(raw)
        elif kind == 1:
            if type(value) is not int or not 0 <= value <= 255:
                return b"".join(properties.encode())
            head[0] = <char>(<int>value)
            pieces.append(PyBytes_FromStringAndSize(head, 1))
        elif kind == 2:
            if type(value) is not int or not 0 <= value < 2 ** 64:
                return b"".join(properties.encode())
            _u32(_u32(head, (<unsigned long long>value) >> 32),
                 (<unsigned long long>value) & 0xFFFFFFFF)
            pieces.append(PyBytes_FromStringAndSize(head, 8))
        else:
            return b"".join(properties.encode())     # a field table: pika's
        flags |= 1u << bit
    _u16(head, flags)
    pieces.insert(0, PyBytes_FromStringAndSize(head, 2))
    return b"".join(pieces)


# ------------------------------------------------------------------ confirms
#
# The other half of the hot path: the broker answers a stream of publishes
# with a stream of basic.ack frames (21 bytes each, one per message or one
# per batch with the multiple bit). pika would decode each into objects and
# run it through its callback registry; the Publisher takes them out of the
# byte stream here and hands pika only the remaining frames, whole.

cdef enum:
    BASIC_ACK = 80
    BASIC_NACK = 120
    CONFIRM_SIZE = 13               # class, method, delivery tag, bits


cdef inline unsigned long long _get_u64(const unsigned char *p) noexcept:
    cdef unsigned long long v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | p[i]
    return v


def split_confirms(data, unsigned int channel):
    """Take basic.ack/nack frames on `channel` out of `data`, keep the order.

    :param data: bytes-like, starting at a frame boundary.
    :returns: ``(consumed, events)``: how many bytes formed whole frames,
        and those frames in order as bytes runs (everything that is not a
        confirm, for pika) and ``(delivery_tag, multiple, nack)`` tuples.
        A partial frame at the end is not consumed.
    """
    cdef Py_buffer view
    cdef const unsigned char *p
    cdef Py_ssize_t off = 0, run_start = 0, size
    cdef unsigned int cls, meth
    cdef list events = []
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char *>view.buf
        while view.len - off >= 7:
            size = ((<Py_ssize_t>p[off + 3] << 24) | (p[off + 4] << 16)
                    | (p[off + 5] << 8) | p[off + 6])
            if view.len - off < size + 8:
                break
            if (p[off] == FRAME_METHOD and size == CONFIRM_SIZE
                    and ((p[off + 1] << 8) | p[off + 2]) == channel):
                cls = (p[off + 7] << 8) | p[off + 8]
                meth = (p[off + 9] << 8) | p[off + 10]
                if cls == BASIC_CLASS and (meth == BASIC_ACK or meth == BASIC_NACK):
                    if off > run_start:
                        events.append(PyBytes_FromStringAndSize(
                            <const char *>p + run_start, off - run_start))
                    events.append((_get_u64(p + off + 11), bool(p[off + 19] & 1),
                                   meth == BASIC_NACK))
                    run_start = off + size + 8
            off += size + 8
        if off > run_start:
            events.append(PyBytes_FromStringAndSize(<const char *>p + run_start,
                                                    off - run_start))
    finally:
        PyBuffer_Release(&view)
    return off, events


# -------------------------------------------------------------------- outbox
#
# The Publisher's per-message bookkeeping, in C because it runs once per
# message on two threads: submit() in the caller's thread (encode, window
# check, future, queue), take() and confirm() on the loop thread (delivery
# tags, the coalesced write, resolving futures). Counters are plain C
# fields: each update happens while holding the GIL, so they need no lock.
# A message is the tuple (future, frames, args); see fastio.rabbitmq.publisher.

from collections import deque as _deque

cdef enum:
    MIN_FRAME_MAX = 4096


cdef class Outbox:
    """The Publisher's queue and confirm window (fastio._impl.amqp_py.Outbox is the twin).

    :param channel: channel number written into the frames.
    :param frame_max: frame_max to encode with (updated on each connect).
    :param max_in_flight: window: queued + unconfirmed messages.
    :param new_future: makes the future of a message.
    :param wake: called (any thread) when the queue turns non-empty.
    :param wait_for_room: called (publishing thread) when the window is full.
    :param returnable: deque that receives delivery tags of mandatory messages.
    :param returned: dict tag -> exception for messages the broker returned.
    """

    cdef public unsigned int channel
    cdef public Py_ssize_t frame_max
    cdef public Py_ssize_t max_in_flight
    cdef public object queue
    cdef public dict unconfirmed
    # Counters and delivery tags: read-only outside, the Outbox keeps them.
    cdef readonly Py_ssize_t n_submitted
    cdef readonly Py_ssize_t n_done
    cdef readonly unsigned long long tag
    cdef readonly unsigned long long lowest
    cdef public bint wake_pending
    cdef public object closed_error
    cdef object _new_future, _wake, _wait_for_room, _returnable
    cdef dict _returned

    def __init__(self, unsigned int channel, Py_ssize_t frame_max, Py_ssize_t max_in_flight,
                 new_future, wake, wait_for_room, returnable, dict returned):
        self.channel = channel
        self.frame_max = frame_max
        self.max_in_flight = max_in_flight
        self.queue = _deque()
        self.unconfirmed = {}
        self.n_submitted = 0
        self.n_done = 0
        self.tag = 0
        self.lowest = 1
        self.wake_pending = False
        self.closed_error = None
        self._new_future = new_future
        self._wake = wake
        self._wait_for_room = wait_for_room
        self._returnable = returnable
        self._returned = returned

    def submit(self, exchange, routing_key, body, properties=None, bint mandatory=False):
        """Encode and queue one message; return its future (Publisher.publish)."""
        cdef bytes props, frames
        cdef object args, future
        if self.closed_error is not None:
            raise self.closed_error
        props = EMPTY_PROPERTIES if properties is None else encode_properties(properties)
        frame_max = self.frame_max
        frames = encode_publish(self.channel, frame_max, exchange, routing_key, body,
                                props, mandatory)
        if mandatory or len(frames) > MIN_FRAME_MAX:
            # Kept to match a basic.return or to re-encode: a copy of a
            # buffer the caller may reuse (or release) once this returns.
            if isinstance(body, str):
                body = PyUnicode_AsUTF8String(body)  # len() counts bytes
            elif type(body) is not bytes:
                body = bytes(body)
            args = (exchange, routing_key, body, props, mandatory, frame_max)
        else:
            args = None
        if self.n_submitted - self.n_done >= self.max_in_flight:
            self._wait_for_room()
        future = self._new_future()
        # Queued before counted: a flush() that runs in between (a signal
        # handler, another thread) never waits for a message not yet queued.
        self.queue.append((future, frames, args))
        self.n_submitted += 1
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

    def take(self, bint confirms):
        """Dequeue everything; return (bytes to write, futures sent unconfirmed).

        A message encoded for another frame_max is encoded again; one whose
        header no longer fits a frame is not sent: its future fails with
        the ValueError and it counts as done.
        """
        cdef list frames = [], sent = []
        cdef tuple msg, args
        cdef object queue = self.queue
        cdef unsigned long long tag = self.tag
        cdef Py_ssize_t frame_max = self.frame_max
        popleft = queue.popleft
        while queue:
            msg = popleft()
            if msg[2] is not None:
                args = msg[2]
                if args[5] != frame_max:
                    # Encoded for another frame_max than this connection's:
                    # split the body again; a header that no longer fits a
                    # frame would make the broker close the connection each
                    # time it is sent, so its message fails here instead.
                    try:
                        msg = (msg[0], encode_publish(self.channel, frame_max, *args[:5]),
                               args[:5] + (frame_max,))
                    except ValueError as exc:
                        msg[0]._resolve(exc)
                        self.n_done += 1
                        continue
                if args[4] and confirms:
                    self._returnable.append(tag + 1)
            frames.append(msg[1])
            if confirms:
                tag += 1
                self.unconfirmed[tag] = msg
            else:
                sent.append(msg[0])
        self.tag = tag
        return b"".join(frames), sent

    def confirm(self, unsigned long long tag, bint multiple, bint nack, on_failed):
        """Settle the messages a basic.ack/nack covers; return how many.

        Acked messages not in `returned` are resolved here; the others go
        to ``on_failed(tag, msg, nack)``, which returns true when it keeps
        the message for another attempt: such a message is not settled
        (not counted, not in n_done).
        """
        cdef dict unconfirmed = self.unconfirmed
        cdef dict returned = self._returned
        cdef unsigned long long t, first, last
        cdef Py_ssize_t n = 0
        cdef object msg
        if multiple:
            first = self.lowest
            last = tag
            if tag + 1 > self.lowest:
                self.lowest = tag + 1
        else:
            first = last = tag
        t = first
        while t <= last:
            msg = unconfirmed.pop(t, None)
            if msg is not None:
                if nack or (returned and t in returned):
                    if not on_failed(t, msg, nack):
                        n += 1
                else:
                    (<tuple>msg)[0]._resolve()
                    n += 1
            t += 1
        while self.lowest <= self.tag and self.lowest not in unconfirmed:
            self.lowest += 1
        self.n_done += n
        return n

    def settle(self, Py_ssize_t n):
        """Count `n` messages the caller resolved (sent without confirms, or failed) as done.

        They leave the window: flush() stops waiting for them and
        submit() has room for as many more. No upper bound is checked: a
        message another thread has queued but not yet counted may already
        be settled here.

        :raises ValueError: `n` is negative.
        """
        if n < 0:
            raise ValueError("cannot settle %d messages" % n)
        self.n_done += n

    def take_unconfirmed(self):
        """Return the unconfirmed messages in tag order and forget them."""
        cdef list msgs = [self.unconfirmed[t] for t in sorted(self.unconfirmed)]
        self.unconfirmed.clear()
        return msgs

    def reset_tags(self):
        """A new channel: the broker numbers deliveries from 1 again."""
        self.tag = 0
        self.lowest = 1
