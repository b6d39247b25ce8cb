"""Which snapshot records `forget` removes, and removing them.

Two ways to choose: by id (or a prefix), or by a retention policy
(vault/retention.py) per source. Chain-aware either way: by policy, every
ZFS stream on a kept snapshot's restore chain is kept, and only those; by id, removing a stream that a
kept stream is received through is refused. Damaged records (left out of
`Vault.snapshots` with a warning) can be removed by id only: no chain uses
them. Only the records go; `prune` deletes the data they alone used. The
caller holds the vault exclusively.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coldvault.errors import DamagedError, UserError
from coldvault.index.snapshot import SnapshotRecord
from coldvault.vault import retention
from coldvault.vault.vault import Vault
from coldvault.zfs.chain import orphaned_by_removal, streams_by_dataset


@dataclass
class ForgetPlan:
    remove: list[SnapshotRecord] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # ids of damaged records named by the user: removed
    kept: dict[str, list[str]] = field(default_factory=dict)  # by policy: snapshot id -> why it is kept


def plan_by_policy(records: list[SnapshotRecord], policy: dict[str, int], source: str | None = None) -> ForgetPlan:
    """Apply `policy` (rule -> N, rules of `retention.RULES`) to each source's records, or
    to `source`'s only; a kept ZFS snapshot keeps the streams of its restore chain, the
    other streams go."""
    if any(n < 0 for n in policy.values()):
        raise UserError("--keep-* values must not be negative")
    sources: dict[str, list[SnapshotRecord]] = {}
    for r in records:
        if source is None or r.source == source:
            sources.setdefault(r.source, []).append(r)
    if source is not None and not sources:
        raise UserError(f"there are no snapshots of source {source!r}")
    kept: dict[str, list[str]] = {}
    candidates = []
    for recs in sources.values():
        kept.update(retention.keep_source(recs, policy))
        candidates += recs
    return ForgetPlan(remove=[r for r in candidates if r.id not in kept], kept=kept)


def damaged_ids(vault: Vault, records: list[SnapshotRecord], specs: list[str]) -> dict[str, str]:
    """Damaged records (unreadable: left out of `records` with a warning) that `specs`
    name, spec -> id: by their id or a prefix no readable record shares. Removing one
    cannot break a chain, since chains never use them. A record of a newer format is not
    damaged and is never removed this way."""
    damaged = [sid for sid, exc in vault.damaged_snapshots.items() if isinstance(exc, DamagedError)]
    out = {}
    for spec in specs:
        hits = [sid for sid in damaged if sid.startswith(spec.lower())]
        if not hits or any(r.id.startswith(spec.lower()) for r in records):
            continue
        if len(hits) > 1:
            raise UserError(f"{spec!r} names {len(hits)} damaged snapshot records", hint="give more of the id")
        out[spec] = hits[0]
    return out


def plan_by_ids(vault: Vault, records: list[SnapshotRecord], specs: list[str],
                source: str | None = None) -> ForgetPlan:
    """The records `specs` name (ids or prefixes; damaged records too); refused if a ZFS
    stream kept in the vault is received through one of them."""
    damaged = damaged_ids(vault, records, specs)
    chosen = {vault.find_snapshot(spec, source, records=records).id for spec in specs if spec not in damaged}
    for dataset, streams in streams_by_dataset(records).items():
        lost = orphaned_by_removal(streams, chosen)
        if lost:
            names = ", ".join(f"@{s.snapshot} ({s.rec.short_id})" for s in lost)
            raise UserError(
                f"refusing: {dataset} streams kept in the vault depend on what you asked to remove: {names}",
                hint="forget those too, or first back up a bypass increment (backup zfs --base) that skips it",
            )
    return ForgetPlan(remove=[r for r in records if r.id in chosen], damaged=sorted(set(damaged.values())))


def apply(vault: Vault, plan: ForgetPlan) -> None:
    """Delete the chosen snapshot records, readable ones first."""
    for r in plan.remove:
        vault.delete_snapshot(r.id)
    for sid in plan.damaged:
        vault.delete_snapshot(sid)
