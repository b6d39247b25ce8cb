"""Retrying as a wrapper around any store.

`RetryingStore` repeats a call that failed with TransientError (connection
trouble, 5xx, throttling), waiting longer each time (exponential backoff with
jitter, so many clients that failed together do not return together). Every
other error is permanent and passes straight through.

Each retry is logged below WARNING, so that a plain run (a cron job) prints
nothing about retries that ended well, and exactly one line, the final error,
when they did not; ``-v`` shows every retry. They get louder as they repeat:
the first at INFO, later ones at REPEATED_RETRY (between INFO and WARNING), so
a handler at that level sees only calls that keep failing.

All six calls are safe to repeat: a put replaces the object, a delete of an
absent object succeeds, and `list` is collected whole inside one attempt so
that a retry never yields an object twice. A restore repeated after a lost
reply may return False for the request that the first attempt made.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, Iterator, TypeVar

from coldvault.store.base import Capabilities, ObjectInfo, Store, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Log level of the retry after the n-th consecutive failure (1-based); later ones: the last.
REPEATED_RETRY = logging.INFO + 5
_RETRY_LEVELS = (logging.INFO, REPEATED_RETRY)


class RetryingStore(Store):
    """`inner` with every call tried up to `attempts` times.

    The wait before retry n (1-based) is drawn from
    [d/2, d] with d = min(max_delay, base_delay * 2**(n-1)).
    `sleep` is injectable so that tests need not wait.
    """

    def __init__(
        self,
        inner: Store,
        attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.url = inner.url
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def call(self, what: str, fn: Callable[..., T], *args) -> T:
        """`fn(*args)`, retried on TransientError; `what` names the call in logs and errors.

        Public so that a call outside the store interface (a store-specific one, a
        test's) gets the same treatment.
        """
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args)
            except TransientError as exc:
                if attempt == self.attempts:
                    tries = "the only attempt" if attempt == 1 else f"all {attempt} attempts"
                    raise TransientError(
                        f"{exc} ({tries} failed, giving up)",
                        exc.name,
                        hint=exc.hint or "check the network and the store, then run the command again",
                    ) from exc
                wait = self.delay(attempt)
                level = _RETRY_LEVELS[min(attempt, len(_RETRY_LEVELS)) - 1]
                log.log(
                    level, "%s failed (attempt %d of %d), retrying in %.1fs: %s", what, attempt, self.attempts, wait, exc
                )
                self._sleep(wait)
        raise AssertionError("unreachable")

    def put(self, name, data, storage_class=None):
        self.call(f"writing {name}", self.inner.put, name, data, storage_class)

    def get(self, name, start=0, length=None):
        return self.call(f"reading {name}", self.inner.get, name, start, length)

    def head(self, name):
        return self.call(f"inspecting {name}", self.inner.head, name)

    def list(self, prefix="") -> Iterator[ObjectInfo]:
        infos = self.call(f"listing {prefix or '(all)'}", lambda: list(self.inner.list(prefix)))
        return iter(infos)

    def delete(self, name):
        self.call(f"deleting {name}", self.inner.delete, name)

    def restore(self, name, days=7, tier="Bulk"):
        return self.call(f"restoring {name}", self.inner.restore, name, days, tier)

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def create_bucket_if_missing(self):
        return self.call("creating the bucket", self.inner.create_bucket_if_missing)

    def discard_partial_writes(self):
        return self.call("removing partial writes", self.inner.discard_partial_writes)

    def close(self):
        self.inner.close()
