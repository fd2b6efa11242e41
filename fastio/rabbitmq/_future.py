"""PublishFuture: a concurrent.futures.Future cheap enough for one per message.

A stock Future builds a threading.Condition (an RLock and a Python object)
in __init__ and takes it in set_result, about 2.7 µs per message: more
than everything else the Publisher does for a message together. Most
publish futures are never waited on one by one, so this subclass creates
its condition only when some thread asks for it (result(), wait(),
add_done_callback(), as_completed() all do, through `_condition`) and the
loop thread resolves it without a lock when nobody has.

Why the lock-free resolve is safe: only the Publisher's loop thread ever
resolves, and a PublishFuture starts RUNNING, so cancel() never changes
its state (a message on its way cannot be unsent). The resolver writes
the state and then looks for a condition; a waiter creates the condition
and then reads the state. The GIL orders these accesses, so either the
resolver sees the condition (and notifies under it) or the waiter sees
the final state (and never waits).

This relies on the attributes Future has used since Python 3.8
(_condition, _state, _result, _exception, _waiters, _done_callbacks).
"""

import threading
from concurrent.futures import Future
from concurrent.futures._base import FINISHED, RUNNING
from typing import Any, List, Optional

__all__ = ["PublishFuture", "new_future"]

_create_lock = threading.Lock()


class PublishFuture(Future[None]):
    """The future `Publisher.publish()` returns; a `concurrent.futures.Future`.

    Make one with `new_future()`: Future.__init__ is skipped on purpose.
    """

    # Class-level defaults stand in for what Future.__init__ would set:
    # the lists are created with the condition, because every append to
    # them happens under `with self._condition`.
    _state = RUNNING
    _result = None
    _exception = None
    _waiters: Any = ()
    _done_callbacks: Any = ()
    # The failed attempts (errors.Attempt) of a message the Publisher
    # retries; set on the first failure only, so the hot path pays nothing.
    _attempts: Optional[List[Any]] = None

    def __init__(self) -> None:
        pass

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self.__dict__.get("_cond")
        if cond is None:
            with _create_lock:
                cond = self.__dict__.get("_cond")
                if cond is None:
                    self._waiters = []
                    self._done_callbacks = []
                    cond = self.__dict__["_cond"] = threading.Condition()
        return cond

    def _resolve(self, exc: Optional[BaseException] = None) -> None:
        """Finish with None or with `exc`; loop thread only."""
        self._exception = exc
        cond = self.__dict__.get("_cond")
        if cond is None:
            self._state = FINISHED
            if self.__dict__.get("_cond") is None:
                return
            cond = self.__dict__["_cond"]
        with cond:
            self._state = FINISHED
            for waiter in self._waiters:
                if exc is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            cond.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]


def new_future(_new: Any = object.__new__, _cls: Any = PublishFuture) -> PublishFuture:
    """Return a fresh RUNNING PublishFuture (without running any __init__)."""
    future: PublishFuture = _new(_cls)
    return future
