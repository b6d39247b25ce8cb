"""The virtual tree behind the mount: the operations, no pyfuse3.

The tree's names come from layout.py (the mount's layout is defined there and
only there); its nodes are in nodes.py, open files and reads in handles.py.

Inode numbers are a hash of the node's path in the mount, so they are the same
on every lookup, after the kernel forgets a node, and across mounts (a clash
probes the next number). Directory listings are sorted and immutable, so
readdir offsets are stable. Listing, stat and lookup read only tree nodes (hot);
file contents are fetched chunk by chunk when read.

Requests that cannot be answered raise the errors of mount/errors.py (or the
restore manager's ColdFailError, InterruptedWaitError); fuse_ops maps them to errno.
"""

from __future__ import annotations

import functools
import logging
import stat

import trio
import xxhash

from coldvault.errors import ColdvaultError
from coldvault.index import tree
from coldvault.mount import layout
from coldvault.mount.chunkcache import ChunkSource
from coldvault.mount.errors import (
    DamagedFileError, IsADirError, NoAttributeError, NoEntryError, NotADirError, WrongTypeError,
)
from coldvault.mount.handles import OpenFiles
from coldvault.mount.nodes import (
    Attr, ChangesDir, DirNode, FileNode, LinkNode, Node, StaticDir, StreamNode, TreeDir, dir_attr,
    make_node,
)
from coldvault.mount.restore_manager import RestoreManager
from coldvault.store.aio import thread_limiter
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

ROOT_INODE = 1
STATE_XATTR = b"user.coldvault.state"


class VirtualFS:
    def __init__(self, vault: Vault, chunks: ChunkSource, cold: RestoreManager, readahead: int = 8 * 1024 * 1024):
        self.vault = vault
        self.chunks = chunks
        self.cold = cold
        self.meta_limiter = thread_limiter(vault.store)  # tree loads: apart from chunk reads
        self.nodes: dict[int, Node] = {}
        self.keys: dict[bytes, int] = {}
        self.files = OpenFiles(chunks, cold, vault.index.raw_length, self._damaged, readahead)
        self._damaged_logged: set[bytes] = set()
        self.layout = layout.Layout(vault.snapshots())
        self.root = self._node_for(layout.Top(""))
        self.root.ino, self.root.key, self.root.nlookup = ROOT_INODE, b"", 1 << 62
        self.nodes[ROOT_INODE] = self.root
        self.keys[b""] = ROOT_INODE

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

    def _layout_items(self, place: layout.Place) -> list[tuple[bytes, object]]:
        return [(name.encode(), functools.partial(self._node_for, p)) for name, p in self.layout.children(place)]

    def register(self, key: bytes, spec) -> Node:
        ino = self.keys.get(key)
        if ino is not None:
            return self.nodes[ino]
        node = make_node(spec)
        ino = (xxhash.xxh3_64_intdigest(key) >> 1) or 2
        while ino in self.nodes or ino == ROOT_INODE:  # a clash: probe on
            ino = (ino + 1) & ((1 << 63) - 1) or 2
        node.ino, node.key = ino, key
        self.nodes[ino] = node
        self.keys[key] = ino
        return node

    def node(self, ino: int) -> Node:
        n = self.nodes.get(ino)
        if n is None:
            raise NoEntryError(f"inode {ino}")
        return n

    async def load_tree(self, tree_id: bytes) -> tree.TreeNode:
        cached = self.vault.cached_tree(tree_id)
        if cached is not None:
            return cached
        return await trio.to_thread.run_sync(self.vault.load_tree, tree_id, limiter=self.meta_limiter)

    # ---- the operations the FUSE layer calls ----

    async def lookup(self, parent_ino: int, name: bytes) -> Node:
        parent = self.node(parent_ino)
        if not isinstance(parent, DirNode):
            raise NotADirError(parent.path)
        if name == b".":
            child = parent
        elif name == b"..":
            child = self.nodes[self.keys.get(parent.key.rpartition(b"/")[0], ROOT_INODE)]
        else:
            make = await self._guard(parent, parent.maker(self, name))
            if make is None:
                raise NoEntryError(f"{parent.path}/{name.decode('utf-8', 'backslashreplace')}")
            child = self.register(parent.key + b"/" + name, make)
        child.nlookup += 1
        return child

    async def listdir(self, ino: int) -> list[tuple[bytes, object]]:
        """The directory's (name, spec) pairs; `register` turns one into a node."""
        d = self.node(ino)
        if not isinstance(d, DirNode):
            raise NotADirError(d.path)
        return await self._guard(d, d.items(self))

    def forget(self, ino: int, n: int) -> None:
        node = self.nodes.get(ino)
        if node is None or ino == ROOT_INODE:
            return
        node.nlookup -= n
        if node.nlookup <= 0 and not isinstance(node, StaticDir):
            del self.nodes[ino]
            del self.keys[node.key]

    def readlink(self, ino: int) -> bytes:
        n = self.node(ino)
        if not isinstance(n, LinkNode):
            raise WrongTypeError(f"{n.path} is not a symbolic link")
        return n.target

    async def open(self, ino: int, pid: int | None = None) -> int:
        n = self.node(ino)
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
        n = self.node(ino)
        if name != STATE_XATTR or not isinstance(n, FileNode):
            raise NoAttributeError(name)
        return (await self._guard(n, self._state(n))).encode()

    async def _state(self, n: FileNode) -> str:
        return await self.cold.state(await n.load_chunks(self))

    def listxattr(self, ino: int) -> list[bytes]:
        return [STATE_XATTR] if isinstance(self.node(ino), FileNode) else []

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
