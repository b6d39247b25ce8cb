"""What a vault holds and costs (`coldvault stats`).

Three views, each from where it is cheapest to learn:
- the store's listing: objects and bytes by kind (data packs, tree packs, index,
  snapshots, locks, config) and by storage class; nothing is read;
- the index: blobs and their sizes before compression;
- the snapshots' trees: the logical bytes of their files (what a restore of every
  snapshot would write) and the lengths of their ZFS streams. A tree's totals depend
  only on its id, so a subtree shared by many snapshots is walked once (an explicit
  stack, one frame per directory level).

The dedup ratio is logical bytes / bytes of the data packs stored. The monthly cost
is the storage of every object at its class's price (vault/pricing.py, with the
per-object overhead of archive classes); a class the price table lacks is reported,
not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coldvault.index import tree
from coldvault.index.ids import BlobId
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault.pricing import PriceTable, monthly_storage_cost
from coldvault.vault.vault import Vault
from coldvault.zfs.chain import Stream

KINDS = (("data/", "data packs"), ("trees/", "tree packs"), ("index/", "index"), ("snapshots/", "snapshots"),
         ("locks/", "locks"), ("keys/", "keys"), ("config", "config"))


@dataclass
class Totals:
    objects: int = 0
    bytes: int = 0

    def add(self, n: int, objects: int = 1) -> None:
        self.objects += objects
        self.bytes += n

    def to_map(self) -> dict:
        return {"objects": self.objects, "bytes": self.bytes}


@dataclass
class Stats:
    by_kind: dict[str, Totals] = field(default_factory=dict)
    by_class: dict[str, Totals] = field(default_factory=dict)
    data_blobs: int = 0
    data_blob_bytes: int = 0  # before compression (and encryption)
    tree_blobs: int = 0
    snapshots: int = 0
    files: int = 0  # summed over all snapshots
    logical_bytes: int = 0  # files' sizes and ZFS streams' lengths, summed over all snapshots
    monthly: dict[str, float] = field(default_factory=dict)  # storage class -> cost per month
    unpriced: list[str] = field(default_factory=list)  # classes the price table lacks
    currency: str = "USD"
    prices_basis: str = ""

    @property
    def stored_data_bytes(self) -> int:
        return self.by_kind.get("data packs", Totals()).bytes

    @property
    def dedup_ratio(self) -> float | None:
        return self.logical_bytes / self.stored_data_bytes if self.stored_data_bytes else None

    @property
    def monthly_total(self) -> float:
        return sum(self.monthly.values())


def _kind(name: str) -> str:
    for prefix, kind in KINDS:
        if name.startswith(prefix):
            return kind
    return "other"


def tree_totals(vault: Vault, roots: list[bytes]) -> tuple[int, int]:
    """(files, bytes of files) below each of `roots`, summed; every distinct tree walked once."""
    memo: dict[bytes, tuple[int, int]] = {}
    files = size = 0
    for root in roots:
        if root not in memo:
            # Frames: (tree id, its entries, [files, bytes] so far).
            stack = [(root, iter(vault.load_tree(BlobId(root)).entries), [0, 0])]
            while stack:
                tid, entries, acc = stack[-1]
                e = next(entries, None)
                if e is None:
                    stack.pop()
                    memo[tid] = (acc[0], acc[1])
                    if stack:
                        stack[-1][2][0] += acc[0]
                        stack[-1][2][1] += acc[1]
                    continue
                if e.type == tree.FILE:
                    acc[0] += 1
                    acc[1] += e.size
                elif e.type == tree.DIR and e.tree is not None:
                    if e.tree in memo:
                        acc[0] += memo[e.tree][0]
                        acc[1] += memo[e.tree][1]
                    else:
                        stack.append((e.tree, iter(vault.load_tree(BlobId(e.tree)).entries), [0, 0]))
        files += memo[root][0]
        size += memo[root][1]
    return files, size


def collect(vault: Vault, records: list[SnapshotRecord], prices: PriceTable) -> Stats:
    st = Stats(currency=prices.currency, prices_basis=prices.basis)
    for o in vault.store.list(""):
        st.by_kind.setdefault(_kind(o.name), Totals()).add(o.size)
        st.by_class.setdefault(o.storage_class, Totals()).add(o.size)
    for pid, entries in vault.index.blobs_by_pack().items():
        kind = (vault.index.pack(pid) or ("data", 0))[0]
        if kind == "data":
            st.data_blobs += len(entries)
            st.data_blob_bytes += sum(b.raw_length for b in entries)
        else:
            st.tree_blobs += len(entries)
    st.snapshots = len(records)
    st.files, st.logical_bytes = tree_totals(vault, [r.tree for r in records if r.tree is not None])
    st.logical_bytes += sum(Stream(r).length for r in records if r.kind == "zfs" and r.zfs)
    for cls, t in sorted(st.by_class.items()):
        if cls in prices.storage_per_gb_month:
            st.monthly[cls] = monthly_storage_cost(prices, cls, t.bytes, t.objects)
        else:
            st.unpriced.append(cls)
    return st
