"""Chunk lists (blob type CHUNK_LIST): the data chunks of one ZFS send stream, in order.

    {"version": 1, "chunks": [bin16, ...]}
"""

from __future__ import annotations

from coldvault.index import limits
from coldvault.index.ids import ID_LEN

VERSION = 1


def encode(chunks: list[bytes]) -> bytes:
    return limits.pack({"version": VERSION, "chunks": chunks})


def decode(data: bytes, what: str) -> list[bytes]:
    doc = limits.unpack(data, what)
    limits.check_version(doc, what, VERSION)
    chunks = doc.get("chunks")
    limits.expect(isinstance(chunks, list) and all(isinstance(c, bytes) and len(c) == ID_LEN for c in chunks),
                  what, "bad chunk list")
    return chunks
