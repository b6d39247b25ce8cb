"""What the snapshots of a vault use: every blob reachable from every record."""

from __future__ import annotations

from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault.vault import Vault


def referenced_blobs(vault: Vault, records: list[SnapshotRecord]) -> set[bytes]:
    """Ids of all tree nodes, chunk lists and data chunks the records reach (each tree once)."""
    from coldvault.restore.zfsrestore import stream_chunks
    from coldvault.zfs.chain import Stream

    used: set[bytes] = set()
    todo: list[bytes] = []
    for r in records:
        if r.tree is not None and r.tree not in used:
            used.add(r.tree)
            todo.append(r.tree)
        if r.kind == "zfs" and r.zfs:
            used.add(r.zfs["chunks"])
            used.update(stream_chunks(vault, Stream(r)))
    while todo:
        for e in vault.load_tree(todo.pop()).entries:
            if e.type == tree.FILE:
                used.update(e.chunks)
            elif e.type == tree.DIR and e.tree not in used:
                used.add(e.tree)
                todo.append(e.tree)
    return used
