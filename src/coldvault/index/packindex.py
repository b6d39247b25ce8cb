"""Pack index objects: which blob is in which pack, at which offset.

    index/<content id> := envelope(kind "index") of
      {"version": 1, "features": [],
       "packs": [{"id": bin16, "kind": "data"|"tree", "size": int,
                  "blobs": [[blob id, type, offset, length, raw_length], ...]}],
       "supersedes": [index ids (hex)],
       "pending": true}                 (only in a checkpoint written before its packs)

A pending index is written ahead of the packs it names (docs/format.md, "Write
order"): its records count only for packs that exist in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coldvault.index import envelope, limits
from coldvault.index.crypto import Sealer
from coldvault.index.errors import FormatError
from coldvault.index.ids import ID_LEN, PackId, is_hex_id
from coldvault.index.pack import PACK_KINDS, BlobEntry

VERSION = 1


@dataclass
class PackRecord:
    id: PackId
    kind: str
    size: int
    blobs: list[BlobEntry]


@dataclass
class IndexDoc:
    packs: list[PackRecord]
    supersedes: list[str] = field(default_factory=list)
    pending: bool = False  # written before its packs: trust a record only if its pack exists


def encode(doc: IndexDoc, sealer: Sealer) -> bytes:
    d = {
        "version": VERSION,
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
    packs = []
    raw = d.get("packs", [])
    limits.expect(isinstance(raw, list), what, "pack list is not a list")
    for p in raw:
        if not (isinstance(p, dict) and isinstance(p.get("id"), bytes) and len(p["id"]) == ID_LEN):
            raise FormatError(f"{what}: bad pack record")
        if p.get("kind") not in PACK_KINDS or type(p.get("size")) is not int or not isinstance(p.get("blobs", []), list):
            raise FormatError(f"{what}: bad pack record")
        blobs = [BlobEntry.from_list(e, what) for e in p.get("blobs", [])]
        for b in blobs:
            if b.offset + b.length > p["size"]:
                raise FormatError(f"{what}: blob entry past the end of pack {p['id'].hex()}")
        packs.append(PackRecord(PackId(p["id"].hex()), p["kind"], p["size"], blobs))
    sup = d.get("supersedes", [])
    if not (isinstance(sup, list) and all(isinstance(s, str) and is_hex_id(s) for s in sup)):
        raise FormatError(f"{what}: bad supersedes list")
    pending = d.get("pending", False)
    if type(pending) is not bool:
        raise FormatError(f"{what}: bad pending flag")
    return IndexDoc(packs, sup, pending)
