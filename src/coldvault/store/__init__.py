"""Object stores that only move bytes: local directory, S3, memory."""

from coldvault.store.base import (
    ArchivedError,
    NotFoundError,
    ObjectInfo,
    PermissionDeniedError,
    RestoreInProgressError,
    RestoreState,
    Store,
    StoreError,
    TransientError,
    is_cold_class,
)

__all__ = [
    "ArchivedError",
    "NotFoundError",
    "ObjectInfo",
    "PermissionDeniedError",
    "RestoreInProgressError",
    "RestoreState",
    "Store",
    "StoreError",
    "TransientError",
    "is_cold_class",
]
