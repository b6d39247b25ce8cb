"""Pass 2: read the data of the chosen packs and open every blob in them.

Each readable pack is downloaded in windows (memory stays bounded whatever the
pack size): its content id is compared with its name, every blob the index
places in it is opened (length, AEAD, blob id) as soon as its bytes are in, and
the pack's own header must list those blobs exactly as the index does. What was
read replaces the guess of pass 1: only the blobs that failed count as lost.
"""

from __future__ import annotations

import math
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

import xxhash

from coldvault.errors import ColdDataError, DamagedError, UnsupportedFormatError
from coldvault.index import limits
from coldvault.index.ids import BlobId
from coldvault.index.pack import TRAILER_LEN, BlobEntry, object_name, read_header
from coldvault.store.base import NotFoundError
from coldvault.vault.blobindex import Location
from coldvault.vault.vault import Vault

if TYPE_CHECKING:
    from coldvault.check.checker import Checker

READ_MEMORY = 128 * 1024 * 1024  # bytes of windows in flight, shared by the download threads
MIN_WINDOW = 4 * 1024 * 1024  # bytes per GET at least, however many threads


def read_data(ck: Checker) -> None:
    r = ck.report
    index = ck.vault.index
    present = sorted(pid for pid, kind, _ in index.packs() if object_name(kind, pid) in ck.listed)
    chosen = present
    if ck.read_fraction < 1 and present:
        k = max(1, math.ceil(len(present) * ck.read_fraction))
        chosen = sorted(ck.rng.sample(present, min(k, len(present))))
    r.packs_selected = len(chosen)
    readable = []
    for pid in chosen:
        name = object_name(index.pack(pid)[0], pid)
        info = ck.listed[name]
        if info.cold and not info.readable:
            try:
                info = ck.store.head(name)  # a listing need not say whether a restore is done
            except NotFoundError:
                ck.bad_packs[pid] = r.problem(name, "missing from the store")
                continue
        if info.readable:
            readable.append(pid)
        else:
            r.skipped_cold.append(info)
    by_pack = index.blobs_by_pack(readable)
    window = max(MIN_WINDOW, READ_MEMORY // ck.threads)
    # A few packs in flight at a time: memory stays bounded, and an interrupt stops soon.
    todo = iter(readable)
    with ThreadPoolExecutor(ck.threads) as pool:
        running = {}
        while True:
            for pid in todo:
                kind, _ = index.pack(pid)
                size = ck.listed[object_name(kind, pid)].size
                running[pool.submit(read_pack, ck.vault, pid, kind, size, by_pack.pop(pid, []), window)] = pid
                if len(running) >= ck.threads:
                    break
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                _record_read(ck, running.pop(fut), fut.result())


def _record_read(ck: Checker, pid: str, result) -> None:
    r = ck.report
    kind, _ = ck.vault.index.pack(pid)
    name = object_name(kind, pid)
    if isinstance(result, ColdDataError):  # archived again since the listing
        r.skipped_cold.append(ck.listed[name])
        return
    if isinstance(result, DamagedError):  # deleted since the listing
        ck.bad_packs[pid] = r.problem(name, "missing from the store")
        return
    nbytes, blobs_ok, bad, faults = result
    r.packs_read += 1
    r.bytes_read += nbytes
    r.blobs_read += blobs_ok + len(bad)
    # What was read replaces the guess of pass 1: only the blobs that failed are lost.
    ck.bad_packs.pop(pid, None)
    if bad:
        faults.insert(0, f"{len(bad)} of {blobs_ok + len(bad)} blobs are damaged (first: {bad[0][1]})")
    if faults:
        key = r.extend(name, "; ".join(faults))
        for bid, _ in bad:
            ck.bad_blobs[bid] = key


def read_pack(vault: Vault, pid: str, kind: str, size: int, entries: list[BlobEntry], window: int):
    """Download one pack in windows of `window` bytes; returns (bytes, blobs ok,
    [(bad blob id, why)], [pack faults]).

    Runs on a worker thread; returns (not raises) the cold/missing errors of the store.
    """
    name = object_name(kind, pid)
    ents = sorted((e.offset, e.length, e) for e in entries)
    blob_end = max((o + n for o, n, _ in ents), default=0)
    h = xxhash.xxh3_128()
    buf = bytearray()
    buf_start = pos = i = ok = 0
    bad: list[tuple[bytes, str]] = []
    try:
        while pos < size:
            want = min(window, size - pos)
            data = vault.get_range(name, pos, want)
            h.update(data)
            buf += data
            pos += len(data)
            while i < len(ents) and ents[i][0] + ents[i][1] <= pos:
                off, length, e = ents[i]
                stored = bytes(buf[off - buf_start:off - buf_start + length])
                why = _open_blob(vault, pid, kind, e, stored)
                if why is None:
                    ok += 1
                else:
                    bad.append((e.id, why))
                i += 1
            keep = min(ents[i][0] if i < len(ents) else blob_end, pos)
            if keep > buf_start:
                del buf[:keep - buf_start]
                buf_start = keep
            if len(data) < want:
                break  # shorter than listed: changed since the listing
    except (ColdDataError, DamagedError) as exc:
        return exc
    for off, length, e in ents[i:]:
        bad.append((e.id, f"blob {e.id.hex()[:16]} runs past the end of the pack ({off + length} > {pos} bytes)"))
    faults = []
    if h.hexdigest() != pid:
        faults.append("its content does not match its name")
    faults += _header_faults(vault, name, bytes(buf) if buf_start >= blob_end else b"", pos, entries)
    return pos, ok, bad, faults


def _open_blob(vault: Vault, pid: str, kind: str, e: BlobEntry, stored: bytes) -> str | None:
    loc = Location(pid, kind, e.offset, e.length, e.raw_length, e.type)
    try:
        vault.decode_stored(stored, BlobId(e.id), loc)
    except DamagedError as exc:
        return exc.message
    return None


def _header_faults(vault: Vault, name: str, tail: bytes, size: int, entries: list[BlobEntry]) -> list[str]:
    """The pack's own header must list every blob the index places in it, identically."""
    if len(tail) < TRAILER_LEN:
        return ["its header is missing or overlaps the blobs"]
    try:
        with limits.hostile(name):
            listed = read_header(tail, size, vault.sealer, name)
    except (DamagedError, UnsupportedFormatError) as exc:
        return [f"its header does not decode ({exc.message})"]
    header = {(e.id, e.type, e.offset, e.length, e.raw_length) for e in listed}
    differ = sum(1 for e in entries if (e.id, e.type, e.offset, e.length, e.raw_length) not in header)
    if differ:
        return [f"its header disagrees with the index about {differ} blob(s)"]
    return []
