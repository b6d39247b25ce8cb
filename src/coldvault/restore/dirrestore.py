"""Restore a snapshot (or one path inside it) into a directory, byte for byte.

Check first, write second: a first walk of the subtree (hot tree packs only) notes
the data packs it needs, and each is checked with `head`. That walk reads each tree
node's outline (`tree.outline`: every check of a full decode, no entry objects), so
a node that fails the write walk fails it first, before anything is written. If any is still in a cold
tier, nothing is written and the error names the packs to thaw. A missing pack only
costs the files that need it: the rest is restored, those are named.

Then a second walk writes, in bounded memory whatever the number of files:

    walk (a thread) --batches--> reads (store threads) --> decode and write (writer processes)

- The walk makes directories, symlinks, fifos, devices and empty files as it meets
  them, and cuts the files it passes into batches of at most BATCH_ENTRIES entries
  and BATCH_BYTES stored bytes (a large file spans several batches). At most
  BATCHES_IN_FLIGHT batches exist at once: the walk waits for the restore to catch up.
- The blobs of a batch are grouped by pack and read with few ranged reads
  (`readplan.coalesce`); as many reads run at once as the store serves connections,
  within IN_FLIGHT_BYTES. Each read goes to a writer process (`writer`, one per
  core: threads of this process would hand the GIL back and forth around every
  file's system calls), which decodes its blobs (every one authenticated) and
  writes the files they complete.
- A file is written under a temporary name and renamed when complete, so a file
  that fails is never left half-written. A file of several chunks gets its
  temporary file here, as the walk meets it; writers write its pieces at their
  offsets, and it is set and renamed here once every piece is in.
- A target that cannot be written (a full disk or quota, a read-only file system,
  no permission) stops the restore with one TargetWriteError naming the file or
  directory, whichever process met it: the writers finish and exit, the temporary
  files of unfinished files are removed, completed files stay (a rerun with
  --overwrite finishes the job).
- A directory's metadata (owner, mode, mtime) is set once nothing more is written
  in it: the walk notes each directory whose subtree it has left, with the batch it
  was cutting, and those are applied, deepest first, when that batch and every
  earlier one are done. Memory holds the directories of the batches in flight and
  one walk stack, never a list of the whole tree.

Everything below the target directory is written through directory file
descriptors (`target.TargetTree`): no symlink in the target is ever followed.

Over 400 lines on purpose: the walk, the batches and the writers form one
pipeline whose back-pressure (batches in flight, bytes in flight, directory
metadata applied when earlier batches are done) is one piece of logic. The pure
parts are apart: `readplan` (which reads) and `target` (where bytes land).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import shlex
import stat
import threading
from dataclasses import dataclass, field
from typing import Generator, Iterator

import trio

from coldvault.errors import ColdDataError, DamagedError, TargetWriteError, UserError
from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.restore import writer as wire
from coldvault.restore.readplan import Read, coalesce
from coldvault.restore.target import RERUN_HINT, DirFds, TargetTree
from coldvault.restore.writerpool import writer_pool
from coldvault.vault import thaw
from coldvault.vault.blobindex import Location
from coldvault.vault.paths import resolve
from coldvault.vault.vault import Vault
from coldvault.vault.walker import chunks_below, walk

log = logging.getLogger(__name__)

MiB = 1024 * 1024
BATCH_ENTRIES = 4096  # entries of the tree per batch (files, directories, others)
BATCH_BYTES = 64 * MiB  # stored bytes of the blobs of one batch
BATCHES_IN_FLIGHT = 2  # batches read at once (the next one is read while one finishes)
IN_FLIGHT_BYTES = 32 * MiB  # stored bytes of the reads being fetched, decoded and written
LOOKAHEAD = 2048  # entries of the walk (chunks, in the check walk) looked up in the index at once
# The two walks (check, then write) meet the directories in the same order. A cache of decoded
# tree nodes smaller than the tree keeps nothing the second walk needs (least recently used
# goes first), and one that holds the tree costs 440 bytes a file (40 MiB for 100,000 files).
# Reading each node twice costs less: the check walk's outlines about 0.37 s of CPU per
# 100,000 files, the write walk's full decode about 0.45 s.
TREE_CACHE_BYTES = 4 * MiB


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0


class FileJob:
    """A regular file of several chunks being restored: it has a temporary file, and its
    pieces may be written by several writers, in any order. (A file of one chunk is only
    its writer's target: no object of its own.)"""

    __slots__ = ("rel", "entry", "left", "written", "tmp", "error", "key")

    def __init__(self, rel: bytes, entry: tree.Entry):
        self.rel = rel
        self.entry = entry
        self.left = len(entry.chunks)  # pieces not written yet (a chunk used twice is two)
        self.written = 0
        self.tmp: bytes | None = None  # the temporary name (files of several pieces)
        self.error: str | None = None  # why it cannot be restored
        self.key: int | None = None  # names it in messages to writers (files of several pieces)

    def target(self, offset: int) -> tuple:
        """How a writer is told to write this file's chunk at `offset` (see `writer`)."""
        return wire.PIECE, self.key, self.rel, self.tmp, offset


@dataclass
class Batch:
    """Part of the walk: the blobs its files need, and the directories it finished."""

    blobs: dict[bytes, tuple[Location, list[tuple]]] = field(default_factory=dict)  # id -> (where, [writer target])
    dirs_done: list[tuple[bytes, tree.Entry | None]] = field(default_factory=list)  # deepest first
    entries: int = 0
    bytes: int = 0
    done: bool = False


class ByteBudget:
    """At most `total` bytes held at once by the tasks of one trio run (a larger request
    waits for all of it)."""

    def __init__(self, total: int):
        self.total = total
        self.free = total
        self._lot = trio.lowlevel.ParkingLot()

    @contextlib.asynccontextmanager
    async def hold(self, n: int):
        n = min(n, self.total)
        while self.free < n:
            await self._lot.park()
        self.free -= n
        try:
            yield
        finally:
            self.free += n
            self._lot.unpark_all()


class DirRestore:
    def __init__(self, vault: Vault, rec: SnapshotRecord, path: str | None, target: str, overwrite: bool = False):
        self.vault = vault
        self.rec = rec
        self.path = path
        self.target = os.fsencode(os.path.abspath(target))
        self.overwrite = overwrite
        self.stats = RestoreStats()
        self.is_root = os.geteuid() == 0
        self.missing_packs: set[str] = set()
        self.out: TargetTree | None = None
        self.dirs: DirFds | None = None
        self.entry: tree.Entry | None = None  # what `path` names (None: the whole snapshot)
        self.damaged = 0
        self.first_damaged: str | None = None
        self._lock = threading.Lock()  # stats, damage, unfinished
        self._unfinished: dict[int, FileJob] = {}  # files of several pieces with a temporary file, by key
        self._keys = itertools.count()

    # ---- checking ------------------------------------------------------------------

    def _entries(self) -> Iterator[tuple[bytes, tree.Entry]]:
        """Everything to restore, parents before children (one walk: memory grows with depth)."""
        e = self.entry
        if e is None or e.type == tree.DIR:
            yield from walk(self.vault, e.tree if e else self.rec.tree)
        else:
            yield e.name, e

    def _located(self) -> Iterator[tuple[bytes, tree.Entry, list[Location] | None]]:
        """`_entries`, each file with the locations of its chunks: looked up LOOKAHEAD
        entries at a time (one vectorised search, not one per chunk)."""
        entries = self._entries()
        while True:
            ahead = list(itertools.islice(entries, LOOKAHEAD))
            if not ahead:
                return
            chunks = [c for _, e in ahead if e.type == tree.FILE for c in e.chunks]
            locs = iter(self.vault.locate_many(chunks, "chunk"))
            for rel, e in ahead:
                yield rel, e, [next(locs) for _ in e.chunks] if e.type == tree.FILE else None

    def _packs_needed(self) -> set[str]:
        """The packs the files to restore use. This walk reads only each node's outline (the
        same checks as the write walk's full decode, no entries): it costs about a third."""
        self.entry = e = resolve(self.vault, self.rec, self.path)
        if e is not None and e.type != tree.DIR:
            return self.vault.pack_names(e.chunks if e.type == tree.FILE else [], "chunk")
        packs: set[str] = set()
        pending: list[bytes] = []
        for chunks in chunks_below(self.vault, e.tree if e else self.rec.tree):
            pending += chunks
            if len(pending) >= LOOKAHEAD:
                packs |= self.vault.pack_names(pending, "chunk")
                pending = []
        return packs | self.vault.pack_names(pending, "chunk")

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
        try:
            listed = os.path.isdir(t) and os.listdir(t)
        except OSError as exc:  # a directory this user may not read (its names are not ours to see)
            raise TargetWriteError.of(os.fsdecode(t), exc) from exc
        if listed and not self.overwrite:
            raise UserError(
                f"target {os.fsdecode(t)} is not empty", hint="choose an empty directory, or pass --overwrite"
            )

    # ---- running -------------------------------------------------------------------

    async def run(self) -> RestoreStats:
        self.vault.bound_tree_cache(TREE_CACHE_BYTES)
        packs = await trio.to_thread.run_sync(self._packs_needed)
        await trio.to_thread.run_sync(self._check_packs, packs)
        self._check_target()
        try:
            os.makedirs(self.target, exist_ok=True)
            self.out = TargetTree(self.target)
        except OSError as exc:
            raise TargetWriteError.of(os.fsdecode(self.target), exc) from None
        self.dirs = DirFds(self.out)
        try:
            await self._restore()
        finally:
            self._discard_unfinished()
            self.dirs.close()
            self.out.close()
        if self.damaged:
            missing = sorted(self.missing_packs)
            names = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            because = f" ({len(missing)} pack(s) missing: {names})" if missing else ""
            raise DamagedError(
                f"{self.damaged} file(s) could not be restored because the vault is damaged{because}; "
                f"first: {self.first_damaged}",
                hint="the other files were restored; run 'coldvault check' to see what else is affected",
            )
        return self.stats

    async def _restore(self) -> None:
        send, recv = trio.open_memory_channel(0)
        self._read_limiter = trio.CapacityLimiter(max(1, self.vault.store.capabilities().connections))
        self._work_limiter = trio.CapacityLimiter(max(2, len(os.sched_getaffinity(0))))
        self._budget = ByteBudget(IN_FLIGHT_BYTES)
        self._in_flight = trio.Semaphore(BATCHES_IN_FLIGHT)
        self._pending: collections.deque[Batch] = collections.deque()  # in walk order, until applied
        self._applying = trio.Lock()
        keys = self.vault.keys
        setup = {"root": self.target, "keys": (keys.enc_key, keys.id_key) if keys else None,
                 "chunker_max": self.vault.settings.chunker_max, "look": self.overwrite, "is_root": self.is_root}

        async def produce():
            async with send:
                await trio.to_thread.run_sync(self._walk_into, send)

        async with writer_pool(setup, self.out.fd, len(os.sched_getaffinity(0))) as self._writers, \
                trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with recv:
                while True:
                    await self._in_flight.acquire()  # released when a batch's reads are done
                    try:
                        batch = await recv.receive()
                    except trio.EndOfChannel:
                        break
                    self._pending.append(batch)
                    nursery.start_soon(self._run_batch, batch)

    # ---- the walk (one thread) ----------------------------------------------------------

    def _walk_into(self, send) -> None:
        for batch in self._batches():
            trio.from_thread.run(send.send, batch)

    def _batches(self) -> Iterator[Batch]:
        """Make what needs no data as the walk meets it; yield the files in batches."""
        batch = Batch()
        root = self.entry
        stack: list[tuple[bytes, tree.Entry]] = []  # directories the walk is inside, outermost first
        for rel, e, locs in self._located():
            while stack and not rel.startswith(stack[-1][0] + b"/"):
                batch.dirs_done.append(stack.pop())
            if e.type == tree.DIR:
                with self.out.writing(rel):
                    self.out.make_dir(rel, replace=self.overwrite)
                self.stats.dirs += 1
                stack.append((rel, e))
            elif e.type == tree.FILE:
                batch = yield from self._add_file(batch, rel, e, locs)
                if batch.bytes >= BATCH_BYTES:
                    yield batch
                    batch = Batch()
            else:
                self._make_other(rel, e)
            batch.entries += 1
            if batch.entries >= BATCH_ENTRIES:
                yield batch
                batch = Batch()
        batch.dirs_done.extend(reversed(stack))
        if root is None or root.type == tree.DIR:
            batch.dirs_done.append((b"", root))
        yield batch

    def _add_file(self, batch: Batch, rel: bytes, e: tree.Entry, locs: list[Location]) -> Generator[Batch, None, Batch]:
        """Add the chunks of the file `rel` to `batch`; a file too large for it fills it
        (yielded) and goes on in a new one. Returns the batch to go on with."""
        if not e.chunks:
            self._write_empty(rel, e)
            return batch
        if self.missing_packs:  # fail at once, before reading the chunks of other packs in vain
            gone = next((loc.object_name for loc in locs if loc.object_name in self.missing_packs), None)
            if gone is not None:
                self._damage(rel, f"pack {gone} is missing from the vault")
                return batch
        if len(e.chunks) == 1:  # most files: the writer's target is all there is to keep
            c, loc = e.chunks[0], locs[0]
            target = (wire.WHOLE, rel, e.size, e.mode, e.uid, e.gid, e.mtime)
            slot = batch.blobs.get(c)
            if slot is None:
                batch.blobs[c] = (loc, [target])
                batch.bytes += loc.length
            else:
                slot[1].append(target)
            return batch
        job = FileJob(rel, e)
        self._make_tmp(job)
        offset = 0
        for c, loc in zip(e.chunks, locs):
            slot = batch.blobs.get(c)
            if slot is None:
                batch.blobs[c] = (loc, [job.target(offset)])
                batch.bytes += loc.length
            else:
                slot[1].append(job.target(offset))
            offset += loc.raw_length
            if batch.bytes >= BATCH_BYTES and offset < e.size:
                yield batch
                batch = Batch()
        return batch

    def _make_other(self, rel: bytes, e: tree.Entry) -> None:
        if e.type in (tree.CHARDEV, tree.BLOCKDEV) and not self.is_root:
            log.warning("not restoring device %s (needs root)", os.fsdecode(rel))
            return
        with self.out.writing(rel), self.out.free_name(rel) as (parent, name):
            if e.type == tree.SYMLINK:
                os.symlink(e.target, name, dir_fd=parent)
                self.stats.symlinks += 1
            elif e.type == tree.FIFO:
                os.mkfifo(name, e.mode, dir_fd=parent)
            else:
                kind = stat.S_IFCHR if e.type == tree.CHARDEV else stat.S_IFBLK
                os.mknod(name, kind | e.mode, e.rdev, dir_fd=parent)
            self._set_meta_at(parent, name, e)

    # ---- batches and reads (trio tasks) ---------------------------------------------------

    async def _run_batch(self, batch: Batch) -> None:
        try:
            reads = coalesce((loc.object_name, loc.offset, loc.length, bid)
                             for bid, (loc, _) in batch.blobs.items())
            async with trio.open_nursery() as nursery:
                for r in reads:
                    nursery.start_soon(self._run_read, r, batch)
            batch.blobs = {}
            batch.done = True
        finally:
            self._in_flight.release()
        async with self._applying:  # directory metadata, in walk order, once all before is done
            while self._pending and self._pending[0].done:
                done = self._pending.popleft()
                await trio.to_thread.run_sync(self._apply_dirs, done.dirs_done, limiter=self._work_limiter)

    async def _run_read(self, r: Read, batch: Batch) -> None:
        async with self._budget.hold(r.length):
            try:
                data = await trio.to_thread.run_sync(self.vault.get_range, r.pack, r.start, r.length,
                                                     limiter=self._read_limiter)
            except DamagedError as exc:  # the pack went missing since the check
                await self._fail_read(r, batch, exc.message)
                return
            answer = await self._writers.send(self._message(r, batch), data)
            del data  # the writer has it; the budget still counts it until the answer
            answer = await answer()
        if answer[0] != "ok":
            raise self._writer_error(answer)
        _, files, written, damaged, pieces = answer
        with self._lock:
            self.stats.files += files
            self.stats.bytes += written
        for rel, why in damaged:
            self._damage(rel, why)
        await self._pieces_done(pieces)

    def _message(self, r: Read, batch: Batch) -> tuple:
        """What a writer needs to write the blobs of read `r` (see `writer`)."""
        parts = []
        for offset, length, bid in r.parts:
            loc, targets = batch.blobs[bid]
            parts.append((offset - r.start, length, bid, loc.raw_length, loc.type, targets))
        return r.pack, parts

    async def _fail_read(self, r: Read, batch: Batch, why: str) -> None:
        pieces = []
        for _, _, bid in r.parts:
            for target in batch.blobs[bid][1]:
                if target[0] == wire.WHOLE:
                    self._damage(target[1], why)
                else:
                    pieces.append((target[1], 0, why))
        await self._pieces_done(pieces)

    async def _pieces_done(self, pieces: list[tuple[int, int, str | None]]) -> None:
        """Count written (or failed) pieces of files of several; finish those now complete."""
        for key, written, why in pieces:
            job = self._unfinished[key]
            job.left -= 1
            job.written += written
            if why is not None and job.error is None:
                job.error = why
            if job.left == 0:
                await trio.to_thread.run_sync(self._finish, job, limiter=self._work_limiter)

    @staticmethod
    def _writer_error(answer: tuple) -> BaseException:
        kind = answer[1]
        if kind == "target":
            return TargetWriteError(answer[2], answer[3], hint=RERUN_HINT)
        if kind == "user":
            return UserError(answer[2], hint=answer[3])
        if kind == "os":
            return OSError(*answer[2:])
        return RuntimeError(f"a restore writer process failed:\n{answer[2]}")

    # ---- files made here (the walk and worker threads) -----------------------------------------

    def _write_empty(self, rel: bytes, e: tree.Entry) -> None:
        with self.out.writing(rel), self._parent(rel) as parent:
            wire.write_whole(self.out, parent, rel, e.size, e.mode, e.uid, e.gid, e.mtime, b"",
                             self.overwrite, self.is_root)
        with self._lock:
            self.stats.files += 1

    def _make_tmp(self, job: FileJob) -> None:
        """The temporary file of a file of several pieces, which writers write into."""
        with self.out.writing(job.rel), self._parent(job.rel) as parent:
            fd, job.tmp = self.out.new_tmp(parent, job.rel, look=self.overwrite)
            os.close(fd)
        job.key = next(self._keys)
        with self._lock:
            self._unfinished[job.key] = job

    @contextlib.contextmanager
    def _parent(self, rel: bytes):
        head = rel.rpartition(b"/")[0]
        parent = self.dirs.get(head)
        try:
            yield parent
        finally:
            self.dirs.put(head)

    def _finish(self, job: FileJob) -> None:
        """All pieces are in (or failed): set and rename the file, or remove what was written."""
        e = job.entry
        with self.out.writing(job.rel), self._parent(job.rel) as parent:
            try:
                if job.error is None and job.written != e.size:
                    job.error = f"restored {job.written} bytes, the snapshot says {e.size}"
                if job.error is None:
                    fd = self.out.reopen_tmp(parent, job.tmp)
                    try:
                        self._set_meta_fd(fd, e)
                    finally:
                        os.close(fd)
                    self.out.commit(parent, job.tmp, job.rel)
                else:
                    self.out.discard(parent, job.tmp)
            except BaseException:
                self.out.discard(parent, job.tmp)
                raise
            finally:
                with self._lock:
                    self._unfinished.pop(job.key, None)
        if job.error is not None:
            self._damage(job.rel, job.error)
            return
        with self._lock:
            self.stats.files += 1
            self.stats.bytes += job.written

    def _damage(self, rel: bytes, why: str) -> None:
        """Damage is per file: say which, restore the rest, fail at the end."""
        line = f"{os.fsdecode(rel)}: {why}"
        log.error("cannot restore %s", line)
        with self._lock:
            self.damaged += 1
            if self.first_damaged is None or line < self.first_damaged:
                self.first_damaged = line

    def _discard_unfinished(self) -> None:
        """After a restore stopped by an error: no temporary file stays behind."""
        for job in self._unfinished.values():
            with contextlib.suppress(OSError, UserError), self.out.directory(job.rel.rpartition(b"/")[0]) as parent:
                self.out.discard(parent, job.tmp)
        self._unfinished.clear()

    # ---- metadata ------------------------------------------------------------------------

    def _apply_dirs(self, dirs: list[tuple[bytes, tree.Entry | None]]) -> None:
        """Owner, mode and mtime of directories nothing more is written in, deepest first."""
        for rel, e in dirs:
            if e is not None:
                with self.out.writing(rel), self.out.directory(rel) as fd:
                    self._set_meta_fd(fd, e)

    def _set_meta_fd(self, fd: int, e: tree.Entry) -> None:
        wire.set_meta_fd(fd, e.uid, e.gid, e.mode, e.mtime, self.is_root)

    def _set_meta_at(self, parent: int, name: bytes, e: tree.Entry) -> None:
        """The same for a name just made in `parent`, never following a symlink."""
        if self.is_root:
            os.chown(name, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)
        if e.type != tree.SYMLINK:
            os.chmod(name, e.mode, dir_fd=parent, follow_symlinks=False)
        os.utime(name, ns=(e.mtime, e.mtime), dir_fd=parent, follow_symlinks=False)
