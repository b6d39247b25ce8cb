"""`coldvault restore dir SNAPSHOT [PATH] --target DIR`."""

from __future__ import annotations

import trio

from coldvault import runtime
from coldvault.cli.common import SNAPSHOT_HELP, add_filters, open_vault, print_json, size, snapshot_filter
from coldvault.errors import UserError
from coldvault.restore.dirrestore import DirRestore
from coldvault.store.base import RESTORE_TIERS
from coldvault.vault import selector
from coldvault.vault.lock import read_lock


def register(sub, common) -> None:
    p = sub.add_parser("restore", help="restore a directory snapshot or a ZFS chain")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    d = kinds.add_parser("dir", parents=[common], help="restore files from a snapshot into a directory")
    d.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    d.add_argument("path", nargs="?", default=None, metavar="PATH", help="only this file or directory (before or after options)")
    d.add_argument("--target", required=True, metavar="DIR", help="where to write (empty, or --overwrite)")
    d.add_argument("--source", help="pick SNAPSHOT among this source's snapshots")
    add_filters(d)
    d.add_argument("--overwrite", action="store_true", help="write into a non-empty target, replacing files")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.set_defaults(func=run_dir, late_positional="path")
    z = kinds.add_parser("zfs", parents=[common], help="receive a snapshot's chain into a ZFS dataset")
    z.add_argument("snapshot", metavar="DATASET@SNAP",
                   help="SNAP: a ZFS snapshot name, or 'latest', a UTC day (2026-11-24) or a time (2026-11-24T03:00), "
                        "picked among the streams that --tag/--host let through")
    z.add_argument("--into", required=True, metavar="POOL/DATASET", help="dataset to receive into (absent, or at a snapshot of the chain)")
    z.add_argument("--thaw", action="store_true", help="request the restore of cold packs the chain needs")
    z.add_argument("--wait", action="store_true", help="with --thaw: wait until they are readable, then receive")
    z.add_argument("--tier", choices=RESTORE_TIERS, default="Bulk", help="restore tier for --thaw (default Bulk)")
    z.add_argument("--days", type=int, default=7, help="days restored copies stay readable (default 7)")
    z.add_argument("--recursive", action="store_true",
                   help="also every dataset below DATASET with @SNAP in the vault, parents first: "
                        "DATASET/x is received into INTO/x")
    add_filters(z, "streams")
    z.set_defaults(func=run_zfs)


def run_dir(args) -> int:
    vault = open_vault(args)
    runtime.fewer_gc_walks()  # the index is never garbage; batches of files come and go
    with read_lock(vault, f"restore dir {args.snapshot}"):  # prune deletes nothing meanwhile
        rec = vault.find_snapshot(args.snapshot, args.source, where=snapshot_filter(args))
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
        raise UserError(f"{args.snapshot}: name the snapshot to restore, as DATASET@SNAP (SNAP: a ZFS snapshot "
                        "name, or 'latest', a UTC day or a time)")
    if args.wait and not args.thaw:
        raise UserError("--wait goes with --thaw")
    vault = open_vault(args)
    out = (lambda *a: None) if args.quiet else print
    with read_lock(vault, f"restore zfs {args.snapshot}"):  # prune deletes nothing meanwhile
        snap = _zfs_snapshot_name(vault, dataset, snap, snapshot_filter(args))
        pairs = [(dataset, args.into)]
        if args.recursive:
            from coldvault.restore.zfsrestore import recursive_pairs
            pairs = recursive_pairs(vault, dataset, snap, args.into)
        for ds, into in pairs:
            ZfsRestore(vault, ds, snap, into, thaw_=args.thaw, wait=args.wait, tier=args.tier,
                       days=args.days, out=out).run()
    return 0


def _zfs_snapshot_name(vault, dataset: str, snap: str, where=None) -> str:
    """The ZFS snapshot `snap` names: itself if the vault has a stream of dataset@snap, else
    the one a selector (latest, a UTC day, a time, a snapshot record's id) picks among the
    dataset's streams (those `where`, a selector.Filter, lets through)."""
    from coldvault.zfs.chain import streams_by_dataset

    if not selector.is_selector(snap):
        return snap
    streams = streams_by_dataset(vault.snapshots()).get(dataset, [])
    if any(s.snapshot == snap for s in streams):
        return snap  # a snapshot's own name comes first
    if not streams:
        return snap  # ZfsRestore says there is none
    recs = sorted((s.rec for s in streams if not where or where(s.rec)), key=lambda r: r.order)
    rec = selector.select(snap, recs, f"zfs:{dataset}", where.describe() if where else "")
    return rec.zfs["snapshot"]
