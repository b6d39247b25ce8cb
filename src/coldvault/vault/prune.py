"""What prune deletes, and the order it deletes it in (docs/format.md 8).

`plan_prune` reads (the index objects, the snapshot records, every tree the
snapshots reach, the pack listings) and decides; it writes nothing. Packs with
no blob a snapshot uses go; packs that are only partly used are kept whole and
reported (repacking cold data would mean restoring it). Leftovers of
interrupted backups (packs in no index, checkpoint indexes, checkpoints whose
pack never arrived) go too. Cold packs younger than their class's minimum
storage duration are counted with the early-deletion fee that deleting them
costs now.

It refuses (DamagedError) where deleting could lose data:
- an index object is damaged: packs only it names look like leftovers in no index;
- a snapshot record is damaged: what it uses cannot be known;
- blobs that snapshots use are in no index while some pack is in no index:
  those packs may hold them (an index object was lost; `repair index` first).

`apply` writes, in this order, so that a crash at any point leaves only
harmless leftovers that the next prune removes:
1. the new index objects (every pack that still holds a used blob, split over
   objects of at most `Vault.max_index_entries` records, `supersedes` = the
   indexes they replace), all of them before any deletion;
2. the old index objects, pending checkpoints included;
3. the packs with no used blob and the packs in no index;
4. the partial writes of killed runs (`Store.discard_partial_writes`).

The caller holds the vault exclusively (vault/lock.py): no backup adds packs
while the plan is made, and no reader reads a pack that `apply` deletes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from coldvault.errors import DamagedError
from coldvault.index.pack import object_name
from coldvault.index.packindex import PackRecord, split
from coldvault.store.base import is_cold_class
from coldvault.vault.pricing import PriceTable
from coldvault.vault.usage import referenced_blobs
from coldvault.vault.vault import Vault


@dataclass
class PrunePlan:
    snapshots: int = 0  # readable snapshot records walked
    keep: list[PackRecord] = field(default_factory=list)  # packs still holding a used blob: the new index
    delete: list[str] = field(default_factory=list)  # stored packs to delete: unused ones, then leftovers
    leftovers: list[str] = field(default_factory=list)  # stored packs in no index (among `delete`)
    partly_used: list[tuple[str, int]] = field(default_factory=list)  # (pack name, unused bytes), kept
    bytes_freed: int = 0
    early_deletion_fee: float = 0.0  # USD, for the cold packs in `delete` that are too young
    young_cold_packs: int = 0  # how many packs that fee is for
    old_indexes: list[str] = field(default_factory=list)  # every index id loaded: replaced by the new one
    pending_indexes: int = 0  # how many of them are checkpoints
    old_format_indexes: int = 0  # how many of them are of an older version: rewritten in the current one
    index_objects_needed: int = 0  # how many index objects `keep` makes (split at vault.max_index_entries)

    @property
    def bytes_unused_in_kept_packs(self) -> int:
        return sum(b for _, b in self.partly_used)

    @property
    def rewrites_index(self) -> bool:
        """Whether `apply` writes a new index and deletes the old ones: something is deleted,
        or there are more index objects than the kept records need, or a checkpoint, to merge,
        or an index object of version 1 to rewrite (how a vault moves to version 2,
        docs/format.md 6.4)."""
        return bool(self.delete or len(self.old_indexes) > max(1, self.index_objects_needed)
                    or self.pending_indexes or self.old_format_indexes)


@dataclass
class PruneResult:
    new_indexes: list[str] = field(default_factory=list)
    indexes_deleted: list[str] = field(default_factory=list)
    packs_deleted: int = 0
    partial_writes_removed: int = 0
    partial_write_bytes: int = 0


def plan_prune(vault: Vault, prices: PriceTable, now: float | None = None) -> PrunePlan:
    """What a prune would delete and keep; loads the index if not loaded yet. Writes nothing.
    `now` (unix seconds) ages the cold packs for the early-deletion fee."""
    vault.load_index(cache=False)  # every object read: what prune deletes must not rest on a local cache
    if vault.damaged_indexes:
        # Packs only a damaged index names look like leftovers in no index: never delete them.
        raise DamagedError(
            f"{len(vault.damaged_indexes)} index object(s) are damaged; pruning could delete packs only they name",
            hint="run 'coldvault repair index' first",
        )
    records = vault.snapshots()
    if vault.damaged_snapshots:
        raise DamagedError(
            f"{len(vault.damaged_snapshots)} snapshot record(s) are damaged; pruning could delete data they use",
            hint="run 'coldvault check'; forget the damaged snapshots first if they cannot be repaired",
        )
    used = referenced_blobs(vault, records)
    index = vault.index
    by_pack = index.blobs_by_pack()
    stored = {o.name: o for prefix in ("data/", "trees/") for o in vault.store.list(prefix)}

    p = PrunePlan(snapshots=len(records), old_indexes=sorted(index.index_ids),
                  pending_indexes=len(index.pending_ids),
                  old_format_indexes=len(vault.old_format_indexes & index.index_ids))
    unused = []
    for pid, kind, psize in index.packs():
        blobs = by_pack.get(pid, [])
        live = [b for b in blobs if b.id in used]
        name = object_name(kind, pid)
        if not live:
            unused.append(name)
        else:
            p.keep.append(PackRecord(pid, kind, psize, blobs))
            if len(live) < len(blobs):
                p.partly_used.append((name, sum(b.length for b in blobs if b.id not in used)))
    p.index_objects_needed = len(split(p.keep, vault.max_index_entries))
    indexed = {object_name(k, pid) for pid, k, _ in index.packs()}
    p.leftovers = sorted(n for n in stored if n not in indexed)
    unknown = sum(1 for b in used if b not in index)
    if unknown and p.leftovers:
        # The packs in no index may hold them (an index object was lost): never delete those.
        raise DamagedError(
            f"{unknown} blob(s) that snapshots use are in no index, and {len(p.leftovers)} pack(s) are in no index; "
            f"pruning could delete what the snapshots need",
            hint="'coldvault repair index' indexes those packs from their own headers",
        )
    p.delete = [n for n in unused if n in stored] + p.leftovers

    now = time.time() if now is None else now
    for name in p.delete:
        o = stored[name]
        if is_cold_class(o.storage_class) and o.storage_class in prices.min_storage_days:
            fee = prices.early_deletion_fee(o.storage_class, o.size, now - o.mtime if o.mtime else None)
            if fee > 0:
                p.early_deletion_fee += fee
                p.young_cold_packs += 1
    p.bytes_freed = sum(stored[n].size for n in p.delete)
    return p


def write_index(vault: Vault, records: list[PackRecord], supersedes: list[str]) -> list[str]:
    """Write the index objects that name `records` (none if there are none); their ids.
    They are always written in the current format (version 2: this is how a version 1
    vault moves to version 2), as several objects of at most `vault.max_index_entries`
    records each, every one with the same `supersedes`."""
    if not records:
        return []
    return vault.save_index(records, supersedes=supersedes)


def apply(vault: Vault, plan: PrunePlan) -> PruneResult:
    """Carry out `plan` in the order of docs/format.md 8: new index, old indexes, packs,
    partial writes."""
    result = PruneResult()
    if plan.rewrites_index:
        result.new_indexes = write_index(vault, plan.keep, plan.old_indexes)
        for iid in plan.old_indexes:
            if iid not in result.new_indexes:  # the same content as before: it stays
                vault.delete_index(iid)
                result.indexes_deleted.append(iid)
    for name in plan.delete:
        vault.store.delete(name)
        result.packs_deleted += 1
    result.partial_writes_removed, result.partial_write_bytes = vault.store.discard_partial_writes()
    return result
