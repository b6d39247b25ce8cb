"""Open the store a vault URL names, and build the one store stack on it.

    /path/to/vault, vault, ~/vault   a local directory (LocalStore)
    file:///path/to/vault            the same, as a URL
    s3://bucket/prefix               S3 or an S3-compatible service (S3Store)
    memory://                        a fresh in-memory store, for tests

The S3 endpoint comes from `endpoint_url` (``--endpoint-url``), else from
COLDVAULT_S3_ENDPOINT, else AWS. COLDVAULT_S3_TIMEOUT (seconds, default 60) is how
long S3 may stay silent, while connecting or in the middle of an answer, before
the call fails and is retried. A store call is tried COLDVAULT_RETRY_ATTEMPTS
times (default 6); COLDVAULT_RETRY_DELAY (seconds, default 0.5) is the wait
before the first retry, doubled for each further one. The local store's simulated restore takes
`restore_delay` seconds, else COLDVAULT_LOCAL_RESTORE_DELAY, else 2 seconds.

Every store is opened as the same stack (`stack`): the store itself, one
concurrency limit sized by its ``capabilities().connections`` (store.limit), the
process's bandwidth limits if any were set (store.throttle: `--limit-upload`,
`--limit-download`), and the retry wrapper outermost (store.retry).
`capabilities()` passes through all of them.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from typing import Callable

from coldvault.errors import UserError
from coldvault.store.base import Store
from coldvault.store.limit import LimitedStore
from coldvault.store.local import LocalStore
from coldvault.store.memory import MemoryStore
from coldvault.store.retry import RetryingStore
from coldvault.store.throttle import ThrottledStore, process_limits

ENDPOINT_ENV = "COLDVAULT_S3_ENDPOINT"
RESTORE_DELAY_ENV = "COLDVAULT_LOCAL_RESTORE_DELAY"
DEFAULT_LOCAL_RESTORE_DELAY = 2.0
RETRY_ENV = "COLDVAULT_RETRY_ATTEMPTS"
RETRY_DELAY_ENV = "COLDVAULT_RETRY_DELAY"
DEFAULT_RETRY_DELAY = 0.5
S3_TIMEOUT_ENV = "COLDVAULT_S3_TIMEOUT"
DEFAULT_S3_TIMEOUT = 60.0
# Objects no concurrency limit holds back: the vault's locks (vault/lock.py PREFIX), so that
# a refresh never waits behind data transfers (restic's sema backend exempts lock files too).
UNLIMITED_PREFIXES = ("locks/",)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URL_FORMS = "a path, file:///path, s3://bucket/prefix or memory://"


def open_store(url: str, *, endpoint_url: str | None = None, restore_delay: float | None = None) -> Store:
    """The store stack for `url` (see `stack`); raises UserError for a URL that names no store."""
    return stack(_open_bare(url, endpoint_url, restore_delay))


def stack(inner: Store, *, attempts: int | None = None, base_delay: float | None = None,
          sleep: Callable[[float], None] = time.sleep) -> RetryingStore:
    """`inner` as every caller gets it: limited to its connections, throttled to the process's
    bandwidth limits (store.throttle.set_limits; none unless set), then retried.

    The retry wrapper is outermost, so a call waiting out a backoff holds no connection; the
    throttle is outside the connection limit, so a call waiting for bandwidth holds none either;
    `attempts` and `base_delay` default to COLDVAULT_RETRY_ATTEMPTS and COLDVAULT_RETRY_DELAY
    (`sleep` is the retry's, for tests).
    """
    if attempts is None:
        attempts = _retry_attempts()
    if base_delay is None:
        base_delay = seconds_from_env(RETRY_DELAY_ENV, DEFAULT_RETRY_DELAY)
    limited: Store = LimitedStore(inner, UNLIMITED_PREFIXES)
    limits = process_limits()
    if limits:
        limited = ThrottledStore(limited, limits, UNLIMITED_PREFIXES)
    return RetryingStore(limited, attempts=attempts, base_delay=base_delay, sleep=sleep)


def _open_bare(url: str, endpoint_url: str | None, restore_delay: float | None) -> Store:
    if not url:
        raise UserError("no vault given", hint="use --repo or set COLDVAULT_REPO")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else None
    if scheme is None:
        return LocalStore(os.path.expanduser(url), restore_delay=_local_restore_delay(restore_delay))
    if scheme == "file":
        return LocalStore(_file_path(url), restore_delay=_local_restore_delay(restore_delay))
    if scheme == "s3":
        from coldvault.store.s3 import S3Store  # boto3 loads only when needed

        bucket, prefix = parse_s3_url(url)
        endpoint = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
        timeout = seconds_from_env(S3_TIMEOUT_ENV, DEFAULT_S3_TIMEOUT, minimum=0.1)
        return S3Store(bucket, prefix, endpoint_url=endpoint, connect_timeout=min(10.0, timeout), read_timeout=timeout)
    if scheme == "memory":
        if url.lower() != "memory://":
            raise UserError(f"invalid vault URL {url}: memory:// takes nothing after it")
        return MemoryStore(restore_delay=restore_delay or 0.0)
    raise UserError(f"unsupported vault URL scheme {scheme}:// in {url}", hint=f"use {_URL_FORMS}")


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; the prefix may be empty."""
    parts = urllib.parse.urlsplit(url)
    bucket = parts.netloc
    if not bucket:
        raise UserError(f"invalid vault URL {url}: no bucket", hint="use s3://bucket/prefix")
    if parts.query or parts.fragment or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", bucket):
        raise UserError(f"invalid vault URL {url}: expected s3://bucket/prefix")
    return bucket, urllib.parse.unquote(parts.path).strip("/")


def _file_path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UserError(f"invalid vault URL {url}: file URLs name a local path", hint="use file:///path")
    path = urllib.parse.unquote(parts.path)
    if not path:
        raise UserError(f"invalid vault URL {url}: no path", hint="use file:///path")
    return path


def _retry_attempts() -> int:
    """Attempts per store call (COLDVAULT_RETRY_ATTEMPTS, default 6: about 30 s of backoff)."""
    text = os.environ.get(RETRY_ENV, "6")
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise UserError(f"{RETRY_ENV} must be a whole number from 1 to 100, not {text!r}")
    return int(text)


def _local_restore_delay(value: float | None) -> float:
    if value is not None:
        return value
    return seconds_from_env(RESTORE_DELAY_ENV, DEFAULT_LOCAL_RESTORE_DELAY)


def seconds_from_env(env: str, default: float, minimum: float = 0.0) -> float:
    """A number of seconds from the environment variable `env`, at least `minimum`."""
    text = os.environ.get(env)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (minimum <= value < float("inf")):  # also refuses nan
        raise UserError(f"{env} must be a number of seconds (at least {minimum:g}), not {text!r}")
    return value
