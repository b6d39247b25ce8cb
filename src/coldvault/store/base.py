"""The store interface: six blocking calls that move bytes, and the errors they raise.

Beside them a store says what it is (`capabilities`), so that the layers above
never guess from its type or its attributes, and a wrapper passes on what its
inner store says.

Every store translates its own failures into these errors at its edge, so the
layers above never see boto3 or OSError details. Stores are synchronous and
thread-safe; async callers run them through `coldvault.store.aio.AsyncStore`.
Retrying (`coldvault.store.retry.RetryingStore`) and the one concurrency limit
(`coldvault.store.limit.LimitedStore`) are wrappers, never inside a store,
stacked once by `coldvault.store.url.stack`.

Object names are '/'-separated relative paths such as ``data/ab/abcd...``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterator

from coldvault.errors import ColdvaultError, ExitCode

# Storage classes whose objects must be restored before a GET succeeds.
COLD_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
HOT_CLASS = "STANDARD"
RESTORE_TIERS = ("Bulk", "Standard", "Expedited")


def is_cold_class(storage_class: str | None) -> bool:
    return (storage_class or HOT_CLASS) in COLD_CLASSES


class StoreError(ColdvaultError):
    """Base of store errors; `name` is the object concerned, if any."""

    exit_code = ExitCode.UNREACHABLE

    def __init__(self, message: str, name: str | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.name = name


class NotFoundError(StoreError):
    exit_code = ExitCode.DAMAGED


class ArchivedError(StoreError):
    """The object is in a cold tier and no restored copy is readable."""

    exit_code = ExitCode.COLD


class RestoreInProgressError(ArchivedError):
    """A restore was requested and is not finished yet."""


class TransientError(StoreError):
    """Worth retrying: connection errors, 5xx, throttling."""

    exit_code = ExitCode.UNREACHABLE


class PermissionDeniedError(StoreError):
    exit_code = ExitCode.PERMISSION


class NoSpaceError(StoreError):
    """The store has no room left (a full disk, a quota): not worth retrying, not damage."""

    exit_code = ExitCode.NO_SPACE


@dataclass(frozen=True)
class RestoreState:
    """Restore state of a cold object.

    status: "none" (not requested), "in-progress", or "restored" (readable until `expiry`,
    a unix timestamp, or None if unknown).
    """

    status: str = "none"
    expiry: float | None = None
    tier: str | None = None
    ready_at: float | None = None  # when the store expects it to be ready, if it knows


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    storage_class: str = HOT_CLASS
    restore: RestoreState = RestoreState()
    mtime: float | None = None  # unix time the object was written, if the store knows

    @property
    def cold(self) -> bool:
        return is_cold_class(self.storage_class)

    @property
    def readable(self) -> bool:
        return not self.cold or self.restore.status == "restored"


@dataclass(frozen=True)
class Capabilities:
    """What a store can tell about itself beyond the six calls.

    simulated_restore_delay: the store simulates its cold tier (local, memory), and a
        restore it is asked for is readable this many seconds later; None for a real
        cold tier, whose timing only the tier table can estimate.
    local_reads: reading an object costs no more than reading a local file, so a hot
        object is not worth a copy in a cache.
    connections: how many requests the store serves at once (an S3 store: its HTTP
        connection pool). Size every pool of concurrent store calls by it.
    cold_tier: objects written in a cold class stay cold until restored. False: the
        store has no cold tier, and stores them hot, as STANDARD (an S3-compatible
        server without RestoreObject, such as rclone serve s3). An S3 store finds out
        from its endpoint the first time it writes or sees a cold class, and says
        True until then.
    """

    simulated_restore_delay: float | None = None
    local_reads: bool = False
    connections: int = 8
    cold_tier: bool = True


class Store(abc.ABC):
    """A flat namespace of immutable objects."""

    url: str = ""

    @abc.abstractmethod
    def put(self, name: str, data: bytes, storage_class: str | None = None) -> None:
        """Write `data` under `name` (replacing it), in `storage_class` (None: hot)."""

    @abc.abstractmethod
    def get(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        """Read `length` bytes from `start` (all of it if None).

        A range that runs past the end returns what there is. Raises NotFoundError,
        ArchivedError or RestoreInProgressError.
        """

    @abc.abstractmethod
    def head(self, name: str) -> ObjectInfo:
        """Size, storage class and restore state, without reading the data."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose name starts with `prefix`, in no particular order.

        Restore state in these infos may be unknown ("none"): call head for it.
        """

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove `name`; removing an absent object is not an error."""

    @abc.abstractmethod
    def restore(self, name: str, days: int = 7, tier: str = "Bulk") -> bool:
        """Ask for a readable copy of a cold object for `days` days at `tier`.

        Returns True if a new request was made, False if one was already in
        progress or the object is already readable (hot, or restored).
        """

    def capabilities(self) -> Capabilities:
        """What this store is (no call to a server); by default: a remote store with a real cold tier."""
        return Capabilities()

    def create_bucket_if_missing(self) -> bool:
        """Create the bucket the vault lives in, where the store has one (S3) and it is missing;
        True if it was created. Stores without buckets have nothing to create: False."""
        return False

    def discard_partial_writes(self) -> tuple[int, int]:
        """Remove what writes cut short by a crash left behind; (objects, bytes) removed.

        Only safe while nothing writes to the store (prune holds the vault
        exclusively). Stores whose writes are atomic leave nothing: (0, 0).
        """
        return 0, 0

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
