"""The pyfuse3 boundary: translate requests to VirtualFS calls and errors to errno.

Handlers raise only FUSEError; ERRNO is the one table that picks the errno for an
error of the virtual tree (anything else is a bug: logged with its traceback, EIO).
Contents are immutable, so entries and attributes may be cached by the kernel for
long, and open files keep the page cache across opens. What a live mount changes
(snapshots that came or went) the kernel is told to forget by `invalidate`, outside
the request handlers.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from typing import Callable

import pyfuse3
import trio

from coldvault.index import tree
from coldvault.mount import errors
from coldvault.mount.inodes import InodeTable
from coldvault.mount.restore_manager import ColdFailError, InterruptedWaitError
from coldvault.mount.nodes import TYPE_BITS, Node
from coldvault.mount.vfs import VirtualFS

log = logging.getLogger(__name__)

TIMEOUT = 24 * 3600.0  # contents never change; a live mount's new listings are pushed (`invalidate`)

ERRNO: dict[type[Exception], int] = {
    errors.NoEntryError: errno.ENOENT,
    errors.NotADirError: errno.ENOTDIR,
    errors.IsADirError: errno.EISDIR,
    errors.WrongTypeError: errno.EINVAL,
    errors.BadHandleError: errno.EBADF,
    errors.NoAttributeError: errno.ENODATA,  # ENOATTR on Linux
    errors.DamagedFileError: errno.EIO,  # logged once, naming the file, by VirtualFS
    ColdFailError: errno.EAGAIN,  # cold data, and this mount does not wait (or gave up)
    InterruptedWaitError: errno.EINTR,  # the reader was interrupted while waiting for a restore
}


def errno_for(exc: BaseException) -> int | None:
    """The errno for an error of the virtual tree; None for anything else (a bug)."""
    for cls in type(exc).__mro__:
        err = ERRNO.get(cls)
        if err is not None:
            return err
    return None


def _errors(fn):
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            err = errno_for(exc)
            if err is None:
                log.exception("unexpected error in %s", fn.__name__)
                err = errno.EIO
            raise pyfuse3.FUSEError(err) from None

    return wrapper


def _invalidate(entries: list[tuple[int, bytes]], inodes: list[int]) -> None:
    for parent, name in entries:
        try:
            pyfuse3.invalidate_entry(parent, name)
        except OSError as exc:  # ENOENT: the kernel does not know it; nothing to forget
            if exc.errno != errno.ENOENT:
                log.debug("invalidating entry %s of inode %d: %s", name, parent, exc)
    for ino in inodes:
        try:
            pyfuse3.invalidate_inode(ino, attr_only=True)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.debug("invalidating attributes of inode %d: %s", ino, exc)


async def invalidate(entries: list[tuple[int, bytes]], inodes: list[int]) -> None:
    """Make the kernel forget directory entries (parent inode, name) and the attributes of
    inodes, so that a listing or a stat asks again. Called outside every request handler, in a
    worker thread: the kernel holds each notice until the requests on that directory are
    answered, and those are answered by the event loop meanwhile (pyfuse3.invalidate_entry)."""
    if entries or inodes:
        await trio.to_thread.run_sync(_invalidate, entries, inodes, abandon_on_cancel=True)  # at unmount


class FuseOps(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, fs: VirtualFS, before_first_open: Callable[[], None] | None = None):
        """`before_first_open` runs once, when the first file is opened: the kernel has
        processed our FUSE_INIT answer by then, and sets up the file's readahead only
        after we answer the open."""
        super().__init__()
        self.fs = fs
        self._before_first_open = before_first_open

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        return self._attributes(node.ino, node.info)

    @staticmethod
    def _attributes(ino: int, a) -> pyfuse3.EntryAttributes:
        """`a`: a tree entry (most nodes) or an Attr, read directly, no Attr made."""
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        e.entry_timeout = TIMEOUT
        e.attr_timeout = TIMEOUT
        if type(a) is tree.Entry:
            e.st_mode = TYPE_BITS[a.type] | a.mode
            e.st_nlink = 2 if a.type == tree.DIR else 1
        else:
            e.st_mode = a.mode
            e.st_nlink = a.nlink
        e.st_uid = a.uid
        e.st_gid = a.gid
        e.st_rdev = a.rdev
        e.st_size = a.size
        e.st_blksize = 128 * 1024
        e.st_blocks = (a.size + 511) // 512
        e.st_atime_ns = a.mtime
        e.st_mtime_ns = a.mtime
        e.st_ctime_ns = a.ctime
        return e

    @_errors
    async def lookup(self, parent_inode, name, ctx=None):
        return self._entry(await self.fs.lookup(parent_inode, name))

    @_errors
    async def getattr(self, inode, ctx=None):
        return self._entry(await self.fs.node(inode))

    @_errors
    async def opendir(self, inode, ctx):
        await self.fs.listdir(inode)  # ENOTDIR / EIO now rather than mid-listing
        return inode

    @_errors
    async def readdir(self, fh, start_id, token):
        record, entries = await self.fs.listdir(fh)
        child_ino, attributes, Entry = InodeTable.child_ino, self._attributes, tree.Entry
        replied = 0
        for i in range(start_id, len(entries)):
            spec = entries[i]
            if spec is None:
                continue  # an entry that went (a live mount): its index stays taken
            info = spec if type(spec) is Entry else spec.make().info  # no node per tree entry
            if not pyfuse3.readdir_reply(token, spec.name, attributes(child_ino(record, i), info), i + 1):
                break
            replied += 1
        record.held += replied  # readdirplus: the kernel now holds a reference to each

    async def releasedir(self, fh):
        pass

    @_errors
    async def open(self, inode, flags, ctx):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if self._before_first_open is not None:
            hook, self._before_first_open = self._before_first_open, None
            hook()
        fh = await self.fs.open(inode, ctx.pid if ctx is not None else None)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @_errors
    async def read(self, fh, off, size):
        return await self.fs.read(fh, off, size)

    async def release(self, fh):
        self.fs.release(fh)

    @_errors
    async def readlink(self, inode, ctx):
        return await self.fs.readlink(inode)

    @_errors
    async def getxattr(self, inode, name, ctx):
        return await self.fs.getxattr(inode, name)

    @_errors
    async def listxattr(self, inode, ctx):
        return await self.fs.listxattr(inode)

    async def forget(self, inode_list):
        for inode, n in inode_list:
            self.fs.forget(inode, n)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = len(self.fs.inodes)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s
