"""The local index cache: a vault's merged index tables, kept on this machine for the next command.

Loading the index of a 10 TB vault (about 10 million blobs in a hundred index objects)
means decoding every object and sorting the merged table: seconds of CPU and about a
gigabyte at its peak, in every command. The merged, sorted columns (vault/blobindex.py)
do not change until an index object is added or removed, so, as kopia does, the first
command writes them to one file here and the next ones map it read-only (numpy over
`mmap`): no decode, no sort, and only the pages a command touches are read.

A cache file holds the exact set of index objects it was built from, with the size and
mtime each had in the listing. `Vault.load_index` lists `index/` anyway; it uses the file
only if every one of them is still listed alike (one missing, say after a prune, or
rewritten in place, i.e. damaged: the file is ignored and rewritten), and reads only the
objects listed beyond them (a backup's new ones): a few records are kept beside the mapped
tables, more are merged into them and the file is rewritten.
Pending checkpoints are never in it (their records count only once their packs are seen
in the store); neither is a vault with a damaged index object (the full load warns about it
every time). `check`, `prune` and `repair index` never use it: they read every object.

The file, `<cache dir>/<vault id hex>/index-cache` (docs/format.md section 15):

    0    magic "coldvault-index\\n" (16 bytes), u32le format version, u32le 0, 8 zero bytes
    32   the columns, each at a multiple of 64 bytes, native little-endian
    ...  header: JSON (vault id, index ids, rows, where each column is, checksum of the columns)
    end  u64le header length, u64le XXH3-64 of the header, the magic again (32 bytes)

It is never changed in place: written under a temporary name in the same directory (0600,
the directory 0700) and renamed over the old one, so concurrent commands each see one whole
file (a process that mapped the old one keeps reading it). Anything unexpected (size,
magic, version, vault, header or column checksum, column layout) makes the loader ignore
the file and read every index object instead: the cache can make a command slower, never
wrong.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import sys
from dataclasses import dataclass

import numpy as np
import xxhash

from coldvault import privatefiles
from coldvault.vault.blobindex import BLOB_COLUMNS, PACK_COLUMNS

log = logging.getLogger(__name__)

MAGIC = b"coldvault-index\n"
VERSION = 1
FILE_NAME = "index-cache"
HEAD = struct.Struct("<16sII8x")  # magic, version, 0
TAIL = struct.Struct("<QQ16s")  # header length, XXH3-64 of the header, magic
ALIGN = 64
FREE_MARGIN = 64 * 1024 * 1024  # a cache is written only where twice its size and this much more are free
MAX_HEADER = 64 * 1024 * 1024
WRITE_STEP = 1024 * 1024  # columns are written (and hashed) this much at a time: one write() of a whole
# 80 MB column cost up to several times the kernel time of 1 MiB ones (10M blobs, 2-vCPU VM)
HASH_STEP = 16 * 1024 * 1024  # columns are checked this much at a time, then unmapped from our pages
COLUMNS = [("blob", k, np.dtype(dt).newbyteorder("<")) for k, dt in BLOB_COLUMNS.items()] + \
          [("pack", k, np.dtype(dt).newbyteorder("<")) for k, dt in PACK_COLUMNS.items()]

# Index objects listed beyond a cache's, when they hold at most this many blob records (and
# at most 1/64 of the cache's), are read by each command rather than merged into a rewritten
# cache: rewriting a 10M-blob cache costs more than reading a few nights' backups.
OVERLAY_OBJECTS = 16
OVERLAY_ROWS = 50_000

OFF_VALUES = ("1", "true", "yes", "on")


def enabled() -> bool:
    """False when COLDVAULT_NO_CACHE is set to 1/true/yes/on (`--no-cache` sets it)."""
    return os.environ.get("COLDVAULT_NO_CACHE", "").strip().lower() not in OFF_VALUES


def cache_root() -> str:
    """The directory of coldvault's local caches, one directory per vault inside:
    COLDVAULT_CACHE_DIR, else $XDG_CACHE_HOME/coldvault, else ~/.cache/coldvault."""
    root = os.environ.get("COLDVAULT_CACHE_DIR")
    if root:
        return os.path.abspath(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "coldvault")


def cache_path(vault_id: bytes) -> str:
    return os.path.join(cache_root(), vault_id.hex(), FILE_NAME)


@dataclass
class Cached:
    """What one cache file holds; the columns are read-only arrays over its mapping."""

    index_ids: frozenset[str]
    stamps: dict  # index id -> [size, mtime or None] in the listing it was built from
    old_format: frozenset[str]  # of them, those of format version 1 (prune rewrites them)
    blobs: dict
    packs: dict
    mm: mmap.mmap | None = None

    def done_with(self, name: str) -> None:
        """Drop the pages of blob column `name` from this process (they stay in the page
        cache, and are read again if the column is used again)."""
        col = self.blobs[name]
        if self.mm is None or not hasattr(self.mm, "madvise") or not col.nbytes:
            return
        start = col.__array_interface__["data"][0] - np.frombuffer(self.mm, np.uint8, 1).__array_interface__["data"][0]
        page = start - start % mmap.PAGESIZE
        self.mm.madvise(mmap.MADV_DONTNEED, page, start + col.nbytes - page)


class _Invalid(Exception):
    pass


def read(path: str, vault_id: bytes) -> Cached | None:
    """The cache file at `path`, mapped and checked; None (one log line saying why) if it is
    missing or anything about it is unexpected."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        log.debug("index cache %s: none yet", path)
        return None
    except OSError as exc:
        log.info("index cache %s: cannot open it (%s); reading every index object", path, exc.strerror or exc)
        return None
    try:
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise _Invalid("owned by another user")
            if st.st_size < HEAD.size + TAIL.size:
                raise _Invalid(f"truncated ({st.st_size} bytes)")
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        return _parse(mm, vault_id)
    except (_Invalid, OSError, ValueError) as exc:
        log.info("index cache %s: %s; reading every index object", path, exc)
        return None


def _parse(mm: mmap.mmap, vault_id: bytes) -> Cached:
    size = len(mm)
    magic, version, zero = HEAD.unpack_from(mm, 0)
    if magic != MAGIC:
        raise _Invalid("not an index cache file")
    if version != VERSION or zero:
        raise _Invalid(f"of another version ({version})")
    hlen, hsum, magic2 = TAIL.unpack_from(mm, size - TAIL.size)
    if magic2 != MAGIC:
        raise _Invalid("truncated or damaged (no end marker)")
    start = size - TAIL.size - hlen
    if not 0 < hlen <= MAX_HEADER or start < HEAD.size:
        raise _Invalid("damaged header length")
    raw = mm[start:start + hlen]
    if xxhash.xxh3_64_intdigest(raw) != hsum:
        raise _Invalid("damaged header (checksum)")
    h = json.loads(raw)
    if not isinstance(h, dict):
        raise _Invalid("damaged header")
    if h.get("vault") != vault_id.hex():
        raise _Invalid("of another vault")
    objs, old = h.get("index_objects"), h.get("old_format")
    if not (isinstance(objs, list) and isinstance(old, list) and all(isinstance(i, str) for i in old)
            and all(isinstance(o, list) and len(o) == 3 and isinstance(o[0], str) for o in objs)):
        raise _Invalid("damaged header (index objects)")
    stamps = {o[0]: [o[1], o[2]] for o in objs}
    nb, npk, cols = h.get("blobs"), h.get("packs"), h.get("columns")
    if not (type(nb) is int and type(npk) is int and nb >= 0 and npk >= 0 and isinstance(cols, list)
            and len(cols) == len(COLUMNS)):
        raise _Invalid("damaged header (rows)")
    # The layout is fixed: each column where `_layout` puts it, and the file ends right after.
    want, end = _layout(nb, npk)
    if [c if isinstance(c, list) else None for c in cols] != [[t, k, dt.str, off] for (t, k, dt), off in want]:
        raise _Invalid("damaged header (columns)")
    if end != start:
        raise _Invalid(f"truncated or damaged ({size} bytes, the header says {end + hlen + TAIL.size})")
    if _checksum(mm, HEAD.size, start) != h.get("checksum"):
        raise _Invalid("damaged (checksum of the columns)")
    out: dict[str, dict] = {"blob": {}, "pack": {}}
    for (table, key, dt), off in want:
        count = nb if table == "blob" else npk
        out[table][key] = np.frombuffer(mm, dtype=dt, count=count, offset=off)  # read-only, mapped
    if npk and int(out["pack"]["order"].max()) >= npk:
        raise _Invalid("damaged (a row past the pack table)")
    return Cached(frozenset(stamps), stamps, frozenset(old), out["blob"], out["pack"], mm)


def _layout(nb: int, npk: int) -> tuple[list, int]:
    """[((table, key, dtype), offset)] of the columns, and where the last one ends."""
    at, out = HEAD.size, []
    for table, key, dt in COLUMNS:
        at = -(-at // ALIGN) * ALIGN
        out.append(((table, key, dt), at))
        at += dt.itemsize * (nb if table == "blob" else npk)
    return out, at


def _checksum(mm: mmap.mmap, start: int, end: int) -> str:
    """XXH3-128 of mm[start:end], read straight from the mapping a step at a time; each step's
    pages are dropped from this process after (they stay in the page cache), so checking a
    large file does not make the process look large."""
    h = xxhash.xxh3_128()
    view = memoryview(mm)
    try:
        at = start
        while at < end:
            stop = min(end, at + HASH_STEP)
            h.update(view[at:stop])
            page = at - at % mmap.PAGESIZE
            if hasattr(mm, "madvise"):
                mm.madvise(mmap.MADV_DONTNEED, page, stop - page)
            at = stop
    finally:
        view.release()
    return h.hexdigest()


def write(path: str, vault_id: bytes, stamps: dict, old_format, blobs: dict, packs: dict) -> bool:
    """Write the tables (columns as `BlobIndex.columns()` gives them) built from exactly the
    index objects of `stamps` (id -> (size, mtime or None) in the listing they were read
    after); False (one warning) if the file could not be written."""
    directory = os.path.dirname(path)
    nb, npk = len(blobs["hi"]), len(packs["hi"])
    layout, end = _layout(nb, npk)
    tmp = os.path.join(directory, privatefiles.temp_name(FILE_NAME))
    try:
        privatefiles.makedirs(directory)
        _remove_abandoned(directory)
        st = os.statvfs(directory)
        free = st.f_bavail * st.f_frsize
        if free < 2 * end + FREE_MARGIN:
            # Not the last free bytes of a disk that a backup to a local vault may need.
            log.warning("index cache %s: not written, it needs %d MiB and %d MiB are free (commands read every "
                        "index object meanwhile; COLDVAULT_NO_CACHE=1 turns the cache off)",
                        path, end >> 20, free >> 20)
            return False
        h = xxhash.xxh3_128()
        with os.fdopen(privatefiles.create(tmp), "wb") as f:
            f.write(HEAD.pack(MAGIC, VERSION, 0))
            at = HEAD.size
            for (table, key, dt), off in layout:
                pad = bytes(off - at)
                col = np.ascontiguousarray((blobs if table == "blob" else packs)[key], dtype=dt)
                data = memoryview(col).cast("B")
                h.update(pad)
                f.write(pad)
                for i in range(0, len(data), WRITE_STEP):
                    h.update(data[i:i + WRITE_STEP])
                    f.write(data[i:i + WRITE_STEP])
                at = off + len(data)
            assert at == end
            header = json.dumps({
                "vault": vault_id.hex(), "old_format": sorted(old_format),
                "index_objects": [[i, *stamps[i]] for i in sorted(stamps)],
                "blobs": nb, "packs": npk, "checksum": h.hexdigest(),
                "columns": [[t, k, dt.str, off] for (t, k, dt), off in layout],
                "written_by": f"coldvault, python {sys.version_info[0]}.{sys.version_info[1]}",
            }, separators=(",", ":")).encode()
            f.write(header)
            f.write(TAIL.pack(len(header), xxhash.xxh3_64_intdigest(header), MAGIC))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write the index cache %s: %s (commands read every index object until it is "
                    "written; COLDVAULT_NO_CACHE=1 turns it off)", path, exc.strerror or exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    log.debug("index cache %s: written, %d blobs from %d index objects", path, nb, len(stamps))
    return True


def _remove_abandoned(directory: str) -> None:
    """Temporary files of writers that were killed (a 10M-blob cache is 400 MB)."""
    import time

    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for e in entries:
        if e.name.startswith(privatefiles.TMP_PREFIX) and e.name.endswith("-" + FILE_NAME):
            try:
                if privatefiles.abandoned(e.name, e.stat().st_mtime, now):
                    os.unlink(e.path)
            except OSError:
                pass
