"""The virtual tree behind the mount: the operations, no pyfuse3.

The tree's names come from layout.py (the mount's layout is defined there and
only there); its nodes are in nodes.py, open files and reads in handles.py.

Inode numbers are a hash of the directory's path in the mount and the entry's
place in its listing (inodes.py), so they are the same on every lookup, after
the kernel forgets a node, and across mounts; memory is kept per directory the
kernel holds something of, never per file. Directory listings are sorted and
immutable, so readdir offsets are stable. Listing, stat and lookup read only tree nodes (hot);
file contents are fetched chunk by chunk when read.

Requests that cannot be answered raise the errors of mount/errors.py (or the
restore manager's ColdFailError, InterruptedWaitError); fuse_ops maps them to errno.
"""

from __future__ import annotations

import functools
import logging
import stat
from typing import Sequence

import trio

from coldvault.errors import ColdvaultError
from coldvault.index import tree
from coldvault.mount import layout
from coldvault.mount.chunkcache import ChunkSource
from coldvault.mount.errors import (
    DamagedFileError, IsADirError, NoAttributeError, NoEntryError, NotADirError, WrongTypeError,
)
from coldvault.mount.handles import OpenFiles
from coldvault.mount.inodes import ROOT_INODE, DirRecord, InodeTable
from coldvault.mount.nodes import (
    Attr, ChangesDir, DirNode, FileNode, LinkNode, Made, Node, StaticDir, StreamNode, TreeDir, dir_attr,
    make_node,
)
from coldvault.mount.restore_manager import RestoreManager
from coldvault.store.aio import thread_limiter
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

STATE_XATTR = b"user.coldvault.state"


class VirtualFS:
    def __init__(self, vault: Vault, chunks: ChunkSource, cold: RestoreManager, readahead: int = 8 * 1024 * 1024):
        self.vault = vault
        self.chunks = chunks
        self.cold = cold
        self.meta_limiter = thread_limiter(vault.store)  # tree loads: apart from chunk reads
        self.files = OpenFiles(chunks, cold, vault.index.raw_length, self._damaged, readahead)
        self._damaged_logged: set[bytes] = set()
        self.layout = layout.Layout(vault.snapshots())
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
        lay = self.layout
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
        if isinstance(place, (layout.SourceDir, layout.SourceListing)):
            t = place.view.newest_time
        elif isinstance(place, layout.DatasetDir):
            t = lay.dataset_time(place.dataset)
        elif isinstance(place, layout.ChainDir):
            t = place.time
        else:
            t = lay.mount_time
        return StaticDir(functools.partial(self._layout_items, place), dir_attr(t))

    def _layout_items(self, place: layout.Place) -> list[Made]:
        return [Made(name.encode(), functools.partial(self._node_for, p)) for name, p in self.layout.children(place)]

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
        if not 0 <= i < len(items):
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
