"""Check a vault: is everything the snapshots need stored, whole, and where the index says?

Three passes, cheapest first:

1. **Index and listings** (hot objects, plus one listing of `data/` and
   `trees/`): every index object decodes; every pack it names is in the store
   with exactly the indexed size (so no index entry points past a pack's end).
   Packs that no index names, checkpoint indexes that a later index repeats,
   and pending checkpoints whose pack never arrived are leftovers of
   interrupted or finished runs: harmless, `prune` removes them.
2. **Data** (`read_fraction`, for --read-data and --read-data-subset): each
   chosen pack that is readable (hot, or cold and restored) is downloaded in
   windows; its content id is compared with its name, its header with the
   index, and every blob the index places in it is opened (length, AEAD, blob
   id). Cold packs that are not restored are skipped and listed.
3. **Snapshots**: every record decodes; every tree node reachable from each
   root, every file's chunks, every ZFS stream's chunk list and its chunks are
   in the index. A tree id is visited once, however many snapshots share it:
   the result of a subtree (which of its paths need damaged objects) is
   remembered by id. So what passes 1 and 2 found damaged is mapped back to
   (snapshot, path) on the same walk, without a table of every blob.

The checker only reads; it blocks, and runs its downloads on a few threads.
"""

from __future__ import annotations

import logging
import math
import random
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import xxhash

from coldvault.errors import ColdDataError, DamagedError, UnsupportedFormatError
from coldvault.index import limits, packindex, tree
from coldvault.index.ids import BlobId, content_id, is_hex_id
from coldvault.index.pack import PACK_KINDS, PREFIX, TRAILER_LEN, BlobEntry, object_name, read_header
from coldvault.index.snapshot import SnapshotRecord
from coldvault.store.base import NotFoundError, ObjectInfo
from coldvault.vault.blobindex import Location
from coldvault.vault.streams import stream_chunks
from coldvault.vault.vault import INDEX_PREFIX, Vault
from coldvault.zfs.chain import Stream

log = logging.getLogger(__name__)

READ_THREADS = 4
READ_WINDOW = 32 * 1024 * 1024  # bytes per GET when reading a pack: bounds memory per thread
MAX_PATHS = 1000  # affected paths remembered per problem and snapshot (the count is exact)

NOT_INDEXED = "index"  # the problem key of blobs that snapshots use and no index has
_VISITING = object()  # a tree whose children are still being visited


@dataclass
class Problem:
    """One damaged object, and what it costs: paths per snapshot id."""

    object: str
    message: str
    kind: str = "damaged"  # or "unsupported"
    affected: dict[str, list] = field(default_factory=dict)  # snapshot id -> [count, [path bytes]]

    def add(self, sid: str, count: int, paths: list[bytes]) -> None:
        _add_paths(self.affected, sid, count, paths)


@dataclass
class CheckReport:
    read_mode: str = "none"  # "none", "all" or "subset"
    read_percent: float | None = None
    snapshots: int = 0
    streams: int = 0
    trees: int = 0
    files: int = 0
    chunk_refs: int = 0
    index_objects: int = 0
    blobs_indexed: int = 0
    packs: int = 0
    pack_bytes: int = 0
    packs_selected: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    blobs_read: int = 0
    problems: dict[str, Problem] = field(default_factory=dict)
    records: dict[str, SnapshotRecord] = field(default_factory=dict)
    unindexed_packs: list[ObjectInfo] = field(default_factory=list)
    superseded_indexes: list[str] = field(default_factory=list)
    unstored_packs: list[str] = field(default_factory=list)  # named by pending checkpoints only, never stored
    unused_packs: list[ObjectInfo] | None = None  # None: not known (the walk was incomplete)
    skipped_cold: list[ObjectInfo] = field(default_factory=list)
    skipped_meta: int = 0  # tree nodes or chunk lists in cold data packs (format.md 13), not walked

    unreadable_indexes: list[str] = field(default_factory=list)  # index objects that do not decode

    @property
    def unsupported(self) -> bool:
        return any(p.kind == "unsupported" for p in self.problems.values())

    @property
    def repair_index_helps(self) -> bool:
        """Whether `coldvault repair index` would help: an index object is damaged (it removes
        it, and indexes its packs again from their headers), or snapshots use blobs that no
        index names while some pack is in no index (it may hold them)."""
        return bool(self.unreadable_indexes) or (NOT_INDEXED in self.problems and bool(self.unindexed_packs))


def _add_paths(result: dict, key: str, count: int, paths: list[bytes]) -> None:
    """Add `count` affected paths under `key`, remembering at most MAX_PATHS of them."""
    slot = result.setdefault(key, [0, []])
    slot[0] += count
    room = MAX_PATHS - len(slot[1])
    if room > 0:
        slot[1].extend(paths[:room])


class Checker:
    def __init__(self, vault: Vault, read_fraction: float | None = None, rng: random.Random | None = None,
                 threads: int = READ_THREADS):
        """`read_fraction`: None reads no data, 1.0 every pack, else that random share of them."""
        self.vault = vault
        self.store = vault.store
        self.read_fraction = read_fraction
        self.rng = rng or random.Random()
        self.threads = threads
        self.report = CheckReport()
        if read_fraction is not None:
            self.report.read_mode = "all" if read_fraction >= 1 else "subset"
            self.report.read_percent = None if read_fraction >= 1 else round(read_fraction * 100, 3)
        self.phase = "starting"
        self._listed: dict[str, ObjectInfo] = {}  # pack object name -> info
        self._bad_packs: dict[str, str] = {}  # pack id -> problem key: every blob in it counts as lost
        self._bad_blobs: dict[bytes, str] = {}  # blob id -> problem key (found by reading the data)
        self._not_indexed = 0
        self._used_packs: set[str] = set()
        self._walk_complete = True
        self._done: dict[bytes, object] = {}  # tree id -> None (clean), str (failed: problem key), dict
        self._pending: list[packindex.IndexDoc] = []  # write-ahead checkpoints, judged by the listing

    # ---- problems ----------------------------------------------------------------

    def _problem(self, obj: str, message: str, kind: str = "damaged") -> str:
        """Register a problem with `obj` (its key); an existing one keeps its message."""
        for said in (f"pack {obj} is damaged: ", f"pack {obj} is "):  # the vault's errors name the pack
            if message.startswith(said):
                message = message[len(said):]
                break
        if obj not in self.report.problems:
            self.report.problems[obj] = Problem(obj, message, kind)
        return obj

    def _extend(self, obj: str, message: str) -> str:
        p = self.report.problems.get(obj)
        if p is None:
            return self._problem(obj, message)
        p.message = f"{p.message}; {message}"
        return obj

    # ---- the whole check --------------------------------------------------------------

    def run(self) -> CheckReport:
        self.phase = "reading the index"
        self._load_index()
        self.phase = "listing packs"
        self._check_packs()
        if self.read_fraction is not None:
            self.phase = "reading packs"
            self._read_data()
        self.phase = "walking snapshots"
        self._check_snapshots()
        if self._walk_complete:
            used = self._used_packs
            self.report.unused_packs = sorted(
                (self._listed.get(object_name(kind, pid)) or ObjectInfo(object_name(kind, pid), size)
                 for pid, kind, size in self.vault.index.packs() if pid not in used),
                key=lambda i: i.name,
            )
        self.phase = "done"
        return self.report

    def progress(self) -> str:
        r = self.report
        if self.phase == "reading packs":
            return f"reading packs: {r.packs_read}/{r.packs_selected}, {r.bytes_read / 2**20:.1f} MiB"
        if self.phase == "walking snapshots":
            return f"walking snapshots: {r.trees} trees, {r.files} files"
        return self.phase

    # ---- pass 1: index objects and pack listings -------------------------------------------

    def _load_index(self) -> None:
        """Every index object, each on its own: one damaged index does not hide the others."""
        ids = []
        for o in self.store.list(INDEX_PREFIX):
            iid = o.name[len(INDEX_PREFIX):]
            if is_hex_id(iid):
                ids.append(iid)
        index = self.vault.index
        supersedes: set[str] = set()
        with ThreadPoolExecutor(8) as pool:
            for iid, (doc, problem) in zip(ids, pool.map(self._index_object, ids)):
                if problem is not None:
                    self._problem(INDEX_PREFIX + iid, *problem)
                    if problem[1] == "damaged":
                        self.report.unreadable_indexes.append(INDEX_PREFIX + iid)
                if doc is None:
                    continue
                self.report.index_objects += 1
                supersedes.update(doc.supersedes)
                index.index_ids.add(iid)
                if doc.pending:
                    self._pending.append(doc)
                    continue
                for p in doc.packs:
                    known = index.pack(p.id)
                    if known is not None and known != (p.kind, p.size):
                        self._problem(
                            INDEX_PREFIX + iid,
                            f"says pack {p.id} is a {p.kind} pack of {p.size} bytes; "
                            f"another index says a {known[0]} pack of {known[1]} bytes",
                        )
                        continue
                    index.add_pack(p)
        self.report.superseded_indexes = sorted(INDEX_PREFIX + i for i in supersedes & index.index_ids)

    def _index_object(self, iid: str):
        """(the decoded index object or None, None or (message, kind) of its problem); on a thread."""
        name = INDEX_PREFIX + iid
        try:
            data = self.store.get(name)
        except NotFoundError:
            log.info("%s was deleted while checking", name)
            return None, None
        if content_id(data) != iid:
            return None, (f"its content does not match its name ({len(data)} bytes)", "damaged")
        try:
            with limits.hostile(name):
                return packindex.decode(data, self.vault.sealer, name), None
        except UnsupportedFormatError as exc:
            return None, (exc.message, "unsupported")
        except DamagedError as exc:  # FormatError included
            return None, (exc.message, "damaged")

    def _check_packs(self) -> None:
        stray = 0
        for kind in PACK_KINDS:
            prefix = PREFIX[kind]
            for info in self.store.list(prefix):
                pid = info.name.rsplit("/", 1)[-1]
                if is_hex_id(pid) and info.name == object_name(kind, pid):
                    self._listed[info.name] = info
                else:
                    stray += 1
                    log.debug("ignoring stray object %s", info.name)
        if stray:
            log.info("%d objects under data/ and trees/ are not named like packs; ignored", stray)
        r = self.report
        index = self.vault.index
        for doc in self._pending:  # as Vault.load_index: a record counts if its pack is stored
            for p in doc.packs:
                if index.has_pack(p.id):
                    continue
                info = self._listed.get(object_name(p.kind, p.id))
                if info is not None and info.size == p.size:
                    index.add_pack(p)
                elif info is None:
                    r.unstored_packs.append(object_name(p.kind, p.id))
        r.unstored_packs = sorted(set(r.unstored_packs))
        r.blobs_indexed = len(index)
        indexed = set()
        for pid, kind, size in index.packs():
            name = object_name(kind, pid)
            indexed.add(name)
            r.packs += 1
            r.pack_bytes += size
            info = self._listed.get(name)
            if info is None:
                self._bad_packs[pid] = self._problem(name, "missing from the store")
            elif info.size != size:
                what = "truncated" if info.size < size else "too long"
                self._bad_packs[pid] = self._problem(name, f"{what}: {info.size} bytes, the index says {size}")
        r.unindexed_packs = sorted((i for n, i in self._listed.items() if n not in indexed), key=lambda i: i.name)

    # ---- pass 2: the data ------------------------------------------------------------------

    def _read_data(self) -> None:
        r = self.report
        index = self.vault.index
        present = sorted(pid for pid, kind, _ in index.packs() if object_name(kind, pid) in self._listed)
        chosen = present
        if self.read_fraction < 1 and present:
            k = max(1, math.ceil(len(present) * self.read_fraction))
            chosen = sorted(self.rng.sample(present, min(k, len(present))))
        r.packs_selected = len(chosen)
        readable = []
        for pid in chosen:
            name = object_name(index.pack(pid)[0], pid)
            info = self._listed[name]
            if info.cold and not info.readable:
                try:
                    info = self.store.head(name)  # a listing need not say whether a restore is done
                except NotFoundError:
                    self._bad_packs[pid] = self._problem(name, "missing from the store")
                    continue
            if info.readable:
                readable.append(pid)
            else:
                r.skipped_cold.append(info)
        by_pack = index.blobs_by_pack(readable)
        # A few packs in flight at a time: memory stays bounded, and an interrupt stops soon.
        todo = iter(readable)
        with ThreadPoolExecutor(self.threads) as pool:
            running = {}
            while True:
                for pid in todo:
                    running[pool.submit(self._read_pack, pid, by_pack.pop(pid, []))] = pid
                    if len(running) >= self.threads:
                        break
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    self._record_read(running.pop(fut), fut.result())

    def _record_read(self, pid: str, result) -> None:
        r = self.report
        kind, _ = self.vault.index.pack(pid)
        name = object_name(kind, pid)
        if isinstance(result, ColdDataError):  # archived again since the listing
            r.skipped_cold.append(self._listed[name])
            return
        if isinstance(result, DamagedError):  # deleted since the listing
            self._bad_packs[pid] = self._problem(name, "missing from the store")
            return
        nbytes, blobs_ok, bad, faults = result
        r.packs_read += 1
        r.bytes_read += nbytes
        r.blobs_read += blobs_ok + len(bad)
        # What was read replaces the guess of pass 1: only the blobs that failed are lost.
        self._bad_packs.pop(pid, None)
        if bad:
            faults.insert(0, f"{len(bad)} of {blobs_ok + len(bad)} blobs are damaged (first: {bad[0][1]})")
        if faults:
            key = self._extend(name, "; ".join(faults))
            for bid, _ in bad:
                self._bad_blobs[bid] = key

    def _read_pack(self, pid: str, entries: list[BlobEntry]):
        """Download one pack in windows; returns (bytes, blobs ok, [(bad blob id, why)], [pack faults]).

        Runs on a worker thread; returns (not raises) the cold/missing errors of the store.
        """
        index = self.vault.index
        kind, _ = index.pack(pid)
        name = object_name(kind, pid)
        size = self._listed[name].size
        ents = sorted((e.offset, e.length, e) for e in entries)
        blob_end = max((o + n for o, n, _ in ents), default=0)
        h = xxhash.xxh3_128()
        buf = bytearray()
        buf_start = pos = i = ok = 0
        bad: list[tuple[bytes, str]] = []
        try:
            while pos < size:
                want = min(READ_WINDOW, size - pos)
                data = self.vault.get_range(name, pos, want)
                h.update(data)
                buf += data
                pos += len(data)
                while i < len(ents) and ents[i][0] + ents[i][1] <= pos:
                    off, length, e = ents[i]
                    stored = bytes(buf[off - buf_start:off - buf_start + length])
                    why = self._open_blob(pid, kind, e, stored)
                    if why is None:
                        ok += 1
                    else:
                        bad.append((e.id, why))
                    i += 1
                keep = min(ents[i][0] if i < len(ents) else blob_end, pos)
                if keep > buf_start:
                    del buf[:keep - buf_start]
                    buf_start = keep
                if len(data) < want:
                    break  # shorter than listed: changed since the listing
        except (ColdDataError, DamagedError) as exc:
            return exc
        for off, length, e in ents[i:]:
            bad.append((e.id, f"blob {e.id.hex()[:16]} runs past the end of the pack ({off + length} > {pos} bytes)"))
        faults = []
        if h.hexdigest() != pid:
            faults.append("its content does not match its name")
        faults += self._header_faults(name, bytes(buf) if buf_start >= blob_end else b"", pos, entries)
        return pos, ok, bad, faults

    def _open_blob(self, pid: str, kind: str, e: BlobEntry, stored: bytes) -> str | None:
        loc = Location(pid, kind, e.offset, e.length, e.raw_length, e.type)
        try:
            self.vault.decode_stored(stored, BlobId(e.id), loc)
        except DamagedError as exc:
            return exc.message
        return None

    def _header_faults(self, name: str, tail: bytes, size: int, entries: list[BlobEntry]) -> list[str]:
        """The pack's own header must list every blob the index places in it, identically."""
        if len(tail) < TRAILER_LEN:
            return ["its header is missing or overlaps the blobs"]
        try:
            with limits.hostile(name):
                entries = read_header(tail, size, self.vault.sealer, name)
        except (DamagedError, UnsupportedFormatError) as exc:
            return [f"its header does not decode ({exc.message})"]
        header = {(e.id, e.type, e.offset, e.length, e.raw_length) for e in entries}
        differ = sum(1 for e in entries if (e.id, e.type, e.offset, e.length, e.raw_length) not in header)
        if differ:
            return [f"its header disagrees with the index about {differ} blob(s)"]
        return []

    # ---- pass 3: the snapshots -------------------------------------------------------------

    def _check_snapshots(self) -> None:
        r = self.report
        records = self.vault.snapshots()
        for sid, exc in self.vault.damaged_snapshots.items():
            self._problem(f"snapshots/{sid}", exc.message)
            self._walk_complete = False
        r.snapshots = len(records)
        for rec in records:
            r.records[rec.id] = rec
            if rec.kind == "zfs":
                r.streams += 1
                self._attribute(rec, self._stream(rec))
            elif rec.tree is None:
                self._problem(f"snapshots/{rec.id}", f"a {rec.kind} snapshot record without a tree")
                self._walk_complete = False
            else:
                self._walk(rec.tree)
                self._attribute(rec, self._done[rec.tree])

    def _attribute(self, rec: SnapshotRecord, result) -> None:
        """Charge a root's result (None, a failed root's key, or key -> [count, paths]) to a snapshot."""
        if result is None:
            return
        if isinstance(result, str):
            result = {result: [1, [b"/"]]}
        for key, (count, paths) in result.items():
            self.report.problems[key].add(rec.id, count, paths)

    def _blob_key(self, bid: bytes) -> tuple[str | None, int | None]:
        """(problem key or None, raw length or None) of a blob a snapshot uses."""
        loc = self.vault.index.lookup(bid)
        if loc is None:
            self._not_indexed += 1
            key = self._problem(NOT_INDEXED, "")
            self.report.problems[key].message = f"{self._not_indexed} blob reference(s) point at no index entry"
            return key, None
        self._used_packs.add(loc.pack)
        return self._bad_packs.get(loc.pack) or self._bad_blobs.get(bid), loc.raw_length

    def _chunks_key(self, chunks: list[bytes], size: int, what: str) -> set[str]:
        """Problem keys of a file's (or stream's) chunks; checks their sizes add up to `size`."""
        keys = set()
        total = 0
        for c in chunks:
            key, raw = self._blob_key(c)
            if key:
                keys.add(key)
            if raw is None:
                total = None
            elif total is not None:
                total += raw
        self.report.chunk_refs += len(chunks)
        if total is not None and total != size:
            keys.add(self._problem(what, f"chunks that add up to {total} bytes where {size} are recorded"))
        return keys

    def _stream(self, rec: SnapshotRecord) -> dict | None:
        z = rec.zfs  # validated when the record was decoded (index/snapshot.py)
        cid = z["chunks"]
        label = [f"{z['dataset']}@{z['snapshot']}".encode("utf-8", "backslashreplace")]
        key, _ = self._blob_key(cid)
        if key == NOT_INDEXED:
            self._walk_complete = False
            return {key: [1, label]}
        loc = self.vault.locate(BlobId(cid))
        try:
            chunks = stream_chunks(self.vault, Stream(rec))
        except ColdDataError:
            self.report.skipped_meta += 1
            self._walk_complete = False
            return None
        except DamagedError as exc:
            self._walk_complete = False
            return {self._problem(loc.object_name, exc.message): [1, label]}
        keys = self._chunks_key(chunks, z["length"], f"snapshots/{rec.id}")
        return {k: [1, label] for k in keys} or None

    def _walk(self, root: bytes) -> None:
        """Visit every tree under `root` not visited yet, children before parents (no recursion)."""
        # Not vault.walker.walk: a node's result needs its children's results first (one per
        # tree, kept across snapshots), and a node that fails to load is a result, not an error.
        stack: list[list] = [[root, None]]
        active: set[bytes] = set()  # trees being visited: a child among them would be a cycle
        while stack:
            frame = stack[-1]
            tid, node = frame
            if tid in self._done:
                stack.pop()
                continue
            if node is None:
                node = self._load(tid)
                if not isinstance(node, tree.TreeNode):
                    self._done[tid] = node  # the key of its problem, or None if it is only cold
                    stack.pop()
                    continue
                frame[1] = node
                active.add(tid)
                self.report.trees += 1
                for e in node.entries:
                    if e.type == tree.DIR and e.tree not in self._done and e.tree not in active:
                        stack.append([e.tree, None])
                continue
            self._done[tid] = self._summarize(tid, node)
            active.discard(tid)
            stack.pop()

    def _load(self, tid: bytes):
        key, _ = self._blob_key(tid)
        if key == NOT_INDEXED:
            self._walk_complete = False
            return key
        try:
            return self.vault.load_tree(BlobId(tid))
        except ColdDataError:
            self.report.skipped_meta += 1
            self._walk_complete = False
            return None
        except (DamagedError, UnsupportedFormatError) as exc:
            self._walk_complete = False
            kind = "unsupported" if isinstance(exc, UnsupportedFormatError) else "damaged"
            return self._problem(self.vault.locate(BlobId(tid)).object_name, exc.message, kind)

    def _summarize(self, tid: bytes, node: tree.TreeNode) -> dict | None:
        """Which paths under this node need damaged objects: key -> [count, relative paths]."""
        result: dict = {}
        for e in node.entries:
            if e.type == tree.FILE:
                self.report.files += 1
                for key in self._chunks_key(e.chunks, e.size, f"tree node {tid.hex()}"):
                    _add_paths(result, key, 1, [e.name])
            elif e.type == tree.DIR:
                child = self._done.get(e.tree, _VISITING)
                if child is _VISITING:  # the directory contains itself
                    child = self._problem(f"tree node {e.tree.hex()}", "a directory that contains itself")
                    self._walk_complete = False
                if isinstance(child, str):
                    _add_paths(result, child, 1, [e.name + b"/"])
                elif child:
                    prefix = e.name + b"/"
                    for key, (count, paths) in child.items():
                        _add_paths(result, key, count, [prefix + p for p in paths[:MAX_PATHS]])
        return result or None
