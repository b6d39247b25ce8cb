"""`coldvault stats`: bytes by kind and storage class, blobs, dedup ratio, cost per month."""

from __future__ import annotations

from coldvault.cli.common import money, open_vault, print_json, size
from coldvault.vault import pricing
from coldvault.vault.lock import read_lock
from coldvault.vault.stats import collect


def register(sub, common) -> None:
    p = sub.add_parser("stats", parents=[common], help="what the vault holds and costs per month",
                       description="Objects and bytes by kind and storage class (from the store's listing), blobs, "
                                   "the dedup ratio (the snapshots' logical bytes / stored data bytes), and the "
                                   "storage cost per month at the documented prices.")
    p.add_argument("--prices", metavar="FILE", help="JSON price overrides (default: built-in AWS list prices, "
                                                     "or $COLDVAULT_PRICES)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    prices = pricing.load(args.prices)
    vault = open_vault(args)
    with read_lock(vault, "stats"):
        st = collect(vault, vault.snapshots(), prices)
    ratio = st.dedup_ratio
    if args.json:
        print_json({
            "by_kind": {k: t.to_map() for k, t in sorted(st.by_kind.items())},
            "by_storage_class": {k: t.to_map() for k, t in sorted(st.by_class.items())},
            "data_blobs": st.data_blobs, "data_blob_bytes": st.data_blob_bytes, "tree_blobs": st.tree_blobs,
            "snapshots": st.snapshots, "files": st.files, "logical_bytes": st.logical_bytes,
            "stored_data_bytes": st.stored_data_bytes, "dedup_ratio": ratio,
            "monthly_cost": {"currency": st.currency, "basis": st.prices_basis, "total": st.monthly_total,
                             "by_storage_class": st.monthly, "unpriced_storage_classes": st.unpriced},
        })
        return 0
    print(f"snapshots: {st.snapshots}, files in them: {st.files}, logical size: {size(st.logical_bytes)}")
    print("stored, by kind:")
    for kind, t in sorted(st.by_kind.items()):
        print(f"  {kind:<12} {t.objects:>8} objects {size(t.bytes):>12}")
    print("stored, by storage class:")
    for cls, t in sorted(st.by_class.items()):
        cost = money(st.monthly[cls], st.currency) + "/month" if cls in st.monthly else "no price"
        print(f"  {cls:<12} {t.objects:>8} objects {size(t.bytes):>12}  {cost}")
    print(f"blobs: {st.data_blobs} data ({size(st.data_blob_bytes)} before compression), {st.tree_blobs} tree")
    print("dedup ratio: " + (f"{ratio:.2f}x (logical size / stored data packs)" if ratio else "n/a (no data stored)"))
    print(f"cost per month: {money(st.monthly_total, st.currency)} ({st.prices_basis})"
          + (f"; no price for {', '.join(st.unpriced)}" if st.unpriced else ""))
    return 0
