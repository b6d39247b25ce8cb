"""The end of every backup: upload packs, checkpoint the index, commit the snapshot.

Write order (docs/format.md, "Write order"): for each pack a pending
checkpoint index naming it, then the pack; the run's index (not pending) as
the stored packs' records add up to FLUSH_BLOBS, each part superseding the
checkpoints of its packs, which are then deleted; at the end the rest of the
run's index (several objects if it is large: Vault.save_index), then the
snapshot record (the commit point), then the remaining checkpoints are deleted.
The checkpoint goes first so that no stored pack is ever unnamed: a crash at
any point leaves packs that the next run reuses (a checkpoint whose pack never
arrived is ignored by readers and removed by prune).

Memory: the records of a stored pack are kept as a numpy table (37 bytes a blob,
no object per blob), written out and dropped every FLUSH_BLOBS blobs, and the
deduper forgets a claimed blob once its pack is in the index: a run holds the
records of the packs in flight and of at most FLUSH_BLOBS stored blobs, not
objects for every new blob until its end (issue 10: a first backup of millions
of small files). Long-lived small objects cost more than their size: they keep
the allocator's arenas from being given back.
"""

from __future__ import annotations

import functools
import logging

import trio

from coldvault.faults import crash_point
from coldvault.index.pack import FinishedPack
from coldvault.index.packindex import IndexTable, PackRecord
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader.packer import Packer
from coldvault.vault.blobindex import Deduper
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

FLUSH_BLOBS = 100_000  # blob records of stored packs written as a part of the run's index at once


class PackPipeline:
    """Owns the packers and the upload tasks of one backup run."""

    def __init__(self, vault: Vault, uploads: int = 3):
        self.vault = vault
        s = vault.settings
        self.data_packer = Packer("data", vault.sealer, s.data_pack_size)
        self.tree_packer = Packer("tree", vault.sealer, s.tree_pack_size)
        self.deduper = Deduper(vault.index)
        self.uploads = uploads
        self.packs_uploaded = 0
        self.bytes_uploaded = 0
        # Stored packs whose records are not written yet (as a part of the run's index), and their checkpoints:
        self._stored: list[tuple[IndexTable, list[str]]] = []
        self._stored_blobs = 0
        self._ours: set[str] = set()  # ids of every pack this run stored (one string per pack)
        self._send, self._recv = trio.open_memory_channel(1)
        self._index_lock = trio.Lock()

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        """Upload tasks; returns when `close` was called and every pack is stored."""
        async with trio.open_nursery() as nursery:
            async with self._recv:
                for _ in range(self.uploads):
                    nursery.start_soon(self._upload_worker, self._recv.clone())
            task_status.started()

    async def _upload_worker(self, recv):
        async with recv:
            async for pack in recv:
                crash_point("pack-upload")
                rec = PackRecord(pack.id, pack.kind, len(pack.data), pack.blobs)  # without the bytes
                async with self._index_lock:
                    iids = await trio.to_thread.run_sync(functools.partial(self.vault.save_index, [rec], pending=True))
                # Its blobs are in the index now (a pending record of this run's): no longer claims.
                self.deduper.release([b.id for b in rec.blobs])
                crash_point("checkpoint-stored")
                await trio.to_thread.run_sync(self.vault.put_pack, pack)
                del pack
                crash_point("pack-stored")
                self.packs_uploaded += 1
                self.bytes_uploaded += rec.size
                self._ours.add(rec.id)
                table = IndexTable.from_records([rec])
                del rec
                self._stored.append((table, iids))
                self._stored_blobs += len(table.blobs)
                if self._stored_blobs >= min(FLUSH_BLOBS, self.vault.max_index_entries):
                    await self._flush()

    async def _flush(self) -> None:
        """Write the records of the stored packs as a part of the run's index (not pending),
        superseding their checkpoints, then delete those checkpoints and drop the records."""
        done, self._stored, self._stored_blobs = self._stored, [], 0
        if not done:
            return
        table = IndexTable.concat([t for t, _ in done])
        sup = [i for _, iids in done for i in iids]
        del done
        async with self._index_lock:
            await trio.to_thread.run_sync(lambda: self.vault.save_index_table(table, supersedes=sup))
        crash_point("index-part-stored")
        for iid in sup:
            await trio.to_thread.run_sync(self.vault.delete_index, iid)

    async def submit(self, pack: FinishedPack) -> None:
        await self._send.send(pack)

    def submitter(self):
        """A blocking `submit` for any thread (worker or not) of this trio run."""
        token = trio.lowlevel.current_trio_token()

        def submit(pack: FinishedPack) -> None:
            trio.from_thread.run(self._send.send, pack, trio_token=token)

        return submit

    async def close(self) -> None:
        """Flush partial packs and let the upload tasks finish."""
        for packer in (self.data_packer, self.tree_packer):
            pack = packer.flush()
            if pack is not None:
                await self.submit(pack)
        await self._send.aclose()

    async def commit(self, rec: SnapshotRecord) -> str:
        """After `run` returned: the run's index, the snapshot record, then drop checkpoints.

        The index also repeats the packs that earlier (interrupted) or concurrent runs
        stored under pending checkpoints and this run found (`BlobIndex.adopted`), so
        readers stop checking that those exist, and supersedes those checkpoints."""
        index = self.vault.index
        others = [r for r in index.adopted if r.id not in self._ours]
        tables = [t for t, _ in self._stored] + ([IndexTable.from_records(others)] if others else [])
        # The checkpoints this index repeats whole: ours not written yet, and those whose packs it adopted.
        checkpoints = [i for _, iids in self._stored for i in iids]
        supersedes = checkpoints + sorted(index.adoptable - set(checkpoints))
        if tables:
            table = IndexTable.concat(tables)
            await trio.to_thread.run_sync(lambda: self.vault.save_index_table(table, supersedes=supersedes))
        crash_point("index-stored")
        sid = await trio.to_thread.run_sync(self.vault.save_snapshot, rec)
        crash_point("snapshot-stored")
        for iid in checkpoints:
            await trio.to_thread.run_sync(self.vault.delete_index, iid)
        return sid
