"""`coldvault backup dir|stdin`: store a new snapshot."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import subprocess
import sys

import trio

from coldvault.cli import backup_watch, progress
from coldvault.cli.common import open_vault, parse_time, print_json, size
from coldvault.errors import ExitCode, UserError
from coldvault.index.tree import name_problem
from coldvault.uploader.excludes import Excludes
from coldvault.uploader.multidir import MultiDirBackup, check_paths, read_path_lists
from coldvault.uploader.streambackup import StreamBackup
from coldvault.vault.lock import source_lock

log = logging.getLogger(__name__)

FULL_EVERY_ENV = "COLDVAULT_ZFS_FULL_EVERY"
HOLD_TAG = "coldvault"  # = uploader.zfsbackup.HOLD_TAG (not imported here: that module is loaded for zfs only)
COMMAND_EXAMPLE = "coldvault backup stdin --name db.sql --command -- mysqldump --single-transaction db"


def register(sub, common) -> None:
    p = sub.add_parser("backup", help="back up a directory, stdin or a ZFS dataset",
                       description="Back up a directory (dir), standard input (stdin) or a ZFS dataset (zfs); or "
                                   "run a profile of the config file: coldvault backup --profile NAME [OPTIONS].")
    p.add_argument("--profile", metavar="NAME",
                   help="run the backup profile NAME of the config file (docs/config.md); options given too "
                        "replace the profile's")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    hooks = argparse.ArgumentParser(add_help=False)
    hooks.add_argument("--profile", metavar="NAME", help="take this profile's settings from the config file")
    hooks.add_argument("--pre-hook", metavar="CMD", help="shell command to run first; if it fails, nothing is backed up")
    hooks.add_argument("--post-hook", metavar="CMD",
                       help="shell command to run afterwards, even after a failure (env COLDVAULT_STATUS, COLDVAULT_SNAPSHOT)")
    labels = argparse.ArgumentParser(add_help=False)
    labels.add_argument("--tag", action="append", default=[], metavar="TAG",
                        help="tag the snapshot (repeatable; TAG,TAG adds several)")
    labels.add_argument("--host", help="host name to record (default: this machine's)")
    common = argparse.ArgumentParser(add_help=False, parents=[common, hooks, labels])
    d = kinds.add_parser("dir", parents=[common], help="back up one or several directory trees",
                         description="Back up directories (and files) into one snapshot. One directory: the "
                                     "snapshot holds its contents; several PATHs, or a file: one entry per PATH, "
                                     "named by its last component. PATHs from --files-from lists add to those "
                                     "given. Exclude patterns and lists: docs/excludes.md.")
    d.add_argument("path", metavar="PATH", nargs="*",
                   help="a directory or file (several: give --name; optional with --files-from)")
    d.add_argument("--name", help="source name (default: the PATH's name; needed with several PATHs)")
    d.add_argument("--exclude", "-e", action="append", default=[], metavar="PATTERN",
                   help="leave out paths matching PATTERN (restic's rules; repeatable)")
    d.add_argument("--iexclude", action="append", default=[], metavar="PATTERN",
                   help="like --exclude, ignoring case")
    d.add_argument("--exclude-file", action="append", default=[], metavar="FILE",
                   help="read exclude patterns from FILE, one a line (# comments)")
    d.add_argument("--exclude-caches", action="store_true",
                   help="leave out the contents of directories with a valid CACHEDIR.TAG")
    d.add_argument("--exclude-if-present", action="append", default=[], metavar="NAME",
                   help="leave out the contents of directories holding a file NAME (repeatable)")
    d.add_argument("--one-file-system", "-x", action="store_true",
                   help="do not cross file system boundaries below each PATH: a mount point is kept as an "
                        "empty directory")
    d.add_argument("--files-from", action="append", default=[], metavar="FILE",
                   help="back up the paths listed in FILE too, one a line ('#' comments, glob patterns; "
                        "'-': stdin; repeatable)")
    d.add_argument("--files-from-verbatim", action="append", default=[], metavar="FILE",
                   help="like --files-from, lines taken as they are (no comments, no patterns)")
    d.add_argument("--files-from-raw", action="append", default=[], metavar="FILE",
                   help="like --files-from-verbatim, paths separated by NUL bytes (find -print0)")
    d.add_argument("--time", help="snapshot time, ISO 8601 (default: now)")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.add_argument("--sqlite-consistent", action="store_true",
                   help="copy SQLite databases through SQLite's online backup API (consistent while in use)")
    backup_watch.add_options(d)
    d.set_defaults(func=run_dir, late_positional="path")
    s = kinds.add_parser(
        "stdin", parents=[common], help="back up standard input, or a command's output, as one file",
        usage="%(prog)s [options] --name FILE [--source NAME] [--time ISO8601] [--json] [--command -- CMD ARGS...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Back up standard input as one file; or, with --command -- CMD ARGS..., the standard\n"
                    "output of CMD, which coldvault runs itself (no shell): if CMD fails, no snapshot is\n"
                    "saved and coldvault exits 4. Safer than a pipe, whose failure /bin/sh does not see.",
        epilog=f"example:\n  {COMMAND_EXAMPLE}")
    s.add_argument("--name", required=True, metavar="FILE", help="file name of the stream in the snapshot")
    s.add_argument("--source", metavar="NAME", help="source name (default: FILE)")
    s.add_argument("--time", metavar="ISO8601", help="snapshot time, ISO 8601 (default: now)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--command", dest="from_command", action="store_true",
                   help="run CMD ARGS... (everything after --; no shell) and back up its standard output instead of "
                        "stdin; its stderr is passed through; if it exits non-zero or is killed, no snapshot is "
                        "saved and coldvault exits 4")
    s.add_argument("command_argv", nargs="*", metavar="CMD ARGS", help="with --command: the command to run, after --")
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
    z.add_argument("--full-every", metavar="N",
                   help=f"a full stream whenever the chain to the base holds N streams already, so no chain is "
                        f"longer than N (env {FULL_EVERY_ENV}; default: never)")
    z.add_argument("--recursive", action="store_true",
                   help="DATASET and every dataset below it: one recursive snapshot (zfs snapshot -r), "
                        "one stream per dataset, each in its own chain")
    z.add_argument("--intermediate", action="store_true",
                   help="also store the snapshots between the base and the new one, one increment each "
                        "(as zfs send -I), so each can be restored")
    z.add_argument("--no-hold", dest="hold", action="store_false",
                   help=f"do not 'zfs hold' the next increment's base (tag {HOLD_TAG}) nor release the previous one")
    z.add_argument("--keep-local", metavar="N",
                   help="afterwards destroy coldvault's own older snapshots of the dataset (P-<UTC time>), "
                        "all but the newest N and the next base; others' snapshots are never touched")
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


def _run_hook(what: str, cmd: str, env: dict) -> int:
    log.info("running %s: %s", what, cmd)
    return subprocess.run(cmd, shell=True, env={**os.environ, **env}).returncode


def with_hooks(args, source: str, backup) -> int:
    """Lock the source, run the pre-hook, the backup, then always the post-hook."""
    vault = open_vault(args, load_index=False)
    command = " ".join(["backup", args.kind, source])
    with source_lock(vault, source, command):
        vault.load_index()  # only now: a prune that held the vault has finished
        if args.pre_hook:
            code = _run_hook("pre-hook", args.pre_hook, {"COLDVAULT_SOURCE": source})
            if code != 0:
                raise UserError(f"the pre-hook failed with status {code}; nothing was backed up")
        status, snapshot, code = "error", "", ExitCode.ERROR
        try:
            rec, code = backup(vault)
            status, snapshot = ("partial" if code == ExitCode.PARTIAL else "ok"), rec.id
        finally:
            if args.post_hook:
                hook = _run_hook("post-hook", args.post_hook, {
                    "COLDVAULT_SOURCE": source, "COLDVAULT_STATUS": status, "COLDVAULT_SNAPSHOT": snapshot})
                if hook != 0:
                    print(f"coldvault: error: the post-hook failed with status {hook}", file=sys.stderr)
                    if code == ExitCode.OK:
                        code = ExitCode.ERROR
    return code


@contextlib.contextmanager
def _without_cycle_collector():
    """Switch Python's cycle collector off for a directory backup.

    Reference counting frees what a backup drops; the cycle collector would only
    walk the growing heap of tree entries and index records again and again (0.06
    to 0.1 s, 6-9%, of an unchanged backup of 50,000 small files). A backup makes
    no reference cycles per file or directory: the cycles the collector finds at
    the end are the same few thousand objects, from start-up, whatever the size
    of the tree.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def split_tags(values: list[str]) -> list[str]:
    tags = [t.strip() for v in values for t in v.split(",") if t.strip()]
    for t in tags:
        if not t.isprintable():
            raise UserError(f"tag {t!r} is not printable")
    return tags


def check_host(host: str | None) -> str | None:
    if host is not None and (not host or not host.isprintable()):
        raise UserError(f"--host {host!r} is not a usable host name")
    return host


def dir_paths(args) -> list[str]:
    """The PATH arguments, then the paths of the --files-from lists: absolute, existing, no repeats."""
    listed = read_path_lists(args.files_from, args.files_from_verbatim, args.files_from_raw)
    if not args.path and not listed:
        if args.files_from or args.files_from_verbatim or args.files_from_raw:
            raise UserError("nothing to back up: the --files-from lists name no path")
        raise UserError("nothing to back up: give a PATH, or --files-from FILE")
    return check_paths(args.path + listed)


def run_dir(args) -> int:
    paths = dir_paths(args)
    if len(paths) > 1 and not args.name:
        raise UserError(f"{len(paths)} paths in one snapshot need a source name", hint="give --name NAME")
    source = check_source_name(args.name or os.path.basename(paths[0].rstrip("/")) or "root")
    when = parse_time(args.time)
    tags = split_tags(args.tag)
    check_host(args.host)
    excludes = Excludes(args.exclude, args.iexclude, args.exclude_file, args.exclude_caches, args.exclude_if_present)
    if backup_watch.wanted(args):
        return backup_watch.run(args, paths, excludes, run_dir)

    def backup(vault):
        job = MultiDirBackup(vault, paths, source, when, _parent(vault, source), sqlite_consistent=args.sqlite_consistent,
                             excludes=excludes or None, one_file_system=args.one_file_system, tags=tags,
                             host=args.host)
        rec = trio.run(progress.run_with_progress, job.run, lambda: _render(job))
        return rec, _report(args, rec)

    with _without_cycle_collector():
        return with_hooks(args, source, backup)


def run_stdin(args) -> int:
    problem = name_problem(os.fsencode(args.name))
    if problem:
        raise UserError(f"--name {args.name!r} is not a valid file name ({problem})")
    source = check_source_name(args.source or args.name)
    when = parse_time(args.time)
    tags, host = split_tags(args.tag), check_host(args.host)
    command = None
    if args.from_command:
        if not args.command_argv:
            raise UserError("--command needs the command to run after --", hint=f"e.g. {COMMAND_EXAMPLE}")
        command = args.command_argv
    elif args.command_argv:
        raise UserError(f"unexpected argument {args.command_argv[0]!r}; to back up a command's output, "
                        "give --command -- CMD ARGS...")
    elif sys.stdin.isatty():
        raise UserError("standard input is a terminal; pipe the data in, or give --command -- CMD ARGS...",
                        hint=f"e.g. {COMMAND_EXAMPLE}")

    def backup(vault):
        stream = None if command else sys.stdin.buffer
        job = StreamBackup(vault, stream, args.name, source, when, _parent(vault, source), command=command,
                           tags=tags, host=host)
        rec = trio.run(progress.run_with_progress, job.run, lambda: _render(job))
        return rec, _report(args, rec)

    return with_hooks(args, source, backup)


def _count(what: str, text: str | None) -> int | None:
    """A count of 1 or more given as an option or in the environment, or None."""
    if text is None or text == "":
        return None
    try:
        n = int(text)
    except ValueError:
        raise UserError(f"{what} must be a whole number of 1 or more, not {text!r}") from None
    if n < 1:
        raise UserError(f"{what} must be 1 or more, not {n}")
    return n


def run_zfs(args) -> int:
    from coldvault.uploader.zfsbackup import ZfsBackup
    from coldvault.zfs.chain import source_name
    from coldvault.zfs.commands import SEND_FLAGS, split_snapshot

    dataset, snap = split_snapshot(args.target)
    flags = [flag for name, flag in SEND_FLAGS.items() if getattr(args, name)]
    if args.full_every is not None:
        full_every = _count("--full-every", args.full_every)
    else:
        full_every = _count(FULL_EVERY_ENV, os.environ.get(FULL_EVERY_ENV))
    keep_local = _count("--keep-local", args.keep_local)

    options = dict(flags=flags, prefix=args.snapshot_prefix, full_every=full_every, hold=args.hold,
                   keep_local=keep_local, intermediate=args.intermediate, tags=split_tags(args.tag),
                   host=check_host(args.host))
    if args.recursive:
        if args.base:
            raise UserError("--base names one dataset's snapshot: it does not go with --recursive")
        return with_hooks(args, source_name(dataset), lambda vault: _recursive(args, vault, dataset, snap, options))

    def backup(vault):
        job = ZfsBackup(vault, dataset, snap, base=args.base, full=args.full, **options)
        rec, new = trio.run(progress.run_with_progress, job.run, lambda: _render(job))
        return rec, _report_zfs(args, rec, new, job)

    return with_hooks(args, source_name(dataset), backup)


def _recursive(args, vault, dataset: str, snap: str | None, options: dict):
    from coldvault.uploader.zfsbackup import RecursiveZfsBackup

    job = RecursiveZfsBackup(vault, dataset, snap, full=args.full, **options)
    results = trio.run(progress.run_with_progress, job.run,
                       lambda: _render(job.jobs[-1]) if job.jobs else "starting")
    if not results:
        raise UserError(f"no dataset below {dataset} has the snapshot")
    if args.json:
        print_json({"recursive": dataset, "datasets": [
            {"dataset": j.dataset, "snapshot": rec.id, "new": new, "stream": _stream_text(rec),
             "length": rec.zfs["length"], "streams": [{"snapshot": r.id, "stream": _stream_text(r)} for r in j.stored],
             "full_because": j.full_because if new else None, "held": j.held, "released": j.released,
             "destroyed": j.destroyed} for j, rec, new in results]})
    elif not args.quiet:
        new = sum(1 for _, _, n in results if n)
        print(f"{dataset}@{results[0][1].zfs['snapshot']} (recursive): {len(results)} dataset(s), "
              f"{new} new stream(s)")
        quiet = argparse.Namespace(**{**vars(args), "json": False})
        for j, rec, n in results:
            _report_zfs(quiet, rec, n, j)
    return results[0][1], ExitCode.OK


def _stream_text(rec) -> str:
    z = rec.zfs
    return f"{z['dataset']}@{z['snapshot']}" + (f" from @{z['base']['snapshot']}" if z["base"] else " (full)")


def _report_zfs(args, rec, new: bool, job) -> int:
    z = rec.zfs
    what = _stream_text(rec)
    local = {"held": job.held, "released": job.released, "destroyed": job.destroyed}
    before = job.stored[:-1]  # --intermediate: the streams stored before the last one
    if args.json:
        print_json({"snapshot": rec.id, "new": new, "stream": what, "length": z["length"],
                    "streams": [{"snapshot": r.id, "stream": _stream_text(r)} for r in job.stored],
                    "full_because": job.full_because if new else None, **local, **rec.summary})
    elif not args.quiet:
        tail = ""
        if job.held:
            tail += f"; hold on @{job.held}"
        if job.destroyed:
            tail += f"; destroyed {len(job.destroyed)} older local snapshot(s)"
        for r in before:
            print(f"snapshot {r.short_id}: {_stream_text(r)}, stream of {size(r.zfs['length'])} (intermediate)")
        if not new:
            print(f"{what} is already in the vault (snapshot {rec.short_id}); nothing to do{tail}")
        else:
            s = rec.summary
            print(f"snapshot {rec.short_id}: {what}, stream of {size(z['length'])}, {size(s.get('bytes_new', 0))} new"
                  f" ({size(s.get('bytes_uploaded', 0))} stored in {s.get('packs', 0)} packs), "
                  f"{s.get('duration', 0):.1f} s{tail}")
    return ExitCode.OK
