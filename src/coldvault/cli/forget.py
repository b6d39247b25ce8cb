"""`coldvault forget`: remove snapshot records by id or by a retention policy.

The data goes with `coldvault prune`. Chain-aware: a ZFS stream that a kept
stream needs is never removed (the whole chain is kept, or a bypass is used).
What is removed is vault/forget.py's choice.
"""

from __future__ import annotations

import contextlib

from coldvault.cli.common import add_filters, open_vault, print_json, snapshot_filter
from coldvault.errors import UserError
from coldvault.vault import forget, retention
from coldvault.vault.lock import vault_lock
from coldvault.vault.vault import SNAPSHOT_PREFIX
from coldvault.zfs.chain import Stream


def register(sub, common) -> None:
    p = sub.add_parser("forget", parents=[common], help="remove snapshots (by id, or by a retention policy)")
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="snapshots: ids (a prefix will do), 'latest', UTC days or times")
    units = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}
    for rule in retention.RULES:
        what = "the N newest snapshots" if rule == "last" else f"the newest snapshot of each of the last N {units[rule]}s"
        p.add_argument(f"--keep-{rule}", type=int, default=0, metavar="N", help=f"keep {what}")
    p.add_argument("--source", help="apply the policy to this source only (default: each source); with SNAPSHOTs: pick them among its snapshots")
    add_filters(p, "apply the policy to snapshots")
    p.add_argument("--dry-run", "-n", action="store_true", help="say what would be removed, remove nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    policy = {rule: getattr(args, f"keep_{rule}") for rule in retention.RULES}
    if bool(args.snapshots) == any(policy.values()):
        raise UserError("name snapshots to forget, or give a policy with --keep-*, not both or neither")
    if args.snapshots and snapshot_filter(args):
        raise UserError("--tag, --host and --path choose the snapshots a policy applies to; "
                        "snapshots named by id are forgotten as named")
    vault = open_vault(args, load_index=False)
    # Exclusive: no reader is between finding a snapshot and reading it.
    with contextlib.nullcontext() if args.dry_run else vault_lock(vault, "forget"):
        records = vault.snapshots()
        if args.snapshots:
            plan = forget.plan_by_ids(vault, records, args.snapshots, args.source)
        else:
            where = snapshot_filter(args)
            plan = forget.plan_by_policy([r for r in records if where(r)] if where else records, policy, args.source)
            if where:
                _check_chains(records, plan)
        if not args.dry_run:
            forget.apply(vault, plan)
    _report(args, plan, {r.id: r for r in records})
    return 0


def _stream(rec) -> str:
    """` @B..@S.zfs` for a ZFS stream's record, else nothing."""
    return f" {Stream(rec).file_name}" if rec.kind == "zfs" and rec.zfs else ""


def _why(reasons: list[str], most: int = 3) -> str:
    """The reasons a record is kept; a stream early in a long chain is needed by many."""
    reasons = [retention.option(r) for r in reasons]
    if len(reasons) <= most:
        return "; ".join(reasons)
    return "; ".join(reasons[:most - 1]) + f"; and {len(reasons) - most + 1} more"


def _check_chains(records, plan: forget.ForgetPlan) -> None:
    """A policy applied to the snapshots a filter chose must not cut a ZFS chain whose other
    streams the filter left out."""
    from coldvault.zfs.chain import orphaned_by_removal, streams_by_dataset

    chosen = {r.id for r in plan.remove}
    for dataset, streams in streams_by_dataset(records).items():
        lost = orphaned_by_removal(streams, chosen)
        if lost:
            names = ", ".join(f"@{s.snapshot} ({s.rec.short_id})" for s in lost)
            raise UserError(f"refusing: {dataset} streams the filter left out depend on what the policy would "
                            f"remove: {names}", hint="widen the filter (--tag, --host, --path) to the whole chain")


def _report(args, plan: forget.ForgetPlan, by_id: dict) -> None:
    remove, damaged, kept = plan.remove, plan.damaged, plan.kept
    if args.json:
        print_json({
            "removed": [{"id": r.id, "source": r.source, "time": r.time_str} for r in remove]
                       + [{"id": sid, "source": None, "time": None, "damaged": True} for sid in damaged],
            "kept": [{"id": i, "source": by_id[i].source, "time": by_id[i].time_str, "reasons": why}
                     for i, why in sorted(kept.items(), key=lambda kv: by_id[kv[0]].time)],
            "dry_run": args.dry_run,
        })
    elif not args.quiet:
        verb = "would remove" if args.dry_run else "removed"
        for i, why in sorted(kept.items(), key=lambda kv: (by_id[kv[0]].source, by_id[kv[0]].time)):
            r = by_id[i]
            print(f"keep    {r.short_id}  {r.time_str}  {r.source}{_stream(r)}  (kept: {_why(why)})")
        for r in sorted(remove, key=lambda r: (r.source, r.time)):
            tail = "  (no kept snapshot's chain needs it)" if _stream(r) and kept else ""
            print(f"{verb:7} {r.short_id}  {r.time_str}  {r.source}{_stream(r)}{tail}")
        for sid in damaged:
            print(f"{verb:7} {sid[:8]}  (damaged record {SNAPSHOT_PREFIX}{sid})")
        if (remove or damaged) and not args.dry_run:
            print(f"{len(remove) + len(damaged)} snapshot(s) removed; "
                  "run 'coldvault prune' to delete the data only they used")
