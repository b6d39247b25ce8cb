"""The chunk list of a stored ZFS stream, read from the vault."""

from __future__ import annotations

from coldvault.errors import DamagedError
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
