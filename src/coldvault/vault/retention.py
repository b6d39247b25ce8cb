"""Which snapshots a retention policy keeps: restic's rules, then whole ZFS chains.

Per source, newest first: `last` keeps the N newest; `hourly`/`daily`/
`weekly`/`monthly`/`yearly` keep the newest snapshot of each of the N most
recent hours/days/ISO weeks/months/years that have one. A snapshot is kept if
any rule keeps it.

For ZFS sources the rules count snapshots (a snapshot stored twice, as a nightly
increment and as a bypass increment, is one), and a kept snapshot keeps exactly
the streams of its restore chain (`shortest_chain`, the one `restore zfs` and
the mount use): the streams no kept snapshot's chain needs go, whole old chains
(`backup zfs --full-every`) and the intermediate streams a bypass skips alike.
"""

from __future__ import annotations

from coldvault.index.snapshot import SnapshotRecord
from coldvault.zfs.chain import Stream, shortest_chain, streams_by_dataset

BUCKETS = {
    "hourly": lambda d: d.strftime("%Y-%m-%d %H"),
    "daily": lambda d: d.strftime("%Y-%m-%d"),
    "weekly": lambda d: "%d-W%02d" % d.isocalendar()[:2],
    "monthly": lambda d: d.strftime("%Y-%m"),
    "yearly": lambda d: d.strftime("%Y"),
}
RULES = ("last", *BUCKETS)


def keep(records: list[SnapshotRecord], policy: dict[str, int], order=lambda r: r.order) -> dict[str, list[str]]:
    """Snapshot id -> why it is kept (`last`, `daily 2026-01-31`...), for the
    records of one source, each record counted as a snapshot of its own; `order`: oldest
    to newest (snapshots of one second share a time)."""
    newest_first = sorted(records, key=order, reverse=True)
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


def option(reason: str) -> str:
    """A rule's reason as the option that gave it: `daily 2026-01-31` -> `--keep-daily 2026-01-31`."""
    return f"--keep-{reason}" if reason.split(" ", 1)[0] in RULES else reason


def keep_source(records: list[SnapshotRecord], policy: dict[str, int]) -> dict[str, list[str]]:
    """Snapshot id -> why it is kept, for the records of one source; ZFS streams by snapshot
    and chain (see the module's doc)."""
    by_dataset = streams_by_dataset(records)
    in_streams = {s.rec.id for streams in by_dataset.values() for s in streams}
    reasons = keep([r for r in records if r.id not in in_streams], policy)
    for streams in by_dataset.values():
        _keep_streams(streams, policy, reasons)
    return reasons


def _keep_streams(streams: list[Stream], policy: dict[str, int], reasons: dict[str, list[str]]) -> None:
    newest: dict[int, Stream] = {}  # one record per snapshot for the rules
    for s in streams:
        if s.guid not in newest or (s.rec.time, s.rec.id) > (newest[s.guid].rec.time, newest[s.guid].rec.id):
            newest[s.guid] = s
    # ZFS snapshots taken within one second share a time: createtxg orders them.
    by_rep = keep([s.rec for s in newest.values()], policy, order=lambda r: r.order)
    kept = [(s, by_rep[s.rec.id]) for s in newest.values() if s.rec.id in by_rep]
    kept.sort(key=lambda sw: (sw[0].createtxg, sw[0].rec.time), reverse=True)
    for s, why in kept:
        chain = shortest_chain(streams, s.guid)
        if chain is None:  # no full stream leads to it: keep what there is of it, as before
            chain = [x for x in streams if x.guid == s.guid]
        rules = ", ".join(option(w) for w in why)
        for step in chain:
            mine = reasons.setdefault(step.rec.id, [])
            if step.guid == s.guid:
                mine[:0] = [w for w in why if w not in mine]
            else:
                text = f"needed by the chain of @{s.snapshot} (kept by {rules})"
                if text not in mine:
                    mine.append(text)
