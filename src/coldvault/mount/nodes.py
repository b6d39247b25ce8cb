"""The nodes of the virtual tree: files, streams, links and directories.

A directory lists specs, never child nodes: a tree entry, or a `Made` (a name
and a function that makes the node); `make_node` turns one into a node when a
request needs it. A snapshot's directory keeps not even its listing (the vault's
bounded cache of decoded tree nodes does). Nodes read the vault through the `fs`
passed to them (VirtualFS: its tree cache and thread limiter).
"""

from __future__ import annotations

import bisect
import stat
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Sequence

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


class Made:
    """An entry of a listing that is not a tree entry: its name and what makes its node."""

    __slots__ = ("name", "make")

    def __init__(self, name: bytes, make):
        self.name = name
        self.make = make


class Node:
    """`info` is an Attr, or the tree entry the node stands for (most nodes: then no Attr
    is made for them at all; FuseOps reads the attributes from either). Nodes are made
    when a request needs them and not kept (inodes.py keeps what the kernel holds)."""

    __slots__ = ("ino", "key", "info")

    def __init__(self, info: Attr | tree.Entry):
        self.info = info
        self.ino = 0
        self.key = b""

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
    """A directory. Its listing is a sequence of specs in a fixed order, each a tree entry
    or a `Made` (both have `.name`; `make_node` turns one into a node), or None where an
    entry of a layout directory went (LayoutDir); a spec's index in it is part of the
    child's inode number (inodes.py)."""

    __slots__ = ()

    async def items(self, fs: "VirtualFS") -> Sequence:
        raise NotImplementedError

    async def find(self, fs: "VirtualFS", name: bytes) -> tuple[int, object] | None:
        """(index, spec) of the entry called `name`, or None."""
        raise NotImplementedError


class KeptDir(DirNode):
    """A directory whose listing is made once and kept while its record lives (the
    layout's directories, a day's changes): a list, and a dict for lookups."""

    __slots__ = ("_items", "_index")

    def __init__(self, attr: Attr | tree.Entry):
        super().__init__(attr)
        self._items = None
        self._index = None

    async def _list(self, fs: "VirtualFS") -> list:
        raise NotImplementedError

    async def items(self, fs):
        if self._items is None:
            self.set_items(await self._list(fs))
        return self._items

    def set_items(self, items: list) -> None:
        """Keep `items` (holes allowed: None) as the listing, replacing the one kept."""
        self._index = {spec.name: i for i, spec in enumerate(items) if spec is not None}
        self._items = items

    async def find(self, fs, name):
        items = await self.items(fs)
        i = self._index.get(name)
        return None if i is None else (i, items[i])


class LayoutDir(KeptDir):
    """A directory of the layout (the mount, files/, a source and its listings, zfs/, a
    dataset, a chain). Its listing follows the layout (VirtualFS.layout_items): a live
    mount lists it again when snapshots come or go (VirtualFS.apply_layout). An entry that
    went leaves a hole (None) where it was, so every entry keeps its index, and with it
    its inode number, for the life of the mount."""

    __slots__ = ("place",)

    def __init__(self, place, attr: Attr):
        super().__init__(attr)
        self.place = place

    async def _list(self, fs):
        return fs.layout_items(self.key, self.place)

    @property
    def listed(self) -> list | None:
        """The listing kept now (None: not listed yet)."""
        return self._items


def make_node(spec) -> Node:
    """The node for a listing's spec: a tree entry (most of them: no closure per entry
    of a big directory) or a `Made`."""
    if type(spec) is not tree.Entry:
        return spec.make()
    t = spec.type
    if t == tree.FILE:
        return FileNode(spec.chunks, spec)
    if t == tree.DIR:
        return TreeDir(spec.tree, spec)
    if t == tree.SYMLINK:
        return LinkNode(spec.target, spec)
    return Node(spec)


class TreeDir(DirNode):
    """A directory of a snapshot, backed by one tree node. Its listing is the tree node's
    entries, from the vault's bounded cache of decoded nodes: not kept here."""

    __slots__ = ("tree_id",)

    def __init__(self, tree_id: bytes, attr: Attr | tree.Entry):
        super().__init__(attr)
        self.tree_id = tree_id

    async def items(self, fs):
        return (await fs.load_tree(self.tree_id)).entries

    async def find(self, fs, name):
        # Tree nodes keep their entries sorted by name (index/tree.py): a binary search.
        entries = (await fs.load_tree(self.tree_id)).entries
        i = bisect.bisect_left(entries, name, key=_entry_name)
        return (i, entries[i]) if i < len(entries) and entries[i].name == name else None


_entry_name = attrgetter("name")


class ChangesDir(KeptDir):
    """Entries created or modified in one day's snapshots, deletions not applied."""

    __slots__ = ("pairs",)

    def __init__(self, pairs, attr: Attr | tree.Entry):
        super().__init__(attr)
        self.pairs = pairs

    async def _list(self, fs):
        merged = await trio.to_thread.run_sync(merge_changes, self.pairs, fs.vault.load_tree, limiter=fs.meta_limiter)
        out = []
        for e, sub in merged:
            if e.type == tree.DIR:
                out.append(Made(e.name, (lambda e=e, sub=sub: ChangesDir(sub, e))))
            else:
                out.append(e)
        return out
