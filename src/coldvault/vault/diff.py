"""What changed between two snapshots' trees, as `restic diff` shows it.

The trees are compared node by node, both sides in name order, with an explicit
stack (no recursion): a directory whose tree id is the same on both sides is
identical all the way down and is skipped without loading it, which is what
makes a diff of two nightly snapshots cost a few tree nodes, not the whole tree.

Codes: `+` only in B, `-` only in A, `M` content changed (a file's chunks, a
symlink's target, a device's number), `U` metadata only (mode, owner, mtime;
for a directory whose contents changed, its mtime does not count: that change
is shown by its entries), `T` the type changed (shown as such, its old and new
contents are not listed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from coldvault.index import tree
from coldvault.index.ids import BlobId
from coldvault.vault.vault import Vault
from coldvault.vault.walker import walk

ADDED, REMOVED, MODIFIED, METADATA, TYPE = "+", "-", "M", "U", "T"


@dataclass
class Change:
    code: str
    path: bytes
    old: tree.Entry | None
    new: tree.Entry | None

    @property
    def type(self) -> str:
        return (self.new or self.old).type


@dataclass
class Summary:
    """Counts by kind of entry: {"file"|"dir"|"other": {"added": n, "removed": n, ...}}, and bytes."""

    counts: dict = field(default_factory=lambda: {k: {"added": 0, "removed": 0, "modified": 0, "metadata": 0,
                                                      "type": 0} for k in ("file", "dir", "other")})
    added_bytes: int = 0  # sizes of files added, and the new size of files modified
    removed_bytes: int = 0  # sizes of files removed, and the old size of files modified

    def add(self, c: Change) -> None:
        kind = c.type if c.type in ("file", "dir") else "other"
        word = {ADDED: "added", REMOVED: "removed", MODIFIED: "modified", METADATA: "metadata", TYPE: "type"}[c.code]
        self.counts[kind][word] += 1
        if c.code in (ADDED, MODIFIED, TYPE) and c.new is not None and c.new.type == tree.FILE:
            self.added_bytes += c.new.size
        if c.code in (REMOVED, MODIFIED, TYPE) and c.old is not None and c.old.type == tree.FILE:
            self.removed_bytes += c.old.size


def _content_differs(a: tree.Entry, b: tree.Entry) -> bool:
    if a.type == tree.FILE:
        return a.chunks != b.chunks or a.size != b.size
    if a.type == tree.SYMLINK:
        return a.target != b.target
    if a.type in (tree.CHARDEV, tree.BLOCKDEV):
        return a.rdev != b.rdev
    return False


def _meta_differs(a: tree.Entry, b: tree.Entry) -> bool:
    if (a.mode, a.uid, a.gid) != (b.mode, b.uid, b.gid):
        return True
    if a.type == tree.DIR and a.tree != b.tree:
        return False  # its mtime changed with its contents: the entries below say what
    return a.mtime != b.mtime


def _whole(vault: Vault, code: str, path: bytes, e: tree.Entry) -> Iterator[Change]:
    """An entry added or removed, and (for a directory) everything below it."""
    yield Change(code, path, e if code == REMOVED else None, e if code == ADDED else None)
    if e.type == tree.DIR and e.tree is not None:
        for p, sub in walk(vault, e.tree, path):
            yield Change(code, p, sub if code == REMOVED else None, sub if code == ADDED else None)


def _pairs(ea: list[tree.Entry], eb: list[tree.Entry]) -> Iterator[tuple[tree.Entry | None, tree.Entry | None]]:
    """Both directories' entries merged by name (both lists are sorted by name)."""
    i = j = 0
    while i < len(ea) or j < len(eb):
        a = ea[i] if i < len(ea) else None
        b = eb[j] if j < len(eb) else None
        if b is None or (a is not None and a.name < b.name):
            i += 1
            yield a, None
        elif a is None or b.name < a.name:
            j += 1
            yield None, b
        else:
            i += 1
            j += 1
            yield a, b


def diff(vault: Vault, tree_a: bytes, tree_b: bytes) -> Iterator[Change]:
    """The changes from the tree `tree_a` to `tree_b`, depth first in name order."""
    if tree_a == tree_b:
        return

    def frame(prefix: bytes, ta: bytes, tb: bytes):
        return prefix, _pairs(vault.load_tree(BlobId(ta)).entries, vault.load_tree(BlobId(tb)).entries)

    stack = [frame(b"", tree_a, tree_b)]
    while stack:
        prefix, pairs = stack[-1]
        pair = next(pairs, None)
        if pair is None:
            stack.pop()
            continue
        a, b = pair
        path = prefix + b"/" + (a or b).name if prefix else (a or b).name
        if b is None:
            yield from _whole(vault, REMOVED, path, a)
        elif a is None:
            yield from _whole(vault, ADDED, path, b)
        elif a.type != b.type:
            yield Change(TYPE, path, a, b)
        else:
            if _content_differs(a, b):
                yield Change(MODIFIED, path, a, b)
            elif _meta_differs(a, b):
                yield Change(METADATA, path, a, b)
            if a.type == tree.DIR and a.tree != b.tree:
                stack.append(frame(path, a.tree, b.tree))
