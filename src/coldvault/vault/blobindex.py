"""The in-memory index of a vault: blob id -> where it is stored.

Callers use the methods below and never the tables behind them.

The tables are numpy arrays, not Python objects (issue 10: a 10 TB vault holds about
10 million blobs). Blobs: one row per blob id, sorted by id, in parallel columns

    hi, lo      the id as two big-endian u64 (its first and last 8 bytes): the sort key
    pack        u32, a row of the pack table
    offset      u64      length, raw_length  u32      type  u8

37 bytes per blob, with no object per blob for the cycle GC to walk. Packs: one row
per pack (hi, lo, kind u8, size u64) and the order that sorts them by id. A lookup is a
binary search (`searchsorted`) on `hi`, then a compare of `lo`.

`add_table` merges a whole index object at once (concatenate, one stable sort, first
row of each id kept: the first index loaded wins, docs/format.md 6.4). `add_pack`, one
pack at a time during a backup, goes to a small dict overlay that is merged into the
tables once it grows past a quarter of them (so merges cost O(n log n) in all).

Readers run on several threads while a backup adds packs: the tables and the overlay
are published together as one tuple (`_state`), replaced whole by a merge; a reader
takes the tuple once, and looks in the overlay before the tables (an entry merged
from the overlay is in the new tables before the overlay is dropped).

Over 400 lines on purpose: the table layout, the merge and every lookup read the
same columns; apart, each would need to know the others' layout.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from coldvault.index.ids import BlobId, PackId
from coldvault.index.pack import PACK_KINDS, BlobEntry, object_name
from coldvault.index.packindex import KIND_CODES, IndexTable, PackRecord

MERGE_AT = 100_000  # overlay entries merged into the tables once past this and a quarter of them


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


def _split_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) native u64 columns of an array of 16-byte ids (V16)."""
    v = np.ascontiguousarray(ids).view(">u8").reshape(-1, 2)
    return v[:, 0].astype(np.uint64), v[:, 1].astype(np.uint64)


def _mv(a: np.ndarray) -> memoryview:
    """A 1-d native-endian numpy column as a memoryview of Python ints."""
    a = np.ascontiguousarray(a)
    return memoryview(a).cast("B").cast(a.dtype.char)


def _key(bid: bytes) -> tuple[int, int]:
    return int.from_bytes(bid[:8], "big"), int.from_bytes(bid[8:16], "big")


class _Tables:
    """The merged, sorted tables; never changed once published."""

    __slots__ = ("hi", "lo", "pack", "offset", "length", "raw", "type",
                 "pk_hi", "pk_lo", "pk_kind", "pk_size", "pk_order", "pk_sorted_hi", "pk_hex", "_mv")

    def __init__(self, blobs: dict, packs: dict):
        self.hi, self.lo = blobs["hi"], blobs["lo"]
        self.pack, self.offset, self.length = blobs["pack"], blobs["offset"], blobs["length"]
        self.raw, self.type = blobs["raw"], blobs["type"]
        self.pk_hi, self.pk_lo, self.pk_kind, self.pk_size = packs["hi"], packs["lo"], packs["kind"], packs["size"]
        self.pk_order = np.lexsort((self.pk_lo, self.pk_hi))
        self.pk_sorted_hi = self.pk_hi[self.pk_order]
        self.pk_hex: list[str] | None = None  # pack ids as hex, made when first needed
        # The same columns as memoryviews: one row read as Python ints without numpy's
        # per-call overhead (a lookup is a bisect of `hi`, a few microseconds).
        self._mv = tuple(_mv(a) for a in (self.hi, self.lo, self.pack, self.offset, self.length, self.raw, self.type))

    @classmethod
    def empty(cls) -> "_Tables":
        u8, u32, u64 = np.uint8, np.uint32, np.uint64
        z = np.zeros
        return cls({"hi": z(0, u64), "lo": z(0, u64), "pack": z(0, u32), "offset": z(0, u64),
                    "length": z(0, u32), "raw": z(0, u32), "type": z(0, u8)},
                   {"hi": z(0, u64), "lo": z(0, u64), "kind": z(0, u8), "size": z(0, u64)})

    def __len__(self) -> int:
        return len(self.hi)

    def find(self, bid: bytes) -> int:
        """Row of `bid`, or -1."""
        hi, lo = _key(bid)
        hi_col, lo_col = self._mv[0], self._mv[1]
        i = bisect_left(hi_col, hi)
        n = len(hi_col)
        while i < n and hi_col[i] == hi:
            if lo_col[i] == lo:
                return i
            i += 1
        return -1

    def row(self, i: int) -> tuple[int, int, int, int, int]:
        """(pack row, offset, length, raw_length, type) of row `i`."""
        _, _, pack, offset, length, raw, btype = self._mv
        return pack[i], offset[i], length[i], raw[i], btype[i]

    def find_many(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """For each key, whether it is in the table (vectorised)."""
        if not len(self.hi):
            return np.zeros(len(hi), dtype=bool)
        start = self.hi.searchsorted(hi, side="left")
        stop = self.hi.searchsorted(hi, side="right")
        found = np.zeros(len(hi), dtype=bool)
        single = stop - start == 1
        found[single] = self.lo[start[single]] == lo[single]
        for j in np.flatnonzero(stop - start > 1):  # ids sharing their first 8 bytes: rare
            found[j] = bool((self.lo[start[j]:stop[j]] == lo[j]).any())
        return found

    def pack_row(self, pid: str) -> int:
        if len(pid) != 32:
            return -1
        hi, lo = _key(bytes.fromhex(pid))
        order, keys = self.pk_order, self.pk_sorted_hi
        i = int(keys.searchsorted(np.uint64(hi)))
        while i < len(order) and int(keys[i]) == hi:
            if int(self.pk_lo[order[i]]) == lo:
                return int(order[i])
            i += 1
        return -1

    def pack_hex(self, row: int) -> str:
        if self.pk_hex is not None:
            return self.pk_hex[row]
        return (int(self.pk_hi[row]).to_bytes(8, "big") + int(self.pk_lo[row]).to_bytes(8, "big")).hex()

    def all_pack_hex(self) -> list[str]:
        if self.pk_hex is None:
            ids = np.empty((len(self.pk_hi), 2), dtype=">u8")
            ids[:, 0], ids[:, 1] = self.pk_hi, self.pk_lo
            h = ids.tobytes().hex()
            self.pk_hex = [h[i:i + 32] for i in range(0, len(h), 32)]
        return self.pk_hex


class _Overlay:
    """Packs and blobs added one pack at a time since the last merge."""

    __slots__ = ("base", "blobs", "packs", "pack_rows")

    def __init__(self, base: int):
        self.base = base  # pack rows of the overlay start here (after the tables' packs)
        self.blobs: dict[bytes, tuple] = {}  # id -> (pack row, offset, length, raw_length, type)
        self.packs: list[tuple[str, str, int]] = []  # (pack id, kind, size), row = base + position
        self.pack_rows: dict[str, int] = {}


class BlobIndex:
    def __init__(self):
        t = _Tables.empty()
        self._state: tuple[_Tables, _Overlay] = (t, _Overlay(0))
        self.index_ids: set[str] = set()
        # Pending (write-ahead) index objects, and what their records turned out to be:
        self.pending_ids: set[str] = set()
        self.adopted: list[PackRecord] = []  # packs stored by a run that had not committed: reusable
        self.adoptable: set[str] = set()  # pending index ids whose packs are all among `adopted`
        self._lock = threading.Lock()

    # ---- adding -------------------------------------------------------------------------

    def add_pack(self, rec: PackRecord) -> None:
        """One pack's record (a backup's new pack, a pending checkpoint's verified pack)."""
        with self._lock:
            t, ov = self._state
            row = self._pack_row(t, ov, rec.id)
            if row < 0:
                row = ov.base + len(ov.packs)
                ov.packs.append((rec.id, rec.kind, rec.size))
                ov.pack_rows[rec.id] = row
            if rec.blobs:
                ids = [b.id for b in rec.blobs]
                hi, lo = _split_ids(np.frombuffer(b"".join(ids), dtype="V16"))
                known = t.find_many(hi, lo)
                blobs = ov.blobs
                for b, k in zip(rec.blobs, known.tolist()):
                    if not k and b.id not in blobs:
                        blobs[b.id] = (row, b.offset, b.length, b.raw_length, b.type)
            if len(ov.blobs) > max(MERGE_AT, len(t) // 4):
                self._merge([])

    def add_table(self, table: IndexTable) -> None:
        """Every record of one index object (`IndexDoc.table`), merged at once."""
        self.add_tables([table])

    def add_tables(self, tables: list[IndexTable]) -> None:
        """The records of several index objects, merged in one sort; on a blob id given
        twice, the table earlier in the list wins (and anything indexed before them).
        Empties `tables` as it copies them, so that each one's memory is freed (if the
        caller holds no other reference) before the sort: the peak stays near one copy."""
        with self._lock:
            todo = [t for t in tables if len(t.packs) or len(t.blobs)]
            tables.clear()
            self._merge(todo)

    def _merge(self, tables: list[IndexTable]) -> None:
        """Tables, then overlay, then `tables` (in this order of precedence) into new tables."""
        t, ov = self._state
        # Packs: the tables' rows stay; then the overlay's (whose rows follow them); then
        # the new tables' packs, each id once (first wins), rows renumbered accordingly.
        ov_ids = np.frombuffer(b"".join(bytes.fromhex(p) for p, _, _ in ov.packs), dtype="V16")
        hi, lo = _split_ids(np.concatenate([ov_ids] + [tb.packs["id"] for tb in tables]))
        kinds = np.concatenate([np.array([KIND_CODES[k] for _, k, _ in ov.packs], dtype=np.uint8)]
                               + [tb.packs["kind"] for tb in tables])
        sizes = np.concatenate([np.array([s for _, _, s in ov.packs], dtype=np.uint64)]
                               + [tb.packs["size"].astype(np.uint64) for tb in tables])
        all_hi = np.concatenate([t.pk_hi, hi])
        all_lo = np.concatenate([t.pk_lo, lo])
        all_kind = np.concatenate([t.pk_kind, kinds])
        all_size = np.concatenate([t.pk_size, sizes])
        order = np.lexsort((np.arange(len(all_hi)), all_lo, all_hi))
        s_hi, s_lo = all_hi[order], all_lo[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (s_hi[1:] != s_hi[:-1]) | (s_lo[1:] != s_lo[:-1])
        canon = np.empty(len(order), dtype=np.int64)  # row -> the row of the first with its id
        group = np.cumsum(first) - 1
        canon[order] = order[first][group]
        keep = np.sort(order[first])  # unique rows, in their first-seen order
        new_row = np.full(len(order), -1, dtype=np.int64)
        new_row[keep] = np.arange(len(keep))
        remap = new_row[canon]  # old row -> new row
        packs = {"hi": all_hi[keep], "lo": all_lo[keep], "kind": all_kind[keep], "size": all_size[keep]}

        # Blobs: the tables (sorted), the overlay, the new tables, copied into columns
        # made once (each new table is dropped once copied); then one stable sort.
        items = list(ov.blobs.items())
        total = len(t) + len(items) + sum(len(tb.blobs) for tb in tables)
        dtypes = {"hi": np.uint64, "lo": np.uint64, "pack": np.uint32, "offset": np.uint64,
                  "length": np.uint32, "raw": np.uint32, "type": np.uint8}
        blobs = {k: np.empty(total, dtype=dt) for k, dt in dtypes.items()}
        for k in blobs:
            blobs[k][:len(t)] = getattr(t, k)
        at = len(t)
        if items:
            ohi, olo = _split_ids(np.frombuffer(b"".join(k for k, _ in items), dtype="V16"))
            vals = np.array([v for _, v in items], dtype=np.uint64)
            end = at + len(items)
            blobs["hi"][at:end], blobs["lo"][at:end] = ohi, olo
            blobs["pack"][at:end] = remap[vals[:, 0].astype(np.int64)]
            blobs["offset"][at:end], blobs["length"][at:end] = vals[:, 1], vals[:, 2]
            blobs["raw"][at:end], blobs["type"][at:end] = vals[:, 3], vals[:, 4]
            at = end
            del ohi, olo, vals
        base = len(t.pk_hi) + len(ov.packs)
        tables.reverse()
        while tables:
            tb = tables.pop()  # the first left, and no longer referenced here once copied
            b = tb.blobs
            end = at + len(b)
            blobs["hi"][at:end], blobs["lo"][at:end] = _split_ids(b["id"])
            blobs["pack"][at:end] = remap[base + b["pack"].astype(np.int64)]
            blobs["offset"][at:end], blobs["length"][at:end] = b["offset"], b["length"]
            blobs["raw"][at:end], blobs["type"][at:end] = b["raw_length"], b["type"]
            at, base = end, base + len(tb.packs)
            del tb, b
        order = _sort_order(blobs["hi"], blobs["lo"])
        for k in blobs:
            blobs[k] = blobs[k][order]
        del order
        s_hi, s_lo = blobs["hi"], blobs["lo"]
        dup = (s_hi[1:] == s_hi[:-1]) & (s_lo[1:] == s_lo[:-1])
        if dup.any():  # the same blob in two records: the first one loaded stays
            first = np.ones(len(s_hi), dtype=bool)
            first[1:] = ~dup
            for k in blobs:
                blobs[k] = blobs[k][first]
        self._state = (_Tables(blobs, packs), _Overlay(len(packs["hi"])))

    # ---- blobs ------------------------------------------------------------------------

    def _row(self, bid: bytes):
        """(tables, overlay, row in the tables or -1, overlay tuple or None)."""
        t, ov = self._state
        o = ov.blobs.get(bid)
        if o is not None:
            return t, ov, -1, o
        return t, ov, t.find(bid), None

    def __contains__(self, bid: bytes) -> bool:
        t, ov = self._state
        return bid in ov.blobs or t.find(bid) >= 0

    def __len__(self) -> int:
        t, ov = self._state
        return len(t) + len(ov.blobs)

    def contains_all(self, bids: Iterable[bytes]) -> bool:
        bids = list(bids)
        if not bids:
            return True
        t, ov = self._state
        rest = [b for b in bids if b not in ov.blobs]
        if not rest:
            return True
        if len(rest) < 8:
            return all(t.find(b) >= 0 for b in rest)
        hi, lo = _split_ids(np.frombuffer(b"".join(rest), dtype="V16"))
        return bool(t.find_many(hi, lo).all())

    def lookup(self, bid: BlobId) -> Location | None:
        t, ov, i, o = self._row(bid)
        if o is not None:
            pid, kind, _ = self._pack_at(t, ov, o[0])
            return Location(pid, kind, o[1], o[2], o[3], o[4])
        if i < 0:
            return None
        pk, off, length, raw, btype = t.row(i)
        pid, kind, _ = self._pack_at(t, ov, pk)
        return Location(pid, kind, off, length, raw, btype)

    def raw_length(self, bid: BlobId) -> int | None:
        t, ov, i, o = self._row(bid)
        if o is not None:
            return o[3]
        return None if i < 0 else t.row(i)[3]

    def pack_of(self, bid: BlobId) -> PackId | None:
        t, ov, i, o = self._row(bid)
        if o is not None:
            return self._pack_at(t, ov, o[0])[0]
        return None if i < 0 else self._pack_at(t, ov, t.row(i)[0])[0]

    def blobs_by_pack(self, pids: Iterable[str] | None = None) -> dict[str, list[BlobEntry]]:
        """The entries this index uses, grouped by pack (all packs, or those in `pids`), each
        pack's in offset order. A pack that holds no indexed blob is absent."""
        t, ov = self._state
        if pids is None:
            rows = np.arange(len(t))
        else:
            wanted = [r for r in (self._pack_row(t, ov, p) for p in set(pids)) if 0 <= r < len(t.pk_hi)]
            rows = np.flatnonzero(np.isin(t.pack, np.array(wanted, dtype=np.uint32))) if wanted else np.zeros(0, int)
        out: dict[str, list[BlobEntry]] = {}
        with _gc_paused():  # one object per entry: no cycle collection while they are made
            self._entries(t, rows, out)
        wanted_set = None if pids is None else set(pids)
        extra: dict[str, list[BlobEntry]] = {}
        for bid, (row, off, ln, raw, ty) in list(ov.blobs.items()):
            pid = self._pack_at(t, ov, row)[0]
            if wanted_set is None or pid in wanted_set:
                extra.setdefault(pid, []).append(BlobEntry(bid, ty, off, ln, raw))
        for pid, entries in extra.items():
            merged = out.setdefault(pid, []) + entries
            out[pid] = sorted(merged, key=lambda e: e.offset)
        return out

    @staticmethod
    def _entries(t: _Tables, rows: np.ndarray, out: dict[str, list[BlobEntry]]) -> None:
        if len(rows):
            rows = rows[np.lexsort((t.offset[rows], t.pack[rows]))]
            ids = np.empty((len(rows), 2), dtype=">u8")
            ids[:, 0], ids[:, 1] = t.hi[rows], t.lo[rows]
            raw_ids = ids.tobytes()
            names = t.all_pack_hex()
            for j, (pk, off, ln, raw, ty) in enumerate(zip(t.pack[rows].tolist(), t.offset[rows].tolist(),
                                                           t.length[rows].tolist(), t.raw[rows].tolist(),
                                                           t.type[rows].tolist())):
                out.setdefault(names[pk], []).append(BlobEntry(BlobId(raw_ids[16 * j:16 * j + 16]), ty, off, ln, raw))

    # ---- packs ------------------------------------------------------------------------

    @staticmethod
    def _pack_row(t: _Tables, ov: _Overlay, pid: str) -> int:
        row = ov.pack_rows.get(pid)
        return row if row is not None else t.pack_row(pid)

    @staticmethod
    def _pack_at(t: _Tables, ov: _Overlay, row: int) -> tuple[str, str, int]:
        if row < len(t.pk_hi):
            return t.pack_hex(row), PACK_KINDS[int(t.pk_kind[row])], int(t.pk_size[row])
        return ov.packs[row - ov.base]

    def has_pack(self, pid: str) -> bool:
        t, ov = self._state
        return self._pack_row(t, ov, pid) >= 0

    def pack(self, pid: str) -> tuple[str, int] | None:
        """(kind, size) of an indexed pack."""
        t, ov = self._state
        row = self._pack_row(t, ov, pid)
        if row < 0:
            return None
        _, kind, size = self._pack_at(t, ov, row)
        return kind, size

    def packs(self) -> Iterator[tuple[str, str, int]]:
        """(pack id, kind, size) of every indexed pack."""
        t, ov = self._state
        kinds = [PACK_KINDS[k] for k in range(len(PACK_KINDS))]
        yield from zip(t.all_pack_hex(), (kinds[k] for k in t.pk_kind.tolist()), t.pk_size.tolist())
        yield from list(ov.packs)

    def pack_count(self) -> int:
        t, ov = self._state
        return len(t.pk_hi) + len(ov.packs)

    def memory_bytes(self) -> int:
        """Bytes held by the tables (for benchmarks)."""
        t, _ = self._state
        return sum(getattr(t, a).nbytes for a in ("hi", "lo", "pack", "offset", "length", "raw", "type",
                                                   "pk_hi", "pk_lo", "pk_kind", "pk_size", "pk_order", "pk_sorted_hi"))


@contextlib.contextmanager
def _gc_paused():
    """No cycle collection inside (restored after): making millions of small objects
    would otherwise trigger collections that walk all of them again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _sort_order(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The stable order of rows by (hi, lo). Index objects hold their rows sorted by id,
    so `hi` is a few sorted runs, which the stable sort merges quickly; rows sharing `hi`
    (the same blob in two objects, or two ids with the same first 8 bytes) are then
    ordered by `lo`, keeping their order among equal ids."""
    order = np.argsort(hi, kind="stable")
    s = hi[order]
    eq = s[1:] == s[:-1]
    if eq.any():
        tie = np.zeros(len(s), dtype=bool)
        tie[1:] |= eq
        tie[:-1] |= eq
        at = np.flatnonzero(tie)
        rows = order[at]  # runs of equal hi, in slots of their own; ordered by (lo, row) within
        order[at] = rows[np.lexsort((rows, lo[rows], hi[rows]))]
    return order


class Deduper:
    """Which blobs this run must store: those in neither the index nor claimed earlier."""

    def __init__(self, index: BlobIndex):
        self._index = index
        self._claimed: set[bytes] = set()
        self._lock = threading.Lock()

    def claim(self, bid: bytes) -> bool:
        """True exactly once for each blob id the vault does not have yet."""
        if bid in self._index:
            return False
        with self._lock:
            if bid in self._claimed:
                return False
            self._claimed.add(bid)
            return True
