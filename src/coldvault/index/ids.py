"""Identifiers: blob ids (keyed XXH3-128), pack ids, object ids, and their text forms."""

from __future__ import annotations

from typing import NewType

import xxhash

BlobId = NewType("BlobId", bytes)  # 16 bytes
PackId = NewType("PackId", str)  # 32 lowercase hex digits

ID_LEN = 16


def blob_id(data, id_key: bytes | None) -> BlobId:
    """XXH3-128 of the plaintext, keyed by prefixing the vault's 32-byte id key.

    With no key (unencrypted vault) it is plain XXH3-128 of the data.
    """
    if id_key is None:
        return BlobId(xxhash.xxh3_128_digest(data))
    h = xxhash.xxh3_128(id_key)
    h.update(data)
    return BlobId(h.digest())


def content_id(data) -> str:
    """Unkeyed XXH3-128 of stored bytes, as hex: the name of packs, indexes, snapshots."""
    return xxhash.xxh3_128_hexdigest(data)


def is_hex_id(s: str) -> bool:
    return len(s) == 2 * ID_LEN and all(c in "0123456789abcdef" for c in s)
