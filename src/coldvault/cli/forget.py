"""`coldvault forget`: remove snapshot records by id or by a retention policy.

The data goes with `coldvault prune`. Chain-aware: a ZFS stream that a kept
stream needs is never removed (the whole chain is kept, or a bypass is used).
"""

from __future__ import annotations

import contextlib

from coldvault.cli.common import open_vault, print_json
from coldvault.errors import DamagedError, UserError
from coldvault.vault import retention
from coldvault.vault.lock import vault_lock
from coldvault.zfs.chain import orphaned_by_removal, streams_by_dataset


def register(sub, common) -> None:
    p = sub.add_parser("forget", parents=[common], help="remove snapshots (by id, or by a retention policy)")
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="snapshot ids (a prefix will do)")
    units = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}
    for rule in retention.RULES:
        what = "the N newest snapshots" if rule == "last" else f"the newest snapshot of each of the last N {units[rule]}s"
        p.add_argument(f"--keep-{rule}", type=int, default=0, metavar="N", help=f"keep {what}")
    p.add_argument("--source", help="apply the policy to this source only (default: each source)")
    p.add_argument("--dry-run", "-n", action="store_true", help="say what would be removed, remove nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _by_policy(args, records) -> tuple[dict[str, list[str]], list]:
    policy = {rule: getattr(args, f"keep_{rule}") for rule in retention.RULES}
    if any(n < 0 for n in policy.values()):
        raise UserError("--keep-* values must not be negative")
    sources: dict[str, list] = {}
    for r in records:
        if args.source is None or r.source == args.source:
            sources.setdefault(r.source, []).append(r)
    if args.source is not None and not sources:
        raise UserError(f"there are no snapshots of source {args.source!r}")
    kept: dict[str, list[str]] = {}
    candidates = []
    for recs in sources.values():
        reasons = retention.keep(recs, policy)
        retention.keep_chains(recs, reasons)
        kept.update(reasons)
        candidates += recs
    return kept, [r for r in candidates if r.id not in kept]


def _damaged_ids(args, vault, records) -> dict[str, str]:
    """Damaged records (unreadable: left out of `records` with a warning) that the user
    named, spec -> id: by their id or a prefix no readable record shares. Removing one
    cannot break a chain, since chains never use them. A record of a newer format is not
    damaged and is never removed this way."""
    damaged = [sid for sid, exc in vault.damaged_snapshots.items() if isinstance(exc, DamagedError)]
    out = {}
    for spec in args.snapshots:
        hits = [sid for sid in damaged if sid.startswith(spec.lower())]
        if not hits or any(r.id.startswith(spec.lower()) for r in records):
            continue
        if len(hits) > 1:
            raise UserError(f"{spec!r} names {len(hits)} damaged snapshot records", hint="give more of the id")
        out[spec] = hits[0]
    return out


def _by_id(args, vault, records) -> tuple[dict[str, list[str]], list]:
    damaged = _damaged_ids(args, vault, records)
    chosen = {vault.find_snapshot(spec, records=records).id for spec in args.snapshots if spec not in damaged}
    for dataset, streams in streams_by_dataset(records).items():
        lost = orphaned_by_removal(streams, chosen)
        if lost:
            names = ", ".join(f"@{s.snapshot} ({s.rec.short_id})" for s in lost)
            raise UserError(
                f"refusing: {dataset} streams kept in the vault depend on what you asked to remove: {names}",
                hint="forget those too, or first back up a bypass increment (backup zfs --base) that skips it",
            )
    return {}, [r for r in records if r.id in chosen]


def run(args) -> int:
    has_policy = any(getattr(args, f"keep_{rule}") for rule in retention.RULES)
    if bool(args.snapshots) == has_policy:
        raise UserError("name snapshots to forget, or give a policy with --keep-*, not both or neither")
    vault = open_vault(args, load_index=False)
    # Exclusive: no reader is between finding a snapshot and reading it.
    with contextlib.nullcontext() if args.dry_run else vault_lock(vault, "forget"):
        records = vault.snapshots()
        kept, remove = _by_id(args, vault, records) if args.snapshots else _by_policy(args, records)
        damaged = sorted(set(_damaged_ids(args, vault, records).values())) if args.snapshots else []
        if not args.dry_run:
            for r in remove:
                vault.store.delete(f"snapshots/{r.id}")
            for sid in damaged:
                vault.store.delete(f"snapshots/{sid}")
    by_id = {r.id: r for r in records}
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
            print(f"keep    {r.short_id}  {r.time_str}  {r.source}  ({', '.join(why)})")
        for r in sorted(remove, key=lambda r: (r.source, r.time)):
            print(f"{verb:7} {r.short_id}  {r.time_str}  {r.source}")
        for sid in damaged:
            print(f"{verb:7} {sid[:8]}  (damaged record snapshots/{sid})")
        if (remove or damaged) and not args.dry_run:
            print(f"{len(remove) + len(damaged)} snapshot(s) removed; "
                  "run 'coldvault prune' to delete the data only they used")
    return 0
