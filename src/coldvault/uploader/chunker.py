"""Content-defined chunking of one byte source, with encoding spread over threads.

The thread that reads a file cuts it (FastCDC) and hashes each chunk; chunks
the vault does not have yet go to a small pool of encoder threads that
compress, encrypt and add them to the packer. A bounded number of jobs is in
flight, so memory stays bounded however large the file. zstd, XXH3 on large
buffers and FastCDC release the GIL, so both cores work even on one large file.

Small files (`chunk_small`) are not handed over one by one: their new chunks
are collected and go to an encoder as one job of about BATCH_BYTES, and the
encoder compresses the whole job in one zstd call. Per chunk, a hand-over
costs a lock, a semaphore and a thread wake-up, and every zstd call gives the
GIL away and waits to get it back from the thread that reads the files; with
tens of thousands of small files that cost more than the encoding itself.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import zstandard
from pyfastcdc import FastCDC

from coldvault.index import blob as blobfmt
from coldvault.index.config import Settings
from coldvault.index.ids import BlobId, blob_id

BATCH_BYTES = 1024 * 1024  # new small-file chunks handed to an encoder as one job


def _batch_compression_available(level: int) -> bool:
    """python-zstandard's C backend (with its bundled zstd) compresses many buffers in one call."""
    try:
        zstandard.ZstdCompressor(level=level).multi_compress_to_buffer([b"coldvault " * 20])
    except (AttributeError, NotImplementedError, zstandard.ZstdError):
        return False
    return True


class ChunkStats:
    __slots__ = ("bytes_read", "bytes_new", "bytes_stored", "chunks_new", "chunks")

    def __init__(self):
        self.bytes_read = self.bytes_new = self.bytes_stored = self.chunks_new = self.chunks = 0


class Chunker:
    """Cuts bytes into chunks and stores the new ones through `packer`; thread-safe.

    `submit(pack)` is called (from an encoder thread) with each pack the packer
    fills. Call `drain()` before flushing the packer: it hands over the chunks
    `chunk_small` still holds, waits for every chunk in flight and re-raises the
    first error an encoder hit.
    """

    def __init__(self, settings: Settings, sealer, deduper, packer, submit, encoders: int | None = None):
        self.settings = settings
        self.sealer = sealer
        self.id_key = sealer.id_key
        self.deduper = deduper
        self.packer = packer
        self.submit = submit
        self.level = settings.compression_level
        self._tls = threading.local()
        self.stats = ChunkStats()
        self._lock = threading.Lock()
        n = encoders or os.cpu_count() or 2
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="encoder")
        self._slots = threading.Semaphore(2 * n)
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._error: BaseException | None = None
        self._batch: list[tuple[BlobId, bytes]] = []  # new chunks of chunk_small, not yet handed over
        self._batch_bytes = 0
        self._batch_zstd = self.level is not None and _batch_compression_available(self.level)

    def _cdc(self) -> FastCDC:
        cdc = getattr(self._tls, "cdc", None)
        if cdc is None:
            s = self.settings
            cdc = self._tls.cdc = FastCDC(
                s.chunker_avg, min_size=s.chunker_min, max_size=s.chunker_max, seed=s.chunker_seed
            )
        return cdc

    def _store(self, data, copy: bool) -> BlobId:
        bid = blob_id(data, self.id_key)
        new = self.deduper.claim(bid)
        with self._lock:
            st = self.stats
            st.chunks += 1
            st.bytes_read += len(data)
            if new:
                if self._error is not None:
                    raise self._error
                st.chunks_new += 1
                st.bytes_new += len(data)
                self._in_flight += 1
        if new:
            self._slots.acquire()
            self._pool.submit(self._encode, ((bid, bytes(data) if copy else data),))
        return bid

    def _encode(self, chunks) -> None:
        """In an encoder thread: compress, encrypt and pack one job's chunks."""
        try:
            stored = 0
            for (bid, data), enc in zip(chunks, self._encode_all(chunks)):
                stored += len(enc)
                pack = self.packer.add(bid, blobfmt.DATA, enc, len(data))
                if pack is not None:
                    self.submit(pack)
            with self._lock:
                self.stats.bytes_stored += stored
        except BaseException as exc:  # handed to the reading side by drain / _store / chunk_small
            with self._lock:
                if self._error is None:
                    self._error = exc
        finally:
            self._slots.release()
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.notify_all()

    def _encode_all(self, chunks) -> list[bytes]:
        """The stored form (blobfmt.encode) of each chunk of a job."""
        if len(chunks) == 1 or not self._batch_zstd:
            return [blobfmt.encode(data, bid, self.sealer, self.level) for bid, data in chunks]
        cctx = getattr(self._tls, "cctx", None)  # a compressor is not thread-safe: one per encoder
        if cctx is None:
            cctx = self._tls.cctx = zstandard.ZstdCompressor(level=self.level)
        frames = cctx.multi_compress_to_buffer([data for _, data in chunks])  # the GIL is released once
        return [blobfmt.encode_compressed(data, frames[i], bid, self.sealer) for i, (bid, data) in enumerate(chunks)]

    def _cut(self, data):
        if len(data) <= self.settings.chunker_min:
            return (data,)  # FastCDC never cuts below its minimum size
        return [c.data for c in self._cdc().cut_buf(data)]

    def chunk_small(self, data: bytes) -> list[BlobId]:
        """Chunk a whole buffer (a small file, read at once); returns its chunk ids at once.

        The new chunks are encoded later by the encoder threads, in jobs of about
        BATCH_BYTES that collect the chunks of many files; `drain` hands over the
        last, partial job. The ids (and the stored blobs) are the same as
        `chunk_bytes` and `chunk_stream` give.
        """
        if not data:
            return []
        ids = []
        claimed = []
        for piece in self._cut(data):
            bid = blob_id(piece, self.id_key)
            ids.append(bid)
            if self.deduper.claim(bid):
                claimed.append((bid, piece))
        job = None
        with self._lock:
            st = self.stats
            st.chunks += len(ids)
            st.bytes_read += len(data)
            if claimed:
                if self._error is not None:
                    raise self._error
                for bid, piece in claimed:
                    st.chunks_new += 1
                    st.bytes_new += len(piece)
                    self._batch_bytes += len(piece)
                self._batch.extend(claimed)
                if self._batch_bytes >= BATCH_BYTES:
                    job = self._take_batch()
        if job:
            self._hand_over(job)
        return ids

    def _take_batch(self) -> list[tuple[BlobId, bytes]]:
        """With the lock held: the collected chunks as one job, counted in flight."""
        job, self._batch, self._batch_bytes = self._batch, [], 0
        if job:
            self._in_flight += 1
        return job

    def _hand_over(self, job) -> None:
        self._slots.acquire()
        self._pool.submit(self._encode, job)

    def chunk_bytes(self, data) -> list[BlobId]:
        """Chunk a whole buffer (a small file, read at once), encoding in this thread."""
        if not data:
            return []
        cuts = self._cut(data)
        ids = []
        new = new_bytes = stored = 0
        for piece in cuts:
            bid = blob_id(piece, self.id_key)
            ids.append(bid)
            if self.deduper.claim(bid):
                enc = blobfmt.encode(piece, bid, self.sealer, self.level)
                new += 1
                new_bytes += len(piece)
                stored += len(enc)
                pack = self.packer.add(bid, blobfmt.DATA, enc, len(piece))
                if pack is not None:
                    self.submit(pack)
        with self._lock:
            st = self.stats
            st.chunks += len(ids)
            st.bytes_read += len(data)
            st.chunks_new += new
            st.bytes_new += new_bytes
            st.bytes_stored += stored
        return ids

    def chunk_stream(self, f) -> tuple[list[BlobId], int]:
        """Chunk a readable binary file object to its end; returns (ids, bytes read)."""
        ids, total = [], 0
        for c in self._cdc().cut_stream(f):
            ids.append(self._store(c.data, copy=True))
            total += c.length
        return ids, total

    def store_chunk(self, data: bytes) -> list[BlobId]:
        """Store one chunk as it is, not cut again (`copy` keeps the source vault's chunk
        boundaries); only a chunk larger than this vault's `chunker.max` is cut."""
        if len(data) > self.settings.chunker_max:
            return [self._store(piece, copy=True) for piece in self._cut(data)]
        return [self._store(data, copy=False)]

    def drain(self) -> None:
        with self._lock:
            job = self._take_batch()
        if job:
            self._hand_over(job)
        with self._lock:
            while self._in_flight:
                self._idle.wait()
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        """Stop the encoders without waiting: after `drain` they are idle; after an error
        they may be blocked handing a pack to an event loop that is unwinding."""
        self._pool.shutdown(wait=False, cancel_futures=True)
