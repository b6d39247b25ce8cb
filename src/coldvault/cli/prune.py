"""`coldvault prune`: delete the packs no snapshot uses any more.

Holds the vault exclusively; what goes, the refusals and the safe order of
the deletes are vault/prune.py's (docs/format.md 8). Partly used packs are
reported, not repacked. Deleting cold packs younger than their class's
minimum storage duration costs an early-deletion fee: named in a warning
(prices from vault/pricing.py, overridable with --prices).
"""

from __future__ import annotations

import contextlib

from coldvault.cli.common import money, open_vault, print_json, size
from coldvault.vault import pricing, prune
from coldvault.vault.lock import vault_lock


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
        plan = prune.plan_prune(vault, pricing.load(args.prices))
        done = prune.PruneResult()
        if not args.dry_run:
            if plan.early_deletion_fee > 0:
                print(f"coldvault: warning: {plan.young_cold_packs} cold pack(s) are younger than their class's "
                      f"minimum storage duration; deleting them now costs an early-deletion fee of about "
                      f"{money(plan.early_deletion_fee)}")
            done = prune.apply(vault, plan)
    _report(args, plan, done)
    return 0


def _report(args, plan: prune.PrunePlan, done: prune.PruneResult) -> None:
    partial = (done.partial_writes_removed, done.partial_write_bytes)
    if args.json:
        print_json({
            "snapshots": plan.snapshots, "packs_deleted": len(plan.delete), "leftover_packs": len(plan.leftovers),
            "bytes_freed": plan.bytes_freed, "partly_used_packs": len(plan.partly_used),
            "bytes_unused_in_kept_packs": plan.bytes_unused_in_kept_packs,
            "early_deletion_fee_usd": round(plan.early_deletion_fee, 8), "indexes_merged": len(plan.old_indexes),
            "dry_run": args.dry_run, "partial_writes_removed": partial[0], "partial_write_bytes": partial[1],
        })
    elif not args.quiet:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {len(plan.delete)} pack(s), {size(plan.bytes_freed)}"
              + (f" (of them {len(plan.leftovers)} left by interrupted backups)" if plan.leftovers else "")
              + f"; {len(plan.partly_used)} pack(s) partly used "
              f"({size(plan.bytes_unused_in_kept_packs)} unused, not repacked)"
              + (f"; removed {partial[0]} partial write(s) of killed runs ({size(partial[1])})" if partial[0] else ""))
        if plan.early_deletion_fee > 0 and args.dry_run:
            print(f"{plan.young_cold_packs} of them are cold and younger than their minimum storage duration: "
                  f"early-deletion fee about {money(plan.early_deletion_fee)}")
