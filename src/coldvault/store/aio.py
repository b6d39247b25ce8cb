"""Async face of a blocking store: every call runs in a worker thread.

The limit on requests is the store stack's own (store.limit, one semaphore per
store, shared with every synchronous caller). `thread_limiter` sizes the trio
side by the same figure, so trio never starts more worker threads for a store
than it has connections: a thread that does wait on the semaphore waits only
for a request in flight (which never waits for trio), so the two cannot
deadlock, and no second limit smaller than the pool throttles the async side.
"""

from __future__ import annotations

import trio

from coldvault.store.base import ObjectInfo, Store


def thread_limiter(store: Store) -> trio.CapacityLimiter:
    """A limiter for the worker threads that call `store`: one per connection it serves."""
    return trio.CapacityLimiter(store.capabilities().connections)


class AsyncStore:
    def __init__(self, store: Store):
        self.store = store
        self.limiter = thread_limiter(store)

    async def _run(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter, abandon_on_cancel=False)

    async def put(self, name: str, data: bytes, storage_class: str | None = None) -> None:
        await self._run(self.store.put, name, data, storage_class)

    async def get(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        return await self._run(self.store.get, name, start, length)

    async def head(self, name: str) -> ObjectInfo:
        return await self._run(self.store.head, name)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return await self._run(lambda: list(self.store.list(prefix)))

    async def delete(self, name: str) -> None:
        await self._run(self.store.delete, name)

    async def restore(self, name: str, days: int = 7, tier: str = "Bulk") -> bool:
        return await self._run(self.store.restore, name, days, tier)
