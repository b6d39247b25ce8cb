"""What the snapshots of a vault use: every blob reachable from every record."""

from __future__ import annotations

from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault.streams import stream_chunks
from coldvault.vault.vault import Vault
from coldvault.vault.walker import walk
from coldvault.zfs.chain import Stream


def referenced_blobs(vault: Vault, records: list[SnapshotRecord]) -> set[bytes]:
    """Ids of all tree nodes, chunk lists and data chunks the records reach (each tree once)."""
    used: set[bytes] = set()
    trees: set[bytes] = set()
    for r in records:
        if r.tree is not None:
            for _, e in walk(vault, r.tree, seen=trees):
                if e.type == tree.FILE:
                    used.update(e.chunks)
        if r.kind == "zfs" and r.zfs:
            used.add(r.zfs["chunks"])
            used.update(stream_chunks(vault, Stream(r)))
    return used | trees
