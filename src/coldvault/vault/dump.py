"""What `coldvault dump` writes: a file's bytes, a directory as a tar stream, a ZFS stream.

Everything is written as it is read, chunk by chunk (a few chunks read ahead on
worker threads): memory stays bounded by the look-ahead, whatever the size of
the file, tree or stream. Before the first byte is written, every pack the
output needs is checked: a cold one stops the dump with ColdDataError naming it
(a half-written tar on stdout would be worse than none).
"""

from __future__ import annotations

import io
import os
import shlex
import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Iterable, Iterator

from coldvault.errors import ColdDataError, UserError
from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault import thaw
from coldvault.vault.paths import resolve, split_path
from coldvault.vault.streams import read_chunks, stream_chunks
from coldvault.vault.vault import Vault
from coldvault.vault.walker import walk
from coldvault.zfs.chain import Stream

LOOKAHEAD = 4  # chunks read ahead of the one being written


def _pool(vault: Vault) -> ThreadPoolExecutor:
    """Readers for the look-ahead, never more than the store serves at once."""
    return ThreadPoolExecutor(max(1, min(LOOKAHEAD, vault.store.capabilities().connections)))


def _read(vault: Vault, chunks: Iterable[bytes], pool: ThreadPoolExecutor) -> Iterator[bytes]:
    return read_chunks(vault, chunks, pool, LOOKAHEAD)


class _ChunkReader(io.RawIOBase):
    """A file's chunks as a readable file object (what tarfile copies from, 16 KiB at a time):
    each chunk is handed out in slices, never copied whole again."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if not self._buf:
            self._buf = memoryview(next(self._chunks, b""))
        if n < 0:
            parts = [bytes(self._buf), *self._chunks]
            self._buf = memoryview(b"")
            return b"".join(parts)
        parts = []
        while n > 0 and self._buf:
            part, self._buf = self._buf[:n], self._buf[n:]
            parts.append(part)
            n -= len(part)
            if not self._buf:
                self._buf = memoryview(next(self._chunks, b""))
        return b"".join(parts)


def _check_cold(vault: Vault, chunks: Iterable[bytes], thaw_target: str) -> None:
    packs = thaw.packs_for_chunks(vault, chunks)
    state = thaw.cold_state(vault, packs)
    cold = state.unreadable
    if cold:
        names = ", ".join(cold[:3]) + (f" and {len(cold) - 3} more" if len(cold) > 3 else "")
        being = f" ({len(state.restoring)} being restored)" if state.restoring else ""
        raise ColdDataError(
            f"{len(cold)} pack(s) needed are in a cold tier{being}: {names}", cold,
            hint=f"request them with 'coldvault thaw {thaw_target}' and run this again when they are ready")


def _no_terminal(to_terminal: bool, what: str) -> None:
    if to_terminal:
        raise UserError(f"dump would write {what} to a terminal",
                        hint="redirect it to a file or a pipe (> FILE, | tar tv)")


def dump(vault: Vault, rec: SnapshotRecord, path: str | None, out: BinaryIO, to_terminal: bool = False) -> str:
    """Write what `path` names in `rec` to `out`; returns what was written: file, tar or zfs.
    `to_terminal`: `out` is a terminal, which gets a file's bytes but not a tar or ZFS stream."""
    if rec.kind == "zfs" and rec.zfs:
        if split_path(path or ""):
            raise UserError(f"snapshot {rec.short_id} is a ZFS stream: it has no paths (dump it without PATH)")
        _no_terminal(to_terminal, f"the ZFS stream of snapshot {rec.short_id}")
        s = Stream(rec)
        chunks = stream_chunks(vault, s)
        _check_cold(vault, chunks, rec.short_id)
        with _pool(vault) as pool:
            for data in _read(vault, chunks, pool):
                out.write(data)
        return "zfs"
    entry = resolve(vault, rec, path)
    target = rec.short_id if not split_path(path or "") else shlex.quote(f"{rec.short_id}:{path}")
    if entry is not None and entry.type == tree.FILE:
        _check_cold(vault, entry.chunks, target)
        with _pool(vault) as pool:
            for data in _read(vault, entry.chunks, pool):
                out.write(data)
        return "file"
    if entry is not None and entry.type != tree.DIR:
        raise UserError(f"{path} in snapshot {rec.short_id} is a {entry.type}, not a file or directory")
    _no_terminal(to_terminal, f"a tar stream of {path or '/'} in snapshot {rec.short_id}")
    root = entry.tree if entry is not None else rec.tree
    top = b"/".join(split_path(path or "")).rsplit(b"/", 1)[-1] or b"."
    _check_cold(vault, (c for _, e in walk(vault, root) if e.type == tree.FILE for c in e.chunks), target)
    with _pool(vault) as pool, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if entry is not None:
            tar.addfile(_info(top.decode("utf-8", "surrogateescape"), entry))
        for p, e in walk(vault, root, top if entry is not None else b""):
            info = _info(p.decode("utf-8", "surrogateescape"), e)
            if e.type == tree.FILE:
                tar.addfile(info, _ChunkReader(_read(vault, e.chunks, pool)))
            else:
                tar.addfile(info)
    return "tar"


_TAR_TYPE = {tree.FILE: tarfile.REGTYPE, tree.DIR: tarfile.DIRTYPE, tree.SYMLINK: tarfile.SYMTYPE,
             tree.FIFO: tarfile.FIFOTYPE, tree.CHARDEV: tarfile.CHRTYPE, tree.BLOCKDEV: tarfile.BLKTYPE}


def _info(name: str, e: tree.Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = _TAR_TYPE[e.type]
    info.mode = e.mode & 0o7777
    info.uid, info.gid = e.uid, e.gid
    info.mtime = e.mtime / 1e9
    if e.type == tree.FILE:
        info.size = e.size
    elif e.type == tree.SYMLINK:
        info.linkname = (e.target or b"").decode("utf-8", "surrogateescape")
    elif e.type in (tree.CHARDEV, tree.BLOCKDEV):
        info.devmajor, info.devminor = os.major(e.rdev), os.minor(e.rdev)
    return info
