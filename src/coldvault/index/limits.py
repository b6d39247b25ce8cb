"""Bounds on everything decoded from a vault, so hostile bytes cannot exhaust memory."""

from __future__ import annotations

import contextlib
import threading

import msgpack
import zstandard

from coldvault.index.errors import FormatError

MAX_OBJECT = 512 * 1024 * 1024  # largest msgpack document we decode (a huge tree node)
MAX_BIN = 64 * 1024 * 1024
MAX_STR = 1024 * 1024
MAX_ARRAY = 16 * 1024 * 1024
MAX_MAP = 4096
MAX_DEPTH = 32


def unpack(data: bytes, what: str):
    """msgpack-decode `data` with hard limits; names `what` in the error."""
    if len(data) > MAX_OBJECT:
        raise FormatError(f"{what}: {len(data)} bytes is larger than any valid object")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_BIN,
            max_str_len=MAX_STR,
            max_array_len=MAX_ARRAY,
            max_map_len=MAX_MAP,
            max_ext_len=0,
            use_list=True,
        )
    except (ValueError, msgpack.UnpackException, TypeError, RecursionError) as exc:
        raise FormatError(f"{what}: not valid msgpack ({exc})") from None
    _check_depth(obj, what)
    return obj


def _check_depth(obj, what: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH; one level at a time, visiting only the
    containers (msgpack gives plain dicts and lists), as this runs on every tree node."""
    level = [obj] if type(obj) is dict or type(obj) is list else []
    depth = 0
    while level:
        if depth > MAX_DEPTH:
            raise FormatError(f"{what}: nested deeper than {MAX_DEPTH} levels")
        # One comprehension a level, not one per container (a call each: two per tree entry).
        level = [v for o in level for v in (o.values() if type(o) is dict else o)
                 if type(v) is dict or type(v) is list]
        depth += 1


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def expect(cond: bool, what: str, msg: str) -> None:
    if not cond:
        raise FormatError(f"{what}: {msg}")


def check_version(doc: dict, what: str, version: int, known_features: frozenset[str] = frozenset()) -> None:
    """Refuse a structure of a newer version or with features this reader does not know."""
    from coldvault.index.errors import UnknownVersionError

    expect(isinstance(doc, dict), what, "not a map")
    v = doc.get("version")
    expect(isinstance(v, int), what, "no version")
    if v > version:
        raise UnknownVersionError(
            f"{what} is format version {v}; this coldvault reads up to version {version}",
            hint="upgrade coldvault",
        )
    features = doc.get("features", [])
    expect(isinstance(features, list), what, "features is not a list")
    unknown = sorted(set(map(str, features)) - known_features)
    if unknown:
        raise UnknownVersionError(
            f"{what} uses features this coldvault does not know: {', '.join(unknown)}",
            hint="upgrade coldvault",
        )


@contextlib.contextmanager
def hostile(what: str):
    """Decode untrusted structure: a field of the wrong type is damage, not a crash."""
    try:
        yield
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        raise FormatError(f"{what}: malformed ({exc})") from None


ZSTD_STEP = 1024 * 1024  # output read at a time from a frame that does not say its size
_tls = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor: making one per blob cost more than decompressing a small blob."""
    dctx = getattr(_tls, "dctx", None)
    if dctx is None:
        dctx = _tls.dctx = zstandard.ZstdDecompressor()
    return dctx


def zstd_decompress(payload, limit: int, what: str) -> bytes:
    """Decompress one zstd frame, refusing frames that claim (or produce) more than `limit` bytes.

    A frame whose header states its size is refused before any allocation if that size is
    over `limit`; otherwise zstd allocates exactly that size and fails if the frame produces
    a different amount. A frame without a size is decompressed a MiB at a time and cut one
    byte past `limit`, so no frame can make this allocate more than `limit` (plus a step)."""
    try:
        claimed = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{what}: bad compressed data ({exc})") from None
    if claimed > limit:
        raise FormatError(f"{what}: compressed data claims {claimed} bytes, more than {limit}")
    dctx = _decompressor()
    try:
        if claimed >= 0:
            return dctx.decompress(payload)
        out = bytearray()
        with dctx.stream_reader(payload) as reader:
            while len(out) <= limit:
                piece = reader.read(min(ZSTD_STEP, limit + 1 - len(out)))
                if not piece:
                    break
                out += piece
    except zstandard.ZstdError as exc:
        raise FormatError(f"{what}: bad compressed data ({exc})") from None
    if len(out) > limit:
        raise FormatError(f"{what}: compressed data expands past {limit} bytes")
    return bytes(out)
