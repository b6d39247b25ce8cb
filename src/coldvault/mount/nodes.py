"""The nodes of the virtual tree: files, streams, links and directories.

A directory caches its listing as (name, spec) pairs, never child nodes, so a
child the kernel forgot is simply made again (with the same inode). A spec is a
tree entry or a function that makes the node (`make_node`). Nodes read the vault
through the `fs` passed to them (VirtualFS: its tree cache and thread limiter).
"""

from __future__ import annotations

import bisect
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from coldvault.index import tree
from coldvault.mount.views import merge_changes
from coldvault.vault.streams import stream_chunks
from coldvault.zfs.chain import Stream

if TYPE_CHECKING:
    from coldvault.mount.vfs import VirtualFS

DIR_MODE = stat.S_IFDIR | 0o555
TYPE_BITS = {
    tree.FILE: stat.S_IFREG, tree.DIR: stat.S_IFDIR, tree.SYMLINK: stat.S_IFLNK,
    tree.FIFO: stat.S_IFIFO, tree.CHARDEV: stat.S_IFCHR, tree.BLOCKDEV: stat.S_IFBLK,
}


@dataclass(slots=True)
class Attr:
    mode: int
    size: int = 0
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    ctime: int = 0
    nlink: int = 1
    rdev: int = 0


def dir_attr(time_ns: int) -> Attr:
    return Attr(DIR_MODE, 0, 0, 0, time_ns, time_ns, 2)


class Node:
    """`info` is an Attr, or the tree entry the node stands for (most nodes: then no Attr
    is made for them at all; FuseOps reads the attributes from either)."""

    __slots__ = ("ino", "key", "nlookup", "info")

    def __init__(self, info: Attr | tree.Entry):
        self.info = info
        self.ino = 0
        self.key = b""
        self.nlookup = 0

    @property
    def path(self) -> str:
        return self.key.decode("utf-8", "backslashreplace")


class LinkNode(Node):
    __slots__ = ("target",)

    def __init__(self, target: bytes, attr: Attr):
        super().__init__(attr)
        self.target = target


class FileNode(Node):
    """A regular file of a snapshot: contents are its chunks, in order."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: list, attr: Attr):
        super().__init__(attr)
        self.chunks = chunks

    async def load_chunks(self, fs: "VirtualFS") -> list:
        return self.chunks


class StreamNode(FileNode):
    """A ZFS send stream: its chunk list (a hot blob) is read on first open."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream, attr: Attr):
        super().__init__(None, attr)
        self.stream = stream

    async def load_chunks(self, fs):
        if self.chunks is None:
            self.chunks = await trio.to_thread.run_sync(stream_chunks, fs.vault, self.stream, limiter=fs.meta_limiter)
        return self.chunks


class DirNode(Node):
    """A directory; it caches its listing as (name, spec) pairs (see `make_node`)."""

    __slots__ = ("_items", "_index")
    SORTED = False  # a listing in name order is searched by bisection: no dict is kept

    def __init__(self, attr: Attr | tree.Entry):
        super().__init__(attr)
        self._items = None
        self._index = None

    async def _list(self, fs: "VirtualFS") -> list[tuple[bytes, object]]:
        """(name, spec) pairs in listing order (see `make_node`)."""
        raise NotImplementedError

    async def items(self, fs: "VirtualFS") -> list[tuple[bytes, object]]:
        if self._items is None:
            items = await self._list(fs)
            if not self.SORTED:
                self._index = dict(items)
            self._items = items
        return self._items

    async def maker(self, fs: "VirtualFS", name: bytes):
        items = await self.items(fs)
        if self._index is not None:
            return self._index.get(name)
        i = bisect.bisect_left(items, (name,))
        return items[i][1] if i < len(items) and items[i][0] == name else None


class StaticDir(DirNode):
    """A directory of the layout (files/, a source, zfs/...): kept while mounted."""

    __slots__ = ("_make",)

    def __init__(self, make_items, attr: Attr):
        """`make_items()` gives the listing, once, when it is first needed."""
        super().__init__(attr)
        self._make = make_items

    async def _list(self, fs):
        return self._make()


def make_node(spec) -> Node:
    """The node for a listing's spec: a tree entry (most of them: no closure per entry
    of a big directory) or a function that makes the node."""
    if type(spec) is not tree.Entry:
        return spec()
    t = spec.type
    if t == tree.FILE:
        return FileNode(spec.chunks, spec)
    if t == tree.DIR:
        return TreeDir(spec.tree, spec)
    if t == tree.SYMLINK:
        return LinkNode(spec.target, spec)
    return Node(spec)


class TreeDir(DirNode):
    """A directory of a snapshot, backed by one tree node."""

    __slots__ = ("tree_id",)
    SORTED = True  # tree nodes keep their entries sorted by name (index/tree.py)

    def __init__(self, tree_id: bytes, attr: Attr | tree.Entry):
        super().__init__(attr)
        self.tree_id = tree_id

    async def _list(self, fs):
        node = await fs.load_tree(self.tree_id)
        return [(e.name, e) for e in node.entries]

    async def maker(self, fs, name):
        if self._items is not None:
            return await super().maker(fs, name)
        # Without listing the whole directory: one binary search in the tree node.
        return (await fs.load_tree(self.tree_id)).find(name)


class ChangesDir(DirNode):
    """Entries created or modified in one day's snapshots, deletions not applied."""

    __slots__ = ("pairs",)
    SORTED = True  # merge_changes lists by name

    def __init__(self, pairs, attr: Attr | tree.Entry):
        super().__init__(attr)
        self.pairs = pairs

    async def _list(self, fs):
        merged = await trio.to_thread.run_sync(merge_changes, self.pairs, fs.vault.load_tree, limiter=fs.meta_limiter)
        out = []
        for e, sub in merged:
            if e.type == tree.DIR:
                out.append((e.name, (lambda e=e, sub=sub: ChangesDir(sub, e))))
            else:
                out.append((e.name, e))
        return out
