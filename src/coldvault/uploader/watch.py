"""`backup dir --watch`: watch directory trees with inotify and take a snapshot once changes settle.

- One inotify watch per directory (the `watchdog` library's observer), set up before the
  first snapshot, so that nothing changed during it goes unnoticed. The first snapshot is
  taken at once: it is an ordinary backup against the source's previous snapshot, which
  reads only the files whose size, mtime, ctime or inode changed. So a restart, or a
  change made while nothing was watching, loses nothing and re-reads only what changed.
- What counts as a change: a file or directory created, deleted, moved or written, or
  its metadata changed (chmod, chown, touch). Opens, reads and closes (the backup's own
  reads) do not count, nor the "modified" that
  inotify reports for a directory whose entries changed (the entry has its own event),
  nor anything under an excluded path (--exclude patterns, --exclude-if-present,
  --exclude-caches), inside a local vault's own directory, or (--sqlite-consistent) to
  a database's companion files that the snapshot leaves out (see `Ignore`).
- When: once no change came for `settle` seconds, or `max_delay` seconds after the
  first change not in a snapshot yet, whichever comes first: a tree that never stops
  changing still gets a snapshot every `max_delay` seconds. The changes are taken as
  the snapshot starts, so a change made while it runs (which its walk may have passed
  already) makes the next snapshot.
- Errors: a snapshot that fails is tried again after `settle` seconds, then twice as
  long each time up to RETRY_MAX (the first success resets it), while the trees stay
  watched. `FatalError`s (a wrong password, no vault, a vault of a newer format) need a
  person and end the watch.
- inotify's limits: a tree with more directories than `fs.inotify.max_user_watches`
  allows cannot be watched whole. That ends the watch with a UserError that names the
  sysctl to raise (at start, or when the tree grows past it): watching part of a tree
  would silently miss changes. If the kernel's event queue overflows (events lost),
  the trees count as changed.
- Stopping is the caller's: KeyboardInterrupt (the CLI turns SIGTERM into one) leaves
  `run_continuously` at once, also in the middle of a snapshot, which then unwinds as
  an interrupted backup does: nothing of it committed, its lock released.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Callable

from watchdog.events import (DirAttribEvent, DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileAttribEvent,
                             FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent, FileSystemEvent,
                             FileSystemEventHandler)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyFD

from coldvault.errors import BadPasswordError, ColdvaultError, NoVaultError, UnsupportedFormatError, UserError
from coldvault.uploader import sqlite

log = logging.getLogger(__name__)

RETRY_MAX = 600.0  # seconds: the longest wait before trying a failed snapshot again
STOP_POLL = 1.0  # seconds: how often an idle watch looks whether it was asked to stop
FATAL = (BadPasswordError, NoVaultError, UnsupportedFormatError)  # need a person: no retry
# The events that may change a snapshot. Not opens, reads and closes (the backup's own reads),
# nor a directory's own "modified" (it comes with its entry's own event). A write is its
# "modified" (IN_MODIFY, a truncation too); a close after writing (IN_CLOSE_WRITE) adds
# nothing, and would count a file opened for writing but not written (SQLite's -shm, opened
# by a --sqlite-consistent copy).
CHANGES = [FileCreatedEvent, DirCreatedEvent, FileDeletedEvent, DirDeletedEvent, FileMovedEvent, DirMovedEvent,
           FileModifiedEvent, FileAttribEvent, DirAttribEvent]
WATCHES_SYSCTL = "fs.inotify.max_user_watches"
INSTANCES_SYSCTL = "fs.inotify.max_user_instances"


def watch_limit_error(path: bytes | str) -> UserError:
    # The sysctl, and this user namespace's own limit (a container's may be lower).
    limits = [n for n in (_read_int("/proc/sys/fs/inotify/max_user_watches"),
                          _read_int("/proc/sys/user/max_inotify_watches")) if n]
    now = f" (now {min(limits)})" if limits else ""
    return UserError(
        f"too many directories to watch: inotify's limit {WATCHES_SYSCTL}{now} was reached at {os.fsdecode(path)}",
        hint=f"raise it, e.g. sysctl -w {WATCHES_SYSCTL}=1048576 (and in /etc/sysctl.d/ to keep it), "
             "then start the watch again")


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class _InotifyFD(InotifyFD):
    """watchdog's inotify instance, telling us what watchdog itself passes over: a directory
    that got no watch because of the limit, and an overflow of the kernel's event queue."""

    def __init__(self, on_limit: Callable[[bytes], None], on_overflow: Callable[[], None]):
        super().__init__()
        self._on_limit = on_limit
        self._on_overflow = on_overflow

    def add_callback(self, path, mask, callback, id_):
        try:
            return super().add_callback(path, mask, callback, id_)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._on_limit(path)
            raise  # watchdog passes over a subdirectory it cannot watch; the root's error reaches start()

    def handle_event(self, event) -> None:
        if event.is_queue_overflow:
            self._on_overflow()
        super().handle_event(event)


class Ignore:
    """Which changes cannot change a snapshot: under an excluded path, in the vault, or (with
    --sqlite-consistent) to a database's companion files that the snapshot leaves out: any
    change of its -shm, and a metadata change of its -wal or -journal (SQLite run as root
    chowns them when it opens the database, as the backup's own consistent copy does; a
    write to the -wal is a change of the database and counts)."""

    def __init__(self, roots: list[str], excludes=None, vault_dir: str | None = None, sqlite_consistent: bool = False):
        self.roots = [os.fsencode(r.rstrip("/") or "/") for r in roots]
        self.excludes = excludes
        self.vault = os.fsencode(os.path.abspath(vault_dir)) if vault_dir else None
        self.sqlite = sqlite_consistent
        self._patterns: dict[bytes, bool] = {}  # path -> an exclude pattern covers it (a pure function of the path)

    def __call__(self, path: bytes, attrib: bool = False) -> bool:
        """`attrib`: the change is one of metadata only (chmod, chown, touch)."""
        if self.vault is not None and (path == self.vault or path.startswith(self.vault.rstrip(b"/") + b"/")):
            return True
        if self.sqlite and self._companion(path, attrib):
            return True
        ex = self.excludes
        if not ex:
            return False
        root = next((r for r in self.roots if path == r or path.startswith(r.rstrip(b"/") + b"/")), None)
        if root is None:
            return False
        if ex.patterns and self._pattern_covers(path, root):
            return True
        if ex.markers or ex.caches:
            return self._marker_covers(path, root)
        return False

    @staticmethod
    def _companion(path: bytes, attrib: bool) -> bool:
        for suffix in sqlite.COMPANIONS:
            if path.endswith(suffix) and (attrib or suffix == b"-shm"):
                return os.path.exists(path[: -len(suffix)])
        return False

    def _pattern_covers(self, path: bytes, root: bytes) -> bool:
        hit = self._patterns.get(path)
        if hit is None:
            comps = os.fsdecode(path).strip("/").split("/")
            top = len(os.fsdecode(root).strip("/").split("/")) if root != b"/" else 0
            # The path, or a directory above it (inside the root), matches: the walk leaves it out.
            hit = any(p.matches(comps[:k]) for k in range(top + 1, len(comps) + 1) for p in self.excludes.patterns)
            if len(self._patterns) > 4096:
                self._patterns.clear()
            self._patterns[path] = hit
        return hit

    def _marker_covers(self, path: bytes, root: bytes) -> bool:
        """A directory from the root down to the path's parent keeps its contents out."""
        d = os.path.dirname(path)
        while True:
            if self.excludes.leaves_out_contents(d):
                return True
            if d == root or len(d) <= len(root):
                return False
            d = os.path.dirname(d)


class ChangeWatcher(FileSystemEventHandler):
    """Watches directory trees; knows when the first and the last change not yet in a
    snapshot happened. `with ChangeWatcher(roots, ignore):` watches for the block."""

    def __init__(self, roots: list[str], ignore: Callable[[bytes, bool], bool] = lambda path, attrib: False):
        self.roots = roots
        self.ignore = ignore
        self.cond = threading.Condition()
        self.first_change: float | None = None  # time.monotonic() of the first change not in a snapshot
        self.last_change: float | None = None
        self.failure: ColdvaultError | None = None  # why watching cannot go on
        self.changes = 0
        self._fd: _InotifyFD | None = None
        self._observer: BaseObserver | None = None

    # ---- watchdog's thread ----------------------------------------------------------------

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        attrib = isinstance(event, (FileAttribEvent, DirAttribEvent))
        if all(self.ignore(os.fsencode(p), attrib) for p in paths):
            return
        if isinstance(event, DirDeletedEvent) and os.fsdecode(event.src_path) in self.roots:
            self._fail(UserError(f"the watched directory {os.fsdecode(event.src_path)} was removed"))
            return
        self.changed()

    def changed(self) -> None:
        with self.cond:
            now = time.monotonic()
            self.last_change = now
            self.changes += 1
            if self.first_change is None:
                self.first_change = now
                # Only now: the waiter's due time can only move later with more changes, and it
                # looks again when it wakes; a storm of events must not wake it for each one.
                self.cond.notify_all()

    def _limit(self, path: bytes) -> None:
        self._fail(watch_limit_error(path))

    def _overflow(self) -> None:
        log.warning("the kernel's inotify event queue overflowed: events were lost; taking a snapshot to be sure")
        self.changed()

    def _fail(self, error: ColdvaultError) -> None:
        with self.cond:
            if self.failure is None:
                self.failure = error
            self.cond.notify_all()

    # ---- the caller's thread --------------------------------------------------------------

    def __enter__(self) -> "ChangeWatcher":
        try:
            self._fd = _InotifyFD(self._limit, self._overflow)
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                raise UserError(f"too many inotify instances: the limit {INSTANCES_SYSCTL} was reached",
                                hint=f"raise it, e.g. sysctl -w {INSTANCES_SYSCTL}=1024") from None
            raise
        self._fd.start()
        try:
            self._observer = BaseObserver(InotifyEmitter, inotify_fd=self._fd)
            for root in self.roots:
                self._observer.schedule(self, root, recursive=True, event_filter=CHANGES)
            started = time.monotonic()
            self._observer.start()  # adds every watch before it returns
            log.debug("watching %s (%.1f s to set up the watches)", ", ".join(self.roots), time.monotonic() - started)
        except OSError as exc:
            self.__exit__(None, None, None)
            if exc.errno == errno.ENOSPC:
                raise watch_limit_error(self.roots[0]) from None
            raise UserError(f"cannot watch {', '.join(self.roots)}: {exc.strerror or exc}") from None
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.check()
        return self

    def __exit__(self, *exc) -> None:
        observer, fd = self._observer, self._fd
        self._observer = self._fd = None
        if observer is not None and observer.is_alive():
            observer.stop()
            observer.join()
        if fd is not None:
            fd.stop()
            fd.join()

    def check(self) -> None:
        """Raise the error that ended the watching, if one did."""
        if self.failure is not None:
            raise self.failure

    def take(self) -> int:
        """A snapshot starts: the changes so far are its to save. Returns how many there were."""
        with self.cond:
            n, self.changes = self.changes, 0
            self.first_change = self.last_change = None
            return n

    def due(self, settle: float, max_delay: float) -> float | None:
        """When the changes so far should be saved (monotonic time), or None: no change."""
        if self.first_change is None:
            return None
        return min(self.last_change + settle, self.first_change + max_delay)


def leaf(exc: BaseException) -> BaseException:
    """The error inside (trio's) exception groups: a KeyboardInterrupt, else one of ours, else the first."""
    def flat(e):
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                yield from flat(inner)
        else:
            yield e

    errors = list(flat(exc))
    for kind in (KeyboardInterrupt, ColdvaultError):
        for e in errors:
            if isinstance(e, kind):
                return e
    return errors[0]


def run_continuously(watcher: ChangeWatcher, snapshot: Callable[[], object], settle: float, max_delay: float,
                     *, retry_max: float = RETRY_MAX, stopping: Callable[[], bool] = lambda: False) -> None:
    """Call `snapshot()` at once, and again whenever the watched trees have changed and
    settled; retry one that fails with backoff. Runs until KeyboardInterrupt, a FATAL error
    of a snapshot, or an error of the watching itself.

    `stopping()` true also stops it (with KeyboardInterrupt), checked at least every
    STOP_POLL seconds: the KeyboardInterrupt a signal handler raises is lost when it lands
    in a finalizer (`__del__`: "Exception ignored in ..."), so the handler sets a flag too."""
    owed_at: float | None = time.monotonic()  # a snapshot is owed (the first one, or a retry) at this time
    delay = settle
    failures = 0
    while True:
        with watcher.cond:
            while True:
                if stopping():
                    raise KeyboardInterrupt
                watcher.check()
                due = watcher.due(settle, max_delay)
                if owed_at is not None:
                    due = owed_at
                now = time.monotonic()
                if due is not None and now >= due:
                    break
                # A change or a failure wakes it at once; a stop within STOP_POLL seconds.
                watcher.cond.wait(STOP_POLL if due is None else min(due - now, STOP_POLL))
        changes = watcher.take()
        log.debug("taking a snapshot: %d change(s)%s", changes, f", attempt {failures + 1}" if failures else "")
        try:
            snapshot()
        except Exception as group:  # noqa: BLE001 - any error but a FATAL one is retried: the watch goes on
            exc = leaf(group)
            if isinstance(exc, FATAL):
                raise exc from None
            failures += 1
            wait = min(delay, retry_max)
            owed_at = time.monotonic() + wait
            delay = min(delay * 2, retry_max)
            what = exc.message if isinstance(exc, ColdvaultError) else f"{type(exc).__name__}: {exc}"
            level = logging.ERROR if failures >= 3 else logging.WARNING
            log.log(level, "snapshot failed (%d time%s in a row): %s; trying again in %.0f s, still watching",
                    failures, "" if failures == 1 else "s", what, wait,
                    exc_info=not isinstance(exc, ColdvaultError))
            continue
        if failures:
            log.warning("snapshot taken after %d failed attempt%s", failures, "" if failures == 1 else "s")
        owed_at, delay, failures = None, settle, 0
