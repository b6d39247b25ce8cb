"""Back up a directory tree: walk, skip unchanged files, chunk the rest, commit.

Concurrency: each directory is a trio task (subdirectories run concurrently);
`scandir`/`lstat` and file reading+chunking run in worker threads bounded by
limiters, so both cores chunk, hash, compress and encrypt while the event loop
only orchestrates. Small files are read in batches to keep the per-file cost low.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from dataclasses import dataclass, field

import trio

from coldvault import __version__
from coldvault.errors import UserError
from coldvault.index import tree
from coldvault.index.ids import BlobId
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader import sqlite
from coldvault.uploader.session import BackupSession
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

BATCH_BYTES = 8 * 1024 * 1024
BATCH_FILES = 256
MAX_ERRORS_KEPT = 1000
O_NOATIME = getattr(os, "O_NOATIME", 0)


@dataclass
class WalkStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    other: int = 0
    unchanged_files: int = 0
    files_read: int = 0
    bytes_total: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0


def printable(path: str | bytes) -> str:
    """A path as text for records and messages: bytes that are not UTF-8 become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _scan(path: bytes):
    """Entries of one directory: (name, lstat, symlink target or None), sorted by name."""
    out = []
    problems = []
    with os.scandir(path) as it:
        for de in it:
            try:
                st = de.stat(follow_symlinks=False)
                target = os.readlink(de.path) if stat.S_ISLNK(st.st_mode) else None
            except OSError as exc:
                problems.append((de.path, exc))
                continue
            out.append((de.name, st, target))
    out.sort(key=lambda t: t[0])
    return out, problems


def _entry(name: bytes, st: os.stat_result) -> tree.Entry:
    return tree.Entry(
        name=name,
        type=tree.FILE,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime=st.st_mtime_ns,
        ctime=st.st_ctime_ns,
        size=st.st_size,
        ino=st.st_ino,
        nlink=st.st_nlink,
    )


def _open_noatime(path: bytes) -> int:
    try:
        return os.open(path, os.O_RDONLY | O_NOATIME)
    except PermissionError:
        # O_NOATIME is only allowed to the file's owner (or root).
        return os.open(path, os.O_RDONLY)


def _read_all(fd: int, expected: int) -> bytes:
    """A small file's bytes in (usually) one read(2); it may have grown or shrunk since lstat."""
    data = os.read(fd, expected + 1)
    if len(data) <= expected:  # a short read of a regular file is its end
        return data
    parts = [data]
    while block := os.read(fd, 1 << 20):
        parts.append(block)
    return b"".join(parts)


class DirBackup:
    def __init__(
        self,
        vault: Vault,
        root: str,
        source: str,
        when_ns: int,
        parent: SnapshotRecord | None,
        workers: int | None = None,
        sqlite_consistent: bool = False,
    ):
        self.vault = vault
        self.root = os.path.abspath(root)
        self.source = source
        self.when_ns = when_ns
        self.parent = parent
        self.stats = WalkStats()
        ncpu = os.cpu_count() or 2
        self.cpu = trio.CapacityLimiter(workers or ncpu)
        self.io = trio.CapacityLimiter(2)
        self.session = BackupSession(vault)
        self.sqlite_consistent = sqlite_consistent

    def _error(self, path: bytes, exc: OSError | str) -> None:
        msg = f"{printable(path)}: {(exc.strerror or str(exc)) if isinstance(exc, OSError) else exc}"
        log.warning("cannot read %s", msg)
        self.stats.error_count += 1
        if len(self.stats.errors) < MAX_ERRORS_KEPT:
            self.stats.errors.append(msg)

    async def run(self) -> SnapshotRecord:
        if not os.path.isdir(self.root):
            raise UserError(f"{self.root} is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise UserError(f"cannot read directory {self.root}")
        parent_tree = self.parent.tree if self.parent else None
        root_tree = await self.session.run(lambda: self._dir(os.fsencode(self.root), parent_tree))
        if root_tree is None:
            raise UserError(f"cannot read directory {self.root}")
        rec = self._record(root_tree)
        await self.session.commit(rec)
        return rec

    def _record(self, root_tree: BlobId) -> SnapshotRecord:
        s = self.stats
        return SnapshotRecord(
            kind="tree",
            source=self.source,
            time=self.when_ns,
            hostname=socket.gethostname(),
            paths=[printable(self.root)],
            tree=root_tree,
            parent=self.parent.id if self.parent else None,
            summary={
                "files": s.files,
                "dirs": s.dirs,
                "symlinks": s.symlinks,
                "unchanged_files": s.unchanged_files,
                "files_read": s.files_read,
                "bytes_total": s.bytes_total,
                "errors": s.error_count,
                **self.session.summary(),
            },
            incomplete=s.error_count > 0,
            errors=list(s.errors),
            program=f"coldvault {__version__}",
        )

    def _unchanged(self, old: tree.Entry | None, st: os.stat_result) -> bool:
        return (
            old is not None
            and old.type == tree.FILE
            and old.size == st.st_size
            and old.mtime == st.st_mtime_ns
            and old.ctime == st.st_ctime_ns
            and old.ino == st.st_ino
            and all(c in self.vault.index.blobs for c in old.chunks)
        )

    @staticmethod
    def _same_meta(old: tree.Entry, st: os.stat_result) -> bool:
        """The old entry can be reused as it is (not only its chunks)."""
        return (
            old.mode == stat.S_IMODE(st.st_mode)
            and old.uid == st.st_uid
            and old.gid == st.st_gid
            and old.nlink == st.st_nlink
        )

    async def _dir(self, path: bytes, parent_tree: BlobId | None) -> BlobId | None:
        try:
            listing, problems = await trio.to_thread.run_sync(_scan, path, limiter=self.io)
        except OSError as exc:
            self._error(path, exc)
            return None
        for p, exc in problems:
            self._error(p, exc)
        parent = None
        if parent_tree is not None:
            parent = await trio.to_thread.run_sync(self.vault.load_tree, parent_tree, limiter=self.io)
        s = self.stats
        s.dirs += 1
        entries: list[tree.Entry] = []
        files: list[tuple[bytes, os.stat_result, tree.Entry]] = []
        subdirs: list[tuple[bytes, tree.Entry, BlobId | None]] = []
        old_by_name = {e.name: e for e in parent.entries} if parent is not None else {}
        reused = 0  # entries taken over unchanged from the parent snapshot
        names = {t[0] for t in listing} if self.sqlite_consistent else ()
        for name, st, target in listing:
            old = old_by_name.get(name)
            m = st.st_mode
            if stat.S_ISREG(m):
                if self.sqlite_consistent and sqlite.is_companion(name, names):
                    continue  # its database is copied whole, WAL included
                s.files += 1
                s.bytes_total += st.st_size
                if self._unchanged(old, st) and not (self.sqlite_consistent and name + b"-wal" in names):
                    s.unchanged_files += 1
                    if self._same_meta(old, st):
                        entries.append(old)
                        reused += 1
                    else:
                        e = _entry(name, st)
                        e.chunks = old.chunks
                        entries.append(e)
                    continue
                files.append((path + b"/" + name, st, _entry(name, st)))
                continue
            e = _entry(name, st)
            if stat.S_ISDIR(m):
                e.type, e.size = tree.DIR, 0
                subdirs.append((path + b"/" + name, e, old.tree if old is not None and old.type == tree.DIR else None))
            elif stat.S_ISLNK(m):
                s.symlinks += 1
                e.type, e.target, e.size = tree.SYMLINK, target, len(target)
                if old is not None and old.type == tree.SYMLINK and old.to_map() == e.to_map():
                    e = old
                    reused += 1
                entries.append(e)
            elif stat.S_ISFIFO(m) or stat.S_ISCHR(m) or stat.S_ISBLK(m):
                s.other += 1
                e.type = tree.FIFO if stat.S_ISFIFO(m) else tree.CHARDEV if stat.S_ISCHR(m) else tree.BLOCKDEV
                e.size, e.rdev = 0, st.st_rdev
                entries.append(e)
            else:
                log.info("skipping socket %s", os.fsdecode(path + b"/" + name))

        async def subdir(p: bytes, e: tree.Entry, old_tree):
            nonlocal reused
            e.tree = await self._dir(p, old_tree)
            if e.tree is None:
                return
            old = old_by_name.get(e.name)
            if old is not None and old.type == tree.DIR and old.tree == e.tree and (
                    old.mode, old.uid, old.gid, old.mtime, old.ctime, old.ino, old.nlink) == (
                    e.mode, e.uid, e.gid, e.mtime, e.ctime, e.ino, e.nlink):
                e = old
                reused += 1
            entries.append(e)

        async def read_batch(batch):
            done = await trio.to_thread.run_sync(self._read_files, batch, limiter=self.cpu)
            entries.extend(done)

        async with trio.open_nursery() as nursery:
            for p, e, old_tree in subdirs:
                nursery.start_soon(subdir, p, e, old_tree)
            for batch in self._batches(files):
                nursery.start_soon(read_batch, batch)
        if parent is not None and reused == len(parent.entries) == len(entries) and not problems:
            return parent_tree  # nothing changed here: the same node, not encoded again
        return await self.session.save_tree(entries)

    @staticmethod
    def _batches(files):
        batch, size = [], 0
        for item in files:
            st = item[1]
            if batch and (size + st.st_size > BATCH_BYTES or len(batch) >= BATCH_FILES):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += st.st_size
        if batch:
            yield batch

    def _read_files(self, batch) -> list[tree.Entry]:
        """In a worker thread: read, chunk and store each file of the batch."""
        done = []
        small = self.vault.settings.chunker_max
        for path, st, e in batch:
            try:
                fd = _open_noatime(path)
                with open(fd, "rb", buffering=0) as f:
                    if self.sqlite_consistent and sqlite.is_database(fd):
                        e.chunks, e.size = sqlite.chunk_copy(path, self.session.chunker)
                    elif st.st_size <= small:
                        data = _read_all(fd, st.st_size)
                        e.chunks, e.size = self.session.chunker.chunk_bytes(data), len(data)
                    else:
                        e.chunks, e.size = self.session.chunker.chunk_stream(f)
            except OSError as exc:
                self._error(path, exc)
                continue
            if e.size != st.st_size and not self.sqlite_consistent:
                log.info("%s changed size while it was read", os.fsdecode(path))
            self.stats.files_read += 1
            done.append(e)
        return done
