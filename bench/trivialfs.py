#!/usr/bin/env python3
"""The simplest read-only pyfuse3 + trio filesystem: one file, served from memory.

    python bench/trivialfs.py MOUNTPOINT --source FILE     # the file's bytes, loaded once
    python bench/trivialfs.py MOUNTPOINT --size 1G         # that many zero bytes

The mount holds a single regular file, MOUNTPOINT/<name> (the source file's
name, or `data.bin`), whose contents are one `bytes` object in memory. Each
read request is answered with a memoryview slice of it, so no byte is copied
in Python: what is left is the cost of FUSE itself, pyfuse3's dispatch and
trio. bench_mount.py uses it as the ceiling for any pyfuse3 filesystem on the
machine. It is mounted with the same options as `coldvault mount` (pyfuse3's
defaults, read-only, default_permissions) and, with --raise-readahead, gets the
same 1 MiB readahead (coldvault's own `raise_readahead`, at the first open), so
the kernel sends it requests of the same size.

The kernel page cache is dropped at each open (keep_cache off), so every read
goes through the filesystem. It stays in the foreground, unmounts on SIGINT,
SIGTERM or SIGHUP, and prints one line of request counts to stderr when it
stops. This is benchmark code, not part of coldvault.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
import time

import pyfuse3
import trio

FILE_INODE = pyfuse3.ROOT_INODE + 1
TIMEOUT = 24 * 3600.0


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in units else ""
    return int(float(text[:len(text) - len(unit)]) * units[unit])


class TrivialFS(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, name: bytes, data: bytes, before_first_open=None):
        super().__init__()
        self.before_first_open = before_first_open
        self.name = name
        self.data = data
        self.view = memoryview(data)
        self.now_ns = time.time_ns()
        self.reads = 0
        self.read_bytes = 0
        self.max_request = 0

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = inode
        e.entry_timeout = TIMEOUT
        e.attr_timeout = TIMEOUT
        if inode == pyfuse3.ROOT_INODE:
            e.st_mode = stat.S_IFDIR | 0o555
            e.st_nlink = 2
        elif inode == FILE_INODE:
            e.st_mode = stat.S_IFREG | 0o444
            e.st_nlink = 1
            e.st_size = len(self.data)
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        e.st_uid, e.st_gid = os.getuid(), os.getgid()
        e.st_blksize = 128 * 1024
        e.st_blocks = (e.st_size + 511) // 512
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = self.now_ns
        return e

    async def getattr(self, inode, ctx=None):
        return self._attr(inode)

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE or name != self.name:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(FILE_INODE)

    async def opendir(self, inode, ctx):
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):
        if start_id == 0:
            pyfuse3.readdir_reply(token, self.name, self._attr(FILE_INODE), 1)

    async def releasedir(self, fh):
        pass

    async def open(self, inode, flags, ctx):
        if inode != FILE_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if self.before_first_open is not None:
            hook, self.before_first_open = self.before_first_open, None
            hook()
        return pyfuse3.FileInfo(fh=FILE_INODE, keep_cache=False)

    async def read(self, fh, off, size):
        self.reads += 1
        self.max_request = max(self.max_request, size)
        chunk = self.view[off:off + size]
        self.read_bytes += len(chunk)
        return chunk

    async def release(self, fh):
        pass

    async def access(self, inode, mode, ctx):
        if mode & os.W_OK:
            raise pyfuse3.FUSEError(errno.EROFS)
        return True

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s


async def serve() -> None:
    async with trio.open_nursery() as nursery:
        async def on_signal():
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mountpoint")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", help="serve this file's contents (read into memory once)")
    src.add_argument("--size", help="serve this many zero bytes, e.g. 1G")
    ap.add_argument("--raise-readahead", action="store_true",
                    help="raise the mount's readahead to 1 MiB at the first open, as coldvault mount does")
    args = ap.parse_args(argv)
    if args.source:
        with open(args.source, "rb") as f:
            data = f.read()
        name = os.path.basename(args.source).encode()
    else:
        data = bytes(parse_size(args.size))
        name = b"data.bin"
    hook = None
    if args.raise_readahead:
        from coldvault.mount.runner import raise_readahead

        mountpoint = os.path.abspath(args.mountpoint)
        hook = lambda: raise_readahead(mountpoint)  # noqa: E731
    ops = TrivialFS(name, data, hook)
    options = set(pyfuse3.default_options) | {"ro", "fsname=trivialfs", "subtype=trivialfs"}
    pyfuse3.init(ops, args.mountpoint, options)
    try:
        trio.run(serve)
    finally:
        pyfuse3.close(unmount=True)
        print(f"trivialfs: {ops.reads} read requests, {ops.read_bytes} bytes, largest request {ops.max_request} bytes",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
