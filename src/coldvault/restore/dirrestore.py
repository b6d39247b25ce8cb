"""Restore a snapshot (or one path inside it) into a directory, byte for byte.

Plan first, write second: the whole subtree is listed from hot tree packs and
every data pack it needs is checked with `head`. If any is still in a cold
tier, nothing is written and the error names the packs to thaw. A missing pack
only costs the files that need it: the rest is restored, those are named.

Everything below the target directory is written through directory file
descriptors (`TargetTree`): no symlink in the target, whether an earlier
restore made it or someone placed it there, is ever followed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shlex
import stat
from dataclasses import dataclass, field

import trio

from coldvault.errors import ColdDataError, DamagedError, UserError
from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault import thaw
from coldvault.vault.paths import resolve
from coldvault.vault.vault import Vault
from coldvault.vault.walker import walk

log = logging.getLogger(__name__)


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0


@dataclass
class Plan:
    dirs: list[tuple[bytes, tree.Entry | None]] = field(default_factory=list)  # relative path, entry
    files: list[tuple[bytes, tree.Entry]] = field(default_factory=list)
    others: list[tuple[bytes, tree.Entry]] = field(default_factory=list)
    packs: set[str] = field(default_factory=set)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_PREFIX = b".coldvault-restore-"


def _lstat(name: bytes, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class TargetTree:
    """The restore target, written only relative to directory file descriptors.

    Each path component below the target is opened with O_NOFOLLOW relative to its
    parent's descriptor, new names are made with `*at` calls, and metadata is set on
    descriptors or with follow_symlinks=False: a symlink in the target can never send a
    write, chmod, chown or utime outside it. (The target itself may be reached through a
    symlink: that is the user's choice.) One descriptor is held, the target's; others
    live only while a call needs them.
    """

    def __init__(self, root: bytes):
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def show(self, rel: bytes) -> str:
        return os.fsdecode(self.root + b"/" + rel if rel else self.root)

    @contextlib.contextmanager
    def directory(self, rel: bytes):
        """A descriptor of the directory at `rel`, reached without following any symlink."""
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

    @contextlib.contextmanager
    def new_file(self, rel: bytes):
        """A descriptor of a new temporary file, renamed to `rel` when the block succeeds.

        A file or symlink at `rel` is replaced (the symlink itself, not its target); a
        block that raises leaves nothing behind.
        """
        head, _, name = rel.rpartition(b"/")
        with self.directory(head) as parent:
            st = _lstat(name, parent)
            if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise UserError(f"cannot restore {self.show(rel)}: something else is in the way")
            tmp = TMP_PREFIX + secrets.token_hex(4).encode() + b"-" + name[:200]
            fd = os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=parent)
            try:
                try:
                    yield fd
                finally:
                    os.close(fd)
                os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                os.unlink(tmp, dir_fd=parent)
                raise

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


class DirRestore:
    def __init__(self, vault: Vault, rec: SnapshotRecord, path: str | None, target: str, overwrite: bool = False):
        self.vault = vault
        self.rec = rec
        self.path = path
        self.target = os.fsencode(os.path.abspath(target))
        self.overwrite = overwrite
        self.stats = RestoreStats()
        self.is_root = os.geteuid() == 0
        self.limiter = trio.CapacityLimiter(4)
        self.damaged: list[str] = []
        self.missing_packs: set[str] = set()
        self.out: TargetTree | None = None

    # ---- planning ----------------------------------------------------------

    def _plan(self) -> Plan:
        plan = Plan()
        entry = resolve(self.vault, self.rec, self.path)
        if entry is None or entry.type == tree.DIR:
            plan.dirs.append((b"", entry))
            for p, e in walk(self.vault, entry.tree if entry else self.rec.tree):
                if e.type == tree.DIR:
                    plan.dirs.append((p, e))
                elif e.type == tree.FILE:
                    plan.files.append((p, e))
                else:
                    plan.others.append((p, e))
        elif entry.type == tree.FILE:
            plan.files.append((entry.name, entry))
        else:
            plan.others.append((entry.name, entry))
        plan.packs = thaw.packs_for_chunks(self.vault, (c for _, e in plan.files for c in e.chunks))
        return plan

    def _check_packs(self, packs: set[str]) -> None:
        """Stop before writing anything if a pack is cold; remember the missing ones (damage)."""
        state, missing = thaw.cold_state_and_missing(self.vault, packs)
        self.missing_packs = set(missing)
        for name in missing:
            log.error("pack %s is missing from the vault; the files that need it cannot be restored", name)
        cold = state.unreadable
        if cold:
            pending = len(state.restoring)
            names = ", ".join(cold[:3]) + (f" and {len(cold) - 3} more" if len(cold) > 3 else "")
            being = f" ({pending} being restored)" if pending else ""
            raise ColdDataError(
                f"{len(cold)} pack(s) needed are in a cold tier{being}: {names}",
                cold,
                hint=f"request them with 'coldvault thaw {self._thaw_target()}' and run this again when they are ready",
            )

    def _thaw_target(self) -> str:
        """What to pass to `coldvault thaw` for exactly what this restore needs."""
        if not self.path:
            return self.rec.short_id
        return shlex.quote(f"{self.rec.short_id}:{self.path}")

    def _check_target(self) -> None:
        t = self.target
        if os.path.lexists(t) and not os.path.isdir(t):
            raise UserError(f"target {os.fsdecode(t)} exists and is not a directory")
        if os.path.isdir(t) and os.listdir(t) and not self.overwrite:
            raise UserError(
                f"target {os.fsdecode(t)} is not empty", hint="choose an empty directory, or pass --overwrite"
            )

    # ---- writing -------------------------------------------------------------

    def _write_file(self, rel: bytes, e: tree.Entry) -> None:
        """Write to a temporary name and rename: a file that fails is never left half-written."""
        if self.missing_packs:  # fail at once, before reading the chunks of other packs in vain
            for c in e.chunks:
                pack = self.vault.locate(c, "chunk").object_name
                if pack in self.missing_packs:
                    raise DamagedError(f"pack {pack} is missing from the vault")
        written = 0
        with self.out.new_file(rel) as fd:
            for c in e.chunks:
                data = self.vault.read_blob(c)
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                written += len(data)
            if written != e.size:
                raise DamagedError(f"restored {written} bytes, the snapshot says {e.size}")
            self._set_meta_fd(fd, e)
        self.stats.files += 1
        self.stats.bytes += written

    def _set_meta_fd(self, fd: int, e: tree.Entry) -> None:
        """Owner, mode and mtime of an open file or directory (chown first: it clears setuid)."""
        if self.is_root:
            os.fchown(fd, e.uid, e.gid)
        os.fchmod(fd, e.mode)
        os.utime(fd, ns=(e.mtime, e.mtime))

    def _set_meta_at(self, parent: int, name: bytes, e: tree.Entry) -> None:
        """The same for a name just made in `parent`, never following a symlink."""
        if self.is_root:
            os.chown(name, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)
        if e.type != tree.SYMLINK:
            os.chmod(name, e.mode, dir_fd=parent, follow_symlinks=False)
        os.utime(name, ns=(e.mtime, e.mtime), dir_fd=parent, follow_symlinks=False)

    def _make_other(self, rel: bytes, e: tree.Entry) -> None:
        if e.type in (tree.CHARDEV, tree.BLOCKDEV) and not self.is_root:
            log.warning("not restoring device %s (needs root)", os.fsdecode(rel))
            return
        with self.out.free_name(rel) as (parent, name):
            if e.type == tree.SYMLINK:
                os.symlink(e.target, name, dir_fd=parent)
                self.stats.symlinks += 1
            elif e.type == tree.FIFO:
                os.mkfifo(name, e.mode, dir_fd=parent)
            else:
                kind = stat.S_IFCHR if e.type == tree.CHARDEV else stat.S_IFBLK
                os.mknod(name, kind | e.mode, e.rdev, dir_fd=parent)
            self._set_meta_at(parent, name, e)

    async def run(self) -> RestoreStats:
        plan = await trio.to_thread.run_sync(self._plan)
        await trio.to_thread.run_sync(self._check_packs, plan.packs)
        self._check_target()
        os.makedirs(self.target, exist_ok=True)
        self.out = TargetTree(self.target)
        try:
            await self._write(plan)
        finally:
            self.out.close()
        if self.damaged:
            self.damaged.sort()
            missing = sorted(self.missing_packs)
            names = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            because = f" ({len(missing)} pack(s) missing: {names})" if missing else ""
            raise DamagedError(
                f"{len(self.damaged)} file(s) could not be restored because the vault is damaged{because}; "
                f"first: {self.damaged[0]}",
                hint="the other files were restored; run 'coldvault check' to see what else is affected",
            )
        return self.stats

    async def _write(self, plan: Plan) -> None:
        for rel, _ in plan.dirs:  # parents before children
            if rel:
                self.out.make_dir(rel, replace=self.overwrite)
                self.stats.dirs += 1

        async def one(rel, e):
            try:
                await trio.to_thread.run_sync(self._write_file, rel, e, limiter=self.limiter)
            except DamagedError as exc:
                # Damage is per file: say which, restore the rest, fail at the end.
                log.error("cannot restore %s: %s", os.fsdecode(rel), exc.message)
                self.damaged.append(f"{os.fsdecode(rel)}: {exc.message}")

        async with trio.open_nursery() as nursery:
            for rel, e in plan.files:
                nursery.start_soon(one, rel, e)
        for rel, e in plan.others:
            self._make_other(rel, e)
        # Directory metadata last, deepest first, so writing children does not touch it.
        for rel, e in sorted(plan.dirs, key=lambda t: t[0].count(b"/"), reverse=True):
            if e is not None:
                with self.out.directory(rel) as fd:
                    self._set_meta_fd(fd, e)
