"""fastio.EventLoop's names: the class, its policy, new_event_loop(), run(),
asyncio's loop_factory, and the fallback without the extension."""

import asyncio
import os
import subprocess
import sys

import pytest

import fastio
from fastio import _aio


async def _which_loop():
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_event_loop_is_an_asyncio_loop():
    loop = fastio.new_event_loop()
    try:
        assert type(loop) is fastio.EventLoop
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert isinstance(loop, fastio.SelectorEventLoop)
    finally:
        loop.close()


def test_event_loop_is_compiled_when_the_extension_is():
    if fastio.IMPLEMENTATION == "cython":
        assert fastio.EventLoop is not fastio.SelectorEventLoop
        assert fastio.EventLoop._run_once is not asyncio.SelectorEventLoop._run_once
    else:
        assert fastio.EventLoop is fastio.SelectorEventLoop


def test_selector_event_loop_is_asyncio_over_a_fastio_selector():
    import fastio.selectors

    loop = fastio.SelectorEventLoop()
    try:
        assert type(loop._selector) is fastio.selectors.DefaultSelector
        assert loop._run_once.__func__ is asyncio.SelectorEventLoop._run_once
    finally:
        loop.close()


def test_run_runs_on_event_loop_and_returns_result():
    assert fastio.run(_which_loop()) is fastio.EventLoop

    async def fail():
        raise LookupError("x")

    with pytest.raises(LookupError):
        fastio.run(fail())


def _policy_loop():
    return asyncio.get_event_loop_policy()._local._loop


def test_run_makes_its_loop_the_current_one_as_asyncio_run_does():
    # The policy's get_event_loop() finds the running loop (and child
    # watchers attach to it) while main runs; it is unset afterwards.
    async def current():
        return asyncio.get_event_loop_policy().get_event_loop() is asyncio.get_running_loop()

    seen = {}
    for run in (asyncio.run, fastio.run):
        inside = run(current())
        seen[run] = (inside, _policy_loop())
    assert seen[fastio.run] == seen[asyncio.run] == (True, None)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="child watchers are deprecated on 3.12+")
def test_run_attaches_a_child_watcher_as_asyncio_run_does():
    async def child():
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        return await asyncio.wait_for(proc.wait(), 30)

    watcher = asyncio.SafeChildWatcher()
    asyncio.set_child_watcher(watcher)
    try:
        assert fastio.run(child()) == 0
    finally:
        asyncio.set_child_watcher(None)
        watcher.close()


def test_run_from_a_running_loop_fails_before_making_a_loop(recwarn, monkeypatch):
    made = []
    new_event_loop = _aio.new_event_loop
    monkeypatch.setattr(_aio, "new_event_loop", lambda: made.append(1) or new_event_loop())

    async def nested():
        coro = _which_loop()
        try:
            with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
                fastio.run(coro)
        finally:
            coro.close()

    asyncio.run(nested())
    assert not made
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_run_debug_flag():
    async def debug():
        return asyncio.get_running_loop().get_debug()

    assert fastio.run(debug(), debug=True) is True


def test_policy_makes_event_loop_the_default():
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(fastio.EventLoopPolicy())
    try:
        assert isinstance(asyncio.get_event_loop_policy(), asyncio.DefaultEventLoopPolicy)
        assert asyncio.run(_which_loop()) is fastio.EventLoop
        loop = asyncio.new_event_loop()
        assert type(loop) is fastio.EventLoop
        loop.close()
    finally:
        asyncio.set_event_loop_policy(old)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_asyncio_runner_with_loop_factory():
    with asyncio.Runner(loop_factory=fastio.new_event_loop) as runner:
        assert runner.run(_which_loop()) is fastio.EventLoop
        assert type(runner.get_loop()) is fastio.EventLoop


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_loop_factory():
    assert asyncio.run(_which_loop(), loop_factory=fastio.new_event_loop) is fastio.EventLoop


def test_import_fastio_does_not_import_asyncio():
    code = "import sys, fastio; fastio.IMPLEMENTATION; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fallback_without_extension_is_selector_event_loop():
    code = (
        "import asyncio, fastio\n"
        "async def main():\n"
        "    r, w = await asyncio.open_connection(*srv)\n"
        "    w.write(b'hi'); await w.drain(); got = await r.read(2); w.close()\n"
        "    return got\n"
        "async def serve():\n"
        "    global srv\n"
        "    async def h(r, w):\n"
        "        w.write(await r.read(2)); await w.drain(); w.close()\n"
        "    s = await asyncio.start_server(h, '127.0.0.1', 0)\n"
        "    srv = s.sockets[0].getsockname()\n"
        "    got = await main(); s.close(); await s.wait_closed()\n"
        "    return type(asyncio.get_running_loop()), got\n"
        "cls, got = fastio.run(serve())\n"
        "print(fastio.IMPLEMENTATION, cls is fastio.EventLoop is fastio.SelectorEventLoop,"
        " type(fastio.new_event_loop()).__name__, got)\n"
    )
    env = dict(os.environ, FASTIO_NO_EXTENSIONS="1")
    env.pop("FASTIO_REQUIRE_EXTENSIONS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True, timeout=60)
    assert out.stdout.split() == ["python", "True", "SelectorEventLoop", "b'hi'"]


def test_policy_loop_factory_attribute():
    assert fastio.EventLoopPolicy._loop_factory is fastio.EventLoop
    assert _aio.EventLoopPolicy is fastio.EventLoopPolicy


@pytest.mark.parametrize("cls", ["EventLoop", "SelectorEventLoop"])
def test_backend_says_what_the_loop_waits_with(cls):
    import selectors

    from fastio import _pollers

    make = getattr(fastio, cls)
    cases = [({}, "epoll" if hasattr(selectors, "EpollSelector") else _pollers.fallback_name()),
             ({"backend": "poll"}, "poll"), ({"backend": "select"}, "select"),
             ({"selector": selectors.SelectSelector()}, "select")]
    poller, _ = _pollers.uring_poller()
    if poller is not None:
        poller.close()
        cases.append(({"backend": "io_uring"}, "io_uring"))
    for kwargs, backend in cases:
        loop = make(**kwargs)
        try:
            assert loop.backend == backend, kwargs
        finally:
            loop.close()
        assert loop.backend == backend  # still known once closed
