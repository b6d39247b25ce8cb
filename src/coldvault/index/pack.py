"""Packs: many blobs in one object, with a header at the end to rebuild the index.

    pack    := blob* || header || header_len:u32le || "CVPACK1\\0"
    header  := envelope(kind "pack-header") of {"version": 1, "blobs": [entry...]}
    entry   := [blob id:bin16, type:int, offset:int, length:int, raw_length:int]

The pack id is the XXH3-128 of the whole pack (hex), so a pack's name checks
its content. Data packs may sit in a cold tier; the index (see packindex.py)
holds the same entries in hot objects, so nothing cold is read to plan.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import xxhash

from coldvault.index import envelope, limits
from coldvault.index.blob import BLOB_TYPES, MAX_OVERHEAD, max_plaintext
from coldvault.index.crypto import Sealer
from coldvault.index.errors import FormatError
from coldvault.index.ids import ID_LEN, BlobId, PackId

TRAILER_MAGIC = b"CVPACK1\0"
TRAILER_LEN = 4 + len(TRAILER_MAGIC)
DATA_KIND = "data"
TREE_KIND = "tree"
PACK_KINDS = (DATA_KIND, TREE_KIND)
PREFIX = {DATA_KIND: "data/", TREE_KIND: "trees/"}


@dataclass(frozen=True, slots=True)
class BlobEntry:
    id: BlobId
    type: int
    offset: int
    length: int
    raw_length: int

    def to_list(self) -> list:
        return [self.id, self.type, self.offset, self.length, self.raw_length]

    @classmethod
    def from_list(cls, e, what: str) -> "BlobEntry":
        ok = (
            isinstance(e, list)
            and len(e) == 5
            and isinstance(e[0], bytes)
            and len(e[0]) == ID_LEN
            and type(e[1]) is int
            and e[1] in BLOB_TYPES
            and all(type(x) is int and 0 <= x < 2**48 for x in e[2:])
        )
        if not ok:
            raise FormatError(f"{what}: bad blob entry")
        cap = max_plaintext(e[1])
        if e[4] > cap:
            raise FormatError(f"{what}: blob {e[0].hex()[:16]} claims {e[4]} bytes, more than a blob of its type may hold ({cap})")
        if e[3] > e[4] + MAX_OVERHEAD:
            raise FormatError(f"{what}: blob {e[0].hex()[:16]} is {e[3]} bytes stored for {e[4]} bytes of plaintext")
        return cls(BlobId(e[0]), e[1], e[2], e[3], e[4])


def object_name(kind: str, pack_id: str) -> str:
    """Store name of a pack: ``data/<2 hex>/<id>`` or ``trees/<2 hex>/<id>``."""
    return f"{PREFIX[kind]}{pack_id[:2]}/{pack_id}"


@dataclass
class FinishedPack:
    kind: str
    id: PackId
    data: bytes
    blobs: list[BlobEntry]

    @property
    def name(self) -> str:
        return object_name(self.kind, self.id)


class PackWriter:
    """Accumulates encoded blobs in memory; `finish` returns the pack bytes and its id."""

    def __init__(self, kind: str, sealer: Sealer):
        assert kind in PACK_KINDS
        self.kind = kind
        self.sealer = sealer
        self._buf = bytearray()
        self._hash = xxhash.xxh3_128()
        self.blobs: list[BlobEntry] = []

    @property
    def size(self) -> int:
        return len(self._buf)

    def __len__(self) -> int:
        return len(self.blobs)

    def add(self, bid: BlobId, btype: int, stored: bytes, raw_length: int) -> None:
        self.blobs.append(BlobEntry(bid, btype, len(self._buf), len(stored), raw_length))
        self._buf += stored
        self._hash.update(stored)

    def finish(self) -> FinishedPack:
        header = envelope.seal({"version": 1, "blobs": [b.to_list() for b in self.blobs]}, "pack-header", self.sealer)
        tail = header + struct.pack("<I", len(header)) + TRAILER_MAGIC
        self._buf += tail
        self._hash.update(tail)
        return FinishedPack(self.kind, PackId(self._hash.hexdigest()), bytes(self._buf), self.blobs)


def read_header(tail: bytes, pack_size: int, sealer: Sealer, what: str) -> list[BlobEntry]:
    """Parse the header from the last bytes of a pack (`tail` must hold all of it)."""
    if len(tail) < TRAILER_LEN or tail[-len(TRAILER_MAGIC):] != TRAILER_MAGIC:
        raise FormatError(f"{what}: no pack trailer (truncated?)")
    (hlen,) = struct.unpack("<I", tail[-TRAILER_LEN:-len(TRAILER_MAGIC)])
    if hlen + TRAILER_LEN > len(tail):
        raise FormatError(f"{what}: header of {hlen} bytes does not fit")
    header = tail[-TRAILER_LEN - hlen:-TRAILER_LEN]
    doc = envelope.open_(header, "pack-header", sealer, what)
    limits.check_version(doc, what, 1)
    blobs = doc.get("blobs", [])
    limits.expect(isinstance(blobs, list), what, "blob list is not a list")
    entries = [BlobEntry.from_list(e, what) for e in blobs]
    end = pack_size - TRAILER_LEN - hlen
    for e in entries:
        if e.offset + e.length > end:
            raise FormatError(f"{what}: blob entry runs past the blob area")
    return entries
