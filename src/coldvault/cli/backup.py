"""`coldvault backup dir|stdin`: store a new snapshot."""

from __future__ import annotations

import os
import sys

import trio

from coldvault.cli import progress
from coldvault.cli.common import open_vault, parse_time, print_json, size
from coldvault.errors import ExitCode, UserError
from coldvault.index.tree import name_problem
from coldvault.uploader.dirbackup import DirBackup
from coldvault.uploader.streambackup import StreamBackup


def register(sub, common) -> None:
    p = sub.add_parser("backup", help="back up a directory, stdin or a ZFS dataset")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    d = kinds.add_parser("dir", parents=[common], help="back up a directory tree")
    d.add_argument("path", metavar="PATH")
    d.add_argument("--name", help="source name (default: the directory's name)")
    d.add_argument("--time", help="snapshot time, ISO 8601 (default: now)")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.set_defaults(func=run_dir)
    s = kinds.add_parser("stdin", parents=[common], help="back up standard input as one file")
    s.add_argument("--name", required=True, metavar="FILE", help="file name of the stream in the snapshot")
    s.add_argument("--source", help="source name (default: FILE)")
    s.add_argument("--time", help="snapshot time, ISO 8601 (default: now)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=run_stdin)
    z = kinds.add_parser("zfs", parents=[common], help="back up a ZFS snapshot as a send stream")
    z.add_argument("target", metavar="DATASET[@SNAP]", help="without @SNAP a new snapshot is taken")
    g = z.add_mutually_exclusive_group()
    g.add_argument("--base", metavar="@SNAP", help="increment from this snapshot (it must be in the vault)")
    g.add_argument("--full", action="store_true", help="a full stream, whatever the vault holds")
    z.add_argument("--raw", action="store_true", help="zfs send -w: encrypted datasets stay encrypted")
    z.add_argument("--compressed", action="store_true", help="zfs send -c")
    z.add_argument("--large-block", action="store_true", help="zfs send -L")
    z.add_argument("--props", action="store_true", help="zfs send -p: include properties")
    z.add_argument("--snapshot-prefix", default="coldvault", metavar="P", help="name of new snapshots: P-<UTC time>")
    z.add_argument("--json", action="store_true", help="print the summary as JSON")
    z.set_defaults(func=run_zfs)


def check_source_name(name: str) -> str:
    if not name or name.startswith(".") or "/" in name or "\0" in name or not name.isprintable():
        raise UserError(f"source name {name!r} is not usable: use letters, digits, '-', '_', '.' and no '/'")
    return name


def _parent(vault, source: str):
    recs = [r for r in vault.snapshots() if r.source == source]
    return recs[-1] if recs else None


def _report(args, rec) -> int:
    s = rec.summary
    if args.json:
        print_json({"snapshot": rec.id, "source": rec.source, "time": rec.time_str, "incomplete": rec.incomplete,
                    "errors": rec.errors, **s})
    elif not args.quiet:
        files = s.get("files", 0)
        unchanged = s.get("unchanged_files", 0)
        print(
            f"snapshot {rec.short_id} of {rec.source} saved: {files} files"
            + (f" ({unchanged} unchanged)" if unchanged else "")
            + f", {size(s.get('bytes_total', 0))} in all, {size(s.get('bytes_read', 0))} read,"
            f" {size(s.get('bytes_new', 0))} new ({size(s.get('bytes_uploaded', 0))} stored"
            f" in {s.get('packs', 0)} packs), {s.get('duration', 0):.1f} s"
        )
    if rec.incomplete:
        n = s.get("errors", len(rec.errors))
        print(f"coldvault: warning: snapshot {rec.short_id} is incomplete: {n} path(s) could not be read:", file=sys.stderr)
        for e in rec.errors[:10]:
            print(f"coldvault:   {e}", file=sys.stderr)
        if n > 10:
            print(f"coldvault:   ... and {n - 10} more", file=sys.stderr)
        return ExitCode.PARTIAL
    return ExitCode.OK


def _render(job) -> str:
    c = job.session.chunker.stats if job.session.chunker else None
    if c is None:
        return "starting"
    files = getattr(job, "stats", None)
    head = f"{files.files} files, " if files else ""
    return f"{head}{size(c.bytes_read)} read, {size(c.bytes_new)} new"


def run_dir(args) -> int:
    path = os.path.abspath(args.path)
    if not os.path.isdir(path):
        raise UserError(f"{args.path} is not a directory")
    source = check_source_name(args.name or os.path.basename(path.rstrip("/")) or "root")
    when = parse_time(args.time)
    vault = open_vault(args)
    job = DirBackup(vault, path, source, when, _parent(vault, source))
    rec = trio.run(progress.run_with_progress, job.run, lambda: _render(job))
    return _report(args, rec)


def run_stdin(args) -> int:
    problem = name_problem(os.fsencode(args.name))
    if problem:
        raise UserError(f"--name {args.name!r} is not a valid file name ({problem})")
    source = check_source_name(args.source or args.name)
    when = parse_time(args.time)
    if sys.stdin.isatty():
        raise UserError("standard input is a terminal; pipe the data in (e.g. mysqldump ... | coldvault backup stdin --name db.sql)")
    vault = open_vault(args)
    job = StreamBackup(vault, sys.stdin.buffer, args.name, source, when, _parent(vault, source))
    rec = trio.run(progress.run_with_progress, job.run, lambda: _render(job))
    return _report(args, rec)


def run_zfs(args) -> int:
    from coldvault.uploader.zfsbackup import ZfsBackup
    from coldvault.zfs.commands import SEND_FLAGS, split_snapshot

    dataset, snap = split_snapshot(args.target)
    flags = [flag for name, flag in SEND_FLAGS.items() if getattr(args, name)]
    vault = open_vault(args)
    job = ZfsBackup(vault, dataset, snap, base=args.base, full=args.full, flags=flags, prefix=args.snapshot_prefix)
    rec, new = trio.run(progress.run_with_progress, job.run, lambda: _render(job))
    z = rec.zfs
    what = f"{z['dataset']}@{z['snapshot']}" + (f" from @{z['base']['snapshot']}" if z["base"] else " (full)")
    if args.json:
        print_json({"snapshot": rec.id, "new": new, "stream": what, "length": z["length"], **rec.summary})
    elif not args.quiet:
        if not new:
            print(f"{what} is already in the vault (snapshot {rec.short_id}); nothing to do")
        else:
            s = rec.summary
            print(f"snapshot {rec.short_id}: {what}, stream of {size(z['length'])}, {size(s.get('bytes_new', 0))} new"
                  f" ({size(s.get('bytes_uploaded', 0))} stored in {s.get('packs', 0)} packs), {s.get('duration', 0):.1f} s")
    return ExitCode.OK
