"""Type stubs for the compiled echo protocol core, fastio._impl.echo_c."""

from typing import Any

class EchoCore:
    _transport: Any
    _upper: bool
    _draining: bool
    _in: int
    def data_received(self, data: bytes) -> None: ...

class BenchCore:
    done: int
    cold: int
    outstanding: int
    sending: bool
    latency_count: int
    def __init__(self, poller: Any, size: int, pipeline: int, send_ring: bytes, expect_ring: bytes,
                 ring_len: int, recv_size: int, drop: Any) -> None: ...
    def add(self, sock: Any) -> None: ...
    def clock(self) -> float: ...
    def latencies(self, start: int, end: int) -> list[float]: ...
    def step(self, timeout: float) -> float: ...
    def fail(self, fd: int, why: str) -> None: ...
    def cold_fds(self) -> list[int]: ...
    def pending(self) -> list[tuple[int, int]]: ...

def uring_status() -> tuple[str | None, str | None]: ...
def _uring_fake_errno(err: int) -> None: ...

class UringEcho:
    drain_timeout: float
    stop_requested: bool
    nconns: int
    connections: int
    bytes_in: int
    bytes_out: int
    accept_errors: int
    enters: int
    recvs: int
    sends: int
    copies: int
    mode: str | None
    open_bytes_in: int
    def __init__(self, listen_fd: int, wake_fd: int, *, upper: bool = ..., max_conns: int = ...,
                 high_water: int = ..., drain_timeout: float = ..., mode: str = ..., entries: int = ...,
                 nbufs: int = ..., bufsize: int = ...) -> None: ...
    def setup(self) -> None: ...
    def run(self) -> None: ...
    def request_stop(self) -> None: ...
