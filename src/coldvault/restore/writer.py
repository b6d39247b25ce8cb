"""A restore's writer process: decodes blobs and writes the files they complete.

Why processes: a restore of many small files is mostly system calls (create,
write, chown, chmod, utime, rename: about ten per file). Threads of one Python
process hand the GIL to each other around every one of them, and on this kind of
work the handoffs (futex calls, context switches) cost more than the calls: two
writer threads made 100,000 files slower than one. A process of its own has a GIL
of its own, so `restore dir` runs one writer per core, each single-threaded.

The restoring process (`writerpool`) sends each writer messages over its stdin, one
per ranged read of a pack, and the writer answers each on its stdout, in order:

    frame   := u64 header length, u64 data length (little endian), header, data
               (the header is `marshal`ed: both ends are this Python, and it is several
               times faster than pickle on these tuples)
    setup   := the first frame: {"root", "keys", "chunker_max", "look", "is_root"}
    message := header (pack name, parts), data (the bytes the read returned)
    part    := (offset in data, stored length, blob id, raw length, blob type, targets)
    target  := (WHOLE, path, size, mode, uid, gid, mtime)  a file of this one blob
             | (PIECE, key, path, temporary name, offset)    a piece of a file of several
    answer  := ("ok", files, bytes, damaged [(path, why)], pieces [(key, bytes, why)])
             | ("error", "target", path, reason)            the target cannot be written
             | ("error", kind, ...)                         the restore must stop

A file of one blob is written whole here: a temporary name beside it, the bytes,
owner, mode and times, then the rename (so a failed file is never left half
written). A file of several blobs was given its temporary file by the restoring
process; a writer only writes pieces into it, and that process renames it once
every piece is in. Paths are relative to the target, whose descriptor the writer
inherits; every name is reached through directory descriptors (`target`).

The writer imports only what this needs (no trio, no store, no index tables), so
it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import gc
import marshal
import os
import signal
import struct
import sys
import traceback

from coldvault import faults
from coldvault.errors import DamagedError, TargetWriteError, UserError
from coldvault.index import blob as blobfmt
from coldvault.index.crypto import MasterKeys, Sealer
from coldvault.index.errors import FormatError
from coldvault.index.ids import BlobId
from coldvault.restore.target import RERUN_HINT, DirFds, TargetTree

WHOLE = 0
PIECE = 1
PREFIX = struct.Struct("<QQ")
MAX_HEADER = 256 * 1024 * 1024  # a frame claiming more is not ours


def frame(header, data_length: int = 0) -> bytes:
    """The prefix and header of a frame; its data (if any) follows on the wire."""
    head = marshal.dumps(header)
    return PREFIX.pack(len(head), data_length) + head


def _read_exactly(fd: int, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return None if got == 0 else _truncated()
        got += k
    return buf


def _truncated():
    raise EOFError("the restoring process closed the pipe in the middle of a message")


def read_frame(fd: int) -> tuple[object, bytearray] | None:
    """(header, data) of the next frame on `fd`; None at the end of the stream."""
    prefix = _read_exactly(fd, PREFIX.size)
    if prefix is None:
        return None
    head_len, data_len = PREFIX.unpack(prefix)
    if head_len > MAX_HEADER:
        raise ValueError(f"frame header of {head_len} bytes")
    head = _read_exactly(fd, head_len) if head_len else bytearray()
    data = _read_exactly(fd, data_len) if data_len else bytearray()
    if head is None or data is None:
        _truncated()
    return marshal.loads(head), data


def write_all(fd: int, data, offset: int | None = None) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


def set_meta_fd(fd: int, uid: int, gid: int, mode: int, mtime: int, is_root: bool) -> None:
    """Owner, mode and mtime of an open file or directory (chown first: it clears setuid)."""
    if is_root:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime, mtime))


def write_whole(out: TargetTree, parent: int, rel: bytes, size: int, mode: int, uid: int, gid: int, mtime: int,
                data, look: bool, is_root: bool) -> None:
    """A file of one piece (or none): a temporary file written, set and renamed in one go.
    Raises DamagedError when `data` is not `size` bytes (nothing is left behind)."""
    fd, tmp = out.new_tmp(parent, rel, look=look)
    try:
        try:
            write_all(fd, data)
            if len(data) != size:
                raise DamagedError(f"restored {len(data)} bytes, the snapshot says {size}")
            set_meta_fd(fd, uid, gid, mode, mtime, is_root)
        finally:
            os.close(fd)
        out.commit(parent, tmp, rel)
    except BaseException:
        out.discard(parent, tmp)
        raise


class Writer:
    """What one writer process knows: the target, the keys, how to write."""

    def __init__(self, setup: dict, root_fd: int):
        keys = setup["keys"]
        self.sealer = Sealer(MasterKeys(*keys) if keys else None)
        self.chunker_max = setup["chunker_max"]
        self.look = setup["look"]
        self.is_root = setup["is_root"]
        self.out = TargetTree(setup["root"], fd=root_fd)
        self.dirs = DirFds(self.out)

    def handle(self, header, data: bytearray):
        pack, parts = header
        files = written = 0
        damaged: list[tuple[bytes, str]] = []
        pieces: list[tuple[int, int, str | None]] = []
        view = memoryview(data)
        out, look, is_root = self.out, self.look, self.is_root
        head, parent = None, -1  # the directory of the files just written (most share one), held
        try:
            for offset, length, bid, raw_length, btype, targets in parts:
                what = f"blob {bid.hex()[:16]} in pack {pack}"
                plain, why = None, None
                try:
                    plain = blobfmt.decode_located(view[offset:offset + length], BlobId(bid), self.sealer, what,
                                                   length, raw_length, btype, self.chunker_max)
                except FormatError as exc:
                    why = str(exc)
                for t in targets:
                    rel = t[1] if t[0] == WHOLE else t[2]
                    if plain is None:
                        if t[0] == WHOLE:
                            damaged.append((rel, why))
                        else:
                            pieces.append((t[1], 0, why))
                        continue
                    try:  # as `out.writing(rel)`, without a context manager per file
                        here = rel.rpartition(b"/")[0]
                        if here != head:
                            if head is not None:
                                self.dirs.put(head)
                                head = None
                            parent = self.dirs.get(here)
                            head = here
                        if t[0] == WHOLE:
                            _, rel, size, mode, uid, gid, mtime = t
                            try:
                                write_whole(out, parent, rel, size, mode, uid, gid, mtime, plain, look, is_root)
                            except DamagedError as exc:
                                damaged.append((rel, exc.message))
                                continue
                            files += 1
                            written += len(plain)
                        else:
                            _, key, rel, tmp, at = t
                            fd = out.reopen_tmp(parent, tmp)
                            try:
                                write_all(fd, plain, at)
                            finally:
                                os.close(fd)
                            pieces.append((key, len(plain), None))
                    except OSError as exc:
                        raise TargetWriteError.of(out.show(rel), exc, hint=RERUN_HINT) from exc
        finally:
            if head is not None:
                self.dirs.put(head)
        return "ok", files, written, damaged, pieces


def answer_for(exc: BaseException):
    """The answer that stops the restore, for an error writing the target."""
    if isinstance(exc, TargetWriteError):
        return "error", "target", exc.path, exc.reason
    if isinstance(exc, UserError):
        return "error", "user", exc.message, exc.hint
    if isinstance(exc, OSError):
        return "error", "os", exc.errno, exc.strerror, exc.filename
    return "error", "bug", "".join(traceback.format_exception(exc))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the restoring process decides; it closes our stdin
    gc.disable()  # nothing here makes reference cycles worth a collector's walk
    root_fd = int(argv[0])
    answers = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the answers
    first = read_frame(0)
    if first is None:
        return 0
    writer = Writer(first[0], root_fd)
    while True:
        try:
            message = read_frame(0)
        except EOFError:  # the restoring process stopped in the middle of a message: drop it
            return 0
        if message is None:
            return 0
        faults.crash_point("restore-writer")
        try:
            answer = writer.handle(*message)
        except Exception as exc:  # noqa: BLE001 - every error goes back to the restoring process
            answer = answer_for(exc)
        try:
            write_all(answers, frame(answer))
        except BrokenPipeError:  # the restoring process is gone (killed): so are we
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
