"""The uploader's chunker: the same bytes give the same blobs whichever path reads them.

Small files are chunked from one buffer (`chunk_bytes`), large files and stdin
from a stream (`chunk_stream`). Both must cut at the same places, or the same
file backed up twice would store its data twice. Real parts throughout:
Settings, Sealer, Deduper over a BlobIndex, Packer; packs are decoded back.
"""

from __future__ import annotations

import io
import random
import threading

import pytest

from coldvault.index import blob as blobfmt
from coldvault.index import pack as packfmt
from coldvault.index.config import Settings
from coldvault.index.crypto import MasterKeys, Sealer
from coldvault.index.ids import blob_id
from coldvault.index.packindex import PackRecord
from coldvault.uploader.chunker import Chunker
from coldvault.uploader.packer import Packer
from coldvault.vault.blobindex import BlobIndex, Deduper

SETTINGS = Settings()
MAX = SETTINGS.chunker_max
SIZES = [0, 1, 1000, MAX - 1, MAX, MAX + 1, 3 * MAX]
KEYS = MasterKeys.generate()


@pytest.fixture(params=["plain", "sealed"])
def sealer(request) -> Sealer:
    return Sealer(None) if request.param == "plain" else Sealer(KEYS)


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def repetitive(seed: int) -> bytes:
    """Random blocks that repeat: content-defined cuts resynchronise, so chunks repeat too."""
    a, b = random_bytes(2 * MAX, seed), random_bytes(MAX // 2, seed + 1)
    return a + b + a + a + b"tail"


class Run:
    """One chunker with everything it writes to; `finish` drains it and flushes the packer."""

    def __init__(self, sealer: Sealer, deduper: Deduper | None = None):
        self.sealer = sealer
        self.deduper = deduper or Deduper(BlobIndex())
        self.packer = Packer("data", sealer, 1 << 20)
        self.packs: list[packfmt.FinishedPack] = []
        self._lock = threading.Lock()
        self.chunker = Chunker(SETTINGS, sealer, self.deduper, self.packer, self._submit)

    def _submit(self, fp: packfmt.FinishedPack) -> None:
        with self._lock:
            self.packs.append(fp)

    def finish(self) -> list[packfmt.FinishedPack]:
        try:
            self.chunker.drain()
        finally:
            self.chunker.close()
        last = self.packer.flush()
        if last is not None:
            self.packs.append(last)
        return self.packs


def blobs_in(packs: list[packfmt.FinishedPack], sealer: Sealer) -> dict[bytes, bytes]:
    """Every blob in `packs`, decoded, by id; each id must be in exactly one place."""
    out: dict[bytes, bytes] = {}
    for fp in packs:
        assert fp.kind == "data"
        entries = packfmt.read_header(fp.data, len(fp.data), sealer, fp.name)
        assert entries == fp.blobs
        for e in entries:
            assert e.id not in out, "a chunk was stored twice"
            assert e.type == blobfmt.DATA
            stored = fp.data[e.offset : e.offset + e.length]
            out[e.id] = blobfmt.decode(stored, e.id, sealer, fp.name, e.raw_length)
    return out


def check_stored(data: bytes, ids: list, run: Run) -> dict[bytes, bytes]:
    blobs = blobs_in(run.packs, run.sealer)
    assert set(blobs) == set(ids), "every new chunk in exactly one pack, nothing else"
    assert b"".join(blobs[i] for i in ids) == data
    for i in ids:
        assert blob_id(blobs[i], run.sealer.id_key) == i
    # FastCDC bounds: every chunk at most max; all but the last at least min.
    sizes = [len(blobs[i]) for i in ids]
    assert all(s <= SETTINGS.chunker_max for s in sizes)
    assert all(s >= SETTINGS.chunker_min for s in sizes[:-1])
    st = run.chunker.stats
    assert (st.chunks, st.bytes_read) == (len(ids), len(data))
    assert (st.chunks_new, st.bytes_new) == (len(blobs), sum(len(b) for b in blobs.values()))
    return blobs


DATASETS = [pytest.param(n, id=f"size-{n}") for n in SIZES] + [pytest.param("repetitive", id="repetitive")]


def dataset(spec, seed: int = 1) -> bytes:
    return repetitive(seed) if spec == "repetitive" else random_bytes(spec, seed)


@pytest.mark.parametrize("spec", DATASETS)
def test_bytes_and_stream_cut_alike(sealer, spec):
    data = dataset(spec)

    by_bytes = Run(sealer)
    ids_bytes = by_bytes.chunker.chunk_bytes(data)
    by_bytes.finish()

    by_stream = Run(sealer)
    ids_stream, total = by_stream.chunker.chunk_stream(io.BytesIO(data))
    by_stream.finish()

    assert total == len(data)
    assert ids_bytes == ids_stream
    if data:
        assert ids_bytes
    else:
        assert ids_bytes == [] and by_bytes.packs == [] and by_stream.packs == []
    assert check_stored(data, ids_bytes, by_bytes) == check_stored(data, ids_stream, by_stream)


def test_repeated_chunks_are_stored_once(sealer):
    data = repetitive(7)
    run = Run(sealer)
    ids = run.chunker.chunk_bytes(data)
    run.finish()
    assert len(set(ids)) < len(ids), "the test data should repeat whole chunks"
    blobs = check_stored(data, ids, run)
    assert len(blobs) == len(set(ids))


def test_stream_reads_in_small_pieces(sealer):
    """A pipe returns short reads; the cuts must not depend on how the bytes arrive."""

    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes):
            self._f = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            return self._f.readinto(memoryview(b)[:65537])

    data = random_bytes(2 * MAX + 12345, 3)
    ref = Run(sealer)
    expected = ref.chunker.chunk_bytes(data)
    ref.finish()

    run = Run(sealer)
    ids, total = run.chunker.chunk_stream(Trickle(data))
    run.finish()
    assert (ids, total) == (expected, len(data))
    check_stored(data, ids, run)


@pytest.mark.parametrize("spec", [MAX + 1, 3 * MAX, "repetitive"])
def test_second_pass_stores_nothing(sealer, spec):
    data = dataset(spec, seed=5)
    run = Run(sealer)
    first = run.chunker.chunk_bytes(data)
    run.finish()
    check_stored(data, first, run)

    # Same deduper (the same backup run meets the same file again), either path.
    again = Run(sealer, run.deduper)
    assert again.chunker.chunk_bytes(data) == first
    assert again.chunker.chunk_stream(io.BytesIO(data)) == (first, len(data))
    assert again.finish() == []
    assert again.chunker.stats.chunks_new == 0 and again.chunker.stats.bytes_new == 0

    # A later run: a fresh deduper over an index that knows the packs of the first.
    index = BlobIndex()
    for fp in run.packs:
        index.add_pack(PackRecord(fp.id, fp.kind, len(fp.data), fp.blobs))
    later = Run(sealer, Deduper(index))
    assert later.chunker.chunk_stream(io.BytesIO(data)) == (first, len(data))
    assert later.finish() == []
    assert later.chunker.stats.chunks_new == 0


def test_ids_depend_on_the_vault_key():
    data = random_bytes(MAX + 1, 9)
    a, b = Run(Sealer(KEYS)), Run(Sealer(MasterKeys.generate()))
    ids_a, ids_b = a.chunker.chunk_bytes(data), b.chunker.chunk_bytes(data)
    a.finish(), b.finish()
    assert len(ids_a) == len(ids_b) and set(ids_a).isdisjoint(ids_b)
