"""Asking a store for readable copies of cold packs, and waiting for them."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from coldvault.errors import DamagedError
from coldvault.store.base import NotFoundError, ObjectInfo
from coldvault.store.tiers import effective_tier
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)


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

    def bytes_of(self, names) -> int:
        return sum(self.infos[n].size for n in names)


def packs_for_chunks(vault: Vault, chunks) -> set[str]:
    return {vault.locate(c, "chunk").object_name for c in chunks}


def cold_state(vault: Vault, packs) -> ColdState:
    state = ColdState()
    for name in sorted(packs):
        try:
            state.infos[name] = vault.store.head(name)
        except NotFoundError:
            raise DamagedError(f"pack {name} is missing from the vault", hint="run 'coldvault check'") from None
    return state


def request(vault: Vault, state: ColdState, tier: str, days: int) -> list[str]:
    """Ask for every cold pack not already being restored; returns those newly asked for."""
    asked = []
    for name in state.cold:
        info = state.infos[name]
        if vault.store.restore(name, days, effective_tier(info.storage_class, tier)):
            asked.append(name)
    return asked


def wait_readable(vault: Vault, packs, poll: float, sleep=time.sleep) -> None:
    """Block until every pack is readable, polling politely (the interval grows to 5 minutes)."""
    pending = set(packs)
    delay = poll
    while pending:
        state = cold_state(vault, pending)
        pending = set(state.unreadable)
        if not pending:
            return
        log.info("waiting for %d pack(s) to be restored; next look in %.0f s", len(pending), delay)
        sleep(delay)
        delay = min(delay * 1.5, max(poll, 300.0))
