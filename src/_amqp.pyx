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

fastio._pyamqp is the pure-Python twin; tests fuzz both against pika.
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
    :raises ValueError: a short string longer than 255 bytes, or a
        frame_max too small to carry a body byte.
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
