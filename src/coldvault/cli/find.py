"""`coldvault find PATTERN`: which snapshots hold matching paths, newest first."""

from __future__ import annotations

import os
import sys

from coldvault.cli.common import add_filters, iso, open_vault, print_json, snapshot_filter
from coldvault.errors import UserError
from coldvault.vault.find import find
from coldvault.vault.lock import read_lock


def register(sub, common) -> None:
    p = sub.add_parser("find", parents=[common], help="which snapshots hold files matching a pattern",
                       description="PATTERN (fnmatch: * ? [...]) is matched against each entry's name, or, when it "
                                   "holds a '/', against its whole path in the snapshot. Newest snapshot first.")
    p.add_argument("pattern", metavar="PATTERN")
    p.add_argument("--source", help="only snapshots of this source")
    add_filters(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    if not args.pattern.strip("/"):
        raise UserError("find: PATTERN is empty")
    vault = open_vault(args)
    with read_lock(vault, f"find {args.pattern}"):
        recs = vault.snapshots()
        if args.source is not None:
            recs = [r for r in recs if r.source == args.source]
            if not recs:
                raise UserError(f"there are no snapshots of source {args.source!r} in the vault")
        where = snapshot_filter(args)
        if where:
            recs = [r for r in recs if where(r)]
            if not recs:
                raise UserError(f"there are no snapshots{where.describe()} in the vault")
        found = find(vault, recs, args.pattern)
        if args.json:
            print_json([{"snapshot": rec.id, "source": rec.source, "time": iso(rec.time),
                         "matches": [{"path": os.fsdecode(m.path), "type": m.entry.type, "size": m.entry.size,
                                      "mtime": iso(m.entry.mtime)} for m in matches]}
                        for rec, matches in found])
            return 0
        write = sys.stdout.write
        n = 0
        for rec, matches in found:
            write(f"snapshot {rec.short_id} of {rec.source} at {rec.time_str}:\n")
            for m in matches:
                write(f"  {os.fsdecode(m.path)}{'/' if m.entry.type == 'dir' else ''}\n")
            n += 1
    if not n:
        print(f"no snapshot holds {args.pattern!r}", file=sys.stderr)
    return 0
