"""What cold tiers cost in time: typical restore times per storage class and tier.

Figures are AWS's published typical completion times (upper ends), used to tell
people when a restore should be ready (`coldvault.vault.thaw.ready_in`, which
prefers the store's own figure when it simulates its cold tier). Prices are in
`coldvault.vault.pricing`.
"""

from __future__ import annotations

HOUR = 3600.0

# (storage class, tier) -> typical seconds until a restored copy is readable
RESTORE_TIME = {
    ("GLACIER", "Expedited"): 5 * 60.0,
    ("GLACIER", "Standard"): 5 * HOUR,
    ("GLACIER", "Bulk"): 12 * HOUR,
    ("DEEP_ARCHIVE", "Standard"): 12 * HOUR,
    ("DEEP_ARCHIVE", "Bulk"): 48 * HOUR,
}


def effective_tier(storage_class: str, tier: str) -> str:
    """Deep Archive has no Expedited tier: Standard is the fastest it offers."""
    if storage_class == "DEEP_ARCHIVE" and tier == "Expedited":
        return "Standard"
    return tier


def restore_time(storage_class: str, tier: str) -> float | None:
    return RESTORE_TIME.get((storage_class, effective_tier(storage_class, tier)))
