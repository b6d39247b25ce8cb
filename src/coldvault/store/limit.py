"""One concurrency limit per store, as a wrapper: never more requests in flight than it serves.

`LimitedStore` holds a `threading.BoundedSemaphore` sized by the inner store's
``capabilities().connections`` (S3: its HTTP connection pool) and takes one token
for each call, so however many threads and pools the callers run, the inner
store never sees more than that many requests at once. Callers still size their
own pools by the same figure (more threads than tokens only wait).

The stack is built once, in `coldvault.store.url.stack`: inner store, this
limit, then `RetryingStore` outermost, as restic stacks its ``sema`` and
``retry`` backends: a call waiting out a retry's backoff holds no token.

Calls on names under `unlimited` prefixes take no token (the vault's lock
objects: a lock refresh never waits behind data transfers, which could make a
busy holder's lock look stale). A listing is collected whole while the token
is held, so no token stays taken while a caller iterates (and makes other calls).

A trio caller runs these blocking calls in worker threads (`store.aio`): a
thread waiting here waits only for a request in flight to end, and a request in
flight never waits for trio, so the two limits cannot deadlock.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator, TypeVar

from coldvault.store.base import Capabilities, ObjectInfo, Store

T = TypeVar("T")


class LimitedStore(Store):
    """`inner` with at most `inner.capabilities().connections` calls in flight."""

    def __init__(self, inner: Store, unlimited: tuple[str, ...] = ()):
        self.inner = inner
        self.url = inner.url
        self.connections = inner.capabilities().connections
        if self.connections < 1:
            raise ValueError("a store serves at least one connection")
        self.unlimited = unlimited
        self._tokens = threading.BoundedSemaphore(self.connections)

    def _call(self, name: str | None, fn: Callable[..., T], *args) -> T:
        if self.unlimited and name is not None and name.startswith(self.unlimited):
            return fn(*args)
        with self._tokens:
            return fn(*args)

    def put(self, name, data, storage_class=None):
        self._call(name, self.inner.put, name, data, storage_class)

    def get(self, name, start=0, length=None):
        return self._call(name, self.inner.get, name, start, length)

    def head(self, name):
        return self._call(name, self.inner.head, name)

    def list(self, prefix="") -> Iterator[ObjectInfo]:
        return iter(self._call(None, lambda: list(self.inner.list(prefix))))

    def delete(self, name):
        self._call(name, self.inner.delete, name)

    def restore(self, name, days=7, tier="Bulk"):
        return self._call(name, self.inner.restore, name, days, tier)

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def create_bucket_if_missing(self):
        return self._call(None, self.inner.create_bucket_if_missing)

    def discard_partial_writes(self):
        return self._call(None, self.inner.discard_partial_writes)

    def close(self):
        self.inner.close()
