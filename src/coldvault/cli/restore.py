"""`coldvault restore dir SNAPSHOT [PATH] --target DIR`."""

from __future__ import annotations

import trio

from coldvault import runtime
from coldvault.cli.common import open_vault, print_json, size
from coldvault.errors import UserError
from coldvault.restore.dirrestore import DirRestore
from coldvault.store.base import RESTORE_TIERS
from coldvault.vault.lock import read_lock


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
    z = kinds.add_parser("zfs", parents=[common], help="receive a snapshot's chain into a ZFS dataset")
    z.add_argument("snapshot", metavar="DATASET@SNAP")
    z.add_argument("--into", required=True, metavar="POOL/DATASET", help="dataset to receive into (absent, or at a snapshot of the chain)")
    z.add_argument("--thaw", action="store_true", help="request the restore of cold packs the chain needs")
    z.add_argument("--wait", action="store_true", help="with --thaw: wait until they are readable, then receive")
    z.add_argument("--tier", choices=RESTORE_TIERS, default="Bulk", help="restore tier for --thaw (default Bulk)")
    z.add_argument("--days", type=int, default=7, help="days restored copies stay readable (default 7)")
    z.set_defaults(func=run_zfs)


def run_dir(args) -> int:
    vault = open_vault(args)
    runtime.fewer_gc_walks()  # the index is never garbage; batches of files come and go
    with read_lock(vault, f"restore dir {args.snapshot}"):  # prune deletes nothing meanwhile
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


def run_zfs(args) -> int:
    from coldvault.restore.zfsrestore import ZfsRestore
    from coldvault.zfs.commands import split_snapshot

    dataset, snap = split_snapshot(args.snapshot)
    if snap is None:
        raise UserError(f"{args.snapshot}: name the snapshot to restore, as DATASET@SNAP")
    if args.wait and not args.thaw:
        raise UserError("--wait goes with --thaw")
    vault = open_vault(args)
    out = (lambda *a: None) if args.quiet else print
    with read_lock(vault, f"restore zfs {args.snapshot}"):  # prune deletes nothing meanwhile
        ZfsRestore(vault, dataset, snap, args.into, thaw_=args.thaw, wait=args.wait, tier=args.tier,
                   days=args.days, out=out).run()
    return 0
