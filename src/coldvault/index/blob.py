"""Blobs: one chunk of file data, one tree node or one chunk list, as stored in a pack.

    blob      := flags:u8 || body
    flags     := bit 0 zstd-compressed, bit 1 encrypted (other bits must be 0)
    body      := payload                                   (not encrypted)
               | nonce:12 || ChaCha20-Poly1305(payload)    (encrypted; AAD = blob id || flags)
    payload   := zstd(plaintext) if compressed else plaintext

The blob id is computed over the plaintext (see ids.blob_id) and checked on
every read, so a wrong or damaged blob never passes as good data.
"""

from __future__ import annotations

import threading

import zstandard

from coldvault.index import limits
from coldvault.index.crypto import Sealer
from coldvault.index.errors import AuthenticationError, FormatError
from coldvault.index.ids import BlobId, blob_id

COMPRESSED = 0x01
ENCRYPTED = 0x02
KNOWN_FLAGS = COMPRESSED | ENCRYPTED

# Blob types, as stored in pack headers and indexes.
DATA = 0
TREE = 1
CHUNK_LIST = 2
BLOB_TYPES = (DATA, TREE, CHUNK_LIST)

# The most plaintext a blob of each type may hold (docs/format.md, section 7). An index
# entry that claims more is damage, and no blob is ever decompressed past its entry's
# `raw_length`, so a hostile vault cannot make a reader allocate more than this per blob.
# Data: the chunker's largest allowed `max` (a vault's own `chunker.max` is checked on read,
# in vault.decode_stored). Metadata: a chunk list of 14.9 M chunks (18 bytes each: a 14 TiB
# stream at 1 MiB average chunks) or a directory of about a million files.
MAX_DATA_BLOB = 16 * 1024 * 1024
MAX_META_BLOB = 256 * 1024 * 1024
MAX_BLOB_PLAINTEXT = MAX_META_BLOB  # the bound when no index entry is at hand
# Stored bytes beyond the plaintext: the flag byte, and nonce and tag when encrypted. A blob
# is stored compressed only when that is smaller, so `length <= raw_length + MAX_OVERHEAD`.
MAX_OVERHEAD = 1 + 12 + 16


def max_plaintext(btype: int) -> int:
    return MAX_DATA_BLOB if btype == DATA else MAX_META_BLOB

_tls = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_tls, "cctx", None)
    if cache is None:
        cache = _tls.cctx = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level)
    return c


def encode(plaintext, bid: BlobId, sealer: Sealer, level: int | None) -> bytes:
    """Compress (unless level is None) and seal one blob."""
    packed = _compressor(level).compress(plaintext) if level is not None and len(plaintext) >= 64 else None
    return encode_compressed(plaintext, packed, bid, sealer)


def encode_compressed(plaintext, packed, bid: BlobId, sealer: Sealer) -> bytes:
    """Seal one blob, given `packed`, the zstd frame of `plaintext` (or None).

    The compressed form is kept only for blobs of 64 bytes or more and only if
    it is smaller than the plaintext by more than 1/32 (docs/format.md, section 4).
    Callers that compress many blobs in one call use this directly.
    """
    n = len(plaintext)
    flags, payload = 0, plaintext
    if packed is not None and n >= 64 and len(packed) < n - (n >> 5):
        flags, payload = COMPRESSED, packed
    if sealer.encrypted:
        flags |= ENCRYPTED
        return bytes((flags,)) + sealer.seal(payload, bid + bytes((flags,)))
    return bytes((flags,)) + bytes(payload)


def decode_located(stored, bid: BlobId, sealer: Sealer, what: str, length: int, raw_length: int, btype: int,
                   chunker_max: int) -> bytes:
    """Open a blob read where the index put it (`length` stored bytes, `raw_length` plain
    bytes, of type `btype`), in a vault whose chunks are at most `chunker_max` bytes."""
    if len(stored) != length:
        raise FormatError(f"{what} is truncated ({len(stored)} of {length} bytes)")
    if btype == DATA and raw_length > chunker_max:
        # No chunk of this vault can be larger: its index entry is damaged or hostile.
        raise FormatError(f"{what}: the index says {raw_length} bytes, more than the vault's "
                          f"largest chunk ({chunker_max})")
    return decode(stored, bid, sealer, what, raw_length)


def decode(stored, bid: BlobId, sealer: Sealer, what: str, raw_length: int | None = None) -> bytes:
    """Open one stored blob and check its id; `what` names it in errors."""
    if len(stored) < 1:
        raise FormatError(f"{what}: empty blob")
    flags = stored[0]
    if flags & ~KNOWN_FLAGS:
        raise FormatError(f"{what}: unknown blob flags {flags:#x}")
    body = memoryview(stored)[1:]
    if flags & ENCRYPTED:
        if not sealer.encrypted:
            raise FormatError(f"{what}: encrypted blob in an unencrypted vault")
        payload = sealer.open(body, bid + bytes((flags,)), what)
    else:
        if sealer.encrypted:
            raise AuthenticationError(f"{what}: unencrypted blob in an encrypted vault")
        payload = body
    if flags & COMPRESSED:
        limit = raw_length if raw_length is not None else MAX_BLOB_PLAINTEXT
        plaintext = limits.zstd_decompress(payload, limit, what)
    else:
        plaintext = bytes(payload)
    if raw_length is not None and len(plaintext) != raw_length:
        raise FormatError(f"{what}: {len(plaintext)} bytes, index says {raw_length}")
    if blob_id(plaintext, sealer.id_key) != bid:
        raise AuthenticationError(f"{what}: content does not match its id")
    return plaintext
