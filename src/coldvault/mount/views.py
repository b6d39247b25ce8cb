"""What a day's changes/ folder shows: the entries its snapshots created or modified.

Pure logic over tree nodes; no FUSE, no I/O of its own (tree nodes come through
the `load` callable). The folders themselves are named in layout.py.
"""

from __future__ import annotations

from coldvault.index import tree


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
