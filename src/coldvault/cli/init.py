"""`coldvault init`: create a vault."""

from __future__ import annotations

from coldvault.cli.common import STORAGE_CLASSES, open_store_for, read_password, repo_url
from coldvault.errors import UserError
from coldvault.index.config import MiB, Settings
from coldvault.store.base import is_cold_class
from coldvault.vault import Vault


def register(sub, common) -> None:
    p = sub.add_parser("init", parents=[common], help="create a new vault")
    p.add_argument("--no-encryption", action="store_true", help="store data unencrypted (no password)")
    p.add_argument(
        "--data-storage-class", default="STANDARD", type=str.upper, metavar="CLASS",
        help=f"storage class of data packs: {', '.join(STORAGE_CLASSES)} (default STANDARD)",
    )
    p.add_argument("--pack-size", type=int, metavar="MIB", help="target size of data packs in MiB (default 16, 64 for cold classes)")
    p.add_argument("--compression-level", type=int, default=3, help="zstd level, 1-19 (default 3)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.data_storage_class not in STORAGE_CLASSES:
        raise UserError(f"unknown storage class {args.data_storage_class!r}; one of {', '.join(STORAGE_CLASSES)}")
    if not 1 <= args.compression_level <= 19:
        raise UserError("--compression-level must be between 1 and 19")
    cold = is_cold_class(args.data_storage_class)
    pack_mib = args.pack_size or (64 if cold else 16)
    if not 1 <= pack_mib <= 4096:
        raise UserError("--pack-size must be between 1 and 4096 MiB")
    settings = Settings(
        data_class=args.data_storage_class, data_pack_size=pack_mib * MiB, compression_level=args.compression_level
    )
    store = open_store_for(args)
    store.create_bucket_if_missing()
    password = None if args.no_encryption else read_password(confirm=True)
    vault = Vault.init(store, password, settings)
    enc = "unencrypted" if args.no_encryption else "encrypted"
    if not args.quiet:
        print(f"created {enc} vault {vault.config.vault_id.hex()[:8]} at {repo_url(args)} (data in {args.data_storage_class}, {pack_mib} MiB packs)")
    return 0
