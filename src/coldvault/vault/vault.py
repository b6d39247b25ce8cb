"""Open, create, unlock and read a vault; write indexes and snapshot records.

The methods here block; they are thread-safe and are called from worker
threads by the trio code above (uploader, restore, mount).

Over 400 lines on purpose: the class is the one door between a store and the
format (config, index, snapshots, blobs and trees all share its sealer, caches
and error wording); the jobs built on it already live beside it (walker,
streams, paths, thaw, prune, forget, repair).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from coldvault.errors import (
    BadPasswordError,
    ColdDataError,
    DamagedError,
    NoVaultError,
    UnsupportedFormatError,
    UserError,
)
from coldvault.index import blob as blobfmt
from coldvault.index import config as configfmt
from coldvault.index import keys as keyfmt
from coldvault.index import limits, packindex, snapshot, tree
from coldvault.index.crypto import MasterKeys, Sealer
from coldvault.index.errors import FormatError
from coldvault.index.ids import BlobId, content_id, is_hex_id
from coldvault.index.pack import FinishedPack, object_name
from coldvault.store.base import ArchivedError, NotFoundError, ObjectInfo, RestoreInProgressError, Store
from coldvault.vault import keys as vaultkeys
from coldvault.vault import indexcache
from coldvault.vault.blobindex import BlobIndex, Location

log = logging.getLogger(__name__)

CONFIG = "config"
STREAM_BYTES = 64 * 1024 * 1024  # index objects (bytes as listed) read ahead of the one being merged
INDEX_PREFIX = "index/"
SNAPSHOT_PREFIX = "snapshots/"
NODE_ENTRY_BYTES = 440  # memory of one decoded tree entry, for the tree cache's budget


def tree_cache_bytes() -> int:
    """The bound of the cache of decoded tree nodes: COLDVAULT_TREE_CACHE_MB (default 64)."""
    try:
        return max(1, int(os.environ.get("COLDVAULT_TREE_CACHE_MB", "64"))) * 1024 * 1024
    except ValueError:
        raise UserError("COLDVAULT_TREE_CACHE_MB must be a whole number of MiB") from None


def _cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2


class LRU:
    """A small thread-safe LRU bounded by total size."""

    def __init__(self, max_bytes: int, size: Callable = len):
        self.max_bytes = max_bytes
        self._size = size
        self._items: OrderedDict = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._items.get(key)
            if v is not None:
                self._items.move_to_end(key)
            return v

    def put(self, key, value) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._total += self._size(value)
            while self._total > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._total -= self._size(old)


def _damaged_config(store: Store, exc: FormatError) -> DamagedError:
    return DamagedError(f"the config object of the vault at {store.url} is damaged: "
                        f"{str(exc).removeprefix('config: ')}")


def _max_index_entries() -> int:
    value = os.environ.get("COLDVAULT_MAX_INDEX_ENTRIES", "")
    if not value:
        return packindex.MAX_INDEX_ENTRIES
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= packindex.MAX_INDEX_ENTRIES:
        raise UserError(f"COLDVAULT_MAX_INDEX_ENTRIES must be a number from 1 to {packindex.MAX_INDEX_ENTRIES}, "
                        f"not {value!r}")
    return n


class _Overridden(Exception):
    """An index object read beyond the local index cache names a record the cache holds, and
    is named before one the cache was built from (a full load would take its record)."""


class Vault:
    def __init__(self, store: Store, cfg: configfmt.VaultConfig, keys: MasterKeys | None, key_id: str | None = None):
        self.store = store
        self.config = cfg
        self.keys = keys
        self.key_id = key_id  # the key the password opened (vault/keys.py); None if unencrypted
        self.sealer = Sealer(keys)
        self.settings = configfmt.open_settings(cfg, keys)
        self.index = BlobIndex()
        self._tree_packs = LRU(256 * 1024 * 1024)
        # A decoded entry of a one-chunk file takes about 440 bytes (tracemalloc, 1M-file tree): the
        # budget counts that, so COLDVAULT_TREE_CACHE_MB bounds what the nodes really hold.
        self._tree_nodes = LRU(tree_cache_bytes(), size=lambda n: NODE_ENTRY_BYTES * len(n.entries) + 64)
        # Single flight per tree pack: requests for one pack share its GET, other packs
        # are fetched meanwhile (one slow GET must not stall every listing).
        self._fetch_guard = threading.Lock()
        self._fetching: dict = {}  # pack id -> the lock its one fetch holds
        self.damaged_snapshots: dict[str, DamagedError | UnsupportedFormatError] = {}
        self.damaged_indexes: dict[str, DamagedError] = {}  # index id -> why it was left out
        # Most blob (and pack) records one index object written here holds (docs/format.md 6.4);
        # COLDVAULT_MAX_INDEX_ENTRIES sets it lower, for tests of vaults with many index objects.
        self.max_index_entries = _max_index_entries()
        self.old_format_indexes: set[str] = set()  # loaded index ids of an older version (1)

    # ---- creating and opening -------------------------------------------------

    @classmethod
    def init(cls, store: Store, password: bytes | None, settings: configfmt.Settings) -> "Vault":
        """Write a new vault's config; refuses to overwrite an existing one."""
        try:
            store.head(CONFIG)
        except NotFoundError:
            pass
        else:
            raise UserError(f"a vault already exists at {store.url}")
        vault_id = os.urandom(16)
        if password is None:
            keys, key = None, None
        else:
            keys = MasterKeys.generate()
            key = configfmt.crypto.wrap_keys(keys, password, vault_id)
            settings.chunker_seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
        cfg = configfmt.VaultConfig(
            vault_id=vault_id,
            created=time.time_ns(),
            encrypted=password is not None,
            key=key,
            settings_blob=configfmt.seal_settings(settings, keys),
        )
        store.put(CONFIG, configfmt.encode(cfg))
        return cls(store, cfg, keys, keyfmt.config_key_id(key) if key else None)

    @classmethod
    def open(cls, store: Store, password: Callable[[], bytes] | None) -> "Vault":
        """Read the config and unlock it; `password` is asked only if the vault is encrypted,
        once, and tried on every key (vault/keys.py); `key_id` says which one opened it."""
        try:
            data = store.get(CONFIG)
        except NotFoundError:
            raise NoVaultError(
                f"no vault at {store.url} (no config object)", hint="create one with 'coldvault init'"
            ) from None
        try:
            cfg = configfmt.decode(data)
        except FormatError as exc:
            raise _damaged_config(store, exc) from None
        keys = key_id = None
        if cfg.encrypted:
            if password is None:
                raise BadPasswordError("the vault is encrypted and no password was given")
            try:
                keys, key_id = vaultkeys.unlock(store, cfg, password())
            except FormatError as exc:
                raise _damaged_config(store, exc) from None
        return cls(store, cfg, keys, key_id)

    # ---- the index --------------------------------------------------------------

    def _parallel(self, fn, items):
        """[fn(i) for i in items] on as many threads as the store serves requests at once."""
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(min(self.store.capabilities().connections, len(items))) as ex:
            return list(ex.map(fn, items))

    def _stream(self, fn, items, size=None):
        """fn(i) for i in items, yielded in order as they are done, on as many threads as the
        store serves requests at once (at most one per core where reads are local), but with
        at most STREAM_BYTES of `size(i)` (and one item more than there are threads) waiting
        or in flight: each index object is merged, and freed, before many more are read."""
        caps = self.store.capabilities()
        n = min(caps.connections, len(items))
        if caps.local_reads:  # a read is CPU, like the decoding: more threads than cores only
            n = min(n, _cores())  # hold more buffers (10M blobs: 150 MB more at the peak with 8)
        if n <= 1:
            yield from map(fn, items)
            return
        size = size or (lambda item: 0)
        with ThreadPoolExecutor(n) as ex:
            running: deque = deque()
            held = 0
            for item in items:
                while running and (len(running) > n or held + size(item) > STREAM_BYTES):
                    done, weight = running.popleft()
                    held -= weight
                    yield done.result()
                running.append((ex.submit(fn, item), size(item)))
                held += size(item)
            while running:
                yield running.popleft()[0].result()

    def load_index(self, on_doc=None, listed: dict[str, ObjectInfo] | None = None, cache: bool = True) -> BlobIndex:
        """Read the index objects not read yet. Records of pending (write-ahead) indexes count
        only where their pack is in the store: one HEAD per such pack that no other index names,
        or a look into `listed` (object name -> ObjectInfo of a listing) when given.
        A pending index all of whose packs were found stored is `adoptable`: the next run's
        index repeats those packs and supersedes it.

        A damaged index object is left out with one warning and kept in `damaged_indexes`:
        every snapshot whose blobs other indexes name stays readable, and a blob only it
        named is "not in any index" until `coldvault repair index` rebuilds the index from
        the packs' own headers (vault/repair.py). A newer-format index object still stops the
        command (exit 12): what it says cannot be guessed, and it is not damage.

        `on_doc(iid, doc)` sees each index object, in name order, before its table is merged:
        its IndexDoc (records it drops with `doc.keep_packs` are not merged), or the
        DamagedError or UnsupportedFormatError that leaves it out. With it, those errors are
        the caller's to report (check): nothing is logged or raised for them here.

        The local index cache (vault/indexcache.py) is used on the first load, unless `cache`
        is False, `on_doc` is given (check sees every object) or COLDVAULT_NO_CACHE is set:
        the tables of the objects it was built from are mapped, only the objects listed beyond
        them are read, and the cache is rewritten when it did not hold them all."""
        index = self.index
        skip = index.index_ids | self.damaged_indexes.keys()
        sizes = self._index_listing()
        # In the order of their names, whatever the store lists first: on a blob id given
        # twice, the first loaded wins (docs/format.md 6.4), the same in every store.
        ids = [i for i in sorted(sizes) if i not in skip]
        first = not skip and not len(index) and not index.pack_count()
        cache_path = None
        if cache and on_doc is None and first and indexcache.enabled():
            cache_path = indexcache.cache_path(self.config.vault_id)
        cached = None if cache_path is None else indexcache.read(cache_path, self.config.vault_id)
        if cached is not None and any(sizes.get(i) != v for i, v in cached.stamps.items()):
            log.debug("index cache %s: built from index objects that are gone (a prune) or changed; rebuilding it",
                      cache_path)
            cached = None
        pending: list[tuple[str, packindex.IndexDoc]] = []
        merged = None if cached is None else self._load_beyond_cache(cached, ids, sizes, pending)
        if merged is None:  # no cache, or one that a full load would contradict: every object read
            merged = []

            def tables():
                for iid, table in self._index_tables(ids, sizes, on_doc, pending):
                    merged.append(iid)
                    yield table

            capacity = sum(sizes[i][0] for i in ids) // packindex.BLOB_RECORD.itemsize  # at most this many rows
            self.index.add_tables(tables(), capacity=capacity)  # in name order: on a blob id twice, the first wins
            log.debug("index: %d index objects read", len(ids))
        if cache_path is not None and merged and not self.damaged_indexes:
            columns = self.index.columns()
            if columns is not None:
                held = self.index.index_ids - self.index.pending_ids
                indexcache.write(cache_path, self.config.vault_id, {i: sizes[i] for i in held},
                                 self.old_format_indexes & held, *columns)
        self._adopt(pending, listed)
        return self.index

    def _load_beyond_cache(self, cached: indexcache.Cached, ids: list[str], sizes: dict, pending: list):
        """The cache's tables, and the index objects listed beyond them, merged as they are read
        (a few records are kept beside the tables instead). Returns the ids merged into the
        tables (the cache is then rewritten), or None, with nothing loaded, when reading every
        object costs less (more new records than cached ones) or a new object repeats a record
        of the cache that, loaded in name order, it would replace (docs/format.md 6.4)."""
        to_read = [i for i in ids if i not in cached.index_ids]
        rows = sum(sizes[i][0] for i in to_read) // packindex.BLOB_RECORD.itemsize  # at most this many
        cached_rows = len(cached.blobs["hi"])
        if rows > max(cached_rows, indexcache.OVERLAY_ROWS):
            log.debug("index: more new records than the cache holds; reading every index object")
            return None
        index = self.index
        index.use_columns(cached.blobs, cached.packs, cached.done_with)
        last = max(cached.index_ids)
        merged = []

        def tables():
            for iid, table in self._index_tables(to_read, sizes, None, pending):
                if iid < last and index.holds_any(table):
                    raise _Overridden(iid)
                merged.append(iid)
                yield table

        try:
            if len(to_read) <= indexcache.OVERLAY_OBJECTS and rows <= min(indexcache.OVERLAY_ROWS, cached_rows // 64):
                # A few records (last night's backup) beside millions: kept beside the tables,
                # and read again next time, rather than rewriting the whole cache for them.
                for table in tables():
                    for rec in table.records():
                        index.add_pack(rec)
                merged = []
            else:
                index.add_tables(tables(), capacity=rows)
        except _Overridden as exc:
            log.debug("index: index/%s repeats records of the cache; reading every index object", exc)
            self._forget_loaded()
            pending.clear()
            return None
        log.debug("index: %d index objects from the cache, %d read", len(cached.index_ids), len(to_read))
        index.index_ids.update(cached.index_ids)
        self.old_format_indexes.update(cached.old_format)
        return merged

    def _index_listing(self) -> dict[str, list]:
        """Index object id -> [size, mtime or None], of every object under index/ named by a
        content id (the local index cache is keyed by them: an object rewritten in place, i.e.
        damaged, no longer matches)."""
        out = {}
        for o in self.store.list(INDEX_PREFIX):
            oid = o.name[len(INDEX_PREFIX):]
            if is_hex_id(oid):
                out[oid] = [o.size, o.mtime]
            else:
                log.debug("ignoring stray object %s", o.name)
        return out

    def _index_tables(self, ids: list[str], sizes: dict, on_doc, pending: list):
        """(id, table) of each readable, not pending index object among `ids`, in their order,
        as they are read; pending ones go to `pending`, damaged ones to `damaged_indexes`."""
        index = self.index
        # Fetched on as many threads as the store serves requests at once, but decoded (the
        # decrypting, parsing and checking: CPU) on as many as there are cores: more decoders
        # only wait for the GIL with their buffers held.
        cores = threading.BoundedSemaphore(_cores())

        def decode(data: bytes, name: str) -> packindex.IndexDoc:
            with cores:
                return packindex.decode(data, self.sealer, name)

        def load(iid):
            name = INDEX_PREFIX + iid
            try:
                return iid, self._read_checked(name, lambda d: decode(d, name))
            except NotFoundError:  # a checkpoint that a finishing run deleted after our listing
                return iid, None
            except UnsupportedFormatError as exc:
                if on_doc is None:
                    raise
                return iid, exc
            except DamagedError as exc:  # FormatError included
                return iid, exc

        for iid, doc in self._stream(load, ids, lambda iid: sizes[iid][0]):
            if doc is None:
                continue
            if on_doc is not None:
                on_doc(iid, doc)
            if isinstance(doc, UnsupportedFormatError):
                continue
            if isinstance(doc, DamagedError):
                if on_doc is None:
                    log.warning("%s; ignoring it (the blobs only it names are unknown until "
                                "'coldvault repair index')", doc.message)
                self.damaged_indexes[iid] = doc
                continue
            index.index_ids.add(iid)
            if doc.version < packindex.VERSION:
                self.old_format_indexes.add(iid)  # `prune` rewrites it (docs/format.md 6.4)
            if doc.pending:
                index.pending_ids.add(iid)
                pending.append((iid, doc))
            else:
                table = doc.table
                del doc
                yield iid, table

    def _forget_loaded(self) -> None:
        """Back to an index that holds nothing (the first load starts over)."""
        self.index = BlobIndex()
        self.damaged_indexes.clear()
        self.old_format_indexes.clear()

    def _adopt(self, pending: list[tuple[str, packindex.IndexDoc]], listed) -> None:
        """The records of pending checkpoints whose packs are stored (see `load_index`)."""
        index = self.index
        unknown: dict[str, packindex.PackRecord] = {}  # a pack's blobs may be spread over several checkpoints
        for _, doc in pending:
            for p in doc.packs:
                if index.has_pack(p.id):
                    continue
                seen = unknown.get(p.id)
                if seen is None:
                    unknown[p.id] = packindex.PackRecord(p.id, p.kind, p.size, list(p.blobs))
                elif (seen.kind, seen.size) == (p.kind, p.size):
                    seen.blobs += p.blobs
        recs = list(unknown.values())
        if listed is None:
            found = self._parallel(self._pack_stored, recs)
        else:
            infos = [listed.get(object_name(r.kind, r.id)) for r in recs]
            found = [info is not None and info.size == r.size for r, info in zip(recs, infos)]
        stored = {r.id for r, ok in zip(recs, found) if ok}
        for rec in recs:
            if rec.id in stored:
                index.add_pack(rec)
                index.adopted.append(rec)
        for iid, doc in pending:
            if all(p.id in stored for p in doc.packs):
                index.adoptable.add(iid)

    def _pack_stored(self, rec: packindex.PackRecord) -> bool:
        try:
            return self.store.head(object_name(rec.kind, rec.id)).size == rec.size
        except NotFoundError:
            return False

    def _read_checked(self, name: str, decode):
        """Get an object named by its content id, check the id, and decode it."""
        data = self.store.get(name)
        if content_id(data) != name.rsplit("/", 1)[-1]:
            why = f"its content does not match its name ({len(data)} bytes)"
            raise DamagedError(f"object {name} is damaged: {why}", reason=why)
        try:
            with limits.hostile(name):
                return decode(data)
        except FormatError as exc:
            raise DamagedError(f"object {name} is damaged: {exc}", reason=str(exc)) from None

    def _object_ids(self, prefix: str) -> list[str]:
        """Ids of the objects under `prefix`; anything not named by a content id is ignored."""
        ids = []
        for o in self.store.list(prefix):
            oid = o.name[len(prefix):]
            if is_hex_id(oid):
                ids.append(oid)
            else:
                log.debug("ignoring stray object %s", o.name)
        return ids

    def save_index(self, packs: list, supersedes: list[str] = (), pending: bool = False) -> list[str]:
        """Write index objects for `packs` (FinishedPack or PackRecord); returns their ids.
        More than `max_index_entries` records go to several objects (packindex.split), each
        with the same `supersedes`, so no index object grows past the limits of a reader.
        `pending`: written before the packs are (a checkpoint), see `load_index`."""
        recs = [
            p if isinstance(p, packindex.PackRecord) else packindex.PackRecord(p.id, p.kind, len(p.data), p.blobs)
            for p in packs
        ]
        ids = []
        for group in packindex.split(recs, self.max_index_entries):
            data = packindex.encode(packindex.IndexDoc(group, list(supersedes), pending), self.sealer)
            iid = content_id(data)
            self.store.put(INDEX_PREFIX + iid, data, self.settings.index_class)
            ids.append(iid)
        for r in recs:
            if not self.index.has_pack(r.id):  # a prune or a run's index repeats known packs
                self.index.add_pack(r)
        self.index.index_ids.update(ids)
        if pending:
            self.index.pending_ids.update(ids)
        return ids

    def save_index_table(self, table: packindex.IndexTable, supersedes: list[str] = ()) -> list[str]:
        """`save_index` (not pending) for records held as an IndexTable (a backup keeps the
        records of its stored packs so: 37 bytes a blob, no object per blob)."""
        ids = []
        for part in table.split(self.max_index_entries):
            data = packindex.encode(packindex.IndexDoc(None, list(supersedes), table=part), self.sealer)
            iid = content_id(data)
            self.store.put(INDEX_PREFIX + iid, data, self.settings.index_class)
            ids.append(iid)
        unknown = [j for j, (pid, _, _) in enumerate(table.pack_items()) if not self.index.has_pack(pid)]
        if unknown:
            for r in table.select_packs(np.array(unknown, dtype=np.int64)).records():
                self.index.add_pack(r)
        self.index.index_ids.update(ids)
        return ids

    def delete_index(self, iid: str) -> None:
        self.store.delete(INDEX_PREFIX + iid)
        self.old_format_indexes.discard(iid)
        self.index.index_ids.discard(iid)
        self.index.pending_ids.discard(iid)

    def put_pack(self, pack: FinishedPack) -> None:
        cls = self.settings.data_class if pack.kind == "data" else self.settings.tree_class
        self.store.put(pack.name, pack.data, cls)

    # ---- snapshots --------------------------------------------------------------

    def snapshot_ids(self) -> list[str]:
        return self._object_ids(SNAPSHOT_PREFIX)

    def load_snapshot(self, sid: str) -> snapshot.SnapshotRecord:
        name = SNAPSHOT_PREFIX + sid
        rec = self._read_checked(name, lambda d: snapshot.decode(d, self.sealer, name))
        rec.id = sid
        return rec

    def snapshots(self) -> list[snapshot.SnapshotRecord]:
        """All readable snapshot records, oldest first.

        A damaged record is left out with a warning and its error kept in
        `damaged_snapshots`, so one bad object does not stop tonight's backup. A record
        listed and then gone (a `forget` between the listing and the read) is left out
        silently: it was removed, not damaged.
        """

        def load(sid):
            try:
                return self.load_snapshot(sid)
            except NotFoundError:
                return None
            except (DamagedError, UnsupportedFormatError) as exc:
                log.warning("%s", exc.message)
                self.damaged_snapshots[sid] = exc
                return None

        recs = [r for r in self._parallel(load, self.snapshot_ids()) if r is not None]
        return sorted(recs, key=lambda r: r.order)

    def save_snapshot(self, rec: snapshot.SnapshotRecord) -> str:
        data = snapshot.encode(rec, self.sealer)
        sid = content_id(data)
        self.store.put(SNAPSHOT_PREFIX + sid, data, self.settings.snapshot_class)
        rec.id = sid
        return sid

    def find_snapshot(self, spec: str, source: str | None = None,
                      records: list[snapshot.SnapshotRecord] | None = None, where=None) -> snapshot.SnapshotRecord:
        """The snapshot a selector names (vault/selector.py: an id prefix, `latest`, a UTC day
        or a time), of `source` if given and matching `where` (a selector.Filter) if given,
        among `records` (oldest first) if the caller has them already: reading them all costs
        a GET each."""
        from coldvault.vault.selector import select

        recs = self.snapshots() if records is None else records
        if source is not None:
            recs = [r for r in recs if r.source == source]
        if where:
            recs = [r for r in recs if where(r)]
        return select(spec, recs, source, where.describe() if where else "")

    # ---- reading blobs ------------------------------------------------------------

    def locate(self, bid: BlobId, what: str = "blob") -> Location:
        loc = self.index.lookup(bid)
        if loc is None:
            message = f"{what} {bid.hex()} is not in any index of the vault"
            if self.damaged_indexes:
                names = sorted(INDEX_PREFIX + i for i in self.damaged_indexes)
                more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
                message += f"; damaged, so not read: {', '.join(names[:3])}{more}"
                hint = "'coldvault repair index' rebuilds the index from the packs' own headers"
            else:
                hint = ("run 'coldvault check'; if it finds packs in no index, 'coldvault repair index' "
                        "indexes them from their own headers")
            raise DamagedError(message, hint=hint)
        return loc

    def locate_many(self, bids: list[bytes], what: str = "blob") -> list[Location]:
        """`locate` of each of `bids` (one vectorised search); the first missing one raises."""
        locs = self.index.lookup_many(bids)
        for bid, loc in zip(bids, locs):
            if loc is None:
                self.locate(BlobId(bid), what)  # raises, naming it
        return locs

    def pack_names(self, bids: list[bytes], what: str = "blob") -> set[str]:
        """The object names of the packs holding `bids` (one vectorised search); the first
        missing one raises, as `locate_many`."""
        names, missing = self.index.pack_names(bids)
        if missing is not None:
            self.locate(BlobId(bids[missing]), what)  # raises, naming it
        return names

    def load_outline(self, bid: BlobId) -> list[tuple[bytes, str, object]]:
        """`tree.outline` of a tree node: what `load_tree` checks, without entries or the cache."""
        return self._read_tree(bid, tree.outline)

    def _read_tree(self, bid: BlobId, decode):
        """`decode(bytes, what)` of the tree node `bid` (`tree.decode` or `tree.outline`), run as
        hostile input; a node that does not decode is a DamagedError."""
        data = self.read_blob(bid)
        what = f"tree node {bid.hex()[:16]}"
        try:
            with limits.hostile(what):
                return decode(data, what)
        except FormatError as exc:
            raise DamagedError(str(exc)) from None

    def bound_tree_cache(self, max_bytes: int) -> None:
        """Keep at most `max_bytes` of decoded tree nodes from now on (never more than the
        configured bound): for a command whose walks would gain nothing from more."""
        self._tree_nodes.max_bytes = min(self._tree_nodes.max_bytes, max_bytes)

    def get_range(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        """Bytes of a pack, with cold and missing packs turned into errors for people."""
        try:
            return self.store.get(name, start, length)
        except RestoreInProgressError:
            raise ColdDataError(f"pack {name} is being restored from the cold tier; try again later", [name]) from None
        except ArchivedError:
            raise ColdDataError(
                f"pack {name} is in a cold tier and must be restored first",
                [name],
                hint="request it with 'coldvault thaw'",
            ) from None
        except NotFoundError:
            raise DamagedError(f"pack {name} is missing from the vault", hint="run 'coldvault check'",
                               reason="missing from the vault") from None

    def decode_stored(self, stored: bytes, bid: BlobId, loc: Location) -> bytes:
        what = f"blob {bid.hex()[:16]} in pack {loc.object_name}"
        try:
            return blobfmt.decode_located(stored, bid, self.sealer, what, loc.length, loc.raw_length, loc.type,
                                          self.settings.chunker_max)
        except FormatError as exc:
            raise DamagedError(str(exc)) from None

    def read_blob(self, bid: BlobId) -> bytes:
        loc = self.locate(bid)
        if loc.kind == "tree":
            pack = self._tree_pack(loc)
            stored = pack[loc.offset:loc.offset + loc.length]
        else:
            stored = self.get_range(loc.object_name, loc.offset, loc.length)
        return self.decode_stored(stored, bid, loc)

    def _tree_pack(self, loc: Location) -> bytes:
        data = self._tree_packs.get(loc.pack)
        if data is not None:
            return data
        with self._fetch_guard:
            lock = self._fetching.setdefault(loc.pack, threading.Lock())
        with lock:
            try:
                data = self._tree_packs.get(loc.pack)
                if data is None:
                    # No whole-pack check here: every blob is authenticated as it is read,
                    # so one bad byte costs only the blob it is in (check --read-data
                    # verifies whole packs).
                    data = self.get_range(loc.object_name, 0, None)
                    self._tree_packs.put(loc.pack, data)
            finally:
                with self._fetch_guard:
                    if self._fetching.get(loc.pack) is lock:
                        del self._fetching[loc.pack]
        return data

    def cached_tree(self, bid: BlobId) -> tree.TreeNode | None:
        """The decoded tree node if it is in memory; never reads the store."""
        return self._tree_nodes.get(bid)

    def load_tree(self, bid: BlobId, cache: bool = True) -> tree.TreeNode:
        """The decoded tree node; `cache=False`: not kept in the cache of decoded nodes
        (a backup reads each node of the previous snapshot once)."""
        node = self._tree_nodes.get(bid)
        if node is None:
            node = self._read_tree(bid, tree.decode)
            for why in node.rejected:
                log.warning("tree node %s: dropped an entry: %s", bid.hex()[:16], why)
            if cache:
                self._tree_nodes.put(bid, node)
        return node

    def delete_snapshot(self, sid: str) -> None:
        """Remove the snapshot record `sid` (readable or damaged); the data it used stays for prune."""
        self.store.delete(SNAPSHOT_PREFIX + sid)
