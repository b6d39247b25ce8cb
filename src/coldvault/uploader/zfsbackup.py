"""Back up one ZFS snapshot as a send stream: full, or incremental from a base in the vault.

The stream is read from `zfs send`'s stdout through the same chunk and pack
pipeline as files, never written whole anywhere. The snapshot record keeps
dataset, snapshot, GUID, createtxg, base name and GUID, send flags, length,
the XXH3-128 of the whole stream and the id of its chunk list. A `zfs send`
that fails leaves no record (the packs it stored are reused by the next run).

Run after run (cron), these keep a dataset's backups going for years:
- `full_every` N: a chain never grows past N streams; the stream that would be the
  (N+1)th of its chain is sent full instead, so old chains can be forgotten whole.
- holds: the snapshot the next increment will start from gets a `zfs hold` with the
  tag `coldvault`, and every other snapshot of the dataset loses that tag, so the
  base cannot be destroyed by accident (a sanoid prune, a `zfs destroy` by hand).
- `intermediate`: the snapshots between the base and the new one (made by sanoid, say)
  are stored too, one increment each, as `zfs send -I` would carry them.
- `keep_local` N: coldvault's own older snapshots of the dataset (named
  `<prefix>-<UTC time>`) are destroyed, all but the newest N and never the next base;
  snapshots coldvault did not make are never touched.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket

import trio
import xxhash

from coldvault import __version__
from coldvault.errors import UserError
from coldvault.index import blob as blobfmt
from coldvault.index import chunklist
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader.session import BackupSession
from coldvault.vault.vault import Vault
from coldvault.zfs import commands
from coldvault.zfs.chain import Stream, reachable, shortest_chain, source_name, streams_by_dataset
from coldvault.zfs.commands import LocalSnapshot, ZfsError

log = logging.getLogger(__name__)

HOLD_TAG = "coldvault"


class HashingReader:
    """A file object that hashes and counts what passes through it."""

    def __init__(self, f):
        self.f = f
        self.hash = xxhash.xxh3_128()
        self.length = 0

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        if n:
            self.hash.update(memoryview(b)[:n])
            self.length += n
        return n


def new_name(prefix: str, taken: set[str]) -> str:
    """`<prefix>-<UTC time>`, or `.2`, `.3`... after it for two runs within one second."""
    stem = name = f"{prefix}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    n = 2
    while name in taken:
        name = f"{stem}.{n}"
        n += 1
    return name


class ZfsBackup:
    def __init__(self, vault: Vault, dataset: str, snap: str | None, *, base: str | None = None,
                 full: bool = False, flags: list[str] = (), prefix: str = "coldvault",
                 full_every: int | None = None, hold: bool = True, keep_local: int | None = None,
                 intermediate: bool = False, tags=(), host: str | None = None):
        """`tags` and `host` (default: this machine's name) go into every record this run stores."""
        if base is not None and full:
            raise UserError("--base and --full exclude each other")
        if full_every is not None and full_every < 1:
            raise UserError(f"--full-every must be 1 or more, not {full_every}")
        if keep_local is not None and keep_local < 1:
            raise UserError(f"--keep-local must be 1 or more, not {keep_local}",
                            hint="the newest snapshot is the next increment's base")
        self.vault = vault
        self.dataset = commands.check_dataset(dataset)
        self.snap = commands.check_snapname(snap) if snap else None
        self.base = commands.check_snapname(base.lstrip("@")) if base else None
        self.full = full
        self.flags = list(flags)
        self.prefix = commands.check_snapname(prefix)
        self.full_every = full_every
        self.intermediate = intermediate
        self.tags = sorted(set(tags))
        self.host = host
        self.start: LocalSnapshot | None = None  # the base before --full-every: where --intermediate starts
        self.local: dict[str, LocalSnapshot] = {}
        self.stored: list[SnapshotRecord] = []  # the streams this run stored, oldest first
        self.hold = hold
        self.keep_local = keep_local
        self.full_because: str | None = None  # why an automatic run sent a full stream
        self.held: str | None = None  # after the run: the snapshot holding our tag
        self.released: list[str] = []
        self.destroyed: list[str] = []
        self.session = BackupSession(vault)
        self.target: LocalSnapshot | None = None
        self.base_snap: LocalSnapshot | None = None
        self.resumed = False
        self.records: list[SnapshotRecord] = []

    # ---- choosing what to send ------------------------------------------------------

    def plan(self) -> Stream | None:
        """Pick the target snapshot and the base; returns an existing stream if there is nothing to do."""
        if not commands.exists(self.dataset):
            raise UserError(f"there is no ZFS dataset {self.dataset}")
        self.records = self.vault.snapshots()
        streams = streams_by_dataset(self.records).get(self.dataset, [])
        local = self.local = {s.name: s for s in commands.snapshots(self.dataset)}
        self.target = self._target(local, streams)
        base = self._choose_base(local, streams)
        self.base_snap = base
        for s in streams:
            if s.guid != self.target.guid:
                continue
            automatic = self.base is None and not self.full
            if automatic or s.base_guid == (base.guid if base else None):
                return s  # this snapshot (from this base, if one was asked for) is stored already
        return None

    def _target(self, local: dict[str, LocalSnapshot], streams: list[Stream]) -> LocalSnapshot:
        if self.snap is not None:
            if self.snap not in local:
                raise UserError(f"there is no snapshot {self.dataset}@{self.snap}")
            return local[self.snap]
        stored = {s.guid for s in streams}
        newest_stored = max((s.createtxg for s in streams), default=-1)
        pending = [s for s in local.values()
                   if self.own_snapshot(s.name) and s.guid not in stored and s.createtxg > newest_stored]
        if pending:
            snap = max(pending, key=lambda s: s.createtxg)
            log.warning("resuming the upload of %s, which an earlier run did not finish", snap.full_name)
            self.resumed = True
            return snap
        return commands.create_snapshot(self.dataset, new_name(self.prefix, set(local)))

    def _choose_base(self, local: dict[str, LocalSnapshot], streams: list[Stream]) -> LocalSnapshot | None:
        if self.full:
            return None
        ok = reachable(streams)
        if self.base is not None:
            b = local.get(self.base)
            if b is None:
                raise UserError(f"base snapshot {self.dataset}@{self.base} does not exist here")
            in_vault = [s for s in streams if s.snapshot == self.base]
            if not any(s.guid == b.guid for s in in_vault):
                if in_vault:
                    raise UserError(
                        f"base @{self.base} in the vault (GUID {in_vault[0].guid}) is not the local "
                        f"{self.dataset}@{self.base} (GUID {b.guid}): it was destroyed and created again",
                        hint="an increment from it could not be received; use --full or another --base",
                    )
                raise UserError(f"base @{self.base} of {self.dataset} is not in the vault", hint="use --full")
            if b.guid not in ok:
                raise UserError(f"base @{self.base} is in the vault but its own chain is incomplete", hint="use --full")
            if b.createtxg >= self.target.createtxg:
                raise UserError(f"base @{self.base} is not older than @{self.target.name}")
            self.start = b
            return b
        candidates = []
        for s in streams:
            mine = local.get(s.snapshot)
            if mine is None:
                continue
            if mine.guid != s.guid:
                log.warning("@%s in the vault is not the local @%s (GUID differs: destroyed and created again); "
                            "not using it as a base", s.snapshot, s.snapshot)
                continue
            if s.guid in ok and s.createtxg < self.target.createtxg:
                candidates.append(mine)
        base = self.start = max(candidates, key=lambda s: s.createtxg, default=None)
        if base is not None and self.full_every is not None:
            chain = shortest_chain(streams, base.guid) or []
            if len(chain) >= self.full_every:
                self.full_because = f"the chain to @{base.name} holds {len(chain)} stream(s) (--full-every {self.full_every})"
                log.info("a full stream: %s", self.full_because)
                return None
        return base

    # ---- sending ------------------------------------------------------------------------

    def _send(self):
        """In a worker thread: run zfs send through the chunker; returns (chunk ids, reader)."""
        t, b = self.target, self.base_snap
        proc = commands.send(self.dataset, t.name, b.name if b else None, self.flags)
        reader = HashingReader(proc.stdout)
        try:
            ids, _ = self.session.chunker.chunk_stream(reader)
        finally:
            proc.stdout.close()
            err = proc.stderr.read().decode(errors="replace").strip()
            code = proc.wait()
        if code != 0:
            said = err.splitlines()[0] if err else f"exit status {code}"
            raise ZfsError(
                f"zfs send of {t.full_name} failed: {said}; nothing was recorded",
                hint="the data already stored is reused when the backup runs again",
            )
        return ids, reader

    # ---- after the run: holds and local snapshots --------------------------------------

    def own_snapshot(self, name: str) -> bool:
        """Whether a snapshot name is one coldvault made with this prefix: `<prefix>-<UTC time>`,
        `.2`, `.3`... for two runs within a second."""
        return re.fullmatch(re.escape(self.prefix) + r"-\d{8}T\d{6}Z(\.\d+)?", name) is not None

    def housekeeping(self, records: list[SnapshotRecord]) -> None:
        """Hold the next base, release the previous ones, destroy old snapshots of ours."""
        if not self.hold and self.keep_local is None:
            return
        streams = streams_by_dataset(records).get(self.dataset, [])
        local = commands.snapshots(self.dataset)
        ok = reachable(streams)
        stored = {s.guid for s in streams if s.guid in ok}
        # The snapshot the next automatic increment will start from: the newest one stored.
        base = max((s for s in local if s.guid in stored), key=lambda s: s.createtxg, default=None)
        if self.hold:
            if base is not None:
                commands.hold(base.full_name, HOLD_TAG)
                self.held = base.name
            refs = commands.userrefs([s.full_name for s in local if base is None or s.guid != base.guid])
            for s in local:
                if refs.get(s.full_name, 0) > 0 and commands.release(s.full_name, HOLD_TAG):
                    self.released.append(s.name)
        if self.keep_local is None:
            return
        mine = [s for s in local if self.own_snapshot(s.name)]  # never a snapshot coldvault did not make
        keep = {s.guid for s in mine[-self.keep_local:]} | ({base.guid} if base else set())
        old = [s for s in mine if s.guid not in keep]
        refs = commands.userrefs([s.full_name for s in old])
        for s in old:
            if refs.get(s.full_name, 0) > 0:
                log.warning("not destroying %s: it has a hold (%d; not coldvault's)", s.full_name, refs[s.full_name])
                continue
            commands.destroy_snapshot(s.full_name)
            self.destroyed.append(s.name)

    async def run(self) -> tuple[SnapshotRecord, bool]:
        """Returns (the snapshot record, whether it is new)."""
        rec, new = await self._store()
        records = self.records + ([rec] if new else [])
        await trio.to_thread.run_sync(self.housekeeping, records)
        return rec, new

    async def _store(self) -> tuple[SnapshotRecord, bool]:
        existing = await trio.to_thread.run_sync(self.plan)
        if existing is not None:
            return existing.rec, False
        if not self.intermediate:
            return await self._store_one(self.target, self.base_snap), True
        target, prev = self.target, self.start
        stored = {s.guid for s in streams_by_dataset(self.records).get(self.dataset, [])}
        steps = [s for s in self.local.values() if prev is not None
                 and prev.createtxg < s.createtxg < target.createtxg and s.guid not in stored]
        rec = None
        for t in sorted(steps, key=lambda s: s.createtxg) + [target]:
            b = prev
            if b is not None and self.full_every is not None:
                chain = shortest_chain(streams_by_dataset(self.records).get(self.dataset, []), b.guid) or []
                if len(chain) >= self.full_every:
                    self.full_because = f"the chain to @{b.name} holds {len(chain)} stream(s) (--full-every {self.full_every})"
                    b = None
            rec = await self._store_one(t, b)
            self.records.append(rec)
            prev = t
        self.records.pop()  # run() adds the last one
        return rec, True

    async def _store_one(self, t: LocalSnapshot, b: LocalSnapshot | None) -> SnapshotRecord:
        """Send `t` (from `b`, or full) and commit its record."""
        self.target, self.base_snap = t, b
        if self.stored:  # the first stream's session is the one made with the job (its clock runs since)
            self.session = BackupSession(self.vault)

        async def body():
            ids, reader = await trio.to_thread.run_sync(self._send)
            list_id = await self.session.save_meta_blob(chunklist.encode(ids), blobfmt.CHUNK_LIST)
            return list_id, reader

        list_id, reader = await self.session.run(body)
        rec = SnapshotRecord(
            kind="zfs",
            source=source_name(self.dataset),
            time=t.creation * 1_000_000_000,
            hostname=self.host or socket.gethostname(),
            paths=[t.full_name],
            tags=list(self.tags),
            summary={"bytes_total": reader.length, **self.session.summary()},
            zfs={
                "dataset": self.dataset,
                "snapshot": t.name,
                "guid": t.guid,
                "createtxg": t.createtxg,
                "creation": t.creation,
                "base": {"snapshot": b.name, "guid": b.guid, "createtxg": b.createtxg} if b else None,
                "flags": self.flags,
                "length": reader.length,
                "xxh3": reader.hash.digest(),
                "chunks": list_id,
            },
            program=f"coldvault {__version__}",
        )
        await self.session.commit(rec)
        self.stored.append(rec)
        return rec


class RecursiveZfsBackup:
    """`backup zfs --recursive`: one `zfs snapshot -r` of a dataset and all below it, then one
    stream per dataset, each in its own chain (a `ZfsBackup` with the same options). A new
    child dataset gets a full stream; a destroyed one is simply no longer there. A run
    killed half way is resumed by the next one: the newest recursive snapshot of ours that
    some dataset has not stored yet is taken again, not a new one."""

    def __init__(self, vault: Vault, root: str, snap: str | None, **options):
        self.vault = vault
        self.root = commands.check_dataset(root)
        self.snap = commands.check_snapname(snap) if snap else None
        self.options = options
        self.prefix = commands.check_snapname(options.get("prefix", "coldvault"))
        self.jobs: list[ZfsBackup] = []
        self.results: list[tuple[ZfsBackup, SnapshotRecord, bool]] = []
        self.resumed = False
        ZfsBackup(vault, root, None, **options)  # the options are checked before anything is done

    @property
    def session(self):
        """The session of the dataset being stored (progress display)."""
        return self.jobs[-1].session if self.jobs else None

    def choose(self) -> tuple[str, list[str]]:
        """The recursive snapshot to store and the datasets that have it."""
        if not commands.exists(self.root):
            raise UserError(f"there is no ZFS dataset {self.root}")
        tree = commands.datasets(self.root)
        if self.snap is not None:
            if not commands.exists(f"{self.root}@{self.snap}"):
                raise UserError(f"there is no snapshot {self.root}@{self.snap}")
            name = self.snap
        else:
            name = self._pending(tree) or self._take()
        have = [d for d in tree if commands.exists(f"{d}@{name}")]
        return name, have

    def _pending(self, tree: list[str]) -> str | None:
        probe = ZfsBackup(self.vault, self.root, None, **self.options)
        mine = [s for s in commands.snapshots(self.root) if probe.own_snapshot(s.name)]
        if not mine:
            return None
        newest = mine[-1].name
        by_dataset = streams_by_dataset(self.vault.snapshots())
        for d in tree:
            if commands.exists(f"{d}@{newest}"):
                guid = commands.snapshot_info(d, newest).guid
                if guid not in {s.guid for s in by_dataset.get(d, [])}:
                    log.warning("resuming the upload of %s@%s (recursive), which an earlier run did not finish",
                                self.root, newest)
                    self.resumed = True
                    return newest
        return None

    def _take(self) -> str:
        name = new_name(self.prefix, commands.snapshot_names_below(self.root))
        commands.create_recursive_snapshot(self.root, name)
        return name

    async def run(self) -> list[tuple[ZfsBackup, SnapshotRecord, bool]]:
        name, have = await trio.to_thread.run_sync(self.choose)
        for d in have:
            job = ZfsBackup(self.vault, d, name, **self.options)
            self.jobs.append(job)
            rec, new = await job.run()
            self.results.append((job, rec, new))
        return self.results
