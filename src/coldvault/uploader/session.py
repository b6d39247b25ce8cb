"""One backup run's machinery, shared by every source kind.

A session owns the pack pipeline (upload tasks, checkpoints), the chunker
(encoder threads) and the tree writer. `run(body)` starts them in a nursery,
runs the source's `body`, drains and flushes everything, and leaves the
snapshot record to `commit`.
"""

from __future__ import annotations

import time

import trio

from coldvault.index import blob as blobfmt
from coldvault.index import tree
from coldvault.index.ids import BlobId, blob_id
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader.chunker import Chunker
from coldvault.uploader.pipeline import PackPipeline
from coldvault.vault.vault import Vault


class BackupSession:
    def __init__(self, vault: Vault):
        self.vault = vault
        self.started = time.monotonic()
        self.pipeline: PackPipeline | None = None
        self.chunker: Chunker | None = None

    async def run(self, body):
        """Run `await body()` with the pipeline up; returns its result once every pack is stored."""
        self.pipeline = PackPipeline(self.vault)
        self.chunker = Chunker(
            self.vault.settings, self.vault.sealer, self.pipeline.deduper, self.pipeline.data_packer,
            self.pipeline.submitter(),
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
        bid = blob_id(data, self.vault.sealer.id_key)
        if self.pipeline.deduper.claim(bid):
            enc = blobfmt.encode(data, bid, self.vault.sealer, self.vault.settings.compression_level)
            pack = self.pipeline.tree_packer.add(bid, btype, enc, len(data))
            if pack is not None:
                await self.pipeline.submit(pack)
        return bid

    def summary(self) -> dict:
        c = self.chunker.stats
        return {
            "bytes_read": c.bytes_read,
            "bytes_new": c.bytes_new,
            "bytes_stored": c.bytes_stored,
            "chunks_new": c.chunks_new,
            "packs": len(self.pipeline.uploaded),
            "bytes_uploaded": self.pipeline.bytes_uploaded,
            "duration": round(time.monotonic() - self.started, 3),
        }

    async def commit(self, rec: SnapshotRecord) -> str:
        return await self.pipeline.commit(rec)
