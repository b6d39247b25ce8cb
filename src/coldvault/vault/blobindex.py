"""The in-memory index of a vault: blob id -> where it is stored."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from coldvault.index.ids import BlobId, PackId
from coldvault.index.pack import object_name
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
        self.blobs: dict[bytes, tuple] = {}  # id -> (pack id, offset, length, raw_length, type)
        self.packs: dict[str, tuple[str, int]] = {}  # pack id -> (kind, size)
        self.index_ids: set[str] = set()
        # Pending (write-ahead) index objects, and what their records turned out to be:
        self.pending_ids: set[str] = set()
        self.adopted: list[PackRecord] = []  # packs stored by a run that had not committed: reusable
        self.adoptable: set[str] = set()  # pending index ids whose packs are all among `adopted`
        self._lock = threading.Lock()

    def add_pack(self, rec: PackRecord) -> None:
        pid = rec.id
        with self._lock:
            self.packs[pid] = (rec.kind, rec.size)
            blobs = self.blobs
            for b in rec.blobs:
                if b.id not in blobs:
                    blobs[b.id] = (pid, b.offset, b.length, b.raw_length, b.type)

    def __contains__(self, bid: bytes) -> bool:
        return bid in self.blobs

    def __len__(self) -> int:
        return len(self.blobs)

    def lookup(self, bid: BlobId) -> Location | None:
        t = self.blobs.get(bid)
        if t is None:
            return None
        pid = t[0]
        return Location(pid, self.packs[pid][0], t[1], t[2], t[3], t[4])

    def raw_length(self, bid: BlobId) -> int | None:
        t = self.blobs.get(bid)
        return None if t is None else t[3]


class Deduper:
    """Which blobs this run must store: those in neither the index nor claimed earlier."""

    def __init__(self, index: BlobIndex):
        self._known = index.blobs
        self._claimed: set[bytes] = set()
        self._lock = threading.Lock()

    def claim(self, bid: bytes) -> bool:
        """True exactly once for each blob id the vault does not have yet."""
        if bid in self._known:
            return False
        with self._lock:
            if bid in self._claimed:
                return False
            self._claimed.add(bid)
            return True
