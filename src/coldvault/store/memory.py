"""In-memory store for unit tests, with the simulated cold tier."""

from __future__ import annotations

import threading
import time

from coldvault.store.base import (
    HOT_CLASS,
    ArchivedError,
    Capabilities,
    NotFoundError,
    ObjectInfo,
    RestoreInProgressError,
    Store,
    is_cold_class,
)
from coldvault.store.coldsim import ColdRecord


class MemoryStore(Store):
    def __init__(self, restore_delay: float = 0.0):
        self.url = "memory://"
        self.restore_delay = restore_delay
        self._objects: dict[str, tuple[bytes, ColdRecord, float]] = {}
        self._lock = threading.Lock()

    def capabilities(self) -> Capabilities:
        return Capabilities(simulated_restore_delay=self.restore_delay, local_reads=True)

    def put(self, name, data, storage_class=None):
        with self._lock:
            self._objects[name] = (bytes(data), ColdRecord(storage_class or HOT_CLASS), time.time())

    def _entry(self, name):
        try:
            return self._objects[name]
        except KeyError:
            raise NotFoundError(f"object {name} does not exist", name) from None

    def get(self, name, start=0, length=None):
        with self._lock:
            data, cold, _ = self._entry(name)
            state = cold.state(self.restore_delay)
        if is_cold_class(cold.storage_class) and state.status != "restored":
            if state.status == "in-progress":
                raise RestoreInProgressError(f"object {name} is being restored", name)
            raise ArchivedError(f"object {name} is in {cold.storage_class} and must be restored first", name)
        end = None if length is None else start + length
        return data[start:end]

    def head(self, name):
        with self._lock:
            data, cold, mtime = self._entry(name)
            return ObjectInfo(name, len(data), cold.storage_class, cold.state(self.restore_delay), mtime)

    def list(self, prefix=""):
        with self._lock:
            items = [(n, e) for n, e in self._objects.items() if n.startswith(prefix)]
        for name, (data, cold, mtime) in items:
            yield ObjectInfo(name, len(data), cold.storage_class, cold.state(self.restore_delay), mtime)

    def delete(self, name):
        with self._lock:
            self._objects.pop(name, None)

    def restore(self, name, days=7, tier="Bulk"):
        with self._lock:
            _, cold, _ = self._entry(name)
            if not is_cold_class(cold.storage_class):
                return False
            return cold.request(days, tier, self.restore_delay)
