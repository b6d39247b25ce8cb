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

`add_tables` merges whole index objects at once, as they are decoded: their rows are
copied into columns made once (each object freed as soon as it is copied), sorted by id
(equal ids in the order loaded, the first row of each kept: the first index loaded wins,
docs/format.md 6.4) and, when there are tables already, inserted among their rows (`np.insert` at
`searchsorted` positions: one pass, no sort of the old rows). `add_pack`, one pack at a
time during a backup, goes to a small dict overlay that is merged into the tables once it
grows past an eighth of them (so merges cost O(n log n) in all). An overlay entry is
the blob id and its row packed in one 21-byte bytes object (OVERLAY_ROW): about 160
bytes with the id and the dict's share (tracemalloc), where a tuple of five ints took
about 320; a first backup of millions of small files holds up to an eighth of its
blobs there. `columns` and
`use_columns` hand the tables to and from the local index cache (vault/indexcache.py),
whose memory-mapped, read-only columns serve as tables unchanged.

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
import struct
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from coldvault.index.ids import BlobId, PackId
from coldvault.index.pack import PACK_KINDS, BlobEntry, object_name
from coldvault.index.packindex import KIND_CODES, IndexTable, PackRecord

MERGE_AT = 20_000  # overlay entries merged into the tables once past this and an eighth of them
MERGE_SHARE = 8
PARALLEL_ROWS = 1 << 20  # merges of more rows than this gather their columns on two threads
# An overlay entry's row, packed: pack row, offset, length, raw_length, type.
OVERLAY_ROW = struct.Struct("<IQIIB")
OVERLAY_DTYPE = np.dtype([("pack", "<u4"), ("offset", "<u8"), ("length", "<u4"), ("raw", "<u4"), ("type", "u1")])
assert OVERLAY_DTYPE.itemsize == OVERLAY_ROW.size


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
                 "pk_hi", "pk_lo", "pk_kind", "pk_size", "pk_order", "pk_sorted_hi", "pk_hex", "_mv", "done_with")

    def __init__(self, blobs: dict, packs: dict):
        """`blobs`: BLOB_COLUMNS, sorted by (hi, lo), each id once; `packs`: PACK_COLUMNS,
        with "order" and "sorted_hi" (the rows sorted by id, and their `hi`) if known."""
        self.hi, self.lo = blobs["hi"], blobs["lo"]
        self.pack, self.offset, self.length = blobs["pack"], blobs["offset"], blobs["length"]
        self.raw, self.type = blobs["raw"], blobs["type"]
        self.pk_hi, self.pk_lo, self.pk_kind, self.pk_size = packs["hi"], packs["lo"], packs["kind"], packs["size"]
        order = packs.get("order")
        self.pk_order = np.lexsort((self.pk_lo, self.pk_hi)) if order is None else order
        sorted_hi = packs.get("sorted_hi")
        self.pk_sorted_hi = self.pk_hi[self.pk_order] if sorted_hi is None else sorted_hi
        self.pk_hex: list[str] | None = None  # pack ids as hex, made when first needed
        self.done_with = None  # memory-mapped columns: done_with(name) gives their pages back once copied
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

    def pack_hexes(self, rows: list[int]) -> dict[int, str]:
        """`pack_hex` of each of `rows`: for a command that meets a few packs of many
        (`all_pack_hex` of a 10 TB vault's 625,000 packs costs 0.7 s and 80 MB)."""
        return {r: self.pack_hex(r) for r in set(rows)}

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
        self.blobs: dict[bytes, bytes] = {}  # id -> OVERLAY_ROW of (pack row, offset, length, raw_length, type)
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
                pack = OVERLAY_ROW.pack
                for b, k in zip(rec.blobs, known.tolist()):
                    if not k and b.id not in blobs:
                        blobs[b.id] = pack(row, b.offset, b.length, b.raw_length, b.type)
            if len(ov.blobs) > max(MERGE_AT, len(t) // MERGE_SHARE):
                self._merge([])

    def add_table(self, table: IndexTable) -> None:
        """Every record of one index object (`IndexDoc.table`), merged at once."""
        self.add_tables([table])

    def add_tables(self, tables: Iterable[IndexTable], capacity: int | None = None) -> None:
        """The records of several index objects, merged at once; on a blob id given twice,
        the table earlier in the order wins (and anything indexed before them).

        `tables` may be a list (emptied as it is read) or an iterator (index objects as they
        are decoded): each table is copied into columns made once and dropped, so the peak
        is about one copy of the records, not every decoded object and the merged copy.
        `capacity`: an upper bound of their blob records, if known (else it is counted for a
        list, or the columns grow as needed)."""
        if isinstance(tables, list):
            if capacity is None:
                capacity = sum(len(t.blobs) for t in tables)
            todo = tables[::-1]
            tables.clear()

            def popped():
                while todo:
                    yield todo.pop()  # no reference kept here once merged

            tables = popped()
        with self._lock:
            self._merge(tables, capacity or 0)

    def use_columns(self, blobs: dict, packs: dict, done_with=None) -> None:
        """Start from these tables (columns as `columns()` gives them, e.g. memory-mapped from
        the local index cache); only on an index that holds nothing yet. `done_with(name)`,
        if given, is called once a merge has copied blob column `name` into a new table (a
        mapped file's pages are then dropped from the process: they would count twice)."""
        with self._lock:
            t, ov = self._state
            assert not len(t) and not len(t.pk_hi) and not ov.packs and not ov.blobs
            tables = _Tables(blobs, packs)
            tables.done_with = done_with
            self._state = (tables, _Overlay(len(tables.pk_hi)))

    def columns(self) -> tuple[dict, dict] | None:
        """The merged tables as columns (BLOB_COLUMNS; PACK_COLUMNS and "order", "sorted_hi"),
        or None while packs added one at a time are not merged into them yet."""
        t, ov = self._state
        if ov.packs or ov.blobs:
            return None
        blobs = {k: getattr(t, k) for k in BLOB_COLUMNS}
        packs = {"hi": t.pk_hi, "lo": t.pk_lo, "kind": t.pk_kind, "size": t.pk_size,
                 "order": t.pk_order, "sorted_hi": t.pk_sorted_hi}
        return blobs, packs

    def _merge(self, tables: Iterable[IndexTable], capacity: int = 0) -> None:
        """Tables, then overlay, then `tables` (in this order of precedence) into new tables.

        The new rows (overlay and `tables`) are copied into columns of their own, sorted and
        cut to one row per id; then, if there are tables already, inserted among their rows
        (`np.insert` at `searchsorted` positions: one pass over them, no sort of them)."""
        t, ov = self._state
        rows = _Rows(capacity + len(ov.blobs))
        # Pack rows: the tables', then the overlay's (whose rows follow them), then each new
        # table's, numbered in that order; made unique (first wins) once all are known.
        pk_ids = [np.frombuffer(b"".join(bytes.fromhex(p) for p, _, _ in ov.packs), dtype="V16")]
        pk_kinds = [np.array([KIND_CODES[k] for _, k, _ in ov.packs], dtype=np.uint8)]
        pk_sizes = [np.array([s for _, _, s in ov.packs], dtype=np.uint64)]
        if ov.blobs:
            vals = np.frombuffer(b"".join(ov.blobs.values()), dtype=OVERLAY_DTYPE)
            rows.append(np.frombuffer(b"".join(ov.blobs), dtype="V16"), vals["pack"], vals["offset"],
                        vals["length"], vals["raw"], vals["type"])
            del vals
        base = len(t.pk_hi) + len(ov.packs)
        for tb in tables:
            b = tb.blobs
            rows.append(b["id"], base + b["pack"].astype(np.int64), b["offset"], b["length"], b["raw_length"],
                        b["type"])
            pk_ids.append(tb.packs["id"])
            pk_kinds.append(tb.packs["kind"])
            pk_sizes.append(tb.packs["size"].astype(np.uint64))
            base += len(tb.packs)
            del tb, b  # the decoded object is freed here (the caller keeps no reference)
        hi, lo = _split_ids(np.concatenate(pk_ids))
        all_hi = np.concatenate([t.pk_hi, hi])
        all_lo = np.concatenate([t.pk_lo, lo])
        all_kind = np.concatenate([t.pk_kind] + pk_kinds)
        all_size = np.concatenate([t.pk_size] + pk_sizes)
        del hi, lo, pk_ids, pk_kinds, pk_sizes
        order, s_hi, _ = _sort_order(all_hi, all_lo)
        s_lo = all_lo[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (s_hi[1:] != s_hi[:-1]) | (s_lo[1:] != s_lo[:-1])
        canon = np.empty(len(order), dtype=np.int64)  # row -> the row of the first with its id
        group = np.cumsum(first) - 1
        canon[order] = order[first][group]
        keep = np.sort(order[first])  # unique rows, in their first-seen order (the tables' stay)
        new_row = np.full(len(order), -1, dtype=np.int64)
        new_row[keep] = np.arange(len(keep))
        remap = new_row[canon].astype(np.uint32)  # old row -> new row
        # The unique rows sorted by id are order[first]: their new rows are the tables' pack order.
        packs = {"hi": all_hi[keep], "lo": all_lo[keep], "kind": all_kind[keep], "size": all_size[keep],
                 "order": new_row[order[first]], "sorted_hi": s_hi[first]}
        del order, s_hi, s_lo, first, canon, group, keep, new_row, all_hi, all_lo, all_kind, all_size

        new = rows.finish(remap)
        del rows
        if len(t):
            found = t.find_many(new["hi"], new["lo"])
            if found.any():  # the tables' word stands
                for k in new:
                    new[k] = new[k][~found]
            del found
            blobs = _insert_sorted(t, new) if len(new["hi"]) else {k: getattr(t, k) for k in BLOB_COLUMNS}
        else:
            blobs = new
        self._state = (_Tables(blobs, packs), _Overlay(len(packs["hi"])))

    # ---- blobs ------------------------------------------------------------------------

    def _row(self, bid: bytes):
        """(tables, overlay, row in the tables or -1, overlay tuple or None)."""
        t, ov = self._state
        o = ov.blobs.get(bid)
        if o is not None:
            return t, ov, -1, OVERLAY_ROW.unpack(o)
        return t, ov, t.find(bid), None

    def __contains__(self, bid: bytes) -> bool:
        t, ov = self._state
        return bid in ov.blobs or t.find(bid) >= 0

    def __len__(self) -> int:
        t, ov = self._state
        return len(t) + len(ov.blobs)

    def holds_any(self, table: IndexTable) -> bool:
        """Whether any blob or pack that `table` names is in the merged tables."""
        t, _ = self._state
        if len(table.blobs) and t.find_many(*_split_ids(table.blobs["id"])).any():
            return True
        if not len(table.packs) or not len(t.pk_hi):
            return False
        hi, lo = _split_ids(table.packs["id"])
        at = np.minimum(t.pk_sorted_hi.searchsorted(hi), len(t.pk_hi) - 1)
        for j in np.flatnonzero(t.pk_sorted_hi[at] == hi):  # a candidate: compare the whole id
            if t.pack_row(bytes(table.packs["id"][j]).hex()) >= 0:
                return True
        return False

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

    def lookup_many(self, bids: list[bytes]) -> list[Location | None]:
        """`lookup` of each of `bids`, in one vectorised search: for thousands of ids at a
        time (a restore's walk), where a search per id costs more than the numpy calls."""
        t, ov = self._state
        out: list[Location | None] = [None] * len(bids)
        rest = []
        for j, bid in enumerate(bids):
            packed = ov.blobs.get(bid)
            if packed is not None:
                row, off, length, raw, btype = OVERLAY_ROW.unpack(packed)
                pid, kind, _ = self._pack_at(t, ov, row)
                out[j] = Location(pid, kind, off, length, raw, btype)
            else:
                rest.append(j)
        if not rest or not len(t):
            return out
        rows = self._rows_of(t, [bids[j] for j in rest])
        found = np.flatnonzero(rows >= 0)
        r = rows[found]
        pk = t.pack[r]
        pks = pk.tolist()
        hexes = t.pack_hexes(pks)
        for k, p, kind, off, length, raw, btype in zip(found.tolist(), pks, t.pk_kind[pk].tolist(),
                                                        t.offset[r].tolist(), t.length[r].tolist(), t.raw[r].tolist(),
                                                        t.type[r].tolist()):
            out[rest[k]] = Location(hexes[p], PACK_KINDS[kind], off, length, raw, btype)
        return out

    def pack_names(self, bids: list[bytes]) -> tuple[set[str], int | None]:
        """The object names of the packs holding `bids`, and the position in `bids` of the
        first one not indexed (None: all are). One vectorised search, and no object per id:
        a restore's check needs only which packs its files use."""
        t, ov = self._state
        names: set[str] = set()
        rest = []
        for j, bid in enumerate(bids):
            packed = ov.blobs.get(bid)
            if packed is not None:
                pid, kind, _ = self._pack_at(t, ov, OVERLAY_ROW.unpack(packed)[0])
                names.add(object_name(kind, pid))
            else:
                rest.append(j)
        if not rest:
            return names, None
        rows = self._rows_of(t, [bids[j] for j in rest]) if len(t) else np.full(len(rest), -1, dtype=np.int64)
        missing = np.flatnonzero(rows < 0)
        for p in np.unique(t.pack[rows[rows >= 0]]).tolist() if len(t) else []:
            names.add(object_name(PACK_KINDS[int(t.pk_kind[p])], t.pack_hex(p)))
        return names, (rest[int(missing[0])] if len(missing) else None)

    @staticmethod
    def _rows_of(t: _Tables, bids: list[bytes]) -> np.ndarray:
        """The row of each of `bids` in the tables `t` (not empty), -1 where absent."""
        hi, lo = _split_ids(np.frombuffer(b"".join(bids), dtype="V16"))
        start = t.hi.searchsorted(hi, side="left")
        stop = t.hi.searchsorted(hi, side="right")
        rows = np.full(len(bids), -1, dtype=np.int64)
        single = stop - start == 1
        hit = single.copy()
        hit[single] = t.lo[start[single]] == lo[single]
        rows[hit] = start[hit]
        for k in np.flatnonzero(stop - start > 1):  # ids sharing their first 8 bytes: rare
            same = np.flatnonzero(t.lo[start[k]:stop[k]] == lo[k])
            if len(same):
                rows[k] = start[k] + same[0]
        return rows

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
        for bid, packed in list(ov.blobs.items()):
            row, off, ln, raw, ty = OVERLAY_ROW.unpack(packed)
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


def _sort_order(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The order of rows by (hi, lo), rows of the same id kept in their order; `hi` in that
    order; whether any two rows share `hi`. numpy's default sort (vectorised, not stable:
    several times faster than the stable one on 10 million ids) orders `hi`; rows sharing it
    (the same blob in two objects, or two ids with the same first 8 bytes) are then put in
    order by (lo, row) in the slots they take."""
    order = np.argsort(hi)
    s = hi[order]
    eq = s[1:] == s[:-1]
    ties = bool(eq.any())
    if ties:
        tie = np.zeros(len(s), dtype=bool)
        tie[1:] |= eq
        tie[:-1] |= eq
        at = np.flatnonzero(tie)
        rows = order[at]  # runs of equal hi, in slots of their own; ordered by (lo, row) within
        order[at] = rows[np.lexsort((rows, lo[rows], hi[rows]))]
    return order, s, ties


BLOB_COLUMNS = {"hi": np.uint64, "lo": np.uint64, "pack": np.uint32, "offset": np.uint64,
                "length": np.uint32, "raw": np.uint32, "type": np.uint8}
PACK_COLUMNS = {"hi": np.uint64, "lo": np.uint64, "kind": np.uint8, "size": np.uint64,
                "order": np.int64, "sorted_hi": np.uint64}  # order, sorted_hi: the rows sorted by id


class _Rows:
    """New blob rows, copied into columns as they come (grown when `capacity` was too
    small), then sorted by id and cut to the first row of each id (`finish`)."""

    def __init__(self, capacity: int):
        self.n = 0
        self.cols = {k: np.empty(max(capacity, 0), dtype=dt) for k, dt in BLOB_COLUMNS.items()}

    def append(self, ids, pack, offset, length, raw, btype) -> None:
        k = len(ids)
        if not k:
            return
        end = self.n + k
        if end > len(self.cols["hi"]):
            size = max(end, 2 * len(self.cols["hi"]))
            for name, col in self.cols.items():
                grown = np.empty(size, dtype=col.dtype)
                grown[:self.n] = col[:self.n]
                self.cols[name] = grown
        c, at = self.cols, self.n
        c["hi"][at:end], c["lo"][at:end] = _split_ids(ids)
        c["pack"][at:end] = pack  # a row of all the pack records seen: renumbered in `finish`
        c["offset"][at:end], c["length"][at:end] = offset, length
        c["raw"][at:end], c["type"][at:end] = raw, btype
        self.n = end

    def finish(self, remap: np.ndarray) -> dict:
        cols = {k: c[:self.n] for k, c in self.cols.items()}
        self.cols = {}
        pack = cols["pack"]
        for i in range(0, len(pack), 1 << 20):  # in steps: no temporary column of 8-byte rows
            pack[i:i + (1 << 20)] = remap[pack[i:i + (1 << 20)]]
        hi = cols["hi"]
        order, cols["hi"], ties = _sort_order(hi, cols["lo"])

        def gather(keys: list[str], spare: np.ndarray | None, order: np.ndarray) -> None:
            """Each column in sorted order, into the buffer of the column gathered before it
            (the same dtype): fresh pages cost more than the gathering on some machines."""
            for k in keys:
                col = cols[k]
                out = np.empty_like(col) if spare is None else spare
                np.take(col, order, out=out, mode="clip")  # clip: no check, so no buffered copy
                cols[k], spare = out, col
            del spare  # the buffer gathered from last is freed

        # Two chains, one per column width (the sorted `hi` left its old buffer free).
        chains = [(["lo", "offset"], hi), (["pack", "length", "raw"], None), (["type"], None)]
        del hi
        if len(order) < PARALLEL_ROWS:
            for keys, spare in chains:
                gather(keys, spare, order)
        else:  # on both cores: numpy lets go of the GIL while it gathers
            with ThreadPoolExecutor(2) as pool:
                for done in [pool.submit(gather, keys, spare, order) for keys, spare in chains]:
                    done.result()
        chains.clear()
        del order
        s_hi, s_lo = cols["hi"], cols["lo"]
        dup = (s_hi[1:] == s_hi[:-1]) & (s_lo[1:] == s_lo[:-1]) if ties else None
        if dup is not None and dup.any():  # the same blob in two records: the first one loaded stays
            first = np.ones(len(s_hi), dtype=bool)
            first[1:] = ~dup
            for k in cols:
                cols[k] = cols[k][first]
        return cols


def _insert_sorted(t: _Tables, new: dict) -> dict:
    """The tables' columns with the rows of `new` (sorted, ids not in `t`) inserted in order."""
    pos = t.hi.searchsorted(new["hi"], side="left")
    n = len(t.hi)
    near = np.flatnonzero(pos < n)
    for j in near[t.hi[pos[near]] == new["hi"][near]]:  # ids sharing their first 8 bytes: rare
        p, h, lo = int(pos[j]), new["hi"][j], new["lo"][j]
        while p < n and t.hi[p] == h and t.lo[p] < lo:
            p += 1
        pos[j] = p
    out = {}
    for k in BLOB_COLUMNS:
        out[k] = np.insert(getattr(t, k), pos, new[k])
        if t.done_with is not None:
            t.done_with(k)
    return out


class Deduper:
    """Which blobs this run must store: those in neither the index nor claimed earlier.

    A claimed id is kept only until its pack is in the index (`release`, once the pack's
    checkpoint is written): the set holds the blobs in flight (encoder jobs, packers,
    uploads), not every new blob of the run."""

    def __init__(self, index: BlobIndex):
        self._index = index
        self._claimed: set[bytes] = set()
        self._lock = threading.Lock()

    def claim(self, bid: bytes) -> bool:
        """True exactly once for each blob id the vault does not have yet."""
        if bid in self._index:
            return False
        with self._lock:
            # Looked up again under the lock: `release` drops an id only after its pack is
            # in the index, so an id is always in one of the two.
            if bid in self._claimed or bid in self._index:
                return False
            self._claimed.add(bid)
            return True

    def release(self, bids: Iterable[bytes]) -> None:
        """Forget these claimed ids: their pack is in the index now."""
        with self._lock:
            self._claimed.difference_update(bids)
