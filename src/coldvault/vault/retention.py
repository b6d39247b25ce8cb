"""Which snapshots a retention policy keeps: restic's rules, then whole ZFS chains.

Per source, newest first: `last` keeps the N newest; `hourly`/`daily`/
`weekly`/`monthly`/`yearly` keep the newest snapshot of each of the N most
recent hours/days/ISO weeks/months/years that have one. A snapshot is kept if
any rule keeps it. For ZFS sources every stream on the chain of a kept stream
is kept too, so a kept snapshot can always be received.
"""

from __future__ import annotations

from coldvault.index.snapshot import SnapshotRecord
from coldvault.zfs.chain import shortest_chain, streams_by_dataset

BUCKETS = {
    "hourly": lambda d: d.strftime("%Y-%m-%d %H"),
    "daily": lambda d: d.strftime("%Y-%m-%d"),
    "weekly": lambda d: "%d-W%02d" % d.isocalendar()[:2],
    "monthly": lambda d: d.strftime("%Y-%m"),
    "yearly": lambda d: d.strftime("%Y"),
}
RULES = ("last", *BUCKETS)


def keep(records: list[SnapshotRecord], policy: dict[str, int]) -> dict[str, list[str]]:
    """Snapshot id -> why it is kept, for the records of one source."""
    newest_first = sorted(records, key=lambda r: (r.time, r.id), reverse=True)
    reasons: dict[str, list[str]] = {}
    n_last = policy.get("last", 0)
    for r in newest_first[:n_last]:
        reasons.setdefault(r.id, []).append("last")
    for rule, bucket in BUCKETS.items():
        n = policy.get(rule, 0)
        seen: list[str] = []
        for r in newest_first:
            if len(seen) >= n:
                break
            key = bucket(r.datetime)
            if key not in seen:
                seen.append(key)
                reasons.setdefault(r.id, []).append(f"{rule} {key}")
    return reasons


def keep_chains(records: list[SnapshotRecord], reasons: dict[str, list[str]]) -> None:
    """Add every stream that a kept ZFS stream's chain needs (in place)."""
    for streams in streams_by_dataset(records).values():
        for s in [s for s in streams if s.rec.id in reasons]:
            for step in shortest_chain(streams, s.guid) or []:
                if step.rec.id not in reasons:
                    reasons[step.rec.id] = []
                if step.rec.id != s.rec.id and f"chain of @{s.snapshot}" not in reasons[step.rec.id]:
                    reasons[step.rec.id].append(f"chain of @{s.snapshot}")
