"""Paths inside a snapshot's file tree: split one, find the entry it names."""

from __future__ import annotations

import os

from coldvault.errors import UserError
from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault.vault import Vault


def split_path(path: str) -> list[bytes]:
    return [p for p in os.fsencode(path).split(b"/") if p and p != b"."]


def resolve(vault: Vault, rec: SnapshotRecord, path: str | None) -> tree.Entry | None:
    """The entry at `path` in the snapshot (None means the root directory)."""
    if rec.tree is None:
        raise UserError(f"snapshot {rec.short_id} has no file tree (it is a {rec.kind} snapshot)")
    parts = split_path(path or "")
    if b".." in parts:
        raise UserError(f"path {path!r} may not contain '..'")
    entry = None
    node_id = rec.tree
    for i, part in enumerate(parts):
        if node_id is None:
            raise UserError(f"{os.fsdecode(b'/'.join(parts[:i]))} is not a directory in snapshot {rec.short_id}")
        entry = vault.load_tree(node_id).find(part)
        if entry is None:
            raise UserError(f"no {os.fsdecode(b'/'.join(parts[:i + 1]))} in snapshot {rec.short_id}")
        node_id = entry.tree if entry.type == tree.DIR else None
    return entry
