"""Bandwidth limits as a wrapper: never more bytes per second up or down than the user allows.

`--limit-upload` / `--limit-download` (KiB/s; env COLDVAULT_LIMIT_UPLOAD and
COLDVAULT_LIMIT_DOWNLOAD; `limit-upload` / `limit-download` in the config file)
set the process's two `TokenBucket`s with `set_limits`; `coldvault.store.url.stack`
then wraps every store it builds in a `ThrottledStore` over those same buckets, so
all stores and all threads of the process (uploader pipeline, mount, restore,
`copy` to a second vault) share one budget per direction.

A bucket refills at `rate` bytes per second and holds at most one second of them.
A call reserves its bytes at once (the bucket may go into debt) and then sleeps
until the debt is paid, outside the lock: callers are served in the order they
asked, and over any stretch of time no more than rate * seconds + one second's
worth of bytes pass. A put pays before it is sent (its size is known), a get after
its body has arrived; the bytes of one object still cross the wire at the link's
speed, so the limit is an average over objects (a pack of 64 MiB at 1024 KiB/s is
one burst per minute), as with a limit placed on whole requests.

Only bodies count: head, list, delete and restore move a few bytes each and pass
untouched, as do the vault's lock objects (a lock refresh must never wait behind
data, see store.url UNLIMITED_PREFIXES).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from coldvault.store.base import Capabilities, ObjectInfo, Store

log = logging.getLogger(__name__)

KIB = 1024


class TokenBucket:
    """`rate` bytes per second, shared by every thread that calls `take`.

    `clock` and `sleep` are injectable, so that a test can run the bucket on a
    clock of its own instead of waiting.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if not rate > 0:
            raise ValueError("a bucket's rate is a positive number of bytes per second")
        self.rate = float(rate)
        self.capacity = self.rate  # one second's worth: the largest burst after a pause
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._stamp = clock()
        self.passed = 0  # bytes that went through, for the summary at the end of a command
        self.waited = 0.0  # seconds callers slept, added up over all threads

    def take(self, n: int) -> float:
        """Wait until `n` bytes may pass; returns the seconds this caller waited."""
        if n <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.passed += n
            self.waited += wait
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass
class Limits:
    """The process's buckets; None: that direction is not limited."""

    upload: TokenBucket | None = None
    download: TokenBucket | None = None

    def __bool__(self) -> bool:
        return self.upload is not None or self.download is not None


_limits = Limits()


def set_limits(upload_kib: float | None, download_kib: float | None) -> Limits:
    """Limit every store stacked from now on to these KiB/s (None: no limit in that direction)."""
    global _limits
    _limits = Limits(TokenBucket(upload_kib * KIB) if upload_kib else None,
                     TokenBucket(download_kib * KIB) if download_kib else None)
    for what, kib in (("upload", upload_kib), ("download", download_kib)):
        if kib:
            log.info("%s limited to %s KiB/s", what, f"{kib:g}")
    return _limits


def process_limits() -> Limits:
    return _limits


class ThrottledStore(Store):
    """`inner` whose put and get bodies pass through the `limits` buckets."""

    def __init__(self, inner: Store, limits: Limits, unlimited: tuple[str, ...] = ()):
        self.inner = inner
        self.url = inner.url
        self.limits = limits
        self.unlimited = unlimited

    def _bucket(self, bucket: TokenBucket | None, name: str) -> TokenBucket | None:
        if bucket is None or (self.unlimited and name.startswith(self.unlimited)):
            return None
        return bucket

    def put(self, name, data, storage_class=None):
        bucket = self._bucket(self.limits.upload, name)
        if bucket is not None:
            bucket.take(len(data))
        self.inner.put(name, data, storage_class)

    def get(self, name, start=0, length=None):
        data = self.inner.get(name, start, length)
        bucket = self._bucket(self.limits.download, name)
        if bucket is not None:
            bucket.take(len(data))
        return data

    def head(self, name):
        return self.inner.head(name)

    def list(self, prefix="") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, name):
        self.inner.delete(name)

    def restore(self, name, days=7, tier="Bulk"):
        return self.inner.restore(name, days, tier)

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def create_bucket_if_missing(self):
        return self.inner.create_bucket_if_missing()

    def discard_partial_writes(self):
        return self.inner.discard_partial_writes()

    def close(self):
        self.inner.close()


def summary() -> list[str]:
    """One line per limited direction: the limit, the bytes it let through, the time it held them back."""
    lines = []
    for what, bucket in (("upload", _limits.upload), ("download", _limits.download)):
        if bucket is not None:
            lines.append(f"{what} limit {bucket.rate / KIB:g} KiB/s: {bucket.passed} bytes passed, "
                         f"held back {bucket.waited:.1f} s in all")
    return lines
