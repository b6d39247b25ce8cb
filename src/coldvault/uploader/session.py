"""One backup run's machinery, shared by every source kind.

A session owns the pack pipeline (upload tasks, checkpoints), the chunker
(encoder threads) and the tree writer. `run(body)` starts them in a nursery,
runs the source's `body`, drains and flushes everything, and leaves the
snapshot record to `commit`. Tree nodes and other metadata blobs are saved
with `save_tree` / `save_meta_blob` from the event loop, or with
`store_tree` / `store_meta_blob` from a worker thread of the run.
"""

from __future__ import annotations

import time

import trio

from coldvault.index import blob as blobfmt
from coldvault.index import tree
from coldvault.index.ids import BlobId, blob_id
from coldvault.index.pack import FinishedPack
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader.chunker import Chunker
from coldvault.uploader.pipeline import PackPipeline
from coldvault.vault.vault import Vault


class BackupSession:
    def __init__(self, vault: Vault, encoders: int | None = None):
        self.vault = vault
        self.encoders = encoders
        self.started = time.monotonic()
        self.pipeline: PackPipeline | None = None
        self.chunker: Chunker | None = None
        self._submit_from_thread = None

    async def run(self, body):
        """Run `await body()` with the pipeline up; returns its result once every pack is stored."""
        self.pipeline = PackPipeline(self.vault)
        self._submit_from_thread = self.pipeline.submitter()
        self.chunker = Chunker(
            self.vault.settings, self.vault.sealer, self.pipeline.deduper, self.pipeline.data_packer,
            self._submit_from_thread, self.encoders,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pipeline.run)
            try:
                result = await body()
                await trio.to_thread.run_sync(self.chunker.drain)
            finally:
                self.chunker.close()
                with trio.CancelScope(shield=True):
                    await self.pipeline.close()
        return result

    async def save_tree(self, entries: list[tree.Entry]) -> BlobId:
        """Encode a tree node and store it if the vault does not have it."""
        data = tree.encode(tree.TreeNode(entries))
        return await self.save_meta_blob(data, blobfmt.TREE)

    async def save_meta_blob(self, data: bytes, btype: int) -> BlobId:
        bid, pack = self._add_meta_blob(data, btype)
        if pack is not None:
            await self.pipeline.submit(pack)
        return bid

    def store_tree(self, entries: list[tree.Entry]) -> BlobId:
        """`save_tree` for a worker thread of this run (not the event loop's thread)."""
        return self.store_meta_blob(tree.encode(tree.TreeNode(entries)), blobfmt.TREE)

    def store_meta_blob(self, data: bytes, btype: int) -> BlobId:
        """`save_meta_blob` for a worker thread of this run: blocks while a full pack is handed over."""
        bid, pack = self._add_meta_blob(data, btype)
        if pack is not None:
            self._submit_from_thread(pack)
        return bid

    def _add_meta_blob(self, data: bytes, btype: int) -> tuple[BlobId, FinishedPack | None]:
        """Store the blob in the tree packer unless the vault has it; returns its id and a pack it filled."""
        bid = blob_id(data, self.vault.sealer.id_key)
        if not self.pipeline.deduper.claim(bid):
            return bid, None
        enc = blobfmt.encode(data, bid, self.vault.sealer, self.vault.settings.compression_level)
        return bid, self.pipeline.tree_packer.add(bid, btype, enc, len(data))

    def summary(self) -> dict:
        c = self.chunker.stats
        return {
            "bytes_read": c.bytes_read,
            "bytes_new": c.bytes_new,
            "bytes_stored": c.bytes_stored,
            "chunks_new": c.chunks_new,
            "packs": self.pipeline.packs_uploaded,
            "bytes_uploaded": self.pipeline.bytes_uploaded,
            "duration": round(time.monotonic() - self.started, 3),
        }

    async def commit(self, rec: SnapshotRecord) -> str:
        return await self.pipeline.commit(rec)
