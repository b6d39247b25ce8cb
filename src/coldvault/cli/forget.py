"""`coldvault forget SNAPSHOT...`: remove snapshot records (their data goes with `prune`).

Chain-aware: a ZFS stream that a kept stream needs to be received is not
removed, unless another chain (a bypass increment) still reaches it.
"""

from __future__ import annotations

from coldvault.cli.common import open_vault
from coldvault.errors import UserError
from coldvault.zfs.chain import orphaned_by_removal, streams_by_dataset


def register(sub, common) -> None:
    p = sub.add_parser("forget", parents=[common], help="remove snapshots from the vault")
    p.add_argument("snapshots", nargs="+", metavar="SNAPSHOT", help="snapshot ids (a prefix will do)")
    p.add_argument("--dry-run", "-n", action="store_true", help="say what would be removed, remove nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    vault = open_vault(args, load_index=False)
    records = vault.snapshots()
    chosen = {vault.find_snapshot(spec).id: None for spec in args.snapshots}
    for dataset, streams in streams_by_dataset(records).items():
        lost = orphaned_by_removal(streams, set(chosen))
        if lost:
            names = ", ".join(f"@{s.snapshot} ({s.rec.short_id})" for s in lost)
            raise UserError(
                f"refusing: {dataset} streams kept in the vault depend on what you asked to remove: {names}",
                hint="forget those too, or first back up a bypass increment (backup zfs --base) that skips it",
            )
    by_id = {r.id: r for r in records}
    for sid in chosen:
        r = by_id[sid]
        if args.dry_run:
            print(f"would remove snapshot {r.short_id} ({r.source}, {r.time_str})")
        else:
            vault.store.delete(f"snapshots/{sid}")
            if not args.quiet:
                print(f"removed snapshot {r.short_id} ({r.source}, {r.time_str})")
    return 0
