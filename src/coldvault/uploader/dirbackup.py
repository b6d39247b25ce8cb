"""Back up a directory tree: walk, skip unchanged files, chunk the rest, commit.

Concurrency: one worker thread walks the whole tree, depth first. It lists
each directory, compares it with the parent snapshot's node, reads and cuts
and hashes the files that changed, and stores the directory's tree node. The
chunker's encoder threads compress, encrypt and pack the new chunks (in
batches for small files), and the session's upload tasks store the packs,
so both cores work while the event loop only orchestrates.

Memory: the walk keeps a stack of the directories it is in (no recursion, so any
depth works): each frame holds that directory's finished entries and the
subdirectories left to visit, and the previous snapshot's node of it. A
finished directory's node is stored and only its id goes to the frame below, so
memory follows the depth and the width of the open directories, not the size of
the tree. At most MAX_OPEN_DIRS directories stay open; a deeper walk reopens a
parent as `..` of its finished child, checked by device and inode.

Why one walking thread: the walk's per-file work (stat results, tree
entries, hashing small buffers) holds the GIL, so several walking threads do
not run faster; they hand the GIL back and forth at every system call, and on
many small files that costs more than the work itself (it did when each
directory was a trio task with its own thread calls). Directories are opened
once and their files opened relative to them, so the kernel does not resolve
the whole path for every file.

Over 400 lines on purpose: the walk, the comparison with the previous snapshot and
the reading of changed files share one stack of open directories and its file
descriptors; split apart they would hand that state across modules.
"""

from __future__ import annotations

import collections
import contextlib
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

MAX_ERRORS_KEPT = 1000
MAX_OPEN_DIRS = 64  # descriptors the walk keeps open; deeper trees reopen parents as `..`
O_NOATIME = getattr(os, "O_NOATIME", 0)
O_DIR = os.O_RDONLY | os.O_DIRECTORY
# Files of a directory opened, and their reading started by the kernel (posix_fadvise WILLNEED),
# before the walk reads them: at most this many files and bytes ahead of the one being read.
READ_AHEAD_FILES = 32
READ_AHEAD_BYTES = 16 * 1024 * 1024


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


class _Frame:
    """A directory of the walk that is open: what is done and what is left of it."""

    __slots__ = ("fd", "path", "ident", "entry", "parent_tree", "parent", "problems",
                 "entries", "subdirs", "next", "reused")

    def __init__(self, fd: int, path: bytes, ident: tuple[int, int], entry: tree.Entry | None,
                 parent_tree: BlobId | None, parent: tree.TreeNode | None, problems: bool):
        self.fd = fd
        self.path = path
        self.ident = ident  # (st_dev, st_ino): `..` of a child must be this directory
        self.entry = entry  # its entry in the directory below it on the stack (None: the root)
        self.parent_tree = parent_tree  # its node in the previous snapshot
        self.parent = parent  # that node, decoded
        self.problems = problems
        self.entries: list[tree.Entry] = []  # finished entries
        self.subdirs: list[tuple[bytes, tree.Entry, BlobId | None]] = []  # to visit, in order
        self.next = 0  # index of the next subdirectory to visit
        self.reused = 0  # entries taken over unchanged from the previous snapshot

    def old(self, name: bytes) -> tree.Entry | None:
        """The previous snapshot's entry of that name (a binary search, no dict per directory)."""
        return self.parent.find(name) if self.parent is not None else None


def printable(path: str | bytes) -> str:
    """A path as text for records and messages: bytes that are not UTF-8 become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _scan(dir_fd: int, path: bytes):
    """Entries of the directory open as `dir_fd` (named `path` in problems):
    (name, lstat, symlink target or None), sorted by name; and (path, error) problems."""
    out = []
    problems = []
    fsencode = os.fsencode
    with os.scandir(dir_fd) as it:  # names come as str (surrogateescape) when listing an fd
        for de in it:
            name = fsencode(de.name)
            try:
                st = de.stat(follow_symlinks=False)  # fstatat(dir_fd, name): one lstat
                target = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None
            except OSError as exc:
                problems.append((path + b"/" + name, exc))
                continue
            out.append((name, st, target))
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


def _open_noatime(name: bytes, dir_fd: int) -> int:
    try:
        return os.open(name, os.O_RDONLY | O_NOATIME, dir_fd=dir_fd)
    except PermissionError:
        # O_NOATIME is only allowed to the file's owner (or root).
        return os.open(name, os.O_RDONLY, dir_fd=dir_fd)


def _open_ahead(name: bytes, dir_fd: int, size: int) -> tuple[int, OSError | None]:
    """Open a file the walk reads soon and have the kernel start reading its first `size`
    bytes in the background: (descriptor, None), or (-1, the error of the open)."""
    try:
        fd = _open_noatime(name, dir_fd)
    except OSError as exc:
        return -1, exc
    if size > 0:
        try:
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # only advice: a file system without it is read as before
    return fd, None


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
        excludes=None,
        one_file_system: bool = False,
    ):
        """`workers`: encoder threads (default: one per CPU); `excludes`: an uploader.excludes.Excludes;
        `one_file_system`: do not cross into other file systems (mount points are kept, empty)."""
        self.vault = vault
        self.root = os.path.abspath(root)
        self.source = source
        self.when_ns = when_ns
        self.parent = parent
        self.stats = WalkStats()
        self.session = BackupSession(vault, encoders=workers)
        self.sqlite_consistent = sqlite_consistent
        self.excludes = excludes
        self.one_file_system = one_file_system
        self._empty_tree: BlobId | None = None

    def _error(self, path: bytes, exc: OSError | str) -> None:
        msg = f"{printable(path)}: {(exc.strerror or str(exc)) if isinstance(exc, OSError) else exc}"
        log.warning("cannot read %s", msg)
        self.stats.error_count += 1
        if len(self.stats.errors) < MAX_ERRORS_KEPT:
            self.stats.errors.append(msg)

    def _check_roots(self) -> None:
        if not os.path.isdir(self.root):
            raise UserError(f"{self.root} is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise UserError(f"cannot read directory {self.root}")

    async def run(self) -> SnapshotRecord:
        self._check_roots()
        parent_tree = self.parent.tree if self.parent else None
        root = os.fsencode(self.root)
        root_tree = await self.session.run(lambda: trio.to_thread.run_sync(self._walk, root, parent_tree))
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
            and self.vault.index.contains_all(old.chunks)
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

    def _walk(self, root: bytes, parent_tree: BlobId | None) -> BlobId | None:
        """In the walking thread: back up the tree at `root`; its tree id, or None if unreadable.

        Depth first with an explicit stack of open directories (no recursion: any depth
        works). A directory's frame holds its finished entries and the subdirectories still
        to visit; once they are done its tree node is stored and only the node's id goes up
        to the frame below. So memory follows the depth and the width of the directories
        being built, never the size of the tree, and the previous snapshot's nodes are read
        one directory at a time, only for the directories that are open.
        """
        try:
            fd = os.open(root, O_DIR)
        except OSError as exc:
            self._error(root, exc)
            return None
        stack: list[_Frame] = []
        try:
            frame = self._open_dir(fd, root, parent_tree, None)
            if frame is None:
                return None
            stack.append(frame)
            while True:
                top = stack[-1]
                if top.next < len(top.subdirs):
                    name, e, old_tree = top.subdirs[top.next]
                    top.next += 1
                    child = self._enter(top, name, e, old_tree)
                    if child is not None:
                        stack.append(child)
                        self._limit_open_fds(stack)
                    continue
                stack.pop()
                tid = self._finish(top)
                if not stack:
                    os.close(top.fd)
                    return tid
                below = stack[-1]
                if below.fd < 0:  # closed to save descriptors: reopen it from its child
                    below.fd = self._reopen_parent(top, below)
                os.close(top.fd)
                top.fd = -1
                if tid is not None:
                    self._attach(below, top.entry, tid)
        finally:
            for f in stack:
                if f.fd >= 0:
                    os.close(f.fd)

    def _limit_open_fds(self, stack: list["_Frame"]) -> None:
        """Keep at most MAX_OPEN_DIRS directories open: a frame far up the stack only needs
        its descriptor again when its child is finished (`_reopen_parent`)."""
        if len(stack) > MAX_OPEN_DIRS:
            far = stack[-MAX_OPEN_DIRS - 1]
            if far.fd >= 0:
                os.close(far.fd)
                far.fd = -1

    def _reopen_parent(self, child: "_Frame", parent: "_Frame") -> int:
        """The descriptor of `parent` again, as `..` of its finished child, if it is still the
        same directory (device and inode); -1 (and an error) if it is not."""
        if child.fd < 0:
            self._error(parent.path, "cannot be opened again")
            return -1
        try:
            fd = os.open(b"..", O_DIR, dir_fd=child.fd)
        except OSError as exc:
            self._error(parent.path, exc)
            return -1
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != parent.ident:
            os.close(fd)
            self._error(parent.path, "moved while it was backed up")
            return -1
        return fd

    def _enter(self, frame: "_Frame", name: bytes, e: tree.Entry, old_tree: BlobId | None) -> "_Frame | None":
        """Open subdirectory `name` of `frame` as a new frame; None if it cannot be read
        (the error is recorded and the directory left out)."""
        sub = frame.path + b"/" + name
        if frame.fd < 0:
            return None  # its parent could not be reopened: already reported
        try:
            sub_fd = os.open(name, O_DIR, dir_fd=frame.fd)
        except OSError as exc:
            self._error(sub, exc)
            return None
        child = self._open_dir(sub_fd, sub, old_tree, e)
        if child is None:
            os.close(sub_fd)
        return child

    def _attach(self, frame: "_Frame", e: tree.Entry, tid: BlobId) -> None:
        """Add the finished subdirectory `e` (its node stored as `tid`) to `frame`'s entries."""
        e.tree = tid
        old = frame.old(e.name)
        if old is not None and old.type == tree.DIR and old.tree == e.tree and (
                old.mode, old.uid, old.gid, old.mtime, old.ctime, old.ino, old.nlink) == (
                e.mode, e.uid, e.gid, e.mtime, e.ctime, e.ino, e.nlink):
            e = old
            frame.reused += 1
        frame.entries.append(e)

    def _finish(self, frame: "_Frame") -> BlobId | None:
        """Store the finished directory's tree node; its id."""
        parent = frame.parent
        if parent is not None and frame.reused == len(parent.entries) == len(frame.entries) and not frame.problems:
            return frame.parent_tree  # nothing changed here: the same node, not encoded again
        return self.session.store_tree(frame.entries)

    def _open_dir(self, fd: int, path: bytes, parent_tree: BlobId | None,
                  entry: tree.Entry | None) -> "_Frame | None":
        """List the directory open as `fd` (named `path`) and back up its files; its frame,
        with the subdirectories still to visit, or None if it cannot be listed."""
        trio.from_thread.check_cancelled()  # the run was cancelled (an upload failed, Ctrl-C)
        try:
            listing, problems = _scan(fd, path)
            st_dir = os.fstat(fd)
        except OSError as exc:
            self._error(path, exc)
            return None
        for p, exc in problems:
            self._error(p, exc)
        # The previous snapshot's node for this directory, read for this directory only:
        # not kept in the vault's cache of tree nodes, where it would only push out others.
        parent = self.vault.load_tree(parent_tree, cache=False) if parent_tree is not None else None
        frame = _Frame(fd, path, (st_dir.st_dev, st_dir.st_ino), entry, parent_tree, parent, bool(problems))
        s = self.stats
        s.dirs += 1
        entries = frame.entries
        files: list[tuple[bytes, os.stat_result, tree.Entry]] = []
        names = {t[0] for t in listing} if self.sqlite_consistent else ()
        for name, st, target in listing:
            if self.excludes and self.excludes.skip(fd, path, name, st):
                continue
            m = st.st_mode
            if self.one_file_system and st.st_dev != st_dir.st_dev:
                if stat.S_ISDIR(m):  # a mount point: kept as an empty directory, as restic keeps it
                    entries.append(self._mount_point(frame, name, st))
                continue  # anything else of another file system (a bind-mounted file) is left out
            old = frame.old(name)
            if stat.S_ISREG(m):
                if self.sqlite_consistent and sqlite.is_companion(name, names):
                    continue  # its database is copied whole, WAL included
                s.files += 1
                s.bytes_total += st.st_size
                if self._unchanged(old, st) and not (self.sqlite_consistent and name + b"-wal" in names):
                    s.unchanged_files += 1
                    if self._same_meta(old, st):
                        entries.append(old)
                        frame.reused += 1
                    else:
                        e = _entry(name, st)
                        e.chunks = old.chunks
                        entries.append(e)
                    continue
                files.append((name, st, _entry(name, st)))
                continue
            e = _entry(name, st)
            if stat.S_ISDIR(m):
                e.type, e.size = tree.DIR, 0
                frame.subdirs.append((name, e, old.tree if old is not None and old.type == tree.DIR else None))
            elif stat.S_ISLNK(m):
                s.symlinks += 1
                e.type, e.target, e.size = tree.SYMLINK, target, len(target)
                if old is not None and old.type == tree.SYMLINK and old.to_map() == e.to_map():
                    e = old
                    frame.reused += 1
                entries.append(e)
            elif stat.S_ISFIFO(m) or stat.S_ISCHR(m) or stat.S_ISBLK(m):
                s.other += 1
                e.type = tree.FIFO if stat.S_ISFIFO(m) else tree.CHARDEV if stat.S_ISCHR(m) else tree.BLOCKDEV
                e.size, e.rdev = 0, st.st_rdev
                entries.append(e)
            else:
                log.info("skipping socket %s", os.fsdecode(path + b"/" + name))
        del listing
        self._read_files(fd, path, files, entries)
        return frame

    def _read_files(self, dir_fd: int, dir_path: bytes,
                    files: list[tuple[bytes, os.stat_result, tree.Entry]], entries: list[tree.Entry]) -> None:
        """Read the changed files of one directory in order, adding the entries of those read.

        On a cold cache each small file costs a disk round trip, and one walking thread
        would wait for them one at a time (issue 10: 100,000 files took 20 s cold, 5 s warm).
        So the files ahead of the one being read are opened and their reading started by the
        kernel (posix_fadvise WILLNEED): the disk serves many at once, and the reads find the
        bytes in the page cache. At most READ_AHEAD_FILES descriptors and READ_AHEAD_BYTES are
        ahead; a large file is announced up to one chunk, the kernel's own read-ahead does the rest.
        """
        limit = self.vault.settings.chunker_max
        ahead: collections.deque[tuple[int, OSError | None, int]] = collections.deque()
        ahead_bytes = 0
        nxt = 0
        try:
            for name, st, e in files:
                while nxt < len(files) and len(ahead) < READ_AHEAD_FILES and (
                        not ahead or ahead_bytes < READ_AHEAD_BYTES):
                    n, s, _ = files[nxt]
                    size = min(s.st_size, limit)
                    ahead.append((*_open_ahead(n, dir_fd, size), size))
                    ahead_bytes += size
                    nxt += 1
                fd, err, size = ahead.popleft()
                ahead_bytes -= size
                if self._read_file(dir_fd, dir_path, name, st, e, (fd, err)):
                    entries.append(e)
        finally:
            for fd, _, _ in ahead:
                if fd >= 0:
                    with contextlib.suppress(OSError):  # only read from: nothing to lose, close the rest
                        os.close(fd)

    def _mount_point(self, frame: "_Frame", name: bytes, st: os.stat_result) -> tree.Entry:
        """--one-file-system: the entry of a directory on another file system, without its contents."""
        log.info("not crossing into %s: another file system", printable(frame.path + b"/" + name))
        if self._empty_tree is None:
            self._empty_tree = self.session.store_tree([])
        self.stats.dirs += 1
        e = _entry(name, st)
        e.type, e.size, e.tree = tree.DIR, 0, self._empty_tree
        old = frame.old(name)
        if old is not None and old.to_map() == e.to_map():
            frame.reused += 1
            return old
        return e

    def _read_file(self, dir_fd: int, dir_path: bytes, name: bytes, st: os.stat_result, e: tree.Entry,
                   opened: tuple[int, OSError | None] | None = None) -> bool:
        """Read, chunk and store one file of the directory open as `dir_fd`; False if it could not be read.
        `opened`: what `_open_ahead` gave for it (the descriptor is closed here), else it is opened here."""
        chunker = self.session.chunker
        try:
            if opened is None:
                fd = _open_noatime(name, dir_fd)
            else:
                fd, err = opened
                if err is not None:
                    raise err
            try:
                if self.sqlite_consistent and sqlite.is_database(fd):
                    e.chunks, e.size = sqlite.chunk_copy(dir_path + b"/" + name, chunker)
                elif st.st_size <= self.vault.settings.chunker_max:
                    data = _read_all(fd, st.st_size)
                    e.chunks, e.size = chunker.chunk_small(data), len(data)
                else:
                    trio.from_thread.check_cancelled()
                    with open(fd, "rb", buffering=0, closefd=False) as f:
                        e.chunks, e.size = chunker.chunk_stream(f)
            finally:
                os.close(fd)
        except OSError as exc:
            self._error(dir_path + b"/" + name, exc)
            return False
        if e.size != st.st_size and not self.sqlite_consistent:
            log.info("%s changed size while it was read", os.fsdecode(dir_path + b"/" + name))
        self.stats.files_read += 1
        return True
