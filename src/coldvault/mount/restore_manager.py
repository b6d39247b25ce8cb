"""Cold data on demand: ask for restores once per pack, then fail fast or wait.

The first read that needs an archived pack requests the restore of every pack
the whole file needs, at the configured tier, tolerating requests already in
progress. `fail` mode answers EAGAIN at once (and the log says what was asked
and when it should be ready); `wait` mode polls politely until the data is
readable, and gives up when the reading process has a signal pending (pyfuse3
has no FUSE_INTERRUPT, so /proc tells us the reader was interrupted).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time

import trio

from coldvault.store.aio import AsyncStore
from coldvault.store.base import NotFoundError, ObjectInfo, is_cold_class
from coldvault.store.tiers import effective_tier, restore_time
from coldvault.vault import thaw
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

POLL_ENV = "COLDVAULT_RESTORE_POLL"  # first poll interval in seconds (tests make it short)


class ColdFailError(Exception):
    """The data is cold; a restore was requested (or is running); answer EAGAIN."""


class InterruptedWaitError(Exception):
    """The process waiting for a restore was interrupted; answer EINTR."""


def reader_interrupted(pid: int | None) -> bool:
    """True when `pid` is gone or has a signal pending (it was interrupted while blocked)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16):
                    return True
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:
        return False
    return False


class RestoreManager:
    def __init__(self, vault: Vault, mode: str = "fail", tier: str = "Bulk", days: int = 7):
        self.vault = vault
        self.astore = AsyncStore(vault.store, concurrency=8)
        self.mode = mode
        self.tier = tier
        self.days = days
        self.poll_first = float(os.environ.get(POLL_ENV, "5"))
        self.poll_max = max(self.poll_first, 300.0)
        self._heads: dict[str, tuple[float, ObjectInfo]] = {}

    async def head(self, name: str, max_age: float = 0.0) -> ObjectInfo | None:
        cached = self._heads.get(name)
        if cached is not None and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        try:
            info = await self.astore.head(name)
        except NotFoundError:
            return None
        self._heads[name] = (time.monotonic(), info)
        return info

    async def _infos(self, packs: list[str], max_age: float = 0.0) -> dict[str, ObjectInfo | None]:
        out: dict[str, ObjectInfo | None] = {}

        async def one(p):
            out[p] = await self.head(p, max_age)

        async with trio.open_nursery() as n:
            for p in packs:
                n.start_soon(one, p)
        return out

    async def state(self, chunks) -> str:
        """hot | cold | restoring | restored, from `head` only (never reads data)."""
        packs = sorted(thaw.packs_for_chunks(self.vault, chunks))
        infos = await self._infos(packs, max_age=2.0)
        cold = [i for i in infos.values() if i is not None and is_cold_class(i.storage_class)]
        if not cold:
            return "hot"
        if all(i.restore.status == "restored" for i in cold):
            return "restored"
        if any(i.restore.status == "in-progress" for i in cold):
            return "restoring"
        return "cold"

    async def request(self, chunks, what: str) -> list[str]:
        """Ask for every unreadable pack behind `chunks`; returns those still unreadable."""
        packs = sorted(thaw.packs_for_chunks(self.vault, chunks))
        infos = await self._infos(packs)
        unreadable = [p for p, i in infos.items() if i is not None and not i.readable]
        asked, size = [], 0
        classes = set()
        logged = []
        for p in unreadable:
            info = infos[p]
            if info.restore.status == "in-progress":
                continue
            tier = effective_tier(info.storage_class, self.tier)
            if await self.astore.restore(p, self.days, tier):
                asked.append(p)
                size += info.size
                classes.add(info.storage_class)
                logged.append(thaw.LoggedRestore(p, info.storage_class, tier, self.days, time.time(), info.size, "mount"))
            self._heads.pop(p, None)
        if logged:  # for 'coldvault thaw --status'
            await trio.to_thread.run_sync(thaw.record_requests, self.vault, logged)
        if asked:
            eta = max((restore_time(c, self.tier) or 0.0) for c in classes)
            delay = getattr(self.vault.store, "restore_delay", None)
            if delay is not None:  # the local store's simulated tier
                eta = delay
            ready = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=eta)
            log.warning(
                "%s is in %s: requested restore of %d pack(s), %.1f MiB, tier %s, for %d days; "
                "expected ready around %s",
                what, "/".join(sorted(classes)), len(asked), size / 2**20, self.tier, self.days,
                ready.strftime("%Y-%m-%d %H:%M UTC"),
            )
        return unreadable

    async def make_readable(self, chunks, what: str, pid: int | None) -> None:
        """Called when a read hit cold data: request restores, then fail or wait per mode."""
        pending = await self.request(chunks, what)
        if not pending:
            return  # became readable meanwhile
        if self.mode == "fail":
            raise ColdFailError(what)
        delay = self.poll_first
        while pending:
            deadline = trio.current_time() + delay
            while trio.current_time() < deadline:
                if reader_interrupted(pid):
                    log.info("%s: the reader was interrupted; no longer waiting for the restore", what)
                    raise InterruptedWaitError(what)
                await trio.sleep(min(1.0, delay))
            infos = await self._infos(pending)
            pending = [p for p, i in infos.items() if i is not None and not i.readable]
            delay = min(delay * 1.5, self.poll_max)
        log.info("%s: restored, reading", what)
