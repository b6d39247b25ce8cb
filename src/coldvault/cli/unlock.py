"""`coldvault unlock [--remove-all]`: remove stale locks (or all of them)."""

from __future__ import annotations

import sys

from coldvault.cli.common import open_vault, print_json
from coldvault.vault.lock import remove_locks


def register(sub, common) -> None:
    p = sub.add_parser("unlock", parents=[common], help="remove stale locks",
                       description="Remove the locks of processes that are gone (same host) or that were not "
                                   "refreshed for COLDVAULT_LOCK_STALE seconds (default 1800). Live locks stay.")
    p.add_argument("--remove-all", action="store_true",
                   help="remove every lock, live ones too (only when you know no coldvault runs on the vault)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    vault = open_vault(args, load_index=False)
    if args.remove_all:
        print("coldvault: warning: removing every lock, live ones too: a coldvault still running on this vault "
              "(a backup, a mount, a prune) is no longer protected from the others", file=sys.stderr)
    removed, kept, unreadable = remove_locks(vault, args.remove_all)
    if args.json:
        print_json({"removed": [i.id for i in removed], "kept": [i.id for i in kept],
                    "unreadable": unreadable, "unreadable_removed": bool(args.remove_all)})
        return 0
    if not args.quiet:
        for i in removed:
            print(f"removed lock {i.id} of {i.holder}")
        for i in kept:
            print(f"kept live lock {i.id} of {i.holder}")
        for name in unreadable:
            print(f"{'removed' if args.remove_all else 'kept'} unreadable lock {name}")
        if not (removed or kept or unreadable):
            print("no locks")
    return 0
