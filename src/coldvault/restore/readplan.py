"""Which ranged reads fetch a set of blobs: blobs close together in one pack share a read.

A restore of many small files needs many small blobs that the backup wrote side by
side; one GET per blob would cost a request (and, on S3, its latency and price)
per file. `coalesce` sorts the blobs of each pack by offset and merges neighbours
into one read while the gap between them and the read's total length stay within
bounds: bytes of a small gap cost less than another request. Pure planning, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Generic, Iterable, TypeVar

MiB = 1024 * 1024
READ_MAX = 8 * MiB  # one read covers at most this many bytes (or one blob, if larger)
GAP_MAX = 1 * MiB  # bytes between two needed blobs that are read rather than skipped
BLOBS_MAX = 256  # blobs per read: more reads let more threads decode and write at once

K = TypeVar("K")
_offset_length = itemgetter(0, 1)


@dataclass
class Read(Generic[K]):
    """One ranged read of `pack`: `length` bytes from `start`, holding the blobs `parts`,
    each (offset in the pack, stored length, key)."""

    pack: str
    start: int
    length: int
    parts: list[tuple[int, int, K]] = field(default_factory=list)


def coalesce(blobs: Iterable[tuple[str, int, int, K]], read_max: int = READ_MAX, gap_max: int = GAP_MAX,
             blobs_max: int = BLOBS_MAX) -> list[Read[K]]:
    """Reads for `blobs`, each (pack, offset, length, key); grouped by pack, in offset order.

    A blob longer than `read_max` gets a read of its own. Two blobs of one pack share a
    read when the gap between them is at most `gap_max`, the read stays within
    `read_max` bytes and holds at most `blobs_max` blobs.
    """
    by_pack: dict[str, list[tuple[int, int, K]]] = {}
    for pack, offset, length, key in blobs:
        by_pack.setdefault(pack, []).append((offset, length, key))
    reads: list[Read[K]] = []
    for pack in sorted(by_pack):
        parts = sorted(by_pack[pack], key=_offset_length)
        cur: Read[K] | None = None
        end = 0
        for offset, length, key in parts:
            if (cur is not None and offset - end <= gap_max and max(end, offset + length) - cur.start <= read_max
                    and len(cur.parts) < blobs_max):
                cur.parts.append((offset, length, key))
                end = max(end, offset + length)
                cur.length = end - cur.start
                continue
            cur = Read(pack, offset, length, [(offset, length, key)])
            end = offset + length
            reads.append(cur)
    return reads
