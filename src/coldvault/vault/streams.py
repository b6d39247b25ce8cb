"""Stored ZFS streams: which one a snapshot name means, its chunk list, and chunks read
in order with a few read ahead (for a stream or a file)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor

from coldvault.errors import DamagedError, UserError
from coldvault.index import chunklist, limits
from coldvault.index.errors import FormatError
from coldvault.index.ids import BlobId
from coldvault.vault.vault import Vault
from coldvault.zfs.chain import Stream


def stream_chunks(vault: Vault, s: Stream) -> list[bytes]:
    """The ids of the stream's data chunks, in order (DamagedError if the list does not decode)."""
    what = f"chunk list of {s.dataset}@{s.snapshot}"
    try:
        with limits.hostile(what):
            return chunklist.decode(vault.read_blob(s.z["chunks"]), what)
    except FormatError as exc:
        raise DamagedError(str(exc)) from None


def find_stream(streams: list[Stream], snap: str, dataset: str) -> Stream:
    """The stream of `dataset@snap` among the streams of that dataset (the newest if stored twice)."""
    matches = [s for s in streams if s.snapshot == snap]
    if not matches:
        raise UserError(f"there is no {dataset}@{snap} in the vault",
                        hint=f"list them with 'coldvault snapshots --source zfs:{dataset}'")
    return matches[-1]


def read_chunks(vault: Vault, chunks: Iterable[bytes], pool: Executor, lookahead: int) -> Iterator[bytes]:
    """The chunks' bytes in order, at most `lookahead` of them read ahead on `pool`."""
    window: deque = deque()
    it = iter(chunks)
    for c in it:
        window.append(pool.submit(vault.read_blob, BlobId(c)))
        if len(window) >= lookahead:
            break
    while window:
        data = window.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            window.append(pool.submit(vault.read_blob, BlobId(nxt)))
        yield data
