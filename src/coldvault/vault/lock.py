"""Locks: who is writing to a vault, for which source, since when.

    locks/<random id> := envelope(kind "lock") of
      {"version": 1, "hostname": str, "pid": int, "user": str, "command": str,
       "scope": "source:<name>" | "vault", "exclusive": bool,
       "created": int ns, "refreshed": int ns}

A backup holds a shared lock on its source: a second run for the same source
stops at once (exit 16, naming the holder); other sources go on. prune and
forget hold the vault exclusively. A holder refreshes its lock every minute;
a lock is stale when its process is gone (same host) or it was not refreshed
for STALE seconds, and is then taken over with a log line. Two processes
that lock at the same moment both see each other; the older lock wins.
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from coldvault.errors import LockedError
from coldvault.index import envelope, limits
from coldvault.index.errors import FormatError
from coldvault.store.base import NotFoundError
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

PREFIX = "locks/"
REFRESH = 60.0
STALE = 30 * 60.0
VAULT_SCOPE = "vault"


@dataclass
class LockInfo:
    id: str
    hostname: str
    pid: int
    user: str
    command: str
    scope: str
    exclusive: bool
    created: int
    refreshed: int

    def to_map(self) -> dict:
        return {"version": 1, "hostname": self.hostname, "pid": self.pid, "user": self.user,
                "command": self.command, "scope": self.scope, "exclusive": self.exclusive,
                "created": self.created, "refreshed": self.refreshed}

    @property
    def holder(self) -> str:
        age = (time.time_ns() - self.created) / 1e9
        return f"'{self.command}' by {self.user}@{self.hostname} pid {self.pid}, for {age:.0f} s"

    def stale(self, now_ns: int) -> bool:
        if self.hostname == socket.gethostname() and not _alive(self.pid):
            return True
        return (now_ns - self.refreshed) / 1e9 > STALE

    def conflicts(self, other: "LockInfo") -> bool:
        return self.exclusive or other.exclusive or self.scope == other.scope


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class VaultLock:
    """`with VaultLock(vault, scope, command):` holds the lock for the block."""

    def __init__(self, vault: Vault, scope: str, command: str, exclusive: bool = False):
        self.vault = vault
        now = time.time_ns()
        self.info = LockInfo(secrets.token_hex(16), socket.gethostname(), os.getpid(), getpass.getuser(),
                             command, scope, exclusive, now, now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return PREFIX + self.info.id

    def _read_all(self) -> list[LockInfo]:
        locks = []
        for o in self.vault.store.list(PREFIX):
            lid = o.name[len(PREFIX):]
            if lid == self.info.id:
                continue
            try:
                doc = envelope.open_(self.vault.store.get(o.name), "lock", self.vault.sealer, o.name)
                with limits.hostile(o.name):
                    limits.check_version(doc, o.name, 1)
                    locks.append(LockInfo(lid, str(doc["hostname"]), int(doc["pid"]), str(doc["user"]),
                                          str(doc["command"]), str(doc["scope"]), bool(doc["exclusive"]),
                                          int(doc["created"]), int(doc["refreshed"])))
            except NotFoundError:
                continue  # released meanwhile
            except FormatError as exc:
                log.warning("ignoring unreadable lock %s: %s", o.name, exc)
        return locks

    def _conflicting(self) -> list[LockInfo]:
        now = time.time_ns()
        out = []
        for other in self._read_all():
            if not self.info.conflicts(other):
                continue
            if other.stale(now):
                log.warning("taking over the stale lock of %s", other.holder)
                self.vault.store.delete(PREFIX + other.id)
                continue
            out.append(other)
        return out

    def _write(self) -> None:
        self.info.refreshed = time.time_ns()
        self.vault.store.put(self.name, envelope.seal(self.info.to_map(), "lock", self.vault.sealer))

    def acquire(self) -> None:
        held = self._conflicting()
        if not held:
            self._write()
            # Someone may have locked between our look and our write: the older lock wins.
            rivals = [o for o in self._conflicting() if (o.created, o.id) < (self.info.created, self.info.id)]
            if not rivals:
                self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
                self._thread.start()
                return
            self.vault.store.delete(self.name)
            held = rivals
        what = "the vault" if self.info.exclusive or held[0].exclusive else f"source {self.info.scope[7:]!r}"
        raise LockedError(f"{what} is locked by {held[0].holder}",
                          hint="wait for it to finish; a lock of a dead process is taken over automatically")

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH):
            try:
                self._write()
            except Exception as exc:  # a failed refresh is retried next minute
                log.warning("could not refresh lock %s: %s", self.name, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.vault.store.delete(self.name)
        except Exception as exc:
            log.warning("could not remove lock %s: %s", self.name, exc)

    def __enter__(self) -> "VaultLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def source_lock(vault: Vault, source: str, command: str) -> VaultLock:
    return VaultLock(vault, f"source:{source}", command)


def vault_lock(vault: Vault, command: str) -> VaultLock:
    return VaultLock(vault, VAULT_SCOPE, command, exclusive=True)
