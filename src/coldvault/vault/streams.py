"""Stored ZFS streams: which one a snapshot name means, and its chunk list."""

from __future__ import annotations

from coldvault.errors import DamagedError, UserError
from coldvault.index import chunklist, limits
from coldvault.index.errors import FormatError
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
