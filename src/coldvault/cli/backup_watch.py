"""`backup dir PATH... --watch`: keep running, and take a snapshot whenever the trees have
changed and settled (uploader/watch.py says how; docs/watch.md for users).

Each snapshot is `backup dir` run once with the same arguments (excludes, tags, hooks,
--name, ...): the same lock, hooks, summary line and exit status per snapshot.
SIGTERM and SIGINT stop it: between snapshots at once, during one by interrupting it
as Ctrl-C interrupts a backup (nothing of it committed, the lock released); the exit
status is then 0.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys

from coldvault.cli.common import PASSWORD_ENV, open_store_for, open_vault
from coldvault.errors import BadPasswordError, ColdvaultError, UserError
from coldvault.vault import Vault

log = logging.getLogger(__name__)

DEFAULT_SETTLE = 10.0
MAX_DELAY_FACTOR = 10  # --max-delay defaults to this many times --settle


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("continuous mode (docs/watch.md)")
    g.add_argument("--watch", action="store_true",
                   help="keep running: take a snapshot now, then watch the directories (inotify) and take one "
                        "whenever changes have settled; errors are retried; SIGTERM or Ctrl-C stops it (exit 0)")
    g.add_argument("--settle", metavar="SECONDS",
                   help=f"with --watch: take the snapshot once nothing changed for SECONDS (default {DEFAULT_SETTLE:g})")
    g.add_argument("--max-delay", metavar="SECONDS",
                   help=f"with --watch: at the latest SECONDS after the first change, even if changes go on "
                        f"(default {MAX_DELAY_FACTOR} x --settle)")


def _seconds(option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{option} must be a number of seconds, not {text!r}") from None
    if not 0 < value < 10**7:
        raise UserError(f"{option} must be more than 0 seconds, not {text}")
    return value


def wanted(args) -> bool:
    """Was --watch given? (--settle and --max-delay without it are refused.)"""
    if not args.watch:
        for option, value in (("--settle", args.settle), ("--max-delay", args.max_delay)):
            if value is not None:
                raise UserError(f"{option} goes with --watch")
    return args.watch


def _vault_dir(args) -> str | None:
    """The local vault's directory (its own writes are no change to back up), or None."""
    url = open_store_for(args).url
    return url if os.path.isabs(url) else None


def _refuse_prompt(args) -> None:
    """A snapshot cannot ask for the password each time: want it from the environment."""
    if not sys.stdin.isatty() or any(os.environ.get(v) for v in PASSWORD_ENV):
        return
    try:
        Vault.open(open_store_for(args), None)
    except BadPasswordError:
        raise UserError("--watch cannot ask for the vault's password at every snapshot",
                        hint="set COLDVAULT_PASSWORD_FILE or COLDVAULT_PASSWORD_COMMAND") from None
    except ColdvaultError:
        pass  # the first snapshot will say what is wrong, and be retried


def _remove_own_locks(args) -> None:
    """Before a retry: locks of this process are leftovers (no snapshot runs now) of a snapshot
    whose release could not reach the store. Left there, they would lock our own source out
    until they are stale (30 min: the process is alive)."""
    from coldvault.vault.lock import PREFIX, read_locks

    try:
        vault = open_vault(args, load_index=False)
        host, pid = socket.gethostname(), os.getpid()
        for info in read_locks(vault)[0]:
            if info.hostname == host and info.pid == pid:
                log.warning("removing lock %s%s, left behind by the failed snapshot", PREFIX, info.id)
                vault.store.delete(PREFIX + info.id)
    except ColdvaultError as exc:
        log.debug("could not look for leftover locks: %s", exc)  # the retry will say what is wrong


def run(args, paths: list[str], excludes, once) -> int:
    """Watch `paths`; `once(args)` takes one snapshot as `backup dir` does (it is cli.backup.run_dir)."""
    from coldvault.uploader.watch import ChangeWatcher, Ignore, leaf, run_continuously  # loads watchdog

    if args.time is not None:
        raise UserError("--time does not go with --watch: each snapshot is taken at its own time")
    if args.json:
        raise UserError("--json does not go with --watch")
    settle = _seconds("--settle", args.settle) if args.settle is not None else DEFAULT_SETTLE
    max_delay = _seconds("--max-delay", args.max_delay) if args.max_delay is not None else settle * MAX_DELAY_FACTOR
    if max_delay < settle:
        raise UserError(f"--max-delay ({max_delay:g} s) must not be shorter than --settle ({settle:g} s)")
    _refuse_prompt(args)
    ignore = Ignore(paths, excludes or None, _vault_dir(args), sqlite_consistent=args.sqlite_consistent)
    single = argparse.Namespace(**{**vars(args), "watch": False, "settle": None, "max_delay": None})
    state = {"busy": False, "failed": False, "stop": None}

    def on_stop(signum, frame) -> None:
        """SIGTERM always, SIGINT between snapshots: stop, as Ctrl-C stops a command."""
        state["stop"] = signal.Signals(signum).name
        handler = signal.getsignal(signal.SIGINT)
        if state["busy"] and callable(handler) and handler is not on_stop:
            # SIGTERM in a snapshot: through SIGINT's handler, which is trio's (it defers the
            # interrupt to a safe point of the backup) while trio runs, Python's otherwise.
            handler(signal.SIGINT, frame)
            return
        raise KeyboardInterrupt

    def snapshot() -> None:
        if state["failed"]:
            _remove_own_locks(single)
        state["busy"], state["failed"] = True, True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # so that trio protects what must not be cut
        try:
            once(single)  # prints the summary line (or the warnings of an incomplete snapshot)
        except BaseException as exc:
            state["busy"] = isinstance(leaf(exc), KeyboardInterrupt)  # stopped in the middle of it
            raise
        finally:
            signal.signal(signal.SIGINT, on_stop)
        state["busy"], state["failed"] = False, False
        sys.stdout.flush()  # one line per snapshot, now, also into a pipe or the journal
        gc.collect()

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    try:
        with ChangeWatcher(paths, ignore) as watcher:
            log.info("watching %s: a snapshot %g s after the last change, at most %g s after the first",
                     ", ".join(paths), settle, max_delay)
            run_continuously(watcher, snapshot, settle, max_delay, stopping=lambda: state["stop"] is not None)
    except BaseException as exc:
        if not isinstance(leaf(exc), KeyboardInterrupt):
            raise
        if state["busy"]:
            log.warning("stopped by %s in the middle of a snapshot: it was interrupted as Ctrl-C interrupts a "
                        "backup; what it had not saved, the next start saves", state["stop"] or "SIGINT")
        else:
            log.info("stopped by %s", state["stop"] or "SIGINT")
        return 0
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return 0
