"""Restore a snapshot (or one path inside it) into a directory, byte for byte.

Plan first, write second: the whole subtree is listed from hot tree packs and
every data pack it needs is checked with `head`. If any is still in a cold
tier, nothing is written and the error names the packs to thaw.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from dataclasses import dataclass, field

import trio

from coldvault.errors import ColdDataError, DamagedError, UserError
from coldvault.index import tree
from coldvault.index.ids import BlobId
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault import thaw
from coldvault.vault.vault import Vault

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


def split_path(path: str) -> list[bytes]:
    return [p for p in os.fsencode(path).split(b"/") if p and p != b"."]


def resolve(vault: Vault, rec: SnapshotRecord, path: str | None) -> tree.Entry | None:
    """The entry at `path` in the snapshot (None means the root directory)."""
    if rec.tree is None:
        raise UserError(f"snapshot {rec.short_id} has no file tree (it is a {rec.kind} snapshot)")
    parts = split_path(path or "")
    if b".." in parts:
        raise UserError(f"path {path!r} may not contain '..'")
    entry = None
    node_id = rec.tree
    for i, part in enumerate(parts):
        if node_id is None:
            raise UserError(f"{os.fsdecode(b'/'.join(parts[:i]))} is not a directory in snapshot {rec.short_id}")
        entry = vault.load_tree(node_id).find(part)
        if entry is None:
            raise UserError(f"no {os.fsdecode(b'/'.join(parts[:i + 1]))} in snapshot {rec.short_id}")
        node_id = entry.tree if entry.type == tree.DIR else None
    return entry


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

    # ---- planning ----------------------------------------------------------

    def _plan(self) -> Plan:
        plan = Plan()
        entry = resolve(self.vault, self.rec, self.path)
        if entry is None or entry.type == tree.DIR:
            plan.dirs.append((b"", entry))
            self._walk(entry.tree if entry else self.rec.tree, b"", plan)
        elif entry.type == tree.FILE:
            plan.files.append((entry.name, entry))
        else:
            plan.others.append((entry.name, entry))
        plan.packs = thaw.packs_for_chunks(self.vault, (c for _, e in plan.files for c in e.chunks))
        return plan

    def _walk(self, node_id: BlobId, rel: bytes, plan: Plan) -> None:
        for e in self.vault.load_tree(node_id).entries:
            p = rel + b"/" + e.name if rel else e.name
            if e.type == tree.DIR:
                plan.dirs.append((p, e))
                self._walk(e.tree, p, plan)
            elif e.type == tree.FILE:
                plan.files.append((p, e))
            else:
                plan.others.append((p, e))

    def _check_cold(self, packs: set[str]) -> None:
        state = thaw.cold_state(self.vault, packs)  # a missing pack is damage
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

    def _dest(self, rel: bytes) -> bytes:
        return self.target + b"/" + rel if rel else self.target

    def _write_file(self, rel: bytes, e: tree.Entry) -> None:
        """Write to a temporary name and rename: a file that fails is never left half-written."""
        dest = self._dest(rel)
        if os.path.lexists(dest) and not os.path.isfile(dest):
            raise UserError(f"cannot restore {os.fsdecode(dest)}: something else is in the way")
        head, _, base = dest.rpartition(b"/")
        tmp = head + b"/.coldvault-restore-" + base[:200]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        written = 0
        try:
            try:
                for c in e.chunks:
                    data = self.vault.read_blob(c)
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    written += len(data)
            finally:
                os.close(fd)
            if written != e.size:
                raise DamagedError(f"restored {written} bytes, the snapshot says {e.size}")
            self._set_meta(tmp, e)
            os.replace(tmp, dest)
        except BaseException:
            os.unlink(tmp)
            raise
        self.stats.files += 1
        self.stats.bytes += written

    def _set_meta(self, dest: bytes, e: tree.Entry) -> None:
        link = e.type == tree.SYMLINK
        if self.is_root:
            os.chown(dest, e.uid, e.gid, follow_symlinks=False)
        if not link:
            os.chmod(dest, e.mode)
        os.utime(dest, ns=(e.mtime, e.mtime), follow_symlinks=False)

    def _make_other(self, rel: bytes, e: tree.Entry) -> None:
        dest = self._dest(rel)
        if os.path.lexists(dest):
            if os.path.isdir(dest) and not os.path.islink(dest):
                raise UserError(f"cannot restore {os.fsdecode(dest)}: a directory is in the way")
            os.unlink(dest)
        if e.type == tree.SYMLINK:
            os.symlink(e.target, dest)
            self.stats.symlinks += 1
        elif e.type == tree.FIFO:
            os.mkfifo(dest, e.mode)
        elif e.type in (tree.CHARDEV, tree.BLOCKDEV):
            if not self.is_root:
                log.warning("not restoring device %s (needs root)", os.fsdecode(rel))
                return
            kind = stat.S_IFCHR if e.type == tree.CHARDEV else stat.S_IFBLK
            os.mknod(dest, kind | e.mode, e.rdev)
        self._set_meta(dest, e)

    async def run(self) -> RestoreStats:
        plan = await trio.to_thread.run_sync(self._plan)
        await trio.to_thread.run_sync(self._check_cold, plan.packs)
        self._check_target()
        os.makedirs(self.target, exist_ok=True)
        for rel, _ in plan.dirs:
            if rel:
                d = self._dest(rel)
                if os.path.lexists(d) and not os.path.isdir(d):
                    raise UserError(f"cannot restore {os.fsdecode(d)}: a file is in the way")
                os.makedirs(d, exist_ok=True)
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
                self._set_meta(self._dest(rel), e)
        if self.damaged:
            raise DamagedError(
                f"{len(self.damaged)} file(s) could not be restored because the vault is damaged; "
                f"first: {self.damaged[0]}",
                hint="the other files were restored; run 'coldvault check' to see what else is affected",
            )
        return self.stats
