"""Type stubs for fastio.selectors: the stdlib's classes plus fastio's extras."""

import selectors as _stdlib
from selectors import EVENT_READ as EVENT_READ
from selectors import EVENT_WRITE as EVENT_WRITE
from selectors import BaseSelector as BaseSelector
from selectors import SelectorKey as SelectorKey
from typing import Any, List, Optional, Tuple

IMPLEMENTATION: str
EPOLLET: int
EPOLLONESHOT: int
EPOLLEXCLUSIVE: int
EPOLLRDHUP: int
EPOLLPRI: int
POLLPRI: int
POLLRDHUP: int

class _FastioSelector(_stdlib._BaseSelectorImpl):
    def register(
        self, fileobj: Any, events: int, data: Any = ..., *, flags: int = ...
    ) -> SelectorKey: ...
    def modify(
        self, fileobj: Any, events: int, data: Any = ..., *, flags: Optional[int] = ...
    ) -> SelectorKey: ...
    def select(self, timeout: Optional[float] = ...) -> List[Tuple[SelectorKey, int]]: ...
    def select_fds(self, timeout: Optional[float] = ...) -> List[Tuple[int, int]]: ...

class SelectSelector(_FastioSelector): ...
class PollSelector(_FastioSelector): ...

class EpollSelector(_FastioSelector):
    def fileno(self) -> int: ...

class UringSelector(_FastioSelector):
    def fileno(self) -> int: ...

DefaultSelector = EpollSelector
