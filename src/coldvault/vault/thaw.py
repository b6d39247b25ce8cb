"""Cold data in one place: where packs stand, asking for restores, when they will be ready, waiting.

Every caller that meets cold packs comes here: `coldvault thaw`, `restore zfs
--thaw [--wait]`, `restore dir` (which only looks), `repair index`, and the
mount's restore manager, which runs these functions in worker threads.

- `cold_state`: HEAD many packs, a few at a time (one bounded thread pool).
- `request`: ask for every cold pack not already being restored, and log it.
- `ready_in`: when restores asked for now should be readable: the store's own
  figure when it simulates its cold tier (`Store.capabilities`), else the
  typical time of the tier table (`coldvault.vault.tiers`).
- `poll_intervals`, `wait_readable`: one way to wait. The first wait between
  looks is COLDVAULT_RESTORE_POLL seconds (default 5), each further one half
  again as long as the one before, up to 5 minutes.

The restore log (``restores.json`` in this vault's cache directory,
``$XDG_CACHE_HOME/coldvault/<vault id hex>/``, else ``~/.cache/coldvault/...``)
keeps one entry per pack whose restore was requested from this machine, and
who asked (thaw, restore, mount, repair index). `coldvault thaw --status` reads
it and asks the store (HEAD) where each pack stands now. It is a cache: losing
it loses nothing but that list, and a log that cannot be written only earns a
warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

from coldvault import privatefiles
from coldvault.errors import DamagedError
from coldvault.store.base import NotFoundError, ObjectInfo, Store
from coldvault.store.url import seconds_from_env
from coldvault.vault.tiers import effective_tier, restore_time
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

POLL_ENV = "COLDVAULT_RESTORE_POLL"  # seconds of the first wait (tests make it short)
FIRST_POLL = 5.0
POLL_GROWTH = 1.5
LONGEST_POLL = 300.0  # unless the first is longer
DAY = 86400.0
RESTORE_LOG = "restores.json"
LOG_VERSION = 1
KEEP_AFTER_EXPIRY = 30 * DAY  # expired entries stay listed this long, then are dropped
LONGEST_RESTORE = 2 * DAY  # Deep Archive Bulk: the latest a requested copy should appear


@dataclass
class ColdState:
    """Where a set of packs stands: readable, restoring, or cold (nothing asked yet)."""

    infos: dict[str, ObjectInfo] = field(default_factory=dict)

    @property
    def unreadable(self) -> list[str]:
        return sorted(n for n, i in self.infos.items() if not i.readable)

    @property
    def restoring(self) -> list[str]:
        return sorted(n for n, i in self.infos.items() if not i.readable and i.restore.status == "in-progress")

    @property
    def cold(self) -> list[str]:
        return sorted(n for n, i in self.infos.items() if not i.readable and i.restore.status != "in-progress")

    @property
    def readable(self) -> list[str]:
        return sorted(n for n, i in self.infos.items() if i.readable)

    @property
    def condition(self) -> str:
        """One word for the whole set (the mount's state attribute): hot (no pack in a cold
        class), restored (every cold one readable), restoring (a restore is under way), or
        cold (a pack waits for its request)."""
        if not any(i.cold for i in self.infos.values()):
            return "hot"
        if not self.unreadable:
            return "restored"
        return "restoring" if self.restoring else "cold"

    def bytes_of(self, names) -> int:
        return sum(self.infos[n].size for n in names)

    def classes_of(self, names) -> set[str]:
        return {self.infos[n].storage_class for n in names}


def packs_for_chunks(vault: Vault, chunks) -> set[str]:
    return {vault.locate(c, "chunk").object_name for c in chunks}


def cold_state(vault: Vault, packs) -> ColdState:
    """HEAD every pack (a few at a time); a missing pack is damage."""
    state, missing = cold_state_and_missing(vault, packs)
    if missing:
        raise DamagedError(f"pack {missing[0]} is missing from the vault", hint="run 'coldvault check'")
    return state


def cold_state_and_missing(vault: Vault, packs) -> tuple[ColdState, list[str]]:
    """Like `cold_state`, but a missing pack is reported (second value, sorted), not raised.

    For callers that can still do part of their work without it (`restore dir`,
    `thaw --status`, the mount).
    """

    def head(name):
        try:
            return name, vault.store.head(name)
        except NotFoundError:
            return name, None

    names = sorted(packs)
    if len(names) <= 1:
        results = [head(n) for n in names]
    else:
        with ThreadPoolExecutor(min(vault.store.capabilities().connections, len(names))) as pool:
            results = list(pool.map(head, names))
    missing = [n for n, info in results if info is None]
    return ColdState({n: info for n, info in results if info is not None}), missing


def request(vault: Vault, state: ColdState, tier: str, days: int, by: str = "restore") -> list[str]:
    """Ask for every cold pack not already being restored; returns those newly asked for.

    The new requests go to the restore log, marked `by` (who asked).
    """
    asked, entries = [], []
    try:
        for name in state.cold:
            info = state.infos[name]
            t = effective_tier(info.storage_class, tier)
            if vault.store.restore(name, days, t):
                asked.append(name)
                entries.append(LoggedRestore(name, info.storage_class, t, days, time.time(), info.size, by))
    finally:
        # Also when a request fails halfway: those already made are on their way and cost money.
        record_requests(vault, entries)
    return asked


def ready_in(store: Store, classes: Iterable[str], tier: str) -> float | None:
    """Seconds until restores asked for now, at `tier`, of objects in `classes` should be readable.

    The store's own figure when it simulates its cold tier; else the typical time of
    the slowest class (None when the table knows none of them).
    """
    delay = store.capabilities().simulated_restore_delay
    if delay is not None:
        return delay
    return max((s for s in (restore_time(c, tier) for c in classes) if s is not None), default=None)


def first_poll() -> float:
    """Seconds of the first wait for restores under way: COLDVAULT_RESTORE_POLL, else 5."""
    return seconds_from_env(POLL_ENV, FIRST_POLL, minimum=0.01)


def poll_intervals(first: float) -> Iterator[float]:
    """The waits between looks: `first`, then each half again as long, up to 5 minutes
    (or `first`, when that is longer). Endless: the caller stops when all is readable."""
    delay, longest = first, max(first, LONGEST_POLL)
    while True:
        yield delay
        delay = min(delay * POLL_GROWTH, longest)


def wait_readable(vault: Vault, packs, first: float | None = None, sleep=time.sleep) -> None:
    """Block until every pack is readable, looking now and then by `poll_intervals`."""
    pending = set(packs)
    for delay in poll_intervals(first_poll() if first is None else first):
        pending = set(cold_state(vault, pending).unreadable)
        if not pending:
            return
        log.info("waiting for %d pack(s) to be restored; next look in %.1f s", len(pending), delay)
        sleep(delay)


# ---- the restore log -----------------------------------------------------------------


@dataclass
class LoggedRestore:
    pack: str
    storage_class: str
    tier: str  # the tier really asked for (Deep Archive: never Expedited)
    days: int
    requested_at: float  # unix time
    size: int
    by: str  # thaw | restore | mount

    @classmethod
    def from_json(cls, d: dict) -> "LoggedRestore":
        return cls(str(d["pack"]), str(d["storage_class"]), str(d["tier"]), int(d["days"]),
                   float(d["requested_at"]), int(d["size"]), str(d.get("by", "")))


def cache_dir(vault: Vault) -> str:
    """This vault's cache directory (the mount keeps its chunk cache there too)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "coldvault", vault.config.vault_id.hex())


def restore_log_path(vault: Vault) -> str:
    return os.path.join(cache_dir(vault), RESTORE_LOG)


def _parse_log(path: str) -> dict[str, LoggedRestore]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable restore log %s: %s", path, exc)
        return {}
    if not isinstance(doc, dict) or doc.get("version") != LOG_VERSION or not isinstance(doc.get("restores"), list):
        log.warning("ignoring restore log %s: not a version %d restore log", path, LOG_VERSION)
        return {}
    out = {}
    for d in doc["restores"]:
        try:
            e = LoggedRestore.from_json(d)
        except (KeyError, TypeError, ValueError):
            log.warning("restore log %s: skipping a malformed entry", path)
            continue
        out[e.pack] = e
    return out


def read_restore_log(vault: Vault) -> dict[str, LoggedRestore]:
    """Pack name -> its latest logged request."""
    return _parse_log(restore_log_path(vault))


@contextlib.contextmanager
def _locked(path: str):
    privatefiles.makedirs(os.path.dirname(path))
    fd = privatefiles.create(path + ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def record_requests(vault: Vault, entries: list[LoggedRestore], now: float | None = None) -> None:
    """Add `entries` to the restore log (a later request of a pack replaces the earlier one)."""
    if not entries:
        return
    path = restore_log_path(vault)
    now = time.time() if now is None else now
    try:
        with _locked(path):
            logged = _parse_log(path)
            for e in entries:
                logged[e.pack] = e
            keep = [e for e in logged.values()
                    if e.requested_at + LONGEST_RESTORE + e.days * DAY + KEEP_AFTER_EXPIRY > now]
            keep.sort(key=lambda e: (e.requested_at, e.pack))
            doc = {"version": LOG_VERSION, "vault": vault.config.vault_id.hex(),
                   "restores": [asdict(e) for e in keep]}
            tmp = f"{path}.tmp-{os.getpid()}"
            with os.fdopen(privatefiles.create(tmp), "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
                f.write("\n")
            os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not record %d restore request(s) in %s: %s", len(entries), path, exc.strerror or exc)
