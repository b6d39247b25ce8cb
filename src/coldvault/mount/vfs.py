"""The virtual tree behind the mount: all the logic, no pyfuse3.

    /files/<source>/snapshots/<YYYY-MM-DDTHH:MM:SSZ>/...   every snapshot, whole
    /files/<source>/dates/<YYYY-MM-DD>/...                  the day's last snapshot
    /files/<source>/changes/<YYYY-MM-DD>/...                created or modified that day
    /files/<source>/latest -> snapshots/<newest>
    /zfs/...                                                 (ZFS streams)

Inode numbers are a hash of the node's path in the mount, so they are the same
on every lookup, after the kernel forgets a node, and across mounts (a clash
probes the next number). Directory listings are sorted and immutable, so
readdir offsets are stable. Listing, stat and lookup read only tree nodes (hot);
file contents are fetched chunk by chunk when read.
"""

from __future__ import annotations

import bisect
import errno
import logging
import stat
from dataclasses import dataclass

import trio
import xxhash

from coldvault.errors import ColdDataError, ColdvaultError
from coldvault.index import tree
from coldvault.mount.chunkcache import ChunkSource
from coldvault.mount.restore_manager import ColdFailError, InterruptedWaitError, RestoreManager
from coldvault.mount.views import SourceView, group_sources, merge_changes
from coldvault.vault.streams import stream_chunks
from coldvault.vault.vault import Vault
from coldvault.zfs.chain import Stream, shortest_chain, step_names, streams_by_dataset

log = logging.getLogger(__name__)

ROOT_INODE = 1
DIR_MODE = stat.S_IFDIR | 0o555
STATE_XATTR = b"user.coldvault.state"
TYPE_BITS = {
    tree.FILE: stat.S_IFREG, tree.DIR: stat.S_IFDIR, tree.SYMLINK: stat.S_IFLNK,
    tree.FIFO: stat.S_IFIFO, tree.CHARDEV: stat.S_IFCHR, tree.BLOCKDEV: stat.S_IFBLK,
}


class FsError(Exception):
    """An errno for the FUSE layer to return."""

    def __init__(self, err: int):
        super().__init__(errno.errorcode.get(err, str(err)))
        self.errno = err


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


# ---- nodes ---------------------------------------------------------------------


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
    """A directory; it caches its listing as (name, spec) pairs, never child nodes,
    so a child the kernel forgot is simply made again (with the same inode). A spec is
    a tree entry or a function that makes the node (`make_node`)."""

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
    __slots__ = ("_static",)

    def __init__(self, items: list[tuple[bytes, object]], attr: Attr):
        super().__init__(attr)
        self._static = items

    async def _list(self, fs):
        return self._static


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


# ---- the filesystem ------------------------------------------------------------


class Handle:
    __slots__ = ("node", "offsets", "size", "pid", "last_end", "ra_next")

    def __init__(self, node: FileNode, offsets: list[int], size: int, pid: int | None):
        self.node = node
        self.offsets = offsets
        self.size = size
        self.pid = pid
        self.last_end = 0
        self.ra_next = 0


class VirtualFS:
    def __init__(self, vault: Vault, chunks: ChunkSource, cold: RestoreManager, readahead: int = 8 * 1024 * 1024):
        self.vault = vault
        self.chunks = chunks
        self.cold = cold
        self.readahead = readahead
        self.meta_limiter = trio.CapacityLimiter(4)
        self.nodes: dict[int, Node] = {}
        self.keys: dict[bytes, int] = {}
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self.nursery: trio.Nursery | None = None  # for readahead; set by the runner
        self._damaged_logged: set[bytes] = set()
        self.root = self._build_root()

    # ---- structure ----

    def _build_root(self) -> DirNode:
        records = self.vault.snapshots()
        mount_time = max((r.time for r in records), default=0)
        sources = group_sources(records)
        files = StaticDir([(name.encode(), (lambda v=v: self._source_dir(v))) for name, v in sources.items()],
                          dir_attr(mount_time))
        zfs = self._zfs_dir(streams_by_dataset(records), mount_time)
        root = StaticDir([(b"files", lambda: files), (b"zfs", lambda: zfs)], dir_attr(mount_time))
        root.ino, root.key, root.nlookup = ROOT_INODE, b"", 1 << 62
        self.nodes[ROOT_INODE] = root
        self.keys[b""] = ROOT_INODE
        return root

    def _source_dir(self, view: SourceView) -> DirNode:
        named = view.named()
        newest = named[-1][1].time if named else 0
        snaps = StaticDir(
            [(n.encode(), (lambda r=r: TreeDir(r.tree, dir_attr(r.time)))) for n, r in named], dir_attr(newest)
        )
        days = view.days()
        dates = StaticDir(
            [(d.encode(), (lambda rs=rs: TreeDir(rs[-1].tree, dir_attr(rs[-1].time)))) for d, rs in days.items()],
            dir_attr(newest),
        )

        def changes_for(day):
            day_pairs = view.day_pairs(day)
            pairs = [(r.tree, p.tree if p is not None else None) for r, p in day_pairs]
            return ChangesDir(pairs, dir_attr(day_pairs[-1][0].time))

        changes = StaticDir([(d.encode(), (lambda d=d: changes_for(d))) for d in days], dir_attr(newest))
        items = [(b"changes", lambda: changes), (b"dates", lambda: dates)]
        if named:
            target = b"snapshots/" + named[-1][0].encode()
            items.append((b"latest", lambda: LinkNode(target, Attr(stat.S_IFLNK | 0o777, len(target), 0, 0, newest, newest))))
        items.append((b"snapshots", lambda: snaps))
        return StaticDir(items, dir_attr(newest))

    def _zfs_dir(self, by_dataset: dict[str, list[Stream]], mount_time: int) -> DirNode:
        """zfs/<pool>/<dataset...>/ with @S.zfs, @B..@S.zfs and @S.restore/ in each dataset."""
        children: dict[str, set[str]] = {}
        for ds in by_dataset:
            parts = ds.split("/")
            for i in range(len(parts)):
                children.setdefault("/".join(parts[:i]), set()).add("/".join(parts[:i + 1]))

        def stream_file(s: Stream):
            a = Attr(stat.S_IFREG | 0o444, s.length, 0, 0, s.rec.time, s.rec.time)
            return lambda: StreamNode(s, a)

        def dataset_dir(ds: str) -> DirNode:
            items: list[tuple[bytes, object]] = []
            for child in sorted(children.get(ds, ())):
                items.append((child.rsplit("/", 1)[-1].encode(), (lambda c=child: dataset_dir(c))))
            streams = by_dataset.get(ds, [])
            newest = max((s.rec.time for s in streams), default=mount_time)
            seen_files, seen_snaps = set(), set()
            for s in streams:
                if s.file_name not in seen_files:
                    seen_files.add(s.file_name)
                    items.append((s.file_name.encode(), stream_file(s)))
            for s in streams:
                if s.snapshot in seen_snaps:
                    continue
                chain = shortest_chain(streams, s.guid)
                if chain is None:
                    continue
                seen_snaps.add(s.snapshot)
                steps = [(n.encode(), stream_file(c)) for n, c in zip(step_names(chain), chain)]
                items.append((f"@{s.snapshot}.restore".encode(),
                              (lambda st=steps, t=s.rec.time: StaticDir(st, dir_attr(t)))))
            return StaticDir(items, dir_attr(newest))

        top = [(p.encode(), (lambda p=p: dataset_dir(p))) for p in sorted(children.get("", ()))]
        return StaticDir(top, dir_attr(mount_time))

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
            raise FsError(errno.ENOENT)
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
            raise FsError(errno.ENOTDIR)
        if name == b".":
            child = parent
        elif name == b"..":
            child = self.nodes[self.keys.get(parent.key.rpartition(b"/")[0], ROOT_INODE)]
        else:
            make = await self._guard(parent, parent.maker(self, name))
            if make is None:
                raise FsError(errno.ENOENT)
            child = self.register(parent.key + b"/" + name, make)
        child.nlookup += 1
        return child

    async def listdir(self, ino: int) -> list[tuple[bytes, object]]:
        """The directory's (name, spec) pairs; `register` turns one into a node."""
        d = self.node(ino)
        if not isinstance(d, DirNode):
            raise FsError(errno.ENOTDIR)
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
            raise FsError(errno.EINVAL)
        return n.target

    async def open(self, ino: int, pid: int | None = None) -> int:
        n = self.node(ino)
        if not isinstance(n, FileNode):
            raise FsError(errno.EISDIR if isinstance(n, DirNode) else errno.EINVAL)
        chunks = await self._guard(n, n.load_chunks(self))
        offsets, pos = [], 0
        for c in chunks:
            offsets.append(pos)
            size = self.vault.index.raw_length(c)
            if size is None:
                self._log_damage(n, f"chunk {c.hex()[:16]} is not in any index of the vault")
                raise FsError(errno.EIO)
            pos += size
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(n, offsets, pos, pid)
        return fh

    def release(self, fh: int) -> None:
        self.handles.pop(fh, None)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        h = self.handles.get(fh)
        if h is None:
            raise FsError(errno.EBADF)
        end = min(off + size, h.size)
        if off >= end:
            return b""
        i = bisect.bisect_right(h.offsets, off) - 1
        parts = []
        pos = off
        while pos < end:
            data = await self._chunk(h, i)
            start = h.offsets[i]
            # Views, not copies: a reply of one piece goes to the kernel as it is, pieces
            # of several chunks are copied once, by the join.
            parts.append(memoryview(data)[pos - start:min(end, start + len(data)) - start])
            pos = start + len(data)
            i += 1
        if off == h.last_end:
            self._read_ahead(h, i)
        else:
            h.ra_next = i  # a seek: readahead starts again once reads are sequential
        h.last_end = end
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _chunk(self, h: Handle, i: int) -> bytes:
        bid = h.node.chunks[i]
        while True:
            try:
                return await self.chunks.get(bid)
            except ColdDataError:
                try:
                    await self.cold.make_readable(h.node.chunks, h.node.path, h.pid)
                except ColdFailError:
                    raise FsError(errno.EAGAIN) from None
                except InterruptedWaitError:
                    raise FsError(errno.EINTR) from None
            except ColdvaultError as exc:
                self._log_damage(h.node, exc.message)
                raise FsError(errno.EIO) from None

    def _read_ahead(self, h: Handle, next_index: int) -> None:
        if self.nursery is None:
            return
        chunks = h.node.chunks
        start = max(h.ra_next, next_index)
        limit_pos = (h.offsets[next_index] if next_index < len(chunks) else h.size) + self.readahead
        j = start
        while j < len(chunks) and h.offsets[j] < limit_pos:
            if self.chunks.cached(chunks[j]) is None:
                self.nursery.start_soon(self._prefetch, chunks[j])
            j += 1
        h.ra_next = j

    async def _prefetch(self, bid) -> None:
        try:
            await self.chunks.get(bid)
        except Exception as exc:  # the real read reports it
            log.debug("readahead of chunk %s failed: %s", bid.hex()[:16], exc)

    def _log_damage(self, node: Node, message: str) -> None:
        if node.key not in self._damaged_logged:
            self._damaged_logged.add(node.key)
            log.error("%s: %s", node.path, message)

    async def _guard(self, node: Node, coro):
        """Metadata reads: a damaged tree node gives EIO for that directory only."""
        try:
            return await coro
        except ColdvaultError as exc:
            self._log_damage(node, exc.message)
            raise FsError(errno.EIO) from None

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        n = self.node(ino)
        if name != STATE_XATTR or not isinstance(n, FileNode):
            raise FsError(errno.ENODATA)
        try:
            return (await self.cold.state(await n.load_chunks(self))).encode()
        except ColdvaultError as exc:
            self._log_damage(n, exc.message)
            raise FsError(errno.EIO) from None

    def listxattr(self, ino: int) -> list[bytes]:
        return [STATE_XATTR] if isinstance(self.node(ino), FileNode) else []
