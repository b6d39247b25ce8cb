"""`coldvault prune`: delete the packs no snapshot uses any more.

Holds the vault exclusively. Packs with no referenced blob are deleted;
packs that are only partly used are reported, not repacked (repacking cold
data would mean restoring it). Leftovers of interrupted backups (packs in no
index, checkpoint indexes, checkpoints whose pack never arrived, partial
writes) go too. Cold packs younger than their class's minimum storage
duration are deleted with a warning that names the early-deletion fee (prices
from store/pricing.py, overridable with --prices). Order: new index first, then old indexes, then packs, so
a crash at any point leaves only harmless leftovers.
"""

from __future__ import annotations

import contextlib
import time

from coldvault.cli.common import money, open_vault, print_json, size
from coldvault.errors import DamagedError
from coldvault.index.pack import BlobEntry, object_name
from coldvault.index.packindex import PackRecord
from coldvault.vault import pricing
from coldvault.store.base import is_cold_class
from coldvault.vault.lock import vault_lock
from coldvault.vault.usage import referenced_blobs


def register(sub, common) -> None:
    p = sub.add_parser("prune", parents=[common], help="delete data no snapshot uses")
    p.add_argument("--dry-run", "-n", action="store_true", help="say what would be deleted, delete nothing")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--prices", metavar="FILE",
                   help="JSON price table overriding the built-in one, for early-deletion fees (env COLDVAULT_PRICES)")
    p.set_defaults(func=run)


def run(args) -> int:
    vault = open_vault(args, load_index=False)
    # Exclusive: no backup adds packs while we decide what is unused, and no reader (mount,
    # restore, check, thaw, ls) is reading a pack we delete.
    with contextlib.nullcontext() if args.dry_run else vault_lock(vault, "prune"):
        vault.load_index()
        return _prune(args, vault)


def _prune(args, vault) -> int:
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
    by_pack: dict[str, list[BlobEntry]] = {}
    for bid, (pid, off, length, raw, btype) in index.blobs.items():
        by_pack.setdefault(pid, []).append(BlobEntry(bid, btype, off, length, raw))
    stored = {o.name: o for prefix in ("data/", "trees/") for o in vault.store.list(prefix)}

    delete, partly, keep_recs = [], [], []
    for pid, (kind, psize) in index.packs.items():
        blobs = by_pack.get(pid, [])
        live = [b for b in blobs if b.id in used]
        name = object_name(kind, pid)
        if not live:
            delete.append(name)
        else:
            keep_recs.append(PackRecord(pid, kind, psize, blobs))
            if len(live) < len(blobs):
                partly.append((name, sum(b.length for b in blobs if b.id not in used)))
    indexed = {object_name(k, p) for p, (k, _) in index.packs.items()}
    leftovers = sorted(n for n in stored if n not in indexed)
    unknown = sum(1 for b in used if b not in index.blobs)
    if unknown and leftovers:
        # The packs in no index may hold them (an index object was lost): never delete those.
        raise DamagedError(
            f"{unknown} blob(s) that snapshots use are in no index, and {len(leftovers)} pack(s) are in no index; "
            f"pruning could delete what the snapshots need",
            hint="'coldvault repair index' indexes those packs from their own headers",
        )
    delete_existing = [n for n in delete if n in stored] + leftovers

    prices = pricing.load(args.prices)
    now = time.time()
    fee, young = 0.0, 0
    for name in delete_existing:
        o = stored[name]
        if is_cold_class(o.storage_class) and o.storage_class in prices.min_storage_days:
            f = prices.early_deletion_fee(o.storage_class, o.size, now - o.mtime if o.mtime else None)
            if f > 0:
                fee += f
                young += 1
    freed = sum(stored[n].size for n in delete_existing)
    old_indexes = sorted(index.index_ids)

    if not args.dry_run:
        if fee > 0:
            print(f"coldvault: warning: {young} cold pack(s) are younger than their class's minimum storage "
                  f"duration; deleting them now costs an early-deletion fee of about {money(fee)}")
        if delete_existing or len(old_indexes) > 1 or index.pending_ids:
            new_id = vault.save_index(keep_recs, supersedes=old_indexes) if keep_recs else None
            for iid in old_indexes:
                if iid != new_id:
                    vault.delete_index(iid)
        for name in delete_existing:
            vault.store.delete(name)
    partial = (0, 0) if args.dry_run else vault.store.discard_partial_writes()

    summary = {
        "snapshots": len(records), "packs_deleted": len(delete_existing), "leftover_packs": len(leftovers),
        "bytes_freed": freed, "partly_used_packs": len(partly), "bytes_unused_in_kept_packs": sum(b for _, b in partly),
        "early_deletion_fee_usd": round(fee, 8), "indexes_merged": len(old_indexes), "dry_run": args.dry_run,
        "partial_writes_removed": partial[0], "partial_write_bytes": partial[1],
    }
    if args.json:
        print_json(summary)
    elif not args.quiet:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {len(delete_existing)} pack(s), {size(freed)}"
              + (f" (of them {len(leftovers)} left by interrupted backups)" if leftovers else "")
              + f"; {len(partly)} pack(s) partly used ({size(summary['bytes_unused_in_kept_packs'])} unused, not repacked)"
              + (f"; removed {partial[0]} partial write(s) of killed runs ({size(partial[1])})" if partial[0] else ""))
        if fee > 0 and args.dry_run:
            print(f"{young} of them are cold and younger than their minimum storage duration: early-deletion fee about {money(fee)}")
    return 0
