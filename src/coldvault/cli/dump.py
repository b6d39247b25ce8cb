"""`coldvault dump SNAPSHOT [PATH]`: a file to stdout, a directory as a tar stream, a ZFS stream."""

from __future__ import annotations

import sys

from coldvault.cli.common import SNAPSHOT_HELP, add_filters, open_vault, snapshot_filter
from coldvault.vault.dump import dump
from coldvault.vault.lock import read_lock


def register(sub, common) -> None:
    p = sub.add_parser("dump", parents=[common],
                       help="write a file (or a directory as tar, or a ZFS stream) to stdout",
                       description="Write a file of a snapshot to stdout; a directory as a tar stream (modes, "
                                   "owners, mtimes and symlinks kept); a ZFS snapshot as the stream 'zfs receive' "
                                   "takes.")
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument("path", nargs="?", default="", metavar="PATH",
                   help="file or directory in the snapshot (default: all of it)")
    p.add_argument("--source", help="pick SNAPSHOT among this source's snapshots")
    add_filters(p)
    p.set_defaults(func=run, late_positional="path")


def run(args) -> int:
    vault = open_vault(args)
    with read_lock(vault, f"dump {args.snapshot}"):  # prune deletes nothing meanwhile
        rec = vault.find_snapshot(args.snapshot, args.source, where=snapshot_filter(args))
        out = sys.stdout.buffer
        dump(vault, rec, args.path, out, to_terminal=out.isatty())
        out.flush()
    return 0
