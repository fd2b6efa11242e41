"""The loop's Transport is one cold half and two hot twins.

fastio._transport.TransportMixin holds every transport method that runs a
few times per connection; fastio._impl.loop_c.TransportCore (compiled) and
fastio._impl.loop_py.TransportCore (pure Python) hold only recv/send/flow control
and the hooks the mixin drives. These tests keep it that way: a cold method
defined again in a core would shadow nothing (the mixin comes first in the
MRO) but would be dead code drifting from the live one.
"""

import socket

import pytest

import implementations
from fastio._transport import TransportMixin

COLD = [
    "_start", "close", "abort", "is_closing", "_fatal_error", "_force_close",
    "_call_connection_lost", "writelines", "write_eof", "_shutdown_write", "can_write_eof",
    "get_write_buffer_size", "get_write_buffer_limits", "set_write_buffer_limits",
    "pause_reading", "resume_reading", "is_reading", "get_extra_info", "get_protocol",
    "set_protocol", "__repr__",
]
HOOKS = ["write", "_set_reading", "_set_writing", "_set_protocol", "_set_write_buffer_limits"]


@pytest.fixture
def mod(implementation):
    """The loop pair's module: compiled, then the Python twin."""
    return implementations.pair(implementation, "loop")


def test_transport_is_the_mixin_over_the_core(mod):
    assert mod.Transport.__mro__[1:3] == (TransportMixin, mod.TransportCore)


@pytest.mark.parametrize("name", COLD)
def test_cold_method_is_defined_once_in_the_mixin(mod, name):
    assert name in vars(TransportMixin)
    assert name not in vars(mod.TransportCore)
    assert getattr(mod.Transport, name) is getattr(TransportMixin, name)


@pytest.mark.parametrize("name", HOOKS)
def test_core_provides_what_the_mixin_drives(mod, name):
    assert callable(getattr(mod.TransportCore, name))


def test_cores_have_the_same_public_methods():
    cores = [implementations.pair(impl, "loop").TransportCore for impl in ("c", "py")]
    public = [{n for n in dir(core) if not n.startswith("_")} for core in cores]
    assert public[0] == public[1] == {"max_size", "write"}


def test_limits_set_through_the_mixin_pause_a_full_buffer(implementation):
    # set_write_buffer_limits (mixin) must reach the core's flow control:
    # lowering the high-water mark under what is buffered pauses at once.
    loop = implementations.loop_class(implementation)()
    a, b = socket.socketpair()
    a.setblocking(False)
    calls = []

    class Proto:
        def connection_made(self, transport):
            pass

        def pause_writing(self):
            calls.append("pause")

        def resume_writing(self):
            calls.append("resume")

        def connection_lost(self, exc):
            calls.append(("lost", exc))

    try:
        transport = loop.transport_class(loop, a, Proto(), {})
        transport._start()
        chunk = b"x" * 65536
        while not transport.get_write_buffer_size():
            transport.write(chunk)
        assert calls == []  # at most 64 KiB buffered: not above the default mark
        transport.set_write_buffer_limits(high=0)
        assert transport.get_write_buffer_limits() == (0, 0)
        assert calls == ["pause"]
        transport.abort()
        assert transport.is_closing()
        assert transport.get_extra_info("dropped_bytes") > 0
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert calls == ["pause", ("lost", None)]
        assert transport.get_protocol() is None
    finally:
        loop.close()
        b.close()
