"""`coldvault repair index [--dry-run] [--thaw] [--json]`: rebuild the index from the packs' headers.

Holds the vault exclusively (except with --dry-run, which writes nothing). The
logic, and why only packs in no readable index are read, is in vault/repair.py.
Exit 0 when the index is whole afterwards; 13 when some pack's header could not
be read (named; the other packs are indexed all the same); 14 when cold packs in
no index were skipped (named; --thaw asks for their restore, then run it again).
"""

from __future__ import annotations

from coldvault.cli.common import open_vault, print_json, size
from coldvault.errors import ColdDataError, DamagedError, UserError
from coldvault.store.base import RESTORE_TIERS
from coldvault.vault import repair
from coldvault.vault.lock import vault_lock

SHOW = 5  # names shown per line; --json lists them all


def register(sub, common) -> None:
    p = sub.add_parser("repair", help="repair the vault's index")
    what = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    i = what.add_parser(
        "index", parents=[common], help="rebuild the index from the packs' own headers",
        description="Index every pack that no readable index object names, from the header at the end of the "
                    "pack (one ranged GET each), then remove the damaged index objects. Cold packs that are not "
                    "restored cannot be read: they are named and skipped.",
    )
    i.add_argument("--dry-run", "-n", action="store_true", help="say what would be done; write and delete nothing")
    i.add_argument("--thaw", action="store_true",
                   help="also request the restore of the cold packs that had to be skipped (one request each)")
    i.add_argument("--tier", choices=RESTORE_TIERS, default="Bulk", help="restore tier for --thaw (default Bulk)")
    i.add_argument("--days", type=int, default=7, help="days restored copies stay readable (default 7)")
    i.add_argument("--json", action="store_true", help="machine-readable summary")
    i.set_defaults(func=run_index)


def _few(names: list[str]) -> str:
    return ", ".join(names[:SHOW]) + (f" (+{len(names) - SHOW} more)" if len(names) > SHOW else "")


def run_index(args) -> int:
    if args.days < 1:
        raise UserError(f"--days {args.days}: restored copies must stay readable at least 1 day")
    vault = open_vault(args, load_index=False)
    lock = None if args.dry_run else vault_lock(vault, "repair index")
    if lock:
        lock.acquire()
    try:
        p = repair.plan(vault)  # under the lock: nothing adds or removes packs meanwhile
        if not args.dry_run:
            repair.apply(vault, p, (args.tier, args.days) if args.thaw else None)
    finally:
        if lock:
            lock.release()
    damaged = [f"index/{i}" for i in p.damaged_indexes]
    cold = [i.name for i in p.cold]
    if args.json:
        print_json({
            "dry_run": args.dry_run,
            "packs_listed": p.packs_listed,
            "packs_read": len(p.records),
            "blobs_indexed": p.blobs,
            "new_indexes": [f"index/{i}" for i in p.new_indexes],
            "damaged_indexes": damaged,
            "removed_indexes": [f"index/{i}" for i in p.removed],
            "cold_packs": [{"name": i.name, "size": i.size, "storage_class": i.storage_class,
                            "restore": i.restore.status} for i in p.cold],
            "thaw_requested": p.thawed,
            "bad_headers": [{"name": n, "message": m} for n, m in p.bad_headers],
        })
    elif not args.quiet:
        _print(p, args, damaged, cold)
    if args.dry_run:
        return 0
    if p.bad_headers:
        raise DamagedError(
            f"{len(p.bad_headers)} pack(s) in no index have a damaged header and were not indexed: "
            f"{_few([n for n, _ in p.bad_headers])}",
            hint="the other packs were indexed; 'coldvault check' says which files those packs cost",
        )
    if p.cold:
        raise ColdDataError(
            f"{len(p.cold)} cold pack(s) in no index were not read: {_few(cold)}", cold,
            hint=_cold_hint(args, p),
        )
    return 0


def _cold_hint(args, p: repair.RepairPlan) -> str:
    if p.thawed or args.thaw:
        return "their restore was requested; run 'coldvault repair index' again when they are readable"
    return ("request their restore with 'coldvault repair index --thaw' (or 'coldvault thaw' of a snapshot "
            "that uses them), then run 'coldvault repair index' again")


def _print(p: repair.RepairPlan, args, damaged: list[str], cold: list[str]) -> None:
    if not p.needed and not p.cold and not p.bad_headers:
        print(f"nothing to repair: every one of {p.packs_listed} pack(s) is named by a readable index object")
        return
    if args.dry_run:
        print(f"would read {len(p.records)} pack header(s) ({p.packs_listed} packs in the vault), index "
              f"{p.blobs} blob(s) in new index object(s), then remove {len(damaged)} damaged index object(s)"
              + (f": {_few(damaged)}" if damaged else "")
              + f"; {len(cold)} cold pack(s) would be skipped")
    else:
        print(f"repaired the index: read {len(p.records)} pack header(s), indexed {p.blobs} blob(s) in "
              f"{len(p.new_indexes)} new index object(s); removed {len(p.removed)} damaged index object(s)"
              + (f" ({_few(damaged)})" if damaged else "")
              + f"; skipped {len(cold)} cold pack(s)")
    if p.cold:
        asked = f"; restore requested for {len(p.thawed)}" if p.thawed else ""
        print(f"skipped: {len(cold)} cold pack(s) ({size(sum(i.size for i in p.cold))}) in no index, not "
              f"restored, so not read: {_few(cold)}{asked}")
    for name, why in p.bad_headers:
        print(f"damaged: {name}: its header cannot be read ({why}); not indexed")
