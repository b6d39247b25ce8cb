"""The virtual tree behind the mount: the operations, no pyfuse3.

The tree's names come from layout.py (the mount's layout is defined there and
only there); its nodes are in nodes.py, open files and reads in handles.py.

Inode numbers are a hash of the directory's path in the mount and the entry's
place in its listing (inodes.py), so they are the same on every lookup, after
the kernel forgets a node, and across mounts; memory is kept per directory the
kernel holds something of, never per file. Listings of snapshots' trees are sorted and
immutable; those of the layout's directories are sorted when first listed and, in a
live mount (live.py), keep every entry at its place while snapshots come and go: new
entries are added at the end, an entry that went leaves a hole (`apply_layout`). So
readdir offsets and the inode numbers of what stays are stable. Listing, stat and
lookup read only tree nodes (hot); file contents are fetched chunk by chunk when read.

Requests that cannot be answered raise the errors of mount/errors.py (or the
restore manager's ColdFailError, InterruptedWaitError); fuse_ops maps them to errno.
"""

from __future__ import annotations

import functools
import logging
import stat
from typing import Sequence

import trio

from coldvault.errors import ColdvaultError, DamagedError
from coldvault.index import tree
from coldvault.mount import layout
from coldvault.mount.chunkcache import ChunkSource
from coldvault.mount.errors import (
    DamagedFileError, IsADirError, NoAttributeError, NoEntryError, NotADirError, WrongTypeError,
)
from coldvault.mount.handles import OpenFiles
from coldvault.mount.inodes import ROOT_INODE, DirRecord, InodeTable
from coldvault.mount.nodes import (
    Attr, ChangesDir, DirNode, FileNode, LayoutDir, LinkNode, Made, Node, StreamNode, TreeDir, dir_attr,
    make_node,
)
from coldvault.mount.restore_manager import RestoreManager
from coldvault.store.aio import thread_limiter
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

STATE_XATTR = b"user.coldvault.state"


class LayoutEntry(Made):
    """An entry of a layout directory's listing: its name and the place it shows."""

    __slots__ = ("place",)

    def __init__(self, name: bytes, place: layout.Place, make):
        super().__init__(name, functools.partial(make, place))
        self.place = place


# The layout's containers: one thing whatever they hold, so only their times change.
CONTAINERS = (layout.Top, layout.SourceDir, layout.SourceListing, layout.DatasetDir)


class VirtualFS:
    def __init__(self, vault: Vault, chunks: ChunkSource, cold: RestoreManager, readahead: int = 8 * 1024 * 1024):
        self.vault = vault
        self.chunks = chunks
        self.cold = cold
        self.meta_limiter = thread_limiter(vault.store)  # tree loads: apart from chunk reads
        # The index is looked up where it is now: a live mount may swap in a new one.
        self.files = OpenFiles(chunks, cold, lambda c: vault.index.raw_length(c), self._damaged, readahead)
        self._damaged_logged: set[bytes] = set()
        self.records = vault.snapshots()
        self.layout = layout.Layout(self.records)
        # Per layout directory (by its key), the index of each entry ever listed in it, by
        # (name, identity): an entry keeps its index, and its inode number, while it stays.
        self._slots: dict[bytes, dict[tuple, int]] = {}
        # A live mount's index follower (live.Refresher): a read that fails on damage asks
        # it whether the index changed, and is tried again if it did. None: a static mount.
        self.index_sync = None
        self.root = self._node_for(layout.Top(""))
        self.root.ino, self.root.key = ROOT_INODE, b""
        self.inodes = InodeTable(self.root)

    @property
    def nursery(self) -> trio.Nursery | None:
        """For readahead; set by the runner."""
        return self.files.nursery

    @nursery.setter
    def nursery(self, nursery: trio.Nursery | None) -> None:
        self.files.nursery = nursery

    # ---- structure: the layout's places as nodes ----

    def _node_for(self, place: layout.Place) -> Node:
        if isinstance(place, layout.InSnapshot):
            return TreeDir(place.rec.tree, dir_attr(place.rec.time))
        if isinstance(place, layout.InChanges):
            return ChangesDir(place.pairs(), dir_attr(place.time))
        if isinstance(place, layout.StreamFile):
            t = place.stream.rec.time
            return StreamNode(place.stream, Attr(stat.S_IFREG | 0o444, place.stream.length, 0, 0, t, t))
        if isinstance(place, layout.Latest):
            target = place.target.encode()
            t = place.view.newest_time
            return LinkNode(target, Attr(stat.S_IFLNK | 0o777, len(target), 0, 0, t, t))
        return LayoutDir(place, dir_attr(self._dir_time(place)))

    def _dir_time(self, place: layout.Place, lay: layout.Layout | None = None) -> int:
        """The time a directory of the layout (`lay`, else the current one) shows (ns)."""
        lay = lay or self.layout
        if isinstance(place, (layout.SourceDir, layout.SourceListing)):
            return place.view.newest_time
        if isinstance(place, layout.DatasetDir):
            return lay.dataset_time(place.dataset)
        if isinstance(place, layout.ChainDir):
            return place.time
        return lay.mount_time

    def layout_items(self, key: bytes, place: layout.Place) -> list[LayoutEntry | None]:
        """The listing of the layout directory at `key`: each entry at the index it was
        first listed at, None where an entry went."""
        slots = self._slots.setdefault(key, {})
        children = [(name, p, (name, layout.identity(p))) for name, p in self.layout.children(place)]
        for _, _, ident in children:
            if ident not in slots:
                slots[ident] = len(slots)
        items: list[LayoutEntry | None] = [None] * len(slots)
        for name, p, ident in children:
            items[slots[ident]] = LayoutEntry(name.encode(), p, self._node_for)
        return items

    # ---- a live mount: a new layout swapped in ----

    def apply_layout(self, records: list, new: layout.Layout) -> tuple[list[tuple[int, bytes]], list[int]]:
        """Show `new` (the layout of `records`) from now on: every layout directory the kernel
        holds something of is listed again. Returns what the kernel must forget: entries
        (directory inode, name) that came, went or now show something else, and inodes whose
        attributes (times) changed. Runs in the event loop, without awaiting: requests see
        the old listings or the new ones, never a mix."""
        before = self.layout
        self.records, self.layout = records, new
        entries: list[tuple[int, bytes]] = []
        inodes: list[int] = []
        for r in self.inodes.records():
            node = r.node
            if not isinstance(node, LayoutDir):
                continue
            place = self._place_at(r.key, node.place)
            if place is not None:
                node.place = place
                t = self._dir_time(place)
                if node.info.mtime != t:
                    node.info = dir_attr(t)
                    inodes.append(r.ino)
            old = node.listed
            if place is None:  # gone, or another thing at that path now (a new inode number)
                items = [None] * len(old or ())
            elif old is None:
                continue  # listed when first asked, from the new layout
            else:
                items = self.layout_items(r.key, place)
            old = old or ()
            for i in range(max(len(old), len(items))):
                was = old[i] if i < len(old) else None
                now = items[i] if i < len(items) else None
                if (was is None) != (now is None):
                    entries.append((r.ino, (was or now).name))  # came or went (a new identity: both)
                elif was is not None and isinstance(was.place, CONTAINERS):
                    if self._dir_time(now.place) != self._dir_time(was.place, before):
                        inodes.append(InodeTable.child_ino(r, i))
            node.set_items(items)
        return entries, inodes

    def _place_at(self, key: bytes, was: layout.Place) -> layout.Place | None:
        """What the path `key` shows in the current layout, if it still shows what `was` did."""
        parts = key.decode("utf-8", "surrogateescape").split("/")[1:]
        try:
            place = self.layout.parse(parts)
        except layout.NotInLayoutError:
            return None
        return place if layout.identity(place) == layout.identity(was) else None

    # ---- inodes: nodes are made on request from their directory's record ----

    async def node(self, ino: int) -> Node:
        """The node of inode `ino` (made again from its directory's listing)."""
        r = self.inodes.record(ino)
        if r is not None:
            return r.node
        found = self.inodes.owner(ino)
        if found is None:
            raise NoEntryError(f"inode {ino}")
        r, i = found
        items = await self._guard(r.node, r.node.items(self))
        if not 0 <= i < len(items) or items[i] is None:  # None: gone from a live mount
            raise NoEntryError(f"inode {ino}")
        return self.child(r, i, items[i])

    @staticmethod
    def child(r: DirRecord, index: int, spec) -> Node:
        """The node of entry `index` (`spec`) of the directory of record `r`."""
        node = make_node(spec)
        node.ino = InodeTable.child_ino(r, index)
        node.key = r.key + b"/" + spec.name
        return node

    async def dir_record(self, ino: int) -> DirRecord:
        """The record of directory `ino`, made from its parent's if it has none now."""
        r = self.inodes.record(ino)
        if r is not None:
            return r
        node = await self.node(ino)
        if not isinstance(node, DirNode):
            raise NotADirError(node.path)
        found = self.inodes.owner(ino)  # again: the parent's record may have gone meanwhile
        if found is None:
            raise NoEntryError(node.path)
        return self.inodes.add(node, ino, found[0], node.key.rpartition(b"/")[2])

    async def load_tree(self, tree_id: bytes) -> tree.TreeNode:
        cached = self.vault.cached_tree(tree_id)
        if cached is not None:
            return cached
        sync = self.index_sync
        since = sync.generation if sync is not None else 0
        try:
            return await trio.to_thread.run_sync(self.vault.load_tree, tree_id, limiter=self.meta_limiter)
        except DamagedError:
            # A live mount: its pack may have gone with a prune, and the index moved on.
            if sync is None or not await sync.changed_since(since):
                raise
        return await trio.to_thread.run_sync(self.vault.load_tree, tree_id, limiter=self.meta_limiter)

    # ---- the operations the FUSE layer calls ----

    async def lookup(self, parent_ino: int, name: bytes) -> Node:
        """The child `name` of directory `parent_ino`; the kernel now holds a reference."""
        parent = await self.dir_record(parent_ino)
        if name == b".":
            child = parent.node
        elif name == b"..":
            child = (parent.parent or parent).node
        else:
            found = await self._guard(parent.node, parent.node.find(self, name))
            if found is None:
                raise NoEntryError(f"{parent.node.path}/{name.decode('utf-8', 'backslashreplace')}")
            child = self.child(parent, *found)
        self.hold(child.ino)
        return child

    def hold(self, ino: int, n: int = 1) -> None:
        """The kernel took `n` references to `ino` (a lookup, an entry of readdirplus)."""
        found = self.inodes.owner(ino)
        if found is not None:
            found[0].held += n

    async def listdir(self, ino: int) -> tuple[DirRecord, Sequence]:
        """The directory's record and its listing: specs in order, each with `.name`
        (`child` makes the node of one)."""
        r = await self.dir_record(ino)
        return r, await self._guard(r.node, r.node.items(self))

    def forget(self, ino: int, n: int) -> None:
        self.inodes.forget(ino, n)

    async def readlink(self, ino: int) -> bytes:
        n = await self.node(ino)
        if not isinstance(n, LinkNode):
            raise WrongTypeError(f"{n.path} is not a symbolic link")
        return n.target

    async def open(self, ino: int, pid: int | None = None) -> int:
        n = await self.node(ino)
        if isinstance(n, DirNode):
            raise IsADirError(n.path)
        if not isinstance(n, FileNode):
            raise WrongTypeError(f"{n.path} is not a regular file")
        chunks = await self._guard(n, n.load_chunks(self))
        return self.files.open(n, chunks, pid)

    def release(self, fh: int) -> None:
        self.files.release(fh)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        return await self.files.read(fh, off, size)

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        n = await self.node(ino)
        if name != STATE_XATTR or not isinstance(n, FileNode):
            raise NoAttributeError(name)
        return (await self._guard(n, self._state(n))).encode()

    async def _state(self, n: FileNode) -> str:
        return await self.cold.state(await n.load_chunks(self))

    async def listxattr(self, ino: int) -> list[bytes]:
        return [STATE_XATTR] if isinstance(await self.node(ino), FileNode) else []

    # ---- damage: one log line per file, then its error ----

    def _damaged(self, node: Node, message: str) -> DamagedFileError:
        if node.key not in self._damaged_logged:
            self._damaged_logged.add(node.key)
            log.error("%s: %s", node.path, message)
        return DamagedFileError(f"{node.path}: {message}")

    async def _guard(self, node: Node, coro):
        """Metadata reads: a damaged tree node or chunk list fails that node only."""
        try:
            return await coro
        except ColdvaultError as exc:
            raise self._damaged(node, exc.message) from None
