"""How snapshots become folders: names, days, and the per-day change sets.

Pure logic over snapshot records and tree nodes; no FUSE, no I/O of its own
(tree nodes come through the `load` callable).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord


@dataclass
class SourceView:
    name: str
    snapshots: list[SnapshotRecord]  # oldest first

    def named(self) -> list[tuple[str, SnapshotRecord]]:
        """Folder name per snapshot: its UTC time; a second one in the same second gets -2, -3..."""
        out, seen = [], {}
        for r in self.snapshots:
            base = r.time_str
            n = seen.get(base, 0) + 1
            seen[base] = n
            out.append((base if n == 1 else f"{base}-{n}", r))
        return out

    def days(self) -> "OrderedDict[str, list[SnapshotRecord]]":
        days: OrderedDict[str, list[SnapshotRecord]] = OrderedDict()
        for r in self.snapshots:
            days.setdefault(r.time_str[:10], []).append(r)
        return days

    def day_pairs(self, day: str) -> list[tuple[SnapshotRecord, SnapshotRecord | None]]:
        """(snapshot, the one before it) for each snapshot of `day`, in order."""
        pairs, prev = [], None
        for r in self.snapshots:
            d = r.time_str[:10]
            if d == day:
                pairs.append((r, prev))
            elif d > day:
                break
            prev = r
        return pairs


def group_sources(records: list[SnapshotRecord], kinds=("tree", "stream")) -> "OrderedDict[str, SourceView]":
    out: OrderedDict[str, SourceView] = OrderedDict()
    for r in sorted(records, key=lambda r: (r.source, r.time, r.id)):
        if r.kind in kinds:
            out.setdefault(r.source, SourceView(r.source, [])).snapshots.append(r)
    return out


def entry_changed(new: tree.Entry, old: tree.Entry | None) -> bool:
    """Was `new` created or modified relative to `old` (same name, the snapshot before)?"""
    if old is None or old.type != new.type:
        return True
    if new.type == tree.FILE:
        return (new.chunks, new.size, new.mtime, new.mode, new.uid, new.gid) != (
            old.chunks, old.size, old.mtime, old.mode, old.uid, old.gid)
    if new.type == tree.DIR:
        return new.tree != old.tree or (new.mode, new.uid, new.gid) != (old.mode, old.uid, old.gid)
    if new.type == tree.SYMLINK:
        return new.target != old.target
    return (new.rdev, new.mode, new.uid, new.gid) != (old.rdev, old.mode, old.uid, old.gid)


# A pair of tree node ids for one directory: (in a snapshot of the day, in the snapshot before it).
TreePair = tuple[bytes | None, bytes | None]


def merge_changes(pairs: list[TreePair], load) -> list[tuple[tree.Entry, list[TreePair]]]:
    """Entries created or modified in any of the day's snapshots, deletions not applied.

    `pairs` are, for one directory, its tree ids in each snapshot of the day and in
    the snapshot before. A name changed several times that day shows its last
    changed version. For a changed subdirectory, the list that comes with it holds
    the pairs of that subdirectory, to merge in turn. Sorted by name.
    """
    latest: dict[bytes, tree.Entry] = {}
    for new_id, old_id in pairs:
        if new_id is None:
            continue
        new = load(new_id)
        old = load(old_id) if old_id is not None else None
        for e in new.entries:
            o = old.find(e.name) if old is not None else None
            if entry_changed(e, o):
                latest[e.name] = e
    out = []
    for name in sorted(latest):
        e = latest[name]
        sub: list[TreePair] = []
        if e.type == tree.DIR:
            for new_id, old_id in pairs:
                ne = load(new_id).find(name) if new_id is not None else None
                oe = load(old_id).find(name) if old_id is not None else None
                sub.append((
                    ne.tree if ne is not None and ne.type == tree.DIR else None,
                    oe.tree if oe is not None and oe.type == tree.DIR else None,
                ))
        out.append((e, sub))
    return out
