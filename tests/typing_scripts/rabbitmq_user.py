"""A user's script: every public entry point of fastio.rabbitmq."""

import asyncio
from concurrent.futures import Future
from typing import List, Optional

from fastio.loop import Loop
from fastio.rabbitmq import (AsyncPublisher, Attempt, BackPressureError, ChannelClosedError,
                             CloseTimeoutError, ConnectError, FastioConnection, NackError,
                             PublishError, PublisherClosed, Publisher, UnroutableError)

URL = "amqp://guest:guest@localhost:5672/%2F"


def sync_publish() -> int:
    with Publisher(URL, max_in_flight=100, publish_timeout=1.0, connect_timeout=5.0,
                   close_timeout=10.0, reconnect_delay=(0.1, 1.0), retry_deadline=60.0,
                   max_attempts=5, retry_delay=(0.05, 1.0)) as pub:
        futures: List["Future[None]"] = [
            pub.publish("", "hello", b"body", {"delivery_mode": 2}, mandatory=True)]
        pub.publish("", "hello", "text")
        pub.flush(5.0)
        outstanding: int = pub.outstanding
        for fut in futures:
            try:
                fut.result()
            except UnroutableError as exc:
                code: int = exc.reply_code
                text: str = exc.reply_text
                print(code, text, len(exc.attempts))
            except NackError as exc:
                history: List[Attempt] = exc.attempts
                for attempt in history:
                    when: float = attempt.when
                    address: str = attempt.address
                    outcome: str = attempt.outcome
                    print(when, address, outcome)
            except (ChannelClosedError, PublisherClosed, BackPressureError):
                pass
    pub.close(timeout=1.0)
    return outstanding


def attached(loop: Loop) -> Publisher:
    return Publisher([URL, URL], confirms=False, loop=loop)


async def async_publish() -> None:
    async with AsyncPublisher(URL, max_in_flight=100, connect_timeout=5.0,
                              close_timeout=10.0, retry_deadline=None, max_attempts=3,
                              retry_delay=(0.01, 0.5)) as pub:
        await pub.publish("", "hello", b"body", {"delivery_mode": 2})
        fut: "asyncio.Future[None]" = pub.publish_nowait("", "hello", b"x", mandatory=True)
        await fut
        await pub.flush(1.0)
        n: int = pub.outstanding
        print(n)
    await pub.close()
    pub2 = AsyncPublisher([URL], retry_deadline=30.0)
    await pub2.connect()
    await pub2.close(1.0)


def adapter(loop: Loop) -> FastioConnection:
    def on_open(connection: FastioConnection) -> None:
        connection.close()

    return FastioConnection(on_open_callback=on_open, custom_ioloop=loop)


def errors(exc: Optional[PublishError]) -> str:
    if isinstance(exc, CloseTimeoutError):
        return "%d left" % exc.unconfirmed
    if isinstance(exc, ConnectError):
        return str(exc)
    return ""
