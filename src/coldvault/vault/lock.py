"""Locks: who is using a vault, for what, since when.

    locks/<random id> := envelope(kind "lock") of
      {"version": 1, "hostname": str, "pid": int, "user": str, "command": str,
       "scope": "source:<name>" | "read" | "vault", "exclusive": bool,
       "created": int ns, "refreshed": int ns}

A backup holds a shared lock on its source: a second run for the same source
stops at once (exit 16, naming the holder); other sources go on. Readers
(mount, restore, check, thaw, ls) hold a shared `read` lock: they do not
conflict with backups or with each other. prune and forget hold the vault
exclusively, so they never delete what a reader is reading, and a reader never
starts while they delete.

A holder refreshes its lock every REFRESH seconds. A lock is stale when its
process is gone (same host) or it was not refreshed for STALE seconds, and is
then taken over with a log line. Two processes that lock at the same moment
both see each other; the older lock wins.

A holder never outlives its lock: a refresh first reads the lock back, and if
it is gone (taken over) or no longer ours, it stops the holder instead of
writing it again; after STALE/2 without a successful refresh it stops the
holder too, long before anyone may take the lock over as stale. "Stopping"
is the `on_lost` callback: by default SIGINT to the main thread, which
interrupts the command the way Ctrl-C does; leaving the `with` block then
raises the LockLostError instead of the KeyboardInterrupt. The mount passes a
callback that unmounts.

COLDVAULT_LOCK_REFRESH and COLDVAULT_LOCK_STALE (seconds) override REFRESH and
STALE, for tests.

Over 400 lines on purpose: taking, refreshing, taking over and removing a lock
(`unlock`) must apply one stale rule and one ordering rule; they are kept in one
place so that they cannot drift apart.
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from coldvault.errors import ColdvaultError, ExitCode, LockedError
from coldvault.index import envelope, limits
from coldvault.index.errors import FormatError
from coldvault.store.base import NotFoundError
from coldvault.store.url import seconds_from_env
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

PREFIX = "locks/"
REFRESH = 60.0
STALE = 30 * 60.0
REFRESH_ENV = "COLDVAULT_LOCK_REFRESH"
STALE_ENV = "COLDVAULT_LOCK_STALE"
VAULT_SCOPE = "vault"
READ_SCOPE = "read"
MIN_SECONDS = 0.01  # the shortest refresh interval or stale age COLDVAULT_LOCK_* may set (tests)
SOURCE_SCOPE = "source:"


class LockLostError(LockedError):
    """This process lost its lock while working: taken over, replaced, or not refreshable."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = ExitCode.LOCKED):
        super().__init__(message, hint)
        self.exit_code = exit_code


def timings(refresh: float | None = None, stale: float | None = None) -> tuple[float, float]:
    """(refresh interval, stale age) in seconds: the arguments, else the environment, else the defaults."""
    return (refresh if refresh is not None else seconds_from_env(REFRESH_ENV, REFRESH, minimum=MIN_SECONDS),
            stale if stale is not None else seconds_from_env(STALE_ENV, STALE, minimum=MIN_SECONDS))


def age_text(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


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
        return f"'{self.command}' by {self.user}@{self.hostname} pid {self.pid}, for {age_text(age)}"

    def stale(self, now_ns: int, stale_after: float = STALE) -> bool:
        if self.hostname == socket.gethostname() and not _alive(self.pid):
            return True
        return (now_ns - self.refreshed) / 1e9 > stale_after

    def conflicts(self, other: "LockInfo") -> bool:
        """Exclusive locks conflict with every lock; backups of one source with each other.
        Readers share the vault with each other and with backups."""
        if self.exclusive or other.exclusive:
            return True
        return self.scope == other.scope and self.scope.startswith(SOURCE_SCOPE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _decode(vault: Vault, name: str, data: bytes) -> LockInfo:
    doc = envelope.open_(data, "lock", vault.sealer, name)
    with limits.hostile(name):
        limits.check_version(doc, name, 1)
        return LockInfo(name[len(PREFIX):], str(doc["hostname"]), int(doc["pid"]), str(doc["user"]),
                        str(doc["command"]), str(doc["scope"]), bool(doc["exclusive"]),
                        int(doc["created"]), int(doc["refreshed"]))


def interrupt_main(error: LockLostError) -> None:
    """The default `on_lost`: interrupt the main thread as Ctrl-C would (a real signal, so a
    blocking system call returns too); `VaultLock.__exit__` turns it into `error`."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


class VaultLock:
    """`with VaultLock(vault, scope, command):` holds the lock for the block.

    `on_lost(error)` is called (from the refresh thread) when the lock is lost; the
    default interrupts the main thread. `refresh` and `stale` override the timings.
    """

    def __init__(self, vault: Vault, scope: str, command: str, exclusive: bool = False, *,
                 refresh: float | None = None, stale: float | None = None,
                 on_lost: Callable[[LockLostError], None] | None = None):
        self.vault = vault
        self.refresh_every, self.stale_after = timings(refresh, stale)
        now = time.time_ns()
        self.info = LockInfo(secrets.token_hex(16), socket.gethostname(), os.getpid(), getpass.getuser(),
                             command, scope, exclusive, now, now)
        self.on_lost = on_lost or interrupt_main
        self.lost: LockLostError | None = None
        self._owned = False  # our object is (as far as we know) in the store
        self._released = False
        self._last_ok = time.monotonic()
        self._mutex = threading.Lock()  # orders a refresh deciding to write, a loss, and the release
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._attempt: threading.Thread | None = None  # the refresh write under way, if any

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
                locks.append(_decode(self.vault, o.name, self.vault.store.get(o.name)))
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
            if other.stale(now, self.stale_after):
                log.warning("taking over the stale lock of %s", other.holder)
                self.vault.store.delete(PREFIX + other.id)
                continue
            out.append(other)
        return out

    def _write(self) -> None:
        # The deadline to stop counts from the `refreshed` stamp others judge us by, taken
        # before the write: a slow write leaves less time, never more.
        now, started = time.time_ns(), time.monotonic()
        self.vault.store.put(self.name, envelope.seal({**self.info.to_map(), "refreshed": now}, "lock",
                                                      self.vault.sealer))
        self.info.refreshed = now
        self._owned = True
        self._last_ok = started

    def acquire(self, refresh: bool = True) -> None:
        """Take the lock or raise LockedError naming the holder. `refresh=False`: the caller
        starts the refresh thread itself (`start_refresh`), e.g. after a fork."""
        held = self._conflicting()
        if not held:
            self._write()
            # Someone may have locked between our look and our write: the older lock wins.
            rivals = [o for o in self._conflicting() if (o.created, o.id) < (self.info.created, self.info.id)]
            if not rivals:
                if refresh:
                    self.start_refresh()
                return
            self.vault.store.delete(self.name)
            self._owned = False
            held = rivals
        raise self._locked_error(held)

    def _locked_error(self, held: list[LockInfo]) -> LockedError:
        first = min(held, key=lambda o: o.created)
        if self.info.exclusive or first.exclusive:
            what = "the vault"
        else:
            what = f"source {self.info.scope[len(SOURCE_SCOPE):]!r}"
        more = f" (and {len(held) - 1} more)" if len(held) > 1 else ""
        if self.info.exclusive and not first.exclusive:
            hint = ("it deletes nothing while a mount, restore, check, thaw, ls or backup uses the vault: "
                    "wait for them to finish (unmount a mount: fusermount3 -u MOUNTPOINT); "
                    "a lock of a dead process is taken over automatically")
        else:
            hint = "wait for it to finish; a lock of a dead process is taken over automatically"
        return LockedError(f"{what} is locked by {first.holder}{more}", hint=hint)

    # ---- keeping it ----------------------------------------------------------------------

    def start_refresh(self, on_lost: Callable[[LockLostError], None] | None = None) -> None:
        if on_lost is not None:
            self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._thread.start()

    def moved_to_this_process(self) -> None:
        """After a fork (a mount going to the background): the lock names this process from
        now on. Raises LockLostError if the lock is no longer ours."""
        self._mutex = threading.Lock()  # a fresh one: the parent's threads do not exist here
        self._check_ours()
        self.info.pid = os.getpid()
        self._write()

    def _check_ours(self) -> None:
        """Read our lock back; raise LockLostError if it is gone or someone else's."""
        try:
            data = self.vault.store.get(self.name)
        except NotFoundError:
            self._owned = False
            raise LockLostError(f"lost the lock {self.name}: it was removed (taken over by another process, "
                                "or deleted by hand)") from None
        try:
            now = _decode(self.vault, self.name, data)
            mine = (now.hostname, now.pid, now.created) == (self.info.hostname, self.info.pid, self.info.created)
        except FormatError:
            mine = False
        if not mine:
            self._owned = False
            raise LockLostError(f"lost the lock {self.name}: it now belongs to another process")

    def _refresh_once(self, box: dict) -> None:
        try:
            self._check_ours()
            with self._mutex:
                if self._released or self.lost is not None:
                    return
            self._write()  # not under the mutex: a write that hangs must not hold up a loss
        except BaseException as exc:  # reported by the loop
            box["error"] = exc

    def _refresh_loop(self) -> None:
        limit = self.stale_after / 2
        last_error: BaseException | None = None
        while True:
            left = self._last_ok + limit - time.monotonic()
            if self._stop.wait(max(0.0, min(self.refresh_every, left))):
                return
            elapsed = time.monotonic() - self._last_ok
            if elapsed >= limit:
                code = last_error.exit_code if isinstance(last_error, ColdvaultError) else ExitCode.UNREACHABLE
                self._lose(LockLostError(
                    f"could not refresh the lock {self.name} for {age_text(elapsed)}"
                    f" ({last_error or 'no refresh got through in time'}); "
                    "stopped before another process could take it over as stale",
                    hint="is the store reachable? run the command again when it is", exit_code=code))
                return
            box: dict = {}
            # One attempt in its own thread, so that a store call that hangs cannot keep
            # this loop past the point where the holder must stop.
            attempt = threading.Thread(target=self._refresh_once, args=(box,), name="lock-write", daemon=True)
            self._attempt = attempt
            attempt.start()
            attempt.join(max(0.0, self._last_ok + limit - time.monotonic()))
            if attempt.is_alive():
                continue
            exc = box.get("error")
            if isinstance(exc, LockLostError):
                self._lose(exc)
                return
            if exc is not None:
                last_error = exc
                log.warning("could not refresh lock %s: %s", self.name, exc)

    def _lose(self, error: LockLostError) -> None:
        with self._mutex:
            if self._released or self.lost is not None:
                return
            self.lost = error
            if self.on_lost is interrupt_main:
                # Under the mutex: release() cannot finish before the signal is on its way.
                interrupt_main(error)
                return
        self.on_lost(error)

    # ---- giving it back ------------------------------------------------------------------

    def release(self) -> None:
        with self._mutex:
            self._released = True
        self._stop.set()
        for thread in (self._thread, self._attempt):  # so that no refresh lands after our delete
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)
        if not self._owned:
            return  # never written, or it is someone else's now: not ours to delete
        try:
            self.vault.store.delete(self.name)
            self._owned = False
        except Exception as exc:
            log.warning("could not remove lock %s: %s", self.name, exc)

    def __enter__(self) -> "VaultLock":
        try:
            self.acquire()
        except KeyboardInterrupt:  # Ctrl-C, or the lock lost already: do not leave it behind
            self.__exit__(None, None, None)  # raises self.lost if the interrupt was ours
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.release()
        except KeyboardInterrupt:
            if self.lost is None:
                raise
            self.release()  # our own interrupt arrived just now
        if self.lost is not None:
            # The KeyboardInterrupt that stopped the work (if any) was ours: say why.
            raise self.lost from None


def source_lock(vault: Vault, source: str, command: str) -> VaultLock:
    return VaultLock(vault, f"{SOURCE_SCOPE}{source}", command)


def read_lock(vault: Vault, command: str) -> VaultLock:
    """For commands that read packs prune may delete: mount, restore, check, thaw, ls."""
    return VaultLock(vault, READ_SCOPE, command)


def vault_lock(vault: Vault, command: str) -> VaultLock:
    return VaultLock(vault, VAULT_SCOPE, command, exclusive=True)


def read_locks(vault: Vault) -> tuple[list[LockInfo], list[str]]:
    """Every lock in the vault, and the names of those that do not decode (ignored by lockers)."""
    locks, unreadable = [], []
    for o in vault.store.list(PREFIX):
        try:
            locks.append(_decode(vault, o.name, vault.store.get(o.name)))
        except NotFoundError:
            continue  # released meanwhile
        except FormatError:
            unreadable.append(o.name)
    return locks, unreadable


def remove_locks(vault: Vault, remove_all: bool = False) -> tuple[list[LockInfo], list[LockInfo], list[str]]:
    """`coldvault unlock`: remove the stale locks (the rules of LockInfo.stale and the
    STALE age), or with `remove_all` every lock, unreadable ones included.
    Returns (removed, kept, unreadable lock names: removed with `remove_all`, else kept)."""
    _, stale_after = timings()
    now = time.time_ns()
    locks, unreadable = read_locks(vault)
    removed, kept = [], []
    for info in locks:
        if remove_all or info.stale(now, stale_after):
            try:
                vault.store.delete(PREFIX + info.id)
            except NotFoundError:
                pass
            removed.append(info)
        else:
            kept.append(info)
    if remove_all:
        for name in unreadable:
            try:
                vault.store.delete(name)
            except NotFoundError:
                pass
    return removed, kept, unreadable
