"""The in-memory index of a vault: blob id -> where it is stored.

Callers use the methods below and never the tables behind them, so that the
representation can change (issue 10: a compact table for millions of blobs)
without touching them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from coldvault.index.ids import BlobId, PackId
from coldvault.index.pack import BlobEntry, object_name
from coldvault.index.packindex import PackRecord


@dataclass(frozen=True, slots=True)
class Location:
    pack: PackId
    kind: str
    offset: int
    length: int
    raw_length: int
    type: int

    @property
    def object_name(self) -> str:
        return object_name(self.kind, self.pack)


class BlobIndex:
    def __init__(self):
        self._blobs: dict[bytes, tuple] = {}  # id -> (pack id, offset, length, raw_length, type)
        self._packs: dict[str, tuple[str, int]] = {}  # pack id -> (kind, size)
        self.index_ids: set[str] = set()
        # Pending (write-ahead) index objects, and what their records turned out to be:
        self.pending_ids: set[str] = set()
        self.adopted: list[PackRecord] = []  # packs stored by a run that had not committed: reusable
        self.adoptable: set[str] = set()  # pending index ids whose packs are all among `adopted`
        self._lock = threading.Lock()

    def add_pack(self, rec: PackRecord) -> None:
        pid = rec.id
        with self._lock:
            self._packs[pid] = (rec.kind, rec.size)
            blobs = self._blobs
            for b in rec.blobs:
                if b.id not in blobs:
                    blobs[b.id] = (pid, b.offset, b.length, b.raw_length, b.type)

    # ---- blobs ------------------------------------------------------------------------

    def __contains__(self, bid: bytes) -> bool:
        return bid in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def contains_all(self, bids: Iterable[bytes]) -> bool:
        return all(map(self._blobs.__contains__, bids))

    def lookup(self, bid: BlobId) -> Location | None:
        t = self._blobs.get(bid)
        if t is None:
            return None
        pid = t[0]
        return Location(pid, self._packs[pid][0], t[1], t[2], t[3], t[4])

    def raw_length(self, bid: BlobId) -> int | None:
        t = self._blobs.get(bid)
        return None if t is None else t[3]

    def pack_of(self, bid: BlobId) -> PackId | None:
        t = self._blobs.get(bid)
        return None if t is None else t[0]

    def blobs_by_pack(self, pids: Iterable[str] | None = None) -> dict[str, list[BlobEntry]]:
        """The entries this index uses, grouped by pack (all packs, or those in `pids`).
        A pack that holds no indexed blob is absent."""
        wanted = None if pids is None else set(pids)
        out: dict[str, list[BlobEntry]] = {}
        for bid, (pid, off, length, raw, btype) in self._blobs.items():
            if wanted is None or pid in wanted:
                out.setdefault(pid, []).append(BlobEntry(bid, btype, off, length, raw))
        return out

    # ---- packs ------------------------------------------------------------------------

    def has_pack(self, pid: str) -> bool:
        return pid in self._packs

    def pack(self, pid: str) -> tuple[str, int] | None:
        """(kind, size) of an indexed pack."""
        return self._packs.get(pid)

    def packs(self) -> Iterator[tuple[str, str, int]]:
        """(pack id, kind, size) of every indexed pack."""
        return ((pid, kind, size) for pid, (kind, size) in self._packs.items())

    def pack_count(self) -> int:
        return len(self._packs)


class Deduper:
    """Which blobs this run must store: those in neither the index nor claimed earlier."""

    def __init__(self, index: BlobIndex):
        self._index = index
        self._claimed: set[bytes] = set()
        self._lock = threading.Lock()

    def claim(self, bid: bytes) -> bool:
        """True exactly once for each blob id the vault does not have yet."""
        if bid in self._index:
            return False
        with self._lock:
            if bid in self._claimed:
                return False
            self._claimed.add(bid)
            return True
