"""Simulated cold tier shared by the local and memory stores.

An object written with a cold storage class refuses reads until a restore was
requested and `delay` seconds have passed; then it is readable for `days` days.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from coldvault.store.base import RestoreState, is_cold_class

DAY = 86400.0


@dataclass
class ColdRecord:
    storage_class: str
    requested_at: float | None = None
    days: int = 0
    tier: str | None = None

    def to_json(self) -> dict:
        return {
            "storage_class": self.storage_class,
            "requested_at": self.requested_at,
            "days": self.days,
            "tier": self.tier,
        }

    @classmethod
    def from_json(cls, d: dict) -> "ColdRecord":
        return cls(d["storage_class"], d.get("requested_at"), d.get("days", 0), d.get("tier"))

    def state(self, delay: float, now: float | None = None) -> RestoreState:
        if not is_cold_class(self.storage_class) or self.requested_at is None:
            return RestoreState()
        now = time.time() if now is None else now
        ready_at = self.requested_at + delay
        expiry = ready_at + self.days * DAY
        if now < ready_at:
            return RestoreState("in-progress", None, self.tier, ready_at)
        if now >= expiry:
            return RestoreState()
        return RestoreState("restored", expiry, self.tier, ready_at)

    def request(self, days: int, tier: str, delay: float) -> bool:
        """Record a restore request; False if one is pending or the copy is readable."""
        if self.state(delay).status != "none":
            if self.state(delay).status == "restored":
                # Extending a readable copy, as S3 does; not a new request.
                self.days = max(self.days, days)
            return False
        self.requested_at = time.time()
        self.days = days
        self.tier = tier
        return True
