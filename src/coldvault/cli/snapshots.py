"""`coldvault snapshots`: list what the vault holds."""

from __future__ import annotations

from coldvault.cli.common import add_filters, open_vault, print_json, size, snapshot_filter


def register(sub, common) -> None:
    p = sub.add_parser("snapshots", parents=[common], help="list snapshots")
    p.add_argument("--source", help="only this source")
    add_filters(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _plain(v):
    """JSON-safe: bytes as hex."""
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def describe(r) -> str:
    """What a snapshot holds, in a few words: the path, or the stream and its base."""
    tags = f" [{','.join(r.tags)}]" if r.tags else ""
    if r.kind == "zfs" and r.zfs:
        z = r.zfs
        return (f"@{z['base']['snapshot']}..@{z['snapshot']}" if z.get("base") else f"@{z['snapshot']} (full)") + tags
    return ", ".join(r.paths) + tags


def as_json(r) -> dict:
    return {
        "id": r.id,
        "short_id": r.short_id,
        "kind": r.kind,
        "source": r.source,
        "time": r.time_str,
        "time_ns": r.time,
        "hostname": r.hostname,
        "paths": r.paths,
        "parent": r.parent,
        "original": r.original,
        "tags": r.tags,
        "incomplete": r.incomplete,
        "summary": r.summary,
        "zfs": _plain(r.zfs),
    }


def run(args) -> int:
    vault = open_vault(args, load_index=False)
    recs = vault.snapshots()
    if args.source:
        recs = [r for r in recs if r.source == args.source]
    where = snapshot_filter(args)
    if where:
        recs = [r for r in recs if where(r)]
    code = 0
    if vault.damaged_snapshots:
        # Listed what could be read; the damaged ones were named in the log.
        code = vault.damaged_snapshots[next(iter(vault.damaged_snapshots))].exit_code
    if args.json:
        print_json([as_json(r) for r in recs])
        return code
    if not recs:
        if not args.quiet:
            print("no snapshots")
        return code
    rows = [("ID", "TIME", "SOURCE", "KIND", "FILES", "SIZE", "WHAT")]
    for r in recs:
        s = r.summary
        rows.append((
            r.short_id, r.time_str, r.source, r.kind, str(s.get("files", "")),
            size(s.get("bytes_total", 0)), describe(r) + (" (incomplete)" if r.incomplete else ""),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return code
