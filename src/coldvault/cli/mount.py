"""`coldvault mount MOUNTPOINT`: every snapshot as folders, read lazily, cold data on demand;
new and forgotten snapshots show within `--refresh` seconds (docs/mount.md)."""

from __future__ import annotations

import os
import re

from coldvault.cli.common import open_vault
from coldvault.errors import UserError
from coldvault.store.base import RESTORE_TIERS
from coldvault.vault.lock import read_lock


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UserError(f"{text!r} is not a size (like 512M or 2G)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def register(sub, common) -> None:
    p = sub.add_parser("mount", parents=[common], help="mount the vault read-only")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--cold", choices=("fail", "wait"), default="fail",
                   help="reading cold data: fail at once with EAGAIN (default) or wait until restored")
    p.add_argument("--restore-tier", choices=RESTORE_TIERS, default="Bulk", help="tier of restore requests (default Bulk)")
    p.add_argument("--restore-days", type=int, default=7, help="days a restored copy stays readable (default 7)")
    p.add_argument("--cache-dir", help="chunk cache directory (default ~/.cache/coldvault/<vault id>/chunks)")
    p.add_argument("--cache-size", default="1G", help="chunk cache size bound (default 1G; 0 turns it off)")
    p.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground (tests, systemd)")
    p.add_argument("--allow-other", action="store_true", help="let other users read the mount")
    p.add_argument("--log", metavar="FILE", help="log file when in the background")
    p.add_argument("--refresh", metavar="SECONDS", type=float, default=30.0,
                   help="look for new and forgotten snapshots every SECONDS (default 30); 0: a fixed view "
                        "that holds the vault's read lock (prune and forget exit 16 until it is unmounted)")
    p.set_defaults(func=run)


def run(args) -> int:
    from coldvault.mount.runner import build_fs, mount

    if not 1 <= args.restore_days <= 3650:
        raise UserError("--restore-days must be between 1 and 3650")
    if not 0 <= args.refresh <= 86400:
        raise UserError(f"--refresh must be 0 (off) or a number of seconds up to 86400, not {args.refresh:g}")
    size = parse_size(args.cache_size)
    vault = open_vault(args)
    # Taken first: a vault held by prune or forget gives exit 16 before anything is mounted.
    # A fixed view (--refresh 0) keeps it while mounted, so prune and forget delete nothing
    # under it; its refresh thread starts in the process that serves (after the fork, if any).
    # A live mount lets it go once its tree is built: it follows what they delete (mount/live.py).
    lock = read_lock(vault, f"mount {os.path.abspath(args.mountpoint)}")
    lock.acquire(refresh=False)
    try:
        fs = build_fs(vault, cold_mode=args.cold, tier=args.restore_tier, days=args.restore_days,
                      cache_dir=args.cache_dir, cache_size=size)
        if args.refresh > 0:
            lock.release()
        mount(fs, args.mountpoint, foreground=args.foreground, allow_other=args.allow_other, log_file=args.log,
              lock=lock if args.refresh == 0 else None, refresh=args.refresh)
    finally:
        lock.release()
    if lock.lost is not None:
        raise lock.lost  # unmounted because of it (said in the log too)
    return 0
