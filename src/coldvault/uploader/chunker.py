"""Content-defined chunking of one byte source, with encoding spread over threads.

The thread that reads a file cuts it (FastCDC) and hashes each chunk; chunks
the vault does not have yet go to a small pool of encoder threads that
compress, encrypt and add them to the packer. A bounded number of chunks is
in flight, so memory stays bounded however large the file. Every native step
(FastCDC, XXH3, zstd, ChaCha20-Poly1305) releases the GIL, so both cores work
even on a single large file.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from pyfastcdc import FastCDC

from coldvault.index import blob as blobfmt
from coldvault.index.config import Settings
from coldvault.index.ids import BlobId, blob_id


class ChunkStats:
    __slots__ = ("bytes_read", "bytes_new", "bytes_stored", "chunks_new", "chunks")

    def __init__(self):
        self.bytes_read = self.bytes_new = self.bytes_stored = self.chunks_new = self.chunks = 0


class Chunker:
    """Cuts bytes into chunks and stores the new ones through `packer`; thread-safe.

    `submit(pack)` is called (from an encoder thread) with each pack the packer
    fills. Call `drain()` before flushing the packer: it waits for every chunk
    in flight and re-raises the first error an encoder hit.
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
            self._pool.submit(self._encode, bid, bytes(data) if copy else data)
        return bid

    def _encode(self, bid: BlobId, data) -> None:
        try:
            enc = blobfmt.encode(data, bid, self.sealer, self.level)
            pack = self.packer.add(bid, blobfmt.DATA, enc, len(data))
            with self._lock:
                self.stats.bytes_stored += len(enc)
            if pack is not None:
                self.submit(pack)
        except BaseException as exc:  # handed to the reading side by drain / _store
            with self._lock:
                if self._error is None:
                    self._error = exc
        finally:
            self._slots.release()
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.notify_all()

    def chunk_bytes(self, data) -> list[BlobId]:
        """Chunk a whole buffer (a small file, read at once), encoding in this thread.

        Small files arrive in batches on several reading threads already; handing
        each one to an encoder thread would cost more than encoding it here.
        """
        if not data:
            return []
        if len(data) <= self.settings.chunker_min:
            cuts = (data,)  # FastCDC never cuts below its minimum size
        else:
            cuts = [c.data for c in self._cdc().cut_buf(data)]
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

    def drain(self) -> None:
        with self._lock:
            while self._in_flight:
                self._idle.wait()
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        """Stop the encoders without waiting: after `drain` they are idle; after an error
        they may be blocked handing a pack to an event loop that is unwinding."""
        self._pool.shutdown(wait=False, cancel_futures=True)
