"""The mount's inode numbers: made from the path, kept per directory, never per file.

A child's inode number is its directory's number (`dir_no`, a hash of the
directory's path in the mount) and its position in the directory's listing:

    ino = dir_no << IDX_BITS | (index + 1)

Listings keep each entry at its index (immutable, or with holes where a live mount's
entries went: vfs.py), and the hash is of the path, so a name has the
same number on every lookup, after the kernel forgets it, and in the next mount
(a clash of two directories' hashes probes on: the second one's numbers then depend
on the order they were met in, as with any probing).

What is kept is one record per directory that the kernel may still ask about: its
node, its path, and how many references the kernel holds to its children
(`held`, the sum of their lookup counts: readdirplus and lookup add one each,
`forget` takes them back). Nothing is kept per file: a file's node is made again
from its directory's listing (a tree node, from the vault's cache of decoded nodes)
when the kernel asks. A record whose children the kernel has all forgotten, and
that no live record lies under, is dropped; if the kernel still holds the directory
itself, the record is made again from its parent's, with the same numbers.
"""

from __future__ import annotations

import xxhash

ROOT_INODE = 1
IDX_BITS = 25  # a tree node holds at most 16 Mi entries (index/limits.py MAX_ARRAY)
IDX_MASK = (1 << IDX_BITS) - 1
DIR_NO_MAX = (1 << (63 - IDX_BITS)) - 1


class DirRecord:
    """A directory the kernel may still ask about (see the module's docstring)."""

    __slots__ = ("node", "ino", "key", "dir_no", "parent", "held", "children")

    def __init__(self, node, ino: int, key: bytes, dir_no: int, parent: "DirRecord | None"):
        self.node = node  # its DirNode
        self.ino = ino
        self.key = key  # its path in the mount (b"" for the root)
        self.dir_no = dir_no  # the high bits of its children's inode numbers
        self.parent = parent
        self.held = 0  # the kernel's references to its children
        self.children = 0  # live records of its subdirectories


class InodeTable:
    def __init__(self, root_node):
        self._by_ino: dict[int, DirRecord] = {}
        self._by_dir_no: dict[int, DirRecord] = {}
        self.root = self._add(root_node, ROOT_INODE, b"", None)

    def __len__(self) -> int:
        """Directories with a record."""
        return len(self._by_ino)

    def records(self) -> list[DirRecord]:
        """Every record now (a copy: safe to use while records come and go)."""
        return list(self._by_ino.values())

    def _add(self, node, ino: int, key: bytes, parent: DirRecord | None) -> DirRecord:
        dir_no = (xxhash.xxh3_64_intdigest(key) >> (IDX_BITS + 1)) or 1
        while dir_no in self._by_dir_no:  # a clash: probe on
            dir_no = dir_no % DIR_NO_MAX + 1
        r = DirRecord(node, ino, key, dir_no, parent)
        self._by_ino[ino] = r
        self._by_dir_no[dir_no] = r
        if parent is not None:
            parent.children += 1
        return r

    def record(self, ino: int) -> DirRecord | None:
        """The record of the directory `ino`, if it has one now."""
        return self._by_ino.get(ino)

    def add(self, node, ino: int, parent: DirRecord, name: bytes) -> DirRecord:
        """The record of directory `node`, child `name` (inode `ino`) of `parent`."""
        r = self._by_ino.get(ino)  # made meanwhile, by a request that waited for the same listing
        if r is None:
            r = self._add(node, ino, parent.key + b"/" + name, parent)
        return r

    def owner(self, ino: int) -> tuple[DirRecord, int] | None:
        """The directory record holding inode `ino`, and the index of `ino` in its listing."""
        r = self._by_dir_no.get(ino >> IDX_BITS)
        if r is None or ino == ROOT_INODE:
            return None
        return r, (ino & IDX_MASK) - 1

    @staticmethod
    def child_ino(r: DirRecord, index: int) -> int:
        if index >= IDX_MASK:
            raise OverflowError(f"{index + 1} entries in one directory")
        return r.dir_no << IDX_BITS | (index + 1)

    def forget(self, ino: int, n: int) -> None:
        """The kernel dropped `n` references to `ino`."""
        found = self.owner(ino)
        if found is not None:
            r = found[0]
            r.held -= n
            self._drop(r)
        r = self._by_ino.get(ino)
        if r is not None:
            self._drop(r)  # the directory's own record, if nothing under it is held

    def _drop(self, r: DirRecord) -> None:
        while r is not self.root and r.held <= 0 and r.children == 0:
            if self._by_ino.get(r.ino) is not r:
                return  # dropped already
            del self._by_ino[r.ino]
            del self._by_dir_no[r.dir_no]
            r = r.parent
            r.children -= 1
