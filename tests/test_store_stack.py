"""The one store stack (store.url.stack): store, one concurrency limit, retry outermost.

A counting store stands at the bottom (a real MemoryStore underneath, which
says it serves only a few connections) and records how many requests it has in
flight at once; many threads, pools and trio tasks call the stack on top.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import trio

from coldvault.store.aio import AsyncStore
from coldvault.store.base import Capabilities, TransientError
from coldvault.store.limit import LimitedStore
from coldvault.store.memory import MemoryStore
from coldvault.store.retry import RetryingStore
from coldvault.store.url import UNLIMITED_PREFIXES, open_store, stack
from coldvault.vault import lock


class CountingStore(MemoryStore):
    """A memory store that serves `connections` requests at once, and counts those in flight.

    After `hold()`, each request waits for a permit (`let_go`); `failures` makes the first
    GETs of a name fail as a connection would (TransientError)."""

    def __init__(self, connections: int):
        super().__init__()
        self.connections = connections
        self.in_flight = 0
        self.most = 0
        self.calls = 0
        self.finished = 0
        self.changed = threading.Condition()
        self.permits: threading.Semaphore | None = None
        self.failures: dict[str, int] = {}

    def hold(self) -> None:
        self.permits = threading.Semaphore(0)

    def let_go(self, n: int) -> None:
        self.permits.release(n)

    def capabilities(self) -> Capabilities:
        return Capabilities(simulated_restore_delay=0.0, local_reads=True, connections=self.connections)

    def _counted(self, fn, *args):
        with self.changed:
            self.in_flight += 1
            self.calls += 1
            self.most = max(self.most, self.in_flight)
            self.changed.notify_all()
        try:
            if self.permits is not None:
                assert self.permits.acquire(timeout=30)
            return fn(*args)
        finally:
            with self.changed:
                self.in_flight -= 1
                self.finished += 1
                self.changed.notify_all()

    def get(self, name, start=0, length=None):
        def get():
            if self.failures.get(name):
                self.failures[name] -= 1
                raise TransientError(f"connection reset reading {name}", name)
            return MemoryStore.get(self, name, start, length)

        return self._counted(get)

    def put(self, name, data, storage_class=None):
        return self._counted(MemoryStore.put, self, name, data, storage_class)

    def head(self, name):
        return self._counted(MemoryStore.head, self, name)

    def wait_for(self, predicate) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout=30), "the store never got there"


def test_open_store_builds_the_stack_and_capabilities_pass_through(tmp_path):
    store = open_store(str(tmp_path / "vault"), restore_delay=1.5)
    assert isinstance(store, RetryingStore) and isinstance(store.inner, LimitedStore)
    assert store.capabilities() == Capabilities(simulated_restore_delay=1.5, local_reads=True)
    assert store.inner.connections == store.capabilities().connections
    counting = CountingStore(connections=3)
    assert stack(counting).capabilities().connections == 3
    # The lock objects are the ones the limit lets through (see below).
    assert lock.PREFIX in UNLIMITED_PREFIXES


def test_many_callers_never_exceed_the_connections():
    """40 threads at once, and a pool larger than the store: at most `connections` requests
    reach the store at any moment, and every one of them is served."""
    inner = CountingStore(connections=3)
    for i in range(40):
        inner.put(f"data/{i:02d}", bytes([i]) * 10)
    inner.most = inner.calls = inner.finished = 0
    store = stack(inner)
    inner.hold()
    with ThreadPoolExecutor(40) as pool:
        futures = [pool.submit(store.get, f"data/{i:02d}") for i in range(40)]
        while inner.finished < 40:
            # Hold the requests back until as many are in flight as could be, then let them go.
            inner.wait_for(lambda: inner.in_flight >= min(3, 40 - inner.finished))
            assert inner.in_flight <= 3
            done = inner.finished + inner.in_flight
            inner.let_go(inner.in_flight)
            inner.wait_for(lambda: inner.finished == done)
        results = [f.result() for f in futures]
    assert results == [bytes([i]) * 10 for i in range(40)]
    assert inner.most == 3 and inner.calls == 40


def test_a_retry_waiting_out_its_backoff_holds_no_connection():
    """Retry outside the limit: while one call waits to try again, another uses the only
    connection; then the first is retried and succeeds."""
    inner = CountingStore(connections=1)
    inner.put("data/a", b"A")
    inner.put("data/b", b"B")
    inner.failures["data/a"] = 1
    backing_off = threading.Event()
    resume = threading.Event()

    def sleep(seconds):
        backing_off.set()
        assert resume.wait(30)

    store = stack(inner, attempts=3, sleep=sleep)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(store.get, "data/a")
        assert backing_off.wait(30)
        assert pool.submit(store.get, "data/b").result(timeout=30) == b"B"  # the connection is free meanwhile
        resume.set()
        assert first.result() == b"A"
    assert inner.most == 1


def test_lock_objects_pass_a_full_limit():
    """A lock refresh never waits behind data transfers that hold every connection."""
    inner = CountingStore(connections=2)
    inner.put("data/x", b"x")
    store = stack(inner)
    inner.hold()
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(store.get, "data/x") for _ in range(2)]
        inner.wait_for(lambda: inner.in_flight == 2)
        refresh = threading.Thread(target=store.put, args=(lock.PREFIX + "abc", b"lock"))
        refresh.start()
        inner.wait_for(lambda: inner.in_flight == 3)  # it got through, past the two held GETs
        inner.let_go(3)
        refresh.join()
        assert [f.result() for f in held] == [b"x", b"x"]


def test_async_and_thread_callers_share_one_limit():
    """Trio tasks (through AsyncStore, whose worker threads may wait on the stack's limit)
    and plain threads at the same time: no deadlock, never more than `connections`."""
    inner = CountingStore(connections=4)
    for i in range(30):
        inner.put(f"data/{i:02d}", bytes([i]))
    store = stack(inner)
    got: dict[str, bytes] = {}

    def slow_get(name):
        data = store.get(name)
        time.sleep(0.001)  # overlap the callers a little; nothing is measured
        return data

    async def main():
        astore = AsyncStore(store)
        assert astore.limiter.total_tokens == 4

        async def one(name):
            got[name] = await astore.get(name)

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, f"data/{i:02d}")
            await trio.to_thread.run_sync(lambda: [slow_get(f"data/{i:02d}") for i in range(30)])

    with ThreadPoolExecutor(8) as pool:
        threads = [pool.submit(slow_get, f"data/{i % 30:02d}") for i in range(60)]
        trio.run(main)
        assert [f.result() for f in threads] == [bytes([i % 30]) for i in range(60)]
    assert got == {f"data/{i:02d}": bytes([i]) for i in range(30)}
    assert 1 <= inner.most <= 4


def test_a_listing_holds_no_connection_while_it_is_iterated():
    """A caller that makes other calls while it walks a listing cannot starve itself."""
    inner = CountingStore(connections=1)
    for i in range(3):
        inner.put(f"data/{i}", b"x")
    store = LimitedStore(inner)
    names = []
    for info in store.list("data/"):
        assert store.get(info.name) == b"x"  # would wait forever if the listing held the token
        names.append(info.name)
    assert sorted(names) == ["data/0", "data/1", "data/2"]


@pytest.mark.parametrize("connections", [0, -1])
def test_a_store_serves_at_least_one_connection(connections):
    with pytest.raises(ValueError):
        LimitedStore(CountingStore(connections))
