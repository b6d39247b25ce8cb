"""Where file contents come from: memory, an on-disk cache, or a ranged GET in a pack.

Concurrent requests for one chunk share a single fetch. Decoded chunks stay in
a small memory LRU (the kernel's page cache holds what was read; this one only
serves the reads that cut across a chunk and the readahead); the stored (still encrypted) bytes of chunks fetched from a
remote store, or from a cold pack, are kept in a size-bounded on-disk LRU so
plaintext never lands on the cache disk. A full cache disk turns the disk
cache off with one warning; reads go on. A cached copy that does not decode
(a bad disk, a torn write) is dropped and the chunk read from the vault again.

Several mounts of one vault may share one cache directory: each writes through
its own temporary names (``.tmp-<pid>-<thread>-<key>``) and, when it starts,
removes only temporary files whose writer is gone (or that are an hour old).
Each keeps its own account of the cache's size; a file another mount evicted
is simply fetched again. Files are 0600 and directories 0700.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
import time
from collections import OrderedDict

import trio

from coldvault import privatefiles
from coldvault.errors import DamagedError
from coldvault.index.ids import BlobId
from coldvault.store.aio import thread_limiter
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
            privatefiles.makedirs(directory)
            self._load()

    def _load(self) -> None:
        found = []
        now = time.time()
        for dirpath, _, files in os.walk(self.dir):
            for f in files:
                p = os.path.join(dirpath, f)
                try:
                    st = os.stat(p)
                except FileNotFoundError:
                    continue
                if f.startswith(privatefiles.TMP_PREFIX):
                    # Another mount sharing this directory may be writing it right now.
                    if privatefiles.abandoned(f, st.st_mtime, now):
                        try:
                            os.unlink(p)
                        except FileNotFoundError:
                            pass
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
        tmp = os.path.join(self.dir, privatefiles.temp_name(key))
        try:
            privatefiles.makedirs(os.path.dirname(path))
            with os.fdopen(privatefiles.create(tmp), "wb") as f:
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
            else:  # e.g. another mount sharing the directory removed an old temporary file
                log.warning("chunk cache %s: could not keep chunk %s: %s", self.dir, key[:16], exc)
            return
        with self._lock:
            if key not in self._lru:
                self._lru[key] = len(data)
                self._total += len(data)
            self._evict()

    def discard(self, bid: BlobId) -> None:
        """Forget and delete the cached copy of `bid` (it did not decode)."""
        key = bid.hex()
        with self._lock:
            self._total -= self._lru.pop(key, 0)
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

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
                 cache_pack=lambda pack_name: True):
        self.vault = vault
        self.disk = disk
        self.memory = LRU(memory_bytes)
        self.limiter = thread_limiter(vault.store)
        self._pending: dict[bytes, _Pending] = {}
        self._cache_pack = functools.lru_cache(maxsize=65536)(cache_pack)  # asked once per pack
        # A live mount's index follower (live.Refresher), None in a static mount: a fetch that
        # fails on damage (its pack gone with a prune, say) is tried again if the index changed.
        self.index_sync = None

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
            p.value = await self._fetch_following(bid)
            self.memory.put(bid, p.value)
            return p.value
        except BaseException as exc:
            p.error = exc
            raise
        finally:
            del self._pending[bid]
            p.event.set()

    async def _fetch_following(self, bid: BlobId) -> bytes:
        """Fetch in a worker thread; once more if it failed on damage and a live mount's
        index changed meanwhile (the chunk may be in another pack now)."""
        sync = self.index_sync
        since = sync.generation if sync is not None else 0
        try:
            return await trio.to_thread.run_sync(self._fetch, bid, limiter=self.limiter)
        except DamagedError:
            if sync is None or not await sync.changed_since(since):
                raise
        return await trio.to_thread.run_sync(self._fetch, bid, limiter=self.limiter)

    def _fetch(self, bid: BlobId) -> bytes:
        loc = self.vault.locate(bid, "chunk")
        stored = self.disk.get(bid) if self.disk is not None else None
        if stored is not None:
            try:
                return self.vault.decode_stored(stored, bid, loc)
            except DamagedError as exc:
                log.warning("chunk cache %s: dropping a damaged copy (%s); reading it from the vault again",
                            self.disk.dir, exc)
                self.disk.discard(bid)
        stored = self.vault.get_range(loc.object_name, loc.offset, loc.length)
        data = self.vault.decode_stored(stored, bid, loc)  # only good copies go to the cache
        if self.disk is not None and self._cache_pack(loc.object_name):
            self.disk.put(bid, stored)
        return data
