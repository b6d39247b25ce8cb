"""Packers collect encoded blobs into packs of a target size; thread-safe."""

from __future__ import annotations

import threading

from coldvault.index.pack import FinishedPack, PackWriter


class Packer:
    def __init__(self, kind: str, sealer, target_size: int):
        self.kind = kind
        self.sealer = sealer
        self.target_size = target_size
        self._writer = PackWriter(kind, sealer)
        self._lock = threading.Lock()

    def add(self, bid, btype: int, stored: bytes, raw_length: int) -> FinishedPack | None:
        """Add a blob; returns a finished pack when this one filled it (the caller uploads it)."""
        with self._lock:
            w = self._writer
            w.add(bid, btype, stored, raw_length)
            if w.size < self.target_size:
                return None
            self._writer = PackWriter(self.kind, self.sealer)
        return w.finish()

    def flush(self) -> FinishedPack | None:
        with self._lock:
            w = self._writer
            if not len(w):
                return None
            self._writer = PackWriter(self.kind, self.sealer)
        return w.finish()
