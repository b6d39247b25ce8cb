"""What cold tiers cost in money: a price table, and the estimate of a thaw.

Pure data and arithmetic. The only I/O is reading an override file
(``coldvault thaw --prices FILE`` or COLDVAULT_PRICES), a JSON map of the same
shape as `DEFAULT_PRICES` whose entries replace the built-in ones.

The built-in table holds AWS list prices for us-east-1 in USD; where they come
from and when they were checked is in docs/cold-storage.md. A "GB" is 2**30
bytes, as AWS bills, and a restored copy's GB-month is counted as 30 days.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field

from coldvault.errors import UserError
from coldvault.store.base import RESTORE_TIERS
from coldvault.vault.tiers import effective_tier, restore_time

PRICES_ENV = "COLDVAULT_PRICES"
GB = 2**30
KiB = 1024
DAYS_PER_MONTH = 30

# Every archived object (GLACIER, DEEP_ARCHIVE) carries this much extra billed storage:
ARCHIVE_OVERHEAD_COLD = 32 * KiB  # index and metadata, billed at the archive class's rate
ARCHIVE_OVERHEAD_HOT = 8 * KiB  # the object's name and metadata, billed at STANDARD

DEFAULT_PRICES: dict = {
    "currency": "USD",
    "basis": "AWS S3 list prices, us-east-1, checked 2026-11-22",
    # Restore: per 1,000 restore requests (one per object) and per GB restored.
    "restore": {
        "GLACIER": {
            "Bulk": {"per_1000_requests": 0.0, "per_gb": 0.0},
            "Standard": {"per_1000_requests": 0.05, "per_gb": 0.01},
            "Expedited": {"per_1000_requests": 10.0, "per_gb": 0.03},
        },
        "DEEP_ARCHIVE": {
            "Bulk": {"per_1000_requests": 0.025, "per_gb": 0.0025},
            "Standard": {"per_1000_requests": 0.10, "per_gb": 0.02},
        },
    },
    # Storage per GB-month (first 50 TB tier); a restored copy is billed at STANDARD.
    "storage_per_gb_month": {"STANDARD": 0.023, "GLACIER": 0.0036, "DEEP_ARCHIVE": 0.00099},
    # PUT, COPY, POST, LIST requests per 1,000, by the class written.
    "put_per_1000": {"STANDARD": 0.005, "GLACIER": 0.03, "DEEP_ARCHIVE": 0.05},
    # Deleting (or overwriting) earlier is billed as if stored this many days.
    "min_storage_days": {"STANDARD": 0, "GLACIER": 90, "DEEP_ARCHIVE": 180},
}

_TOP_KEYS = set(DEFAULT_PRICES)


@dataclass(frozen=True)
class TierPrice:
    per_1000_requests: float
    per_gb: float


@dataclass(frozen=True)
class PriceTable:
    currency: str
    basis: str
    restore: dict[str, dict[str, TierPrice]]  # storage class -> tier -> price
    storage_per_gb_month: dict[str, float]
    put_per_1000: dict[str, float]
    min_storage_days: dict[str, int]
    source: str = "built-in"  # or the override file's path

    def tier_price(self, storage_class: str, tier: str) -> TierPrice:
        try:
            return self.restore[storage_class][effective_tier(storage_class, tier)]
        except KeyError:
            raise UserError(
                f"the price table has no restore price for {storage_class} at tier {tier}",
                hint=f"add it to the prices file ({self.source})",
            ) from None

    def early_deletion_fee(self, storage_class: str, nbytes: int, age_seconds: float | None) -> float:
        """What deleting an object now costs beyond the storage already paid: the rest of
        its class's minimum storage duration, at the class's storage price."""
        min_days = self.min_storage_days.get(storage_class, 0)
        if not min_days or age_seconds is None:
            return 0.0
        left_days = max(0.0, min_days - age_seconds / 86400)
        return left_days / DAYS_PER_MONTH * nbytes / GB * self.storage_rate(storage_class)

    def storage_rate(self, storage_class: str) -> float:
        try:
            return self.storage_per_gb_month[storage_class]
        except KeyError:
            raise UserError(
                f"the price table has no storage price for {storage_class}",
                hint=f"add it to the prices file ({self.source})",
            ) from None


# ---- loading -------------------------------------------------------------------


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _number(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
        raise UserError(f"prices: {where} must be a number >= 0, not {v!r}")
    return float(v)


def parse(doc: dict, source: str = "built-in") -> PriceTable:
    """A PriceTable from a map shaped like DEFAULT_PRICES; raises UserError naming a bad entry."""
    if not isinstance(doc, dict):
        raise UserError("prices: the file must hold a JSON object")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise UserError(f"prices: unknown key(s) {', '.join(sorted(unknown))}",
                        hint=f"known keys: {', '.join(sorted(_TOP_KEYS))}")
    for key in ("restore", "storage_per_gb_month", "put_per_1000", "min_storage_days"):
        if not isinstance(doc.get(key), dict):
            raise UserError(f"prices: {key} must be a JSON object")
    restore: dict[str, dict[str, TierPrice]] = {}
    for cls, tiers in doc["restore"].items():
        if not isinstance(tiers, dict):
            raise UserError(f"prices: restore.{cls} must be a JSON object of tiers")
        restore[cls] = {}
        for tier, p in tiers.items():
            where = f"restore.{cls}.{tier}"
            if tier not in RESTORE_TIERS:
                raise UserError(f"prices: {where}: unknown tier (one of {', '.join(RESTORE_TIERS)})")
            if not isinstance(p, dict) or set(p) != {"per_1000_requests", "per_gb"}:
                raise UserError(f"prices: {where} must be {{\"per_1000_requests\": number, \"per_gb\": number}}")
            restore[cls][tier] = TierPrice(_number(p["per_1000_requests"], f"{where}.per_1000_requests"),
                                           _number(p["per_gb"], f"{where}.per_gb"))
    maps = {}
    for key in ("storage_per_gb_month", "put_per_1000", "min_storage_days"):
        maps[key] = {cls: _number(v, f"{key}.{cls}") for cls, v in doc[key].items()}
    if "STANDARD" not in maps["storage_per_gb_month"]:
        raise UserError("prices: storage_per_gb_month.STANDARD is needed (restored copies are billed at it)")
    currency, basis = doc.get("currency"), doc.get("basis")
    if not isinstance(currency, str) or not isinstance(basis, str):
        raise UserError("prices: currency and basis must be strings")
    return PriceTable(currency, basis, restore, maps["storage_per_gb_month"], maps["put_per_1000"],
                      {k: int(v) for k, v in maps["min_storage_days"].items()}, source)


def load(path: str | None = None) -> PriceTable:
    """The built-in table, with the entries of `path` (else $COLDVAULT_PRICES, if set) replacing its own."""
    path = path or os.environ.get(PRICES_ENV) or None
    if path is None:
        return parse(DEFAULT_PRICES)
    try:
        with open(path, encoding="utf-8") as f:
            over = json.load(f)
    except OSError as exc:
        raise UserError(f"cannot read prices file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UserError(f"prices file {path} is not valid JSON: {exc}") from None
    if not isinstance(over, dict):
        raise UserError(f"prices file {path} must hold a JSON object")
    if "basis" not in over:
        over = {**over, "basis": f"{DEFAULT_PRICES['basis']}, with overrides from {path}"}
    return parse(_merge(DEFAULT_PRICES, over), source=path)


# ---- estimating ------------------------------------------------------------------


@dataclass
class ClassTotals:
    """Objects to restore in one storage class."""

    objects: int = 0
    bytes: int = 0


@dataclass
class TierEstimate:
    tier: str  # the tier asked for
    objects: int
    bytes: int
    request_cost: float
    retrieval_cost: float
    copy_cost: float  # keeping the restored copies `days` days at STANDARD
    seconds: float | None  # typical time until all are readable (the slowest class)
    effective: dict[str, str] = field(default_factory=dict)  # class -> tier really used

    @property
    def total(self) -> float:
        return self.request_cost + self.retrieval_cost + self.copy_cost

    @property
    def substituted(self) -> list[str]:
        """Classes that do not offer this tier (Deep Archive has no Expedited)."""
        return sorted(c for c, t in self.effective.items() if t != self.tier)


def tiers_offered(classes) -> list[str]:
    """Bulk and Standard always; Expedited only when some object is in GLACIER (Flexible Retrieval)."""
    tiers = ["Bulk", "Standard"]
    if any(effective_tier(c, "Expedited") == "Expedited" for c in classes):
        tiers.append("Expedited")
    return tiers


def estimate(prices: PriceTable, by_class: dict[str, ClassTotals], tier: str, days: int) -> TierEstimate:
    """Cost of restoring `by_class` at `tier` and keeping the copies `days` days.

    requests:  objects / 1000 * per_1000_requests   (per class, at its effective tier)
    retrieval: bytes / GB * per_gb                  (per class, at its effective tier)
    copy:      bytes / GB * STANDARD per GB-month * days / 30
    """
    est = TierEstimate(tier, 0, 0, 0.0, 0.0, 0.0, None)
    slowest = None
    for cls, t in sorted(by_class.items()):
        if not t.objects:
            continue
        p = prices.tier_price(cls, tier)
        est.objects += t.objects
        est.bytes += t.bytes
        est.request_cost += t.objects / 1000 * p.per_1000_requests
        est.retrieval_cost += t.bytes / GB * p.per_gb
        est.effective[cls] = effective_tier(cls, tier)
        secs = restore_time(cls, tier)
        if secs is not None:
            slowest = secs if slowest is None else max(slowest, secs)
    est.copy_cost = est.bytes / GB * prices.storage_rate("STANDARD") * days / DAYS_PER_MONTH
    est.seconds = slowest
    return est


def estimates(prices: PriceTable, by_class: dict[str, ClassTotals], days: int) -> list[TierEstimate]:
    """One estimate per tier the classes offer, cheapest (Bulk) first."""
    classes = [c for c, t in by_class.items() if t.objects]
    return [estimate(prices, by_class, tier, days) for tier in tiers_offered(classes)]


# ---- the cost of keeping data archived (docs/cold-storage.md) ----------------------


def monthly_storage_cost(prices: PriceTable, storage_class: str, nbytes: int, objects: int) -> float:
    """Storage per month, with the per-object overhead archive classes bill (32 KiB cold + 8 KiB hot)."""
    cost = nbytes / GB * prices.storage_rate(storage_class)
    if storage_class in prices.restore:  # an archive class
        cost += objects * ARCHIVE_OVERHEAD_COLD / GB * prices.storage_rate(storage_class)
        cost += objects * ARCHIVE_OVERHEAD_HOT / GB * prices.storage_rate("STANDARD")
    return cost


def put_cost(prices: PriceTable, storage_class: str, objects: int) -> float:
    return objects / 1000 * prices.put_per_1000.get(storage_class, prices.put_per_1000.get("STANDARD", 0.0))
