"""The target of a directory restore, written only through directory file descriptors.

Each path component below the target is opened with O_NOFOLLOW relative to its
parent's descriptor, new names are made with `*at` calls, and metadata is set on
descriptors or with follow_symlinks=False: a symlink in the target, whether an
earlier restore made it or someone placed it there, can never send a write,
chmod, chown or utime outside it. (The target itself may be reached through a
symlink: that is the user's choice.)

`DirFds` keeps the descriptors of the directories files are being written into, so
that a restore of many small files does not reopen every path component for each
file. A restore never removes a directory, so a kept descriptor always names the
directory that the path named when it was opened.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import stat
import threading
from collections import OrderedDict

from coldvault.errors import TargetWriteError, UserError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_REOPEN_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_PREFIX = b".coldvault-restore-"
RERUN_HINT = ("the files restored so far are complete and no file was left half-written; make room (or make the "
              "target writable) and run the same restore again with --overwrite to finish")


def _lstat(name: bytes, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class TargetTree:
    """The restore target. One descriptor is held, the target's; others are opened per call
    (or kept by a `DirFds`)."""

    def __init__(self, root: bytes, fd: int | None = None):
        """The target at `root`, opened here, or given as the open descriptor `fd` (a
        writer process inherits it: then `root` only names it in messages)."""
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if fd is None else fd
        self._tag = secrets.token_hex(4).encode()  # temporary names: this, and a count
        self._count = itertools.count()

    def close(self) -> None:
        os.close(self.fd)

    def show(self, rel: bytes) -> str:
        return os.fsdecode(self.root + b"/" + rel if rel else self.root)

    @contextlib.contextmanager
    def writing(self, rel: bytes):
        """A system error in this block (a full disk, a read-only file system, no permission)
        stops the restore as a TargetWriteError naming `rel`."""
        try:
            yield
        except OSError as exc:
            raise TargetWriteError.of(self.show(rel), exc, hint=RERUN_HINT) from exc

    def open_dir(self, rel: bytes) -> int:
        """A new descriptor of the directory at `rel`, reached without following any symlink."""
        fd = os.dup(self.fd)
        try:
            for part in (p for p in rel.split(b"/") if p):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UserError(f"cannot restore into {self.show(rel)}: "
                                        f"{os.fsdecode(part)} in that path is not a directory") from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def directory(self, rel: bytes):
        fd = self.open_dir(rel)
        try:
            yield fd
        finally:
            os.close(fd)

    def make_dir(self, rel: bytes, replace: bool) -> None:
        """Make the directory `rel` (its parent exists); with `replace`, whatever else is there goes."""
        head, _, name = rel.rpartition(b"/")
        with self.directory(head) as parent:
            st = _lstat(name, parent)
            if st is not None and stat.S_ISDIR(st.st_mode):
                return
            if st is not None:
                if not replace:
                    raise UserError(f"cannot restore {self.show(rel)}: a file is in the way")
                os.unlink(name, dir_fd=parent)  # a symlink goes, never what it points to
            os.mkdir(name, dir_fd=parent)

    def new_tmp(self, parent: int, rel: bytes, look: bool = True) -> tuple[int, bytes]:
        """(descriptor, name) of a new temporary file beside `rel` in `parent`, to be renamed
        to `rel` by `commit`. Refuses when a directory (or anything but a file or a symlink,
        which the rename will replace, never follow) is at `rel`. Without `look` (a target
        that was empty: nothing should be there) only `commit` finds a directory in the way."""
        name = rel.rpartition(b"/")[2]
        if look:
            st = _lstat(name, parent)
            if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise self._in_the_way(rel)
        for _ in range(8):
            # Unique per process and call without asking the kernel for randomness each time;
            # a name someone placed there (O_EXCL refuses it) gets a fresh random part.
            tmp = b"%s%s%x-%s" % (TMP_PREFIX, self._tag, next(self._count), name[:200])
            try:
                return os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=parent), tmp
            except FileExistsError:
                self._tag = secrets.token_hex(4).encode()
        raise self._in_the_way(rel)

    def _in_the_way(self, rel: bytes) -> UserError:
        return UserError(f"cannot restore {self.show(rel)}: something else is in the way")

    @staticmethod
    def reopen_tmp(parent: int, tmp: bytes) -> int:
        return os.open(tmp, _REOPEN_FLAGS, dir_fd=parent)

    def commit(self, parent: int, tmp: bytes, rel: bytes) -> None:
        try:
            os.replace(tmp, rel.rpartition(b"/")[2], src_dir_fd=parent, dst_dir_fd=parent)
        except (IsADirectoryError, NotADirectoryError):
            raise self._in_the_way(rel) from None

    @staticmethod
    def discard(parent: int, tmp: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=parent)

    @contextlib.contextmanager
    def free_name(self, rel: bytes):
        """(parent descriptor, name) with nothing at `rel`: a file or symlink there is removed."""
        head, _, name = rel.rpartition(b"/")
        with self.directory(head) as parent:
            st = _lstat(name, parent)
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    raise UserError(f"cannot restore {self.show(rel)}: a directory is in the way")
                os.unlink(name, dir_fd=parent)
            yield parent, name


class DirFds:
    """Descriptors of target directories, shared by the threads writing files: one per
    directory in use, and at most `keep` idle ones stay open for the next file."""

    def __init__(self, out: TargetTree, keep: int = 64):
        self.out = out
        self.keep = keep
        self._open: OrderedDict[bytes, list[int]] = OrderedDict()  # rel -> [fd, users]
        self._lock = threading.Lock()

    def get(self, rel: bytes) -> int:
        """The descriptor of the directory `rel`, until `put(rel)`."""
        with self._lock:
            slot = self._open.get(rel)
            if slot is not None:
                slot[1] += 1
                self._open.move_to_end(rel)
        if slot is None:
            fd = self.out.open_dir(rel)
            with self._lock:
                slot = self._open.get(rel)
                if slot is None:
                    slot = self._open[rel] = [fd, 1]
                    fd = -1
                else:
                    slot[1] += 1
            if fd >= 0:  # another thread opened it meanwhile
                os.close(fd)
        return slot[0]

    def put(self, rel: bytes) -> None:
        with self._lock:
            self._open[rel][1] -= 1
            if len(self._open) > self.keep:
                for old in [k for k, (_, users) in self._open.items() if users == 0]:
                    os.close(self._open.pop(old)[0])
                    if len(self._open) <= self.keep:
                        break

    def close(self) -> None:
        with self._lock:
            for fd, _ in self._open.values():
                os.close(fd)
            self._open.clear()
