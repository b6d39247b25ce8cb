"""Pass 3: walk every snapshot and map what is damaged back to (snapshot, path).

Every record decodes; every tree node reachable from each root, every file's
chunks, every ZFS stream's chunk list and its chunks are in the index. A tree
id is visited once, however many snapshots share it: the result of a subtree
(which of its paths need damaged objects) is remembered by id, so the damage
passes 1 and 2 found is charged to paths on the same walk, without a table of
every blob.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coldvault.check.report import MAX_PATHS, NOT_INDEXED, add_paths
from coldvault.errors import ColdDataError, DamagedError, UnsupportedFormatError
from coldvault.index import tree
from coldvault.index.ids import BlobId
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault.streams import stream_chunks
from coldvault.zfs.chain import Stream

if TYPE_CHECKING:
    from coldvault.check.checker import Checker

_VISITING = object()  # a tree whose children are still being visited


class SnapshotWalk:
    """One walk over every snapshot; `complete` says whether every tree could be visited
    (only then do `used_packs` tell which packs no snapshot needs)."""

    def __init__(self, ck: Checker):
        self.vault = ck.vault
        self.report = ck.report
        self.bad_packs = ck.bad_packs
        self.bad_blobs = ck.bad_blobs
        self.complete = True
        self.used_packs: set[str] = set()
        self._not_indexed = 0
        self._done: dict[bytes, object] = {}  # tree id -> None (clean), str (failed: problem key), dict

    def run(self) -> None:
        r = self.report
        records = self.vault.snapshots()
        for sid, exc in self.vault.damaged_snapshots.items():
            r.problem(f"snapshots/{sid}", exc.message)
            self.complete = False
        r.snapshots = len(records)
        for rec in records:
            r.records[rec.id] = rec
            if rec.kind == "zfs":
                r.streams += 1
                self._attribute(rec, self._stream(rec))
            elif rec.tree is None:
                r.problem(f"snapshots/{rec.id}", f"a {rec.kind} snapshot record without a tree")
                self.complete = False
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
            key = self.report.problem(NOT_INDEXED, "")
            self.report.problems[key].message = f"{self._not_indexed} blob reference(s) point at no index entry"
            return key, None
        self.used_packs.add(loc.pack)
        return self.bad_packs.get(loc.pack) or self.bad_blobs.get(bid), loc.raw_length

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
            keys.add(self.report.problem(what, f"chunks that add up to {total} bytes where {size} are recorded"))
        return keys

    def _stream(self, rec: SnapshotRecord) -> dict | None:
        z = rec.zfs  # validated when the record was decoded (index/snapshot.py)
        cid = z["chunks"]
        label = [f"{z['dataset']}@{z['snapshot']}".encode("utf-8", "backslashreplace")]
        key, _ = self._blob_key(cid)
        if key == NOT_INDEXED:
            self.complete = False
            return {key: [1, label]}
        try:
            chunks = stream_chunks(self.vault, Stream(rec))
        except (ColdDataError, DamagedError) as exc:
            key = self._unreadable(exc, cid)
            return None if key is None else {key: [1, label]}
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
            self.complete = False
            return key
        try:
            return self.vault.load_tree(BlobId(tid))
        except (ColdDataError, DamagedError, UnsupportedFormatError) as exc:
            return self._unreadable(exc, tid)

    def _unreadable(self, exc: Exception, bid: bytes) -> str | None:
        """What a tree node or chunk list `bid` that could not be read leaves: None when it is
        only cold (skipped), else the key of a problem with its pack. The walk is incomplete."""
        self.complete = False
        if isinstance(exc, ColdDataError):
            self.report.skipped_meta += 1
            return None
        pack = self.vault.locate(BlobId(bid)).object_name
        if isinstance(exc, UnsupportedFormatError):
            return self.report.problem(pack, exc.message, "unsupported")
        return self.report.problem(pack, exc.reason)

    def _summarize(self, tid: bytes, node: tree.TreeNode) -> dict | None:
        """Which paths under this node need damaged objects: key -> [count, relative paths]."""
        result: dict = {}
        for e in node.entries:
            if e.type == tree.FILE:
                self.report.files += 1
                for key in self._chunks_key(e.chunks, e.size, f"tree node {tid.hex()}"):
                    add_paths(result, key, 1, [e.name])
            elif e.type == tree.DIR:
                child = self._done.get(e.tree, _VISITING)
                if child is _VISITING:  # the directory contains itself
                    child = self.report.problem(f"tree node {e.tree.hex()}", "a directory that contains itself")
                    self.complete = False
                if isinstance(child, str):
                    add_paths(result, child, 1, [e.name + b"/"])
                elif child:
                    prefix = e.name + b"/"
                    for key, (count, paths) in child.items():
                        add_paths(result, key, count, [prefix + p for p in paths[:MAX_PATHS]])
        return result or None
