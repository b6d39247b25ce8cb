"""`coldvault restore dir SNAPSHOT [PATH] --target DIR`."""

from __future__ import annotations

import trio

from coldvault.cli.common import open_vault, print_json, size
from coldvault.restore.dirrestore import DirRestore


def register(sub, common) -> None:
    p = sub.add_parser("restore", help="restore a directory snapshot or a ZFS chain")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    d = kinds.add_parser("dir", parents=[common], help="restore files from a snapshot into a directory")
    d.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id (a prefix will do) or 'latest'")
    d.add_argument("path", nargs="?", default=None, metavar="PATH", help="only this file or directory")
    d.add_argument("--target", required=True, metavar="DIR", help="where to write (empty, or --overwrite)")
    d.add_argument("--source", help="with 'latest': the newest snapshot of this source")
    d.add_argument("--overwrite", action="store_true", help="write into a non-empty target, replacing files")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.set_defaults(func=run_dir)


def run_dir(args) -> int:
    vault = open_vault(args)
    rec = vault.find_snapshot(args.snapshot, args.source)
    job = DirRestore(vault, rec, args.path, args.target, overwrite=args.overwrite)
    stats = trio.run(job.run)
    if args.json:
        print_json({"snapshot": rec.id, "target": args.target, "files": stats.files, "dirs": stats.dirs,
                    "symlinks": stats.symlinks, "bytes": stats.bytes})
    elif not args.quiet:
        print(f"restored snapshot {rec.short_id} to {args.target}: {stats.files} files, {stats.dirs} dirs,"
              f" {stats.symlinks} symlinks, {size(stats.bytes)}")
    return 0
