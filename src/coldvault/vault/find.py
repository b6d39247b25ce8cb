"""Which snapshots hold paths that match a pattern (`coldvault find`).

A pattern without '/' is matched (fnmatch: `*`, `?`, `[...]`) against each entry's
name; with a '/', against its whole path in the snapshot (a leading '/' is
ignored: paths start at the snapshot's root).

Snapshots are searched newest first. The matches below a directory depend only on
its tree id (and, for a path pattern, on where it is), so what a tree was found to
hold is remembered: a subtree seen in an earlier-searched snapshot is not walked
again. Trees with no match cost one id in a set; matches are kept per tree only up
to MEMO_MATCHES (a pattern like '*' on a big tree must not hold every path).
The walk uses an explicit stack, one frame per directory level.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from typing import Iterator

from coldvault.index import tree
from coldvault.index.ids import BlobId
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault.vault import Vault

MEMO_MATCHES = 1000


@dataclass
class Match:
    path: bytes
    entry: tree.Entry


class Finder:
    def __init__(self, vault: Vault, pattern: str):
        self.vault = vault
        self.on_path = "/" in pattern.strip("/")
        pat = pattern.strip("/") if self.on_path else pattern.rstrip("/")
        self._re = re.compile(fnmatch.translate(pat))
        self._empty: set = set()  # keys of trees known to hold no match
        self._memo: dict = {}  # key -> matches relative to the tree

    def _matches(self, path: bytes, name: bytes) -> bool:
        return self._re.match(os.fsdecode(path if self.on_path else name)) is not None

    def _key(self, tree_id: bytes, prefix: bytes):
        return (tree_id, prefix) if self.on_path else tree_id

    def in_tree(self, root: bytes) -> list[Match]:
        """Every match below the tree `root` (paths relative to it), depth first in name order."""
        key = self._key(root, b"")
        if key in self._empty:
            return []
        if key in self._memo:
            return list(self._memo[key])
        # Frames: (tree id, path of the directory, its entries, matches found below it so far).
        stack = [(root, b"", iter(self.vault.load_tree(BlobId(root)).entries), [])]
        while True:
            tid, rel, entries, found = stack[-1]
            e = next(entries, None)
            if e is None:
                stack.pop()
                self._remember(self._key(tid, rel), rel, found)
                if not stack:
                    return found
                stack[-1][3].extend(found)
                continue
            path = rel + b"/" + e.name if rel else e.name
            if self._matches(path, e.name):
                found.append(Match(path, e))
            if e.type != tree.DIR or e.tree is None:
                continue
            key = self._key(e.tree, path)
            if key in self._empty:
                continue
            known = self._memo.get(key)
            if known is not None:
                found.extend(Match(path + b"/" + m.path, m.entry) for m in known)
                continue
            stack.append((e.tree, path, iter(self.vault.load_tree(BlobId(e.tree)).entries), []))

    def _remember(self, key, rel: bytes, found: list[Match]) -> None:
        if not found:
            self._empty.add(key)
        elif len(found) <= MEMO_MATCHES:
            cut = len(rel) + 1 if rel else 0
            self._memo[key] = [Match(m.path[cut:], m.entry) for m in found]


def find(vault: Vault, records: list[SnapshotRecord], pattern: str) -> Iterator[tuple[SnapshotRecord, list[Match]]]:
    """(snapshot, its matches) for every snapshot with a match, newest first."""
    finder = Finder(vault, pattern)
    for rec in sorted(records, key=lambda r: r.order, reverse=True):
        if rec.tree is None:
            continue
        found = finder.in_tree(rec.tree)
        if found:
            yield rec, found
