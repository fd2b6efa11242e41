"""Type stubs for fastio._impl.amqp_c (basic.publish frames, confirms, the Publisher's outbox)."""

from typing import Any, Callable, Deque, Dict, FrozenSet, List, Optional, Tuple, Union

EMPTY_PROPERTIES: bytes
PROPERTY_NAMES: FrozenSet[str]

def coerce_properties(properties: Any) -> Any: ...
def encode_properties(properties: Any) -> bytes: ...

def encode_publish(channel: int, frame_max: int, exchange: Union[str, bytes],
                   routing_key: Union[str, bytes], body: Any,
                   properties: bytes = ..., mandatory: bool = ...) -> bytes: ...

def split_confirms(data: Any, channel: int
                   ) -> Tuple[int, List[Union[bytes, Tuple[int, bool, bool]]]]: ...

class Outbox:
    channel: int
    frame_max: int
    max_in_flight: int
    queue: Deque[Tuple[Any, bytes, Optional[tuple]]]
    unconfirmed: Dict[int, Tuple[Any, bytes, Optional[tuple]]]
    n_submitted: int
    n_done: int
    tag: int
    lowest: int
    wake_pending: bool
    closed_error: Optional[BaseException]
    def __init__(self, channel: int, frame_max: int, max_in_flight: int,
                 new_future: Callable[[], Any], wake: Callable[[], None],
                 wait_for_room: Callable[[], None], returnable: Deque[int],
                 returned: Dict[int, BaseException]) -> None: ...
    def submit(self, exchange: Union[str, bytes], routing_key: Union[str, bytes],
               body: Any, properties: Any = ..., mandatory: bool = ...) -> Any: ...
    def take(self, confirms: bool) -> Tuple[bytes, List[Any]]: ...
    def confirm(self, tag: int, multiple: bool, nack: bool,
                on_failed: Callable[[int, Any, bool], Optional[bool]]) -> int: ...
    def take_unconfirmed(self) -> List[Tuple[Any, bytes, Optional[tuple]]]: ...
    def reset_tags(self) -> None: ...
