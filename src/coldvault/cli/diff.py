"""`coldvault diff A B`: what changed between two snapshots, as restic diff shows it."""

from __future__ import annotations

import os
import sys

from coldvault.cli.common import SNAPSHOT_HELP, add_filters, open_vault, print_json, size, snapshot_filter
from coldvault.errors import UserError
from coldvault.vault.diff import Summary, diff
from coldvault.vault.lock import read_lock
from coldvault.vault.paths import resolve


def register(sub, common) -> None:
    p = sub.add_parser("diff", parents=[common], help="what changed between two snapshots",
                       description="Lines '+ path' (only in B), '- path' (only in A), 'M path' (content changed), "
                                   "'U path' (metadata only), 'T path' (type changed), then a summary.")
    p.add_argument("a", metavar="A", help="the older snapshot: " + SNAPSHOT_HELP)
    p.add_argument("b", metavar="B", help="the newer snapshot")
    p.add_argument("path", nargs="?", default="", metavar="PATH", help="compare only below this directory")
    p.add_argument("--source", help="pick A and B among this source's snapshots")
    add_filters(p)
    p.add_argument("--json", action="store_true", help="one JSON document: changes and summary")
    p.set_defaults(func=run, late_positional="path")


def run(args) -> int:
    vault = open_vault(args)
    with read_lock(vault, f"diff {args.a} {args.b}"):
        recs = vault.snapshots()
        where = snapshot_filter(args)
        a = vault.find_snapshot(args.a, args.source, recs, where=where)
        b = vault.find_snapshot(args.b, args.source, recs, where=where)
        roots = []
        for rec in (a, b):
            e = resolve(vault, rec, args.path)
            if e is not None and e.tree is None:
                raise UserError(f"{args.path} is not a directory in snapshot {rec.short_id}")
            roots.append(e.tree if e is not None else rec.tree)
        prefix = os.fsencode(args.path.strip("/"))
        summary = Summary()
        changes = []
        write = sys.stdout.write
        for c in diff(vault, *roots):
            summary.add(c)
            path = os.fsdecode(prefix + b"/" + c.path if prefix else c.path)
            if args.json:
                changes.append({"change": c.code, "path": path, "type": c.type})
            else:
                write(f"{c.code}    {path}{'/' if c.type == 'dir' else ''}\n")
    if args.json:
        print_json({"a": a.id, "b": b.id, "changes": changes, "summary": {
            **summary.counts, "added_bytes": summary.added_bytes, "removed_bytes": summary.removed_bytes}})
        return 0
    n = summary.counts
    write(f"\nFiles:  {n['file']['added']:>6} new, {n['file']['removed']:>6} removed, "
          f"{n['file']['modified']:>6} changed, {n['file']['metadata']:>6} metadata only\n")
    write(f"Dirs:   {n['dir']['added']:>6} new, {n['dir']['removed']:>6} removed, "
          f"{n['dir']['metadata']:>6} metadata only\n")
    write(f"Others: {n['other']['added']:>6} new, {n['other']['removed']:>6} removed, "
          f"{n['other']['modified']:>6} changed\n")
    types = sum(v["type"] for v in n.values())
    if types:
        write(f"Type changes: {types}\n")
    write(f"Added:   {size(summary.added_bytes)}\nRemoved: {size(summary.removed_bytes)}\n")
    return 0
