"""Pack index objects: which blob is in which pack, at which offset.

Version 2 (written since issue 10) keeps the records as fixed-size binary tables, so a
reader decodes millions of entries with `numpy.frombuffer` and a few vectorised checks:

    index/<content id> := envelope(kind "index") of
      {"version": 2, "features": [],
       "packs": bin (n * 25 bytes: PACK_RECORD),
       "blobs": bin (m * 37 bytes: BLOB_RECORD, "pack" = position in "packs"),
       "supersedes": [index ids (hex)],
       "pending": true}                 (only in a checkpoint written before its packs)

Version 1 (still read, never written) held the same facts as msgpack lists:

      {"version": 1, "features": [],
       "packs": [{"id": bin16, "kind": "data"|"tree", "size": int,
                  "blobs": [[blob id, type, offset, length, raw_length], ...]}],
       "supersedes": [...], "pending": true}

A pending index is written ahead of the packs it names (docs/format.md, "Write
order"): its records count only for packs that exist in the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from coldvault.index import envelope, limits
from coldvault.index.blob import MAX_DATA_BLOB, MAX_META_BLOB, MAX_OVERHEAD
from coldvault.index.crypto import Sealer
from coldvault.index.errors import FormatError
from coldvault.index.ids import ID_LEN, BlobId, PackId, is_hex_id
from coldvault.index.pack import PACK_KINDS, BlobEntry

VERSION = 2  # written; version 1 objects are still read

# Fixed-size little-endian records (docs/format.md 6.4). Sizes, against section 7: a pack
# may be up to 8 GiB (settings) plus its last blob, so `size` and `offset` are u64 (and,
# as in version 1, below 2^48); `length` and `raw_length` are at most MAX_META_BLOB +
# MAX_OVERHEAD (256 MiB + 29), so u32; `pack` counts the object's pack records, u32.
PACK_RECORD = np.dtype([("id", "V16"), ("size", "<u8"), ("kind", "u1")])  # 25 bytes
BLOB_RECORD = np.dtype(
    [("id", "V16"), ("pack", "<u4"), ("type", "u1"), ("offset", "<u8"), ("length", "<u4"), ("raw_length", "<u4")]
)  # 37 bytes
KIND_CODES = {kind: code for code, kind in enumerate(PACK_KINDS)}  # data 0, tree 1
MAX_INT = 2**48  # offsets and sizes stay below this, as in version 1
# The most plaintext an entry may claim, by type (blob.max_plaintext): DATA, TREE, CHUNK_LIST.
_TYPE_CAP = np.array([MAX_DATA_BLOB, MAX_META_BLOB, MAX_META_BLOB], dtype=np.uint64)

# Writers put at most this many blob records (and at most this many pack records) in one
# index object: 500,000 records are 18.5 MB of table, far below limits.MAX_BIN (64 MiB,
# 1.8 M records) and limits.MAX_OBJECT, so no vault size makes an index object unreadable.
MAX_INDEX_ENTRIES = 500_000


@dataclass
class PackRecord:
    id: PackId
    kind: str
    size: int
    blobs: list[BlobEntry]


class IndexTable:
    """The records of one index object as two numpy tables (PACK_RECORD, BLOB_RECORD)."""

    __slots__ = ("packs", "blobs")

    def __init__(self, packs: np.ndarray, blobs: np.ndarray):
        self.packs = packs
        self.blobs = blobs

    @classmethod
    def from_records(cls, recs: Iterable[PackRecord]) -> "IndexTable":
        recs = list(recs)
        packs = np.zeros(len(recs), dtype=PACK_RECORD)
        if recs:
            packs["id"] = np.frombuffer(b"".join(bytes.fromhex(r.id) for r in recs), dtype="V16")
            packs["size"] = [r.size for r in recs]
            packs["kind"] = [KIND_CODES[r.kind] for r in recs]
        n = sum(len(r.blobs) for r in recs)
        blobs = np.zeros(n, dtype=BLOB_RECORD)
        if n:
            blobs["id"] = np.frombuffer(b"".join(b.id for r in recs for b in r.blobs), dtype="V16")
            blobs["pack"] = [i for i, r in enumerate(recs) for _ in r.blobs]
            cols = [(b.type, b.offset, b.length, b.raw_length) for r in recs for b in r.blobs]
            t = np.array(cols, dtype=np.uint64)
            blobs["type"], blobs["offset"], blobs["length"], blobs["raw_length"] = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
        return cls(packs, blobs)

    @classmethod
    def concat(cls, tables: list["IndexTable"]) -> "IndexTable":
        """The records of several tables as one (each table's blob records pointing at its
        own pack records, renumbered)."""
        packs = np.concatenate([t.packs.astype(PACK_RECORD, copy=False) for t in tables] or
                               [np.zeros(0, dtype=PACK_RECORD)])
        parts, base = [], 0
        for t in tables:
            b = t.blobs.astype(BLOB_RECORD)  # a copy: its pack positions change
            b["pack"] += base
            parts.append(b)
            base += len(t.packs)
        return cls(packs, np.concatenate(parts or [np.zeros(0, dtype=BLOB_RECORD)]))

    def split(self, max_entries: int = MAX_INDEX_ENTRIES) -> list["IndexTable"]:
        """This table as parts of at most `max_entries` blob records and pack records each,
        one part per index object (as `split` does for PackRecords): a pack whose blobs are
        cut between two parts is named in both."""
        assert max_entries >= 1
        if len(self.blobs) <= max_entries and len(self.packs) <= max_entries:
            return [self]
        blobs = self.blobs[np.argsort(self.blobs["pack"], kind="stable")]
        out = []
        for i in range(0, len(blobs), max_entries):
            part = blobs[i:i + max_entries].copy()
            used, part["pack"] = np.unique(part["pack"], return_inverse=True)
            out.append(IndexTable(self.packs[used], part))
        empty = np.setdiff1d(np.arange(len(self.packs)), self.blobs["pack"])  # packs without blobs
        for i in range(0, len(empty), max_entries):
            out.append(IndexTable(self.packs[empty[i:i + max_entries]], np.zeros(0, dtype=BLOB_RECORD)))
        return out

    def select_packs(self, rows: np.ndarray) -> "IndexTable":
        """The records of these pack rows only (and their blobs)."""
        keep = np.isin(self.blobs["pack"], rows)
        blobs = self.blobs[keep].copy()
        new_row = np.full(len(self.packs), -1, dtype=np.int64)
        new_row[rows] = np.arange(len(rows))
        blobs["pack"] = new_row[blobs["pack"]]
        return IndexTable(self.packs[rows], blobs)

    def pack_items(self) -> list[tuple[str, str, int]]:
        """(pack id, kind, size) of each pack record, without the blobs."""
        return [(bytes(i).hex(), PACK_KINDS[k], s)
                for i, k, s in zip(self.packs["id"].tolist(), self.packs["kind"].tolist(), self.packs["size"].tolist())]

    def records(self) -> list[PackRecord]:
        """The same facts as PackRecords (per-entry Python: for small tables)."""
        out = [
            PackRecord(PackId(bytes(p["id"]).hex()), PACK_KINDS[p["kind"]], int(p["size"]), [])
            for p in self.packs
        ]
        order = np.lexsort((self.blobs["offset"], self.blobs["pack"]))  # each pack's blobs in pack order
        for b in self.blobs[order].tolist():  # (id, pack, type, offset, length, raw_length)
            out[b[1]].blobs.append(BlobEntry(BlobId(b[0]), b[2], b[3], b[4], b[5]))
        return out


class IndexDoc:
    """One decoded index object: its pack records (as PackRecords or as an IndexTable,
    each made from the other when first asked for), `supersedes` and `pending`."""

    def __init__(self, packs: list[PackRecord] | None = None, supersedes: Iterable[str] = (),
                 pending: bool = False, table: IndexTable | None = None, version: int = VERSION):
        self._packs = packs if packs is not None or table is not None else []
        self._table = table
        self.supersedes = list(supersedes)
        self.pending = pending  # written before its packs: trust a record only if its pack exists
        self.version = version  # of the object it was decoded from (what `encode` writes: VERSION)

    @property
    def packs(self) -> list[PackRecord]:
        if self._packs is None:
            self._packs = self._table.records()
        return self._packs

    @property
    def table(self) -> IndexTable:
        if self._table is None:
            self._table = IndexTable.from_records(self._packs)
        return self._table

    def keep_packs(self, packs: list[PackRecord]) -> None:
        """Keep only these pack records (a reader leaving some out): the table follows."""
        self._packs = packs
        self._table = None

    def __eq__(self, other) -> bool:
        if not isinstance(other, IndexDoc):
            return NotImplemented
        return (_canonical(self.packs), self.supersedes, self.pending) == (
            _canonical(other.packs), other.supersedes, other.pending)

    def __repr__(self) -> str:
        return f"IndexDoc({len(self.table.packs)} packs, {len(self.table.blobs)} blobs, pending={self.pending})"


def _canonical(packs: list[PackRecord]) -> list:
    """Pack records with each pack's blobs in (offset, id) order: what an index says,
    whatever order its records were written in."""
    return [(p.id, p.kind, p.size, sorted(p.blobs, key=lambda b: (b.offset, b.id))) for p in packs]


def split(recs: list[PackRecord], max_entries: int = MAX_INDEX_ENTRIES) -> list[list[PackRecord]]:
    """`recs` in groups of at most `max_entries` blob records and pack records each, one
    group per index object. A pack with more blobs than that is named in several groups,
    each with a share of its blobs (readers merge them, docs/format.md 6.4)."""
    assert max_entries >= 1
    groups: list[list[PackRecord]] = []
    group: list[PackRecord] = []
    count = 0
    for rec in recs:
        if group and (len(group) >= max_entries or count + len(rec.blobs) > max_entries):
            groups.append(group)
            group, count = [], 0
        blobs = rec.blobs
        while len(blobs) > max_entries:  # larger than a whole object: its blobs are shared out
            groups.append([PackRecord(rec.id, rec.kind, rec.size, blobs[:max_entries])])
            blobs = blobs[max_entries:]
        group.append(rec if blobs is rec.blobs else PackRecord(rec.id, rec.kind, rec.size, blobs))
        count += len(blobs)
    if group:
        groups.append(group)
    return groups


def encode(doc: IndexDoc, sealer: Sealer) -> bytes:
    t = doc.table
    d = {
        "version": VERSION,
        "features": [],
        "packs": t.packs.astype(PACK_RECORD, copy=False).tobytes(),
        "blobs": _by_id(t.blobs).tobytes(),
        "supersedes": list(doc.supersedes),
    }
    if doc.pending:
        d["pending"] = True
    # Not compressed: the tables are mostly random ids, which zstd shrinks by about 15%
    # at the cost of a quarter of the time a reader spends loading them.
    return envelope.seal(d, "index", sealer, compress=False)


def _by_id(blobs: np.ndarray) -> np.ndarray:
    """Blob records sorted by id (stable): readers need no order, but a reader merging
    many objects sorts a few sorted runs much faster than random rows."""
    blobs = blobs.astype(BLOB_RECORD, copy=False)
    return blobs[np.argsort(blobs["id"], kind="stable")]


def encode_v1(doc: IndexDoc, sealer: Sealer) -> bytes:
    """A version 1 object (for tests and fixtures of v1 vaults; coldvault writes version 2)."""
    d = {
        "version": 1,
        "features": [],
        "packs": [
            {"id": bytes.fromhex(p.id), "kind": p.kind, "size": p.size, "blobs": [b.to_list() for b in p.blobs]}
            for p in doc.packs
        ],
        "supersedes": list(doc.supersedes),
    }
    if doc.pending:
        d["pending"] = True
    return envelope.seal(d, "index", sealer)


def decode(data: bytes, sealer: Sealer, what: str) -> IndexDoc:
    d = envelope.open_(data, "index", sealer, what)
    limits.check_version(d, what, VERSION)
    sup = d.get("supersedes", [])
    if not (isinstance(sup, list) and all(isinstance(s, str) and is_hex_id(s) for s in sup)):
        raise FormatError(f"{what}: bad supersedes list")
    pending = d.get("pending", False)
    if type(pending) is not bool:
        raise FormatError(f"{what}: bad pending flag")
    if d["version"] >= 2:
        return IndexDoc(None, sup, pending, table=_decode_tables(d, what))
    return IndexDoc(_decode_v1_packs(d, what), sup, pending, version=1)


def _decode_tables(d: dict, what: str) -> IndexTable:
    """Version 2: both tables from their bin fields, every record checked at once."""
    pbin, bbin = d.get("packs"), d.get("blobs")
    if not (isinstance(pbin, bytes) and len(pbin) % PACK_RECORD.itemsize == 0):
        raise FormatError(f"{what}: bad pack table")
    if not (isinstance(bbin, bytes) and len(bbin) % BLOB_RECORD.itemsize == 0):
        raise FormatError(f"{what}: bad blob table")
    packs = np.frombuffer(pbin, dtype=PACK_RECORD)
    blobs = np.frombuffer(bbin, dtype=BLOB_RECORD)
    bad = (packs["kind"] >= len(PACK_KINDS)) | (packs["size"] >= MAX_INT)
    if bad.any():
        raise FormatError(f"{what}: bad pack record {bytes(packs['id'][bad.argmax()]).hex()}")

    def refuse(mask: np.ndarray, message) -> None:
        if mask.any():
            i = int(mask.argmax())
            raise FormatError(f"{what}: {message(i)}")

    def bid(i: int) -> str:
        return bytes(blobs["id"][i]).hex()[:16]

    pack, btype = blobs["pack"], blobs["type"]
    offset, length, raw = blobs["offset"], blobs["length"].astype(np.uint64), blobs["raw_length"].astype(np.uint64)
    refuse((pack >= len(packs)) | (btype >= len(_TYPE_CAP)) | (offset >= MAX_INT), lambda i: "bad blob entry")
    cap = _TYPE_CAP[btype]
    refuse(raw > cap, lambda i: f"blob {bid(i)} claims {int(raw[i])} bytes, more than a blob of its type may hold "
                                f"({int(cap[i])})")
    refuse(length > raw + MAX_OVERHEAD, lambda i: f"blob {bid(i)} is {int(length[i])} bytes stored for "
                                                  f"{int(raw[i])} bytes of plaintext")
    refuse(offset + length > packs["size"][pack],
           lambda i: f"blob entry past the end of pack {bytes(packs['id'][pack[i]]).hex()}")
    return IndexTable(packs, blobs)


def _decode_v1_packs(d: dict, what: str) -> list[PackRecord]:
    packs = []
    raw = d.get("packs", [])
    limits.expect(isinstance(raw, list), what, "pack list is not a list")
    for p in raw:
        if not (isinstance(p, dict) and isinstance(p.get("id"), bytes) and len(p["id"]) == ID_LEN):
            raise FormatError(f"{what}: bad pack record")
        if (p.get("kind") not in PACK_KINDS or type(p.get("size")) is not int or not 0 <= p["size"] < MAX_INT
                or not isinstance(p.get("blobs", []), list)):
            raise FormatError(f"{what}: bad pack record")
        blobs = [BlobEntry.from_list(e, what) for e in p.get("blobs", [])]
        for b in blobs:
            if b.offset + b.length > p["size"]:
                raise FormatError(f"{what}: blob entry past the end of pack {p['id'].hex()}")
        packs.append(PackRecord(PackId(p["id"].hex()), p["kind"], p["size"], blobs))
    return packs
