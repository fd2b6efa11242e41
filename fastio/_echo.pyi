"""Type stubs for the compiled echo protocol core, fastio._echo."""

from typing import Any

class EchoCore:
    _transport: Any
    _upper: bool
    _draining: bool
    _in: int
    def data_received(self, data: bytes) -> None: ...
