"""A live mount: snapshots made or forgotten while it runs appear and disappear.

Every `every` seconds the refresher lists snapshots/ and index/ (two LISTs; when
nothing changed, that is all), then:

1. the index follows the vault: index objects it has not read are loaded into it
   (`Vault.load_index` reads only those); when an index object it holds is gone (a
   prune or a `repair index` rewrote the index), a new index is loaded whole beside
   the one in use and swapped in; checkpoints that a finished backup removed are only
   dropped from the list (the backup's own index repeats their packs);
2. the records of new snapshots are read (a GET each);
3. a new layout is made from the records and swapped in (`VirtualFS.apply_layout`),
   which says what the kernel must forget;
4. the kernel is told (`notify`: fuse_ops.invalidate), so `ls` shows the change at once.

snapshots/ is listed before index/: a backup writes its index before its snapshot
record, so the index of every snapshot seen is among those loaded. Every store call
and the building of the layout run in worker threads (on the mount's metadata limiter);
only the swap runs in the event loop, without awaiting, so requests see the old tree
or the new one. A refresh that fails (the store unreachable, say) is logged; the
mount keeps serving what it has and the next period tries again.

A read that fails on damage (its pack missing, its blob in no index) asks
`changed_since` whether the index changed since the read began: the index is synced
at once (one sync at a time, shared), and the read is tried once more if it did.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from coldvault.errors import ColdvaultError, DamagedError, UnsupportedFormatError
from coldvault.index.ids import is_hex_id
from coldvault.index.snapshot import SnapshotRecord
from coldvault.mount import layout
from coldvault.mount.vfs import VirtualFS
from coldvault.store.base import NotFoundError
from coldvault.vault.vault import INDEX_PREFIX, Vault

log = logging.getLogger(__name__)

DEFAULT_EVERY = 30.0  # seconds: a change shows within a minute, for two LISTs per period


class Refresher:
    """Keeps `fs` in step with its vault; `notify(entries, inodes)` tells the kernel."""

    def __init__(self, fs: VirtualFS, every: float,
                 notify: Callable[[list[tuple[int, bytes]], list[int]], Awaitable[None]]):
        self.fs = fs
        self.vault = fs.vault
        self.every = every
        self.notify = notify
        self.generation = 0  # of the index: one more each time it changed
        self._syncing: trio.Event | None = None
        self._records: dict[str, SnapshotRecord] = {r.id: r for r in fs.records}
        self._skipped: set[str] = set(self.vault.damaged_snapshots)  # damaged: warned about once
        self._failures = 0
        fs.index_sync = self
        fs.chunks.index_sync = self

    async def run(self) -> None:
        """Refresh every period, until cancelled."""
        while True:
            await trio.sleep(self.every)
            await self.refresh()

    async def refresh(self) -> None:
        """One refresh; a failure is logged, and what the mount shows stays as it was."""
        try:
            await self._refresh()
        except ColdvaultError as exc:
            self._failed(exc.message)
        except OSError as exc:
            self._failed(str(exc))
        except Exception:
            log.exception("refreshing the mount's view of the vault failed; trying again in %g s", self.every)
        else:
            if self._failures:
                log.info("refreshing the mount's view of the vault works again")
            self._failures = 0

    def _failed(self, why: str) -> None:
        self._failures += 1
        again = f" ({self._failures} times in a row)" if self._failures > 1 else ""
        log.warning("could not refresh the mount's view of the vault%s: %s; serving what it shows, "
                    "trying again in %g s", again, why, self.every)

    async def _thread(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self.fs.meta_limiter)

    async def _refresh(self) -> None:
        ids = set(await self._thread(self.vault.snapshot_ids))
        await self.sync_index()  # after listing snapshots/: see the module's docstring
        new = sorted(i for i in ids if i not in self._records and i not in self._skipped)
        gone = [i for i in self._records if i not in ids]
        self._skipped &= ids
        if not new and not gone:
            return
        loaded = await self._thread(self._load_records, new)
        records = {i: r for i, r in self._records.items() if i in ids}
        records.update((r.id, r) for r in loaded)
        ordered = sorted(records.values(), key=lambda r: r.order)
        new_layout = await self._thread(layout.Layout, ordered)
        self._records = records
        entries, inodes = self.fs.apply_layout(ordered, new_layout)
        log.info("the vault changed: %d new snapshot(s), %d gone; %d entries to refresh in the kernel",
                 len(loaded), len(gone), len(entries))
        await self.notify(entries, inodes)

    def _load_records(self, ids: list[str]) -> list[SnapshotRecord]:
        out = []
        for sid in ids:
            try:
                out.append(self.vault.load_snapshot(sid))
            except NotFoundError:
                continue  # forgotten since the listing
            except (DamagedError, UnsupportedFormatError) as exc:
                log.warning("%s; the mount leaves it out", exc.message)
                self._skipped.add(sid)
        return out

    # ---- the index ---------------------------------------------------------------------------

    async def sync_index(self) -> None:
        """Bring the index in step with index/ (one sync at a time: a second caller waits
        for the one under way)."""
        if self._syncing is not None:
            await self._syncing.wait()
            return
        done = self._syncing = trio.Event()
        try:
            if await self._thread(self._sync_index):
                self.generation += 1
        finally:
            self._syncing = None
            done.set()

    async def changed_since(self, generation: int) -> bool:
        """Whether the index changed since `generation` (synced now if it had not)."""
        if self.generation == generation:
            try:
                await self.sync_index()
            except ColdvaultError as exc:
                log.warning("could not look for a new index: %s", exc.message)
        return self.generation != generation

    def _sync_index(self) -> bool:
        """In a worker thread: load what index/ holds that the index does not; load the
        index whole again if an index object it holds went. Whether it changed."""
        vault = self.vault
        index = vault.index
        listed = {o.name[len(INDEX_PREFIX):] for o in vault.store.list(INDEX_PREFIX)}
        listed = {i for i in listed if is_hex_id(i)}
        known = index.index_ids | vault.damaged_indexes.keys()
        gone = known - listed
        if gone - index.pending_ids:
            fresh = Vault(vault.store, vault.config, vault.keys)
            fresh.load_index()
            # Swapped whole: a read on another thread meanwhile uses the old index or the new one.
            vault.index = fresh.index
            vault.damaged_indexes = fresh.damaged_indexes
            vault.old_format_indexes = fresh.old_format_indexes
            log.info("%d index object(s) went (a prune?): loaded the index again, %d object(s)",
                     len(gone), len(fresh.index.index_ids))
            return True
        for iid in gone:  # checkpoints of a backup that finished: its own index repeats their packs
            index.index_ids.discard(iid)
            index.pending_ids.discard(iid)
        if listed - known:
            vault.load_index()
            return True
        return False
