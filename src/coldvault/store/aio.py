"""Async face of a blocking store: every call runs in a worker thread.

One limiter per store, sized like its connection pool, bounds the calls in
flight; the trio event loop never blocks on I/O.
"""

from __future__ import annotations

import trio

from coldvault.store.base import ObjectInfo, Store


class AsyncStore:
    def __init__(self, store: Store, concurrency: int = 8):
        self.store = store
        self.limiter = trio.CapacityLimiter(concurrency)

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
