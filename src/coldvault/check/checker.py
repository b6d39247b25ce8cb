"""The checker: the state the three passes share, and the order they run in.

Each pass is its own module (listing, data, snapshots); they read and fill the
`Checker`: what the listing found, which packs and blobs are known bad, and the
report (report.py).
"""

from __future__ import annotations

import random

from coldvault.check import data, keys, listing, snapshots
from coldvault.check.report import CheckReport
from coldvault.index.pack import object_name
from coldvault.store.base import ObjectInfo
from coldvault.vault.vault import Vault


class Checker:
    def __init__(self, vault: Vault, read_fraction: float | None = None, rng: random.Random | None = None,
                 threads: int | None = None):
        """`read_fraction`: None reads no data, 1.0 every pack, else that random share of them.
        `threads` that download packs: as many as the store serves requests at once by default."""
        self.vault = vault
        self.store = vault.store
        self.read_fraction = read_fraction
        self.rng = rng or random.Random()
        self.threads = threads or self.store.capabilities().connections
        self.report = CheckReport()
        if read_fraction is not None:
            self.report.read_mode = "all" if read_fraction >= 1 else "subset"
            self.report.read_percent = None if read_fraction >= 1 else round(read_fraction * 100, 3)
        self.phase = "starting"
        self.listed: dict[str, ObjectInfo] = {}  # pack object name -> info
        self.bad_packs: dict[str, str] = {}  # pack id -> problem key: every blob in it counts as lost
        self.bad_blobs: dict[bytes, str] = {}  # blob id -> problem key (found by reading the data)

    def run(self) -> CheckReport:
        # The listing first: the index loader judges pending checkpoints by it. A pack
        # stored after it (a backup running beside the check) is asked for on its own.
        self.phase = "reading key objects"
        keys.check_keys(self)
        self.phase = "listing packs"
        listing.list_packs(self)
        self.phase = "reading the index"
        listing.load_index(self)
        listing.check_packs(self)
        if self.read_fraction is not None:
            self.phase = "reading packs"
            data.read_data(self)
        self.phase = "walking snapshots"
        walk = snapshots.SnapshotWalk(self)
        walk.run()
        if walk.complete:
            self.report.unused_packs = sorted(
                (self.listed.get(object_name(kind, pid)) or ObjectInfo(object_name(kind, pid), size)
                 for pid, kind, size in self.vault.index.packs() if pid not in walk.used_packs),
                key=lambda i: i.name,
            )
        self.phase = "done"
        return self.report

    def progress(self) -> str:
        r = self.report
        if self.phase == "reading packs":
            return f"reading packs: {r.packs_read}/{r.packs_selected}, {r.bytes_read / 2**20:.1f} MiB"
        if self.phase == "walking snapshots":
            return f"walking snapshots: {r.trees} trees, {r.files} files"
        return self.phase
