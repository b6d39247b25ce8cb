"""Where file contents come from: memory, an on-disk cache, or a ranged GET in a pack.

Concurrent requests for one chunk share a single fetch. Decoded chunks stay in
a small memory LRU (the kernel's page cache holds what was read; this one only
serves the reads that cut across a chunk and the readahead); the stored (still encrypted) bytes of chunks fetched from a
remote store, or from a cold pack, are kept in a size-bounded on-disk LRU so
plaintext never lands on the cache disk. A full cache disk turns the disk
cache off with one warning; reads go on.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
from collections import OrderedDict

import trio

from coldvault.index.ids import BlobId
from coldvault.vault.vault import LRU, Vault

log = logging.getLogger(__name__)


class DiskCache:
    """Stored blobs as files ``<dir>/<2 hex>/<blob id hex>``, evicted least recently used first."""

    def __init__(self, directory: str, max_bytes: int):
        self.dir = directory
        self.max_bytes = max_bytes
        self.enabled = max_bytes > 0
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()
        if self.enabled:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self._load()

    def _load(self) -> None:
        found = []
        for dirpath, _, files in os.walk(self.dir):
            for f in files:
                p = os.path.join(dirpath, f)
                if f.startswith(".tmp"):
                    os.unlink(p)
                    continue
                try:
                    st = os.stat(p)
                except FileNotFoundError:
                    continue
                found.append((st.st_atime, f, st.st_size))
        for _, name, size in sorted(found):
            self._lru[name] = size
            self._total += size
        self._evict()

    def _path(self, key: str) -> str:
        return os.path.join(self.dir, key[:2], key)

    def get(self, bid: BlobId) -> bytes | None:
        if not self.enabled:
            return None
        key = bid.hex()
        with self._lock:
            if key not in self._lru:
                return None
            self._lru.move_to_end(key)
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except OSError:
            with self._lock:
                self._total -= self._lru.pop(key, 0)
            return None

    def put(self, bid: BlobId, data: bytes) -> None:
        if not self.enabled or len(data) > self.max_bytes:
            return
        key = bid.hex()
        path = self._path(key)
        tmp = os.path.join(self.dir, f".tmp-{threading.get_ident()}")
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                log.warning("chunk cache %s: %s; caching in memory only from now on", self.dir, exc.strerror)
                self.enabled = False
                return
            raise
        with self._lock:
            if key not in self._lru:
                self._lru[key] = len(data)
                self._total += len(data)
            self._evict()

    def _evict(self) -> None:
        while self._total > self.max_bytes and self._lru:
            key, size = self._lru.popitem(last=False)
            self._total -= size
            try:
                os.unlink(self._path(key))
            except OSError:
                pass


class _Pending:
    __slots__ = ("event", "value", "error")

    def __init__(self):
        self.event = trio.Event()
        self.value = None
        self.error = None


class ChunkSource:
    """Decoded chunks by id, fetched at most once at a time each."""

    def __init__(self, vault: Vault, disk: DiskCache | None, memory_bytes: int = 32 * 1024 * 1024,
                 concurrency: int = 8, cache_pack=lambda pack_name: True):
        self.vault = vault
        self.disk = disk
        self.memory = LRU(memory_bytes)
        self.limiter = trio.CapacityLimiter(concurrency)
        self._pending: dict[bytes, _Pending] = {}
        self._cache_pack = functools.lru_cache(maxsize=65536)(cache_pack)  # asked once per pack

    def cached(self, bid: BlobId) -> bytes | None:
        return self.memory.get(bid)

    async def get(self, bid: BlobId) -> bytes:
        data = self.memory.get(bid)
        if data is not None:
            return data
        p = self._pending.get(bid)
        if p is not None:
            await p.event.wait()
            if p.error is not None:
                raise p.error
            return p.value
        p = self._pending[bid] = _Pending()
        try:
            p.value = await trio.to_thread.run_sync(self._fetch, bid, limiter=self.limiter)
            self.memory.put(bid, p.value)
            return p.value
        except BaseException as exc:
            p.error = exc
            raise
        finally:
            del self._pending[bid]
            p.event.set()

    def _fetch(self, bid: BlobId) -> bytes:
        loc = self.vault.locate(bid, "chunk")
        stored = self.disk.get(bid) if self.disk is not None else None
        if stored is None:
            stored = self.vault.get_range(loc.object_name, loc.offset, loc.length)
            if self.disk is not None and self._cache_pack(loc.object_name):
                self.disk.put(bid, stored)
        return self.vault.decode_stored(stored, bid, loc)
