"""`coldvault dump SNAPSHOT [PATH]`: a file to stdout, a directory as a tar stream, a ZFS stream."""

from __future__ import annotations

import os
import sys

from coldvault.cli.common import SNAPSHOT_HELP, add_filters, open_vault, snapshot_filter
from coldvault.errors import TargetWriteError
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
        out = _Stdout(sys.stdout.buffer)
        dump(vault, rec, args.path, out, to_terminal=sys.stdout.buffer.isatty())
        out.flush()
    return 0


class _Stdout:
    """Standard output, where a write that fails (a full disk, a quota, ...) is a
    TargetWriteError naming the file. A closed pipe (`| head`) stays a BrokenPipeError,
    which main ends quietly."""

    def __init__(self, raw):
        self._raw = raw

    def write(self, data) -> int:
        try:
            return self._raw.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._raw.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> TargetWriteError:
        fd = self._raw.fileno()
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = ""
        name = f"standard output ({where})" if where.startswith("/") else "standard output"
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)  # what is still buffered goes nowhere: the exit must not fail again
        os.close(devnull)
        return TargetWriteError.of(name, exc, hint="what was written before is incomplete")
