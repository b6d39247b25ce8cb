"""Envelopes: how every stored object other than a blob is wrapped.

    envelope := "CV" || version:u8 (=1) || flags:u8 || body
    flags    := bit 0 zstd-compressed, bit 1 encrypted
    body     := payload | nonce:12 || ChaCha20-Poly1305(payload), AAD = "coldvault:" || kind
    payload  := msgpack document, zstd-compressed if bit 0

`kind` ("config", "key", "settings", "index", "snapshot", "pack-header", "lock") is
bound into the AEAD, so an object of one kind cannot be passed off as another.
"""

from __future__ import annotations

import zstandard

from coldvault.index import limits
from coldvault.index.blob import COMPRESSED, ENCRYPTED, KNOWN_FLAGS
from coldvault.index.crypto import Sealer
from coldvault.index.errors import FormatError, UnknownVersionError

MAGIC = b"CV"
VERSION = 1


def seal(doc, kind: str, sealer: Sealer, compress: bool = True) -> bytes:
    payload = limits.pack(doc)
    flags = 0
    if compress and len(payload) > 256:
        packed = zstandard.ZstdCompressor(level=3).compress(payload)
        if len(packed) < len(payload):
            payload, flags = packed, COMPRESSED
    if sealer.encrypted:
        flags |= ENCRYPTED
        body = sealer.seal(payload, b"coldvault:" + kind.encode())
    else:
        body = payload
    return MAGIC + bytes((VERSION, flags)) + body


def open_(data: bytes, kind: str, sealer: Sealer, what: str):
    """Decode an envelope of `kind`; `what` names the object in errors."""
    if len(data) < 4 or data[:2] != MAGIC:
        raise FormatError(f"{what}: not a coldvault object (bad magic)")
    if data[2] > VERSION:
        raise UnknownVersionError(f"{what}: envelope version {data[2]} is newer than this coldvault", hint="upgrade coldvault")
    flags = data[3]
    if flags & ~KNOWN_FLAGS:
        raise FormatError(f"{what}: unknown envelope flags {flags:#x}")
    body = data[4:]
    if flags & ENCRYPTED:
        if not sealer.encrypted:
            raise FormatError(f"{what}: encrypted object, but the vault has no key")
        payload = sealer.open(body, b"coldvault:" + kind.encode(), what)
    else:
        if sealer.encrypted and kind not in ("config", "key"):  # read before the password
            raise FormatError(f"{what}: unencrypted object in an encrypted vault")
        payload = body
    if flags & COMPRESSED:
        payload = limits.zstd_decompress(payload, limits.MAX_OBJECT, what)
    return limits.unpack(payload, what)
