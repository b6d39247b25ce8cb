"""Cold data on demand: ask for restores once per pack, then fail fast or wait.

The mount's face of `coldvault.vault.thaw`, which does the work (HEADs,
requests and the restore log, the ready-time estimate, the polling policy) in
worker threads, so that the event loop never blocks. The first read that needs
an archived pack requests the restore of every pack the whole file needs, at
the configured tier, tolerating requests already in progress. `fail` mode
answers EAGAIN at once (and the log says what was asked and when it should be
ready); `wait` mode looks again and again, as `thaw.poll_intervals` says, until
the data is readable, and gives up when the reading process has a signal
pending (pyfuse3 has no FUSE_INTERRUPT, so /proc tells us the reader was
interrupted).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import trio

from coldvault.store.aio import thread_limiter
from coldvault.store.base import ObjectInfo
from coldvault.vault import thaw
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

STATE_MAX_AGE = 2.0  # seconds an answer may be reused for the state attribute


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
        self.mode = mode
        self.tier = tier
        self.days = days
        self.poll_first = thaw.first_poll()
        # Looks at once; each HEADs its packs on its own threads, and the store stack's
        # limit (store.limit) bounds the requests of all of them together.
        self._limiter = thread_limiter(vault.store)
        self._heads: dict[str, tuple[float, ObjectInfo]] = {}  # pack -> (when seen, info)

    async def _look(self, packs, max_age: float = 0.0) -> thaw.ColdState:
        """Where `packs` stand; an answer up to `max_age` seconds old will do. A missing
        pack is left out: reading it reports the damage."""
        now = time.monotonic()
        infos = {p: self._heads[p][1] for p in packs if p in self._heads and now - self._heads[p][0] <= max_age}
        todo = [p for p in packs if p not in infos]
        if todo:
            state, _missing = await trio.to_thread.run_sync(
                thaw.cold_state_and_missing, self.vault, todo, limiter=self._limiter)
            seen = time.monotonic()
            for p, info in state.infos.items():
                self._heads[p] = (seen, info)
            infos.update(state.infos)
        return thaw.ColdState(infos)

    async def state(self, chunks) -> str:
        """hot | cold | restoring | restored, from `head` only (never reads data)."""
        packs = thaw.packs_for_chunks(self.vault, chunks)
        return (await self._look(packs, max_age=STATE_MAX_AGE)).condition

    async def request(self, chunks, what: str) -> list[str]:
        """Ask for every unreadable pack behind `chunks`; returns those still unreadable."""
        state = await self._look(thaw.packs_for_chunks(self.vault, chunks))
        asked = await trio.to_thread.run_sync(thaw.request, self.vault, state, self.tier, self.days, "mount")
        for p in state.unreadable:
            self._heads.pop(p, None)  # their state changed: the next look asks again
        if asked:
            classes = state.classes_of(asked)
            eta = thaw.ready_in(self.vault.store, classes, self.tier) or 0.0
            ready = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=eta)
            log.warning(
                "%s is in %s: requested restore of %d pack(s), %.1f MiB, tier %s, for %d days; "
                "expected ready around %s",
                what, "/".join(sorted(classes)), len(asked), state.bytes_of(asked) / 2**20, self.tier, self.days,
                ready.strftime("%Y-%m-%d %H:%M UTC"),
            )
        return state.unreadable

    async def make_readable(self, chunks, what: str, pid: int | None) -> None:
        """Called when a read hit cold data: request restores, then fail or wait per mode."""
        pending = await self.request(chunks, what)
        if not pending:
            return  # became readable meanwhile
        if self.mode == "fail":
            raise ColdFailError(what)
        for delay in thaw.poll_intervals(self.poll_first):
            deadline = trio.current_time() + delay
            while trio.current_time() < deadline:
                if reader_interrupted(pid):
                    log.info("%s: the reader was interrupted; no longer waiting for the restore", what)
                    raise InterruptedWaitError(what)
                await trio.sleep(min(1.0, delay))
            pending = (await self._look(pending)).unreadable
            if not pending:
                break
        log.info("%s: restored, reading", what)
