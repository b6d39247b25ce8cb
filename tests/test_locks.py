"""Readers hold a shared lock: prune and forget never delete under a mount, a restore or a
check, and a holder never outlives its lock (issue 8, item 6)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time

import pytest
from cvtools import COLDVAULT, run, sample_vault, signature, vault_env
from mounttools import mounted, unmount

from coldvault.errors import LockedError
from coldvault.store.local import LocalStore
from coldvault.vault.lock import READ_SCOPE, LockLostError, VaultLock, read_lock, source_lock, vault_lock
from coldvault.vault.vault import Vault

LOCKED = 16
PASSWORD = "test-password"


def lock_names(repo) -> list[str]:
    """Lock objects in a local vault (not the temporary file a put writes first)."""
    d = os.path.join(repo, "locks")
    return sorted(n for n in os.listdir(d) if not n.startswith(".tmp-")) if os.path.isdir(d) else []


def wait_until(what: str, predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def threads(pid: int) -> int:
    """How many threads the process `pid` runs (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    except (OSError, StopIteration):
        return 0


@contextlib.contextmanager
def holding(repo, env, args: list[str], attempts: int = 30):
    """`coldvault ARGS` stopped (SIGSTOP) while it holds its lock: a reader or a prune caught
    in the middle of its work. Yields the process; it is continued (SIGCONT) afterwards and
    the caller waits for it. A run that finishes before we catch it is started again."""
    before = set(lock_names(repo))
    for _ in range(attempts):
        proc = subprocess.Popen([*COLDVAULT, *args], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while not set(lock_names(repo)) - before and proc.poll() is None:
            time.sleep(0.001)
        # The lock object appears inside acquire(), which still looks for rivals; it
        # returns once the refresh thread runs: wait for that second thread, so a test
        # that breaks the store now breaks the refresh, not the acquire.
        while proc.poll() is None and threads(proc.pid) < 2:
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGSTOP)
            if set(lock_names(repo)) - before and proc.poll() is None:
                try:
                    yield proc
                finally:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGCONT)
                return
            proc.send_signal(signal.SIGCONT)  # released its lock just before we stopped it
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"coldvault {' '.join(args)} exited {proc.returncode}: {err.decode()}"
    raise AssertionError(f"never caught coldvault {' '.join(args)} holding its lock")


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode(errors="replace")


def assert_locked_out(r, *names: str) -> None:
    assert r.code == LOCKED, f"exit {r.code}: {r.err}"
    first = r.err.splitlines()[0]
    assert first.startswith("coldvault: error: the vault is locked by "), r.err
    for name in names:
        assert name in first, (name, r.err)
    assert re.search(r"by \S+@\S+ pid \d+, for \d+ (s|min)", first), r.err
    assert "Traceback" not in r.err


def big_vault(tmp_path) -> tuple[str, dict, str]:
    """A vault with one snapshot of 40 files of 1 MB: a restore or a check that takes a while."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02}").write_bytes(os.urandom(1_000_000))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    return repo, env, str(src)


def forget_and_prune_work(env) -> None:
    """forget (the only snapshot) and prune succeed: nothing holds the vault any more."""
    sid = run(["snapshots", "--json"], env).json()[0]["id"]
    run(["forget", sid], env)
    r = run(["prune"], env)
    assert "deleted" in r.out and "deleted 0 pack" not in r.out
    assert run(["snapshots", "--json"], env).json() == []


# ---- (a) a mount ------------------------------------------------------------------------


def test_prune_and_forget_refused_while_a_mount_runs(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    mnt = tmp_path / "mnt"
    with mounted(env, mnt, "--refresh", "0") as m:  # a fixed view; a live mount takes no lock
        with open(m / "files/src/latest/photo.jpg", "rb") as f:
            assert f.read() == (src / "photo.jpg").read_bytes()
        sid = run(["snapshots", "--json"], env).json()[0]["id"]
        for args in (["forget", sid], ["prune"]):
            assert_locked_out(run(args, env, check=False), f"'mount {mnt}'", f"pid {m.proc.pid}")
        assert "fusermount3 -u" in run(["prune"], env, check=False).err  # the hint says how to end it
        # Readers share the vault with the mount, and so does a backup.
        run(["ls", "latest", "docs"], env)
        run(["restore", "dir", "latest", "--target", str(tmp_path / "out")], env)
        run(["backup", "dir", str(src), "--name", "src"], env)
        assert len(run(["snapshots", "--json"], env).json()) == 2
        with open(m / "files/src/latest/docs/report.txt", "rb") as f:
            assert f.read() == (src / "docs/report.txt").read_bytes()
        assert len(lock_names(repo)) == 1
        m.proc.send_signal(signal.SIGTERM)  # unmounts
        assert m.proc.wait(timeout=60) == 0, m.log()
        assert "SIGTERM: unmounting" in m.log() and not os.path.ismount(m.path)
    assert lock_names(repo) == []  # released on unmount
    for sid in [s["id"] for s in run(["snapshots", "--json"], env).json()]:
        run(["forget", sid], env)
    run(["prune"], env)


def test_background_mount_lock_names_the_daemon_and_goes_with_it(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    daemon = None
    try:
        r = run(["mount", mnt, "--refresh", "0", "--log", str(tmp_path / "mount.log")], env)
        assert f"mounted at {mnt}" in r.out
        assert os.path.ismount(mnt)
        r = run(["prune"], env, check=False)
        assert_locked_out(r, f"'mount {mnt}'")
        daemon = int(re.search(r"pid (\d+)", r.err).group(1))
        # The pid in the lock is the daemon serving the mount, not the command, which has exited.
        with open(f"/proc/{daemon}/cmdline", "rb") as f:
            assert b"mount" in f.read().split(b"\0")
        with open(os.path.join(mnt, "files/src/latest/photo.jpg"), "rb") as f:
            assert f.read() == (src / "photo.jpg").read_bytes()
        subprocess.run(["fusermount3", "-u", mnt], check=True)
        wait_until("the daemon exits", lambda: not os.path.exists(f"/proc/{daemon}"))
        assert lock_names(repo) == []
    finally:
        unmount(mnt)
        if daemon and os.path.exists(f"/proc/{daemon}"):
            os.kill(daemon, signal.SIGKILL)
    forget_and_prune_work(env)


def test_mount_unmounts_itself_when_its_lock_is_taken_over(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    env = {**env, "COLDVAULT_LOCK_REFRESH": "0.1"}
    with mounted(env, tmp_path / "mnt", "--refresh", "0") as m:
        (name,) = lock_names(repo)
        os.unlink(os.path.join(repo, "locks", name))  # what a takeover of a "stale" lock does
        wait_until("the mount ends", lambda: m.proc.poll() is not None)
        assert not os.path.ismount(m.path)
        log = m.log()
        assert f"lost the lock locks/{name}: it was removed" in log and ": unmounting" in log, log
        assert m.proc.returncode == LOCKED and "Traceback" not in log
    assert lock_names(repo) == []  # not written again


def test_mount_unmounts_itself_before_its_unrefreshable_lock_turns_stale(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    env = {**env, "COLDVAULT_LOCK_REFRESH": "0.1", "COLDVAULT_LOCK_STALE": "2"}
    locks = os.path.join(repo, "locks")
    with mounted(env, tmp_path / "mnt", "--refresh", "0") as m:
        (name,) = lock_names(repo)
        # The store stops taking the lock's writes (and reads): a file where locks/ was.
        os.rename(locks, locks + ".away")
        try:
            with open(locks, "w"):
                pass
            wait_until("the mount ends", lambda: m.proc.poll() is not None)
        finally:
            os.unlink(locks)
            os.rename(locks + ".away", locks)
        assert not os.path.ismount(m.path)
        log = m.log()
        assert f"could not refresh the lock locks/{name}" in log, log
        assert "stopped before another process could take it over as stale: unmounting" in log, log
        assert m.proc.returncode == 15 and "Traceback" not in log


# ---- (b) a restore, (c) a check -----------------------------------------------------------


def test_prune_and_forget_refused_while_a_restore_runs(tmp_path):
    repo, env, src = big_vault(tmp_path)
    target = tmp_path / "out"
    sid = run(["snapshots", "--json"], env).json()[0]["id"]
    with holding(repo, env, ["restore", "dir", "latest", "--target", str(target)]) as restore:
        for args in (["forget", sid], ["prune"]):
            assert_locked_out(run(args, env, check=False), "'restore dir latest'", f"pid {restore.pid}")
    code, err = finish(restore)
    assert code == 0, err
    assert signature(target) == signature(src)  # not one pack went missing under it
    assert lock_names(repo) == []
    forget_and_prune_work(env)


def test_prune_and_forget_refused_while_a_check_runs(tmp_path):
    repo, env, src = big_vault(tmp_path)
    sid = run(["snapshots", "--json"], env).json()[0]["id"]
    with holding(repo, env, ["check", "--read-data"]) as check:
        for args in (["forget", sid], ["prune"]):
            assert_locked_out(run(args, env, check=False), "'check'", f"pid {check.pid}")
    code, err = finish(check)
    assert code == 0 and "damage" not in err, err
    assert lock_names(repo) == []
    forget_and_prune_work(env)


def test_a_killed_readers_lock_is_taken_over_by_prune(tmp_path):
    repo, env, src = big_vault(tmp_path)
    with holding(repo, env, ["restore", "dir", "latest", "--target", str(tmp_path / "out")]) as restore:
        restore.send_signal(signal.SIGKILL)
        restore.wait()
    assert len(lock_names(repo)) == 1  # left behind
    sid = run(["snapshots", "--json"], env).json()[0]["id"]
    r = run(["forget", sid], env)
    assert "taking over the stale lock of 'restore dir latest'" in r.err and f"pid {restore.pid}" in r.err
    run(["prune"], env)
    assert lock_names(repo) == []


def test_readers_refused_while_prune_holds_the_vault(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with holding(repo, env, ["prune"]) as prune:
        for args in (["restore", "dir", "latest", "--target", str(tmp_path / "out")],
                     ["restore", "zfs", "tank/data@nightly", "--into", "pool/data"],
                     ["ls", "latest"], ["check"], ["thaw", "latest"],
                     ["mount", str(mnt), "--foreground"]):
            assert_locked_out(run(args, env, check=False), "'prune'", f"pid {prune.pid}")
        assert not os.path.ismount(mnt)  # refused before anything was mounted
        assert not (tmp_path / "out").exists()
        # What only lists records takes no lock.
        assert len(run(["snapshots", "--json"], env).json()) == 1
    code, err = finish(prune)
    assert code == 0, err
    run(["restore", "dir", "latest", "--target", str(tmp_path / "out")], env)


def test_a_restore_whose_lock_is_taken_over_stops_with_an_error(tmp_path):
    repo, env, src = big_vault(tmp_path)
    env = {**env, "COLDVAULT_LOCK_REFRESH": "0.05"}
    with holding(repo, env, ["restore", "dir", "latest", "--target", str(tmp_path / "out")]) as restore:
        (name,) = lock_names(repo)
        os.unlink(os.path.join(repo, "locks", name))  # taken over while it was stopped
    code, err = finish(restore)
    assert code == LOCKED, err
    assert err.splitlines()[0] == (f"coldvault: error: lost the lock locks/{name}: it was removed "
                                   "(taken over by another process, or deleted by hand)"), err
    assert "Traceback" not in err
    assert lock_names(repo) == []  # not written again


# ---- the lock itself, with a local store ------------------------------------------------


@pytest.fixture
def vault(tmp_path):
    repo = str(tmp_path / "vault")
    run(["init"], vault_env(repo))
    return Vault.open(LocalStore(repo), lambda: PASSWORD.encode())


class Lost:
    """An on_lost callback that records what it was told."""

    def __init__(self):
        self.errors: list[LockLostError] = []
        self.called = threading.Event()

    def __call__(self, error: LockLostError) -> None:
        self.errors.append(error)
        self.called.set()


def test_who_conflicts_with_whom(vault):
    with read_lock(vault, "mount /a"), read_lock(vault, "restore dir x"), source_lock(vault, "db", "backup"):
        with pytest.raises(LockedError) as exc:
            vault_lock(vault, "prune").acquire()
        assert exc.value.exit_code == LOCKED and "locked by 'mount /a'" in exc.value.message
        assert "(and 2 more)" in exc.value.message
    with vault_lock(vault, "prune"):
        with pytest.raises(LockedError) as exc:
            read_lock(vault, "check").acquire()
        assert "the vault is locked by 'prune'" in exc.value.message
    assert list(vault.store.list("locks/")) == []


def test_refresh_never_recreates_a_deleted_lock(vault):
    lost = Lost()
    lock = VaultLock(vault, READ_SCOPE, "mount /m", refresh=0.05, stale=60, on_lost=lost)
    lock.acquire()
    vault.store.delete(lock.name)
    assert lost.called.wait(30)
    assert "it was removed" in lost.errors[0].message and lost.errors[0].exit_code == LOCKED
    time.sleep(0.3)  # several refresh periods: none writes it again
    assert list(vault.store.list("locks/")) == []
    lock.release()
    assert list(vault.store.list("locks/")) == [] and lost.errors == [lock.lost]


def test_refresh_never_overwrites_a_lock_that_is_someone_elses(vault):
    lost = Lost()
    lock = VaultLock(vault, READ_SCOPE, "restore dir x", refresh=0.05, stale=60, on_lost=lost)
    lock.acquire()
    other = VaultLock(vault, "vault", "prune", exclusive=True)
    other.info.id, other.info.pid = lock.info.id, lock.info.pid + 1  # the same name, another holder
    other._write()
    theirs = vault.store.get(lock.name)
    assert lost.called.wait(30)
    assert "now belongs to another process" in lost.errors[0].message
    time.sleep(0.3)
    assert vault.store.get(lock.name) == theirs  # neither rewritten by a refresh...
    lock.release()
    assert vault.store.get(lock.name) == theirs  # ...nor deleted by the release


def test_a_lock_that_cannot_be_refreshed_stops_its_holder_before_it_is_stale(vault):
    stale = 6.0
    seen = []
    lost = Lost()
    lock = VaultLock(vault, READ_SCOPE, "check", refresh=0.1, stale=stale,
                     on_lost=lambda e: (seen.append(time.time_ns() - lock.info.refreshed), lost(e)))
    lock.acquire()
    locks = os.path.join(vault.store.root, "locks")
    os.rename(locks, locks + ".away")
    with open(locks, "w"):
        pass  # every read and write of the lock fails from now on
    try:
        assert lost.called.wait(60)
    finally:
        os.unlink(locks)
        os.rename(locks + ".away", locks)
    error = lost.errors[0]
    assert "could not refresh the lock" in error.message and error.exit_code == 15
    # Stopped while the lock it last wrote was not yet stale for anyone else.
    assert seen[0] < stale * 1e9
    lock.release()
    assert list(vault.store.list("locks/")) == []


def test_a_lost_lock_interrupts_the_holder_with_its_error(vault):
    """The default on_lost: the main thread, busy in the `with` block, is interrupted and
    leaves it with the LockLostError, not a KeyboardInterrupt."""
    lock = VaultLock(vault, READ_SCOPE, "restore dir x", refresh=0.05, stale=60)
    with pytest.raises(LockLostError) as exc:
        with lock:
            vault.store.delete(lock.name)
            time.sleep(60)  # a long restore
    assert "it was removed" in exc.value.message
    assert list(vault.store.list("locks/")) == []


def test_lock_timings_from_the_environment(vault, monkeypatch):
    monkeypatch.setenv("COLDVAULT_LOCK_REFRESH", "2.5")
    monkeypatch.setenv("COLDVAULT_LOCK_STALE", "40")
    lock = read_lock(vault, "ls x")
    assert (lock.refresh_every, lock.stale_after) == (2.5, 40.0)
    monkeypatch.setenv("COLDVAULT_LOCK_STALE", "soon")
    r = run(["ls", "latest"], {**vault_env(vault.store.root), "COLDVAULT_LOCK_STALE": "soon"}, check=False)
    assert r.code == 2 and "COLDVAULT_LOCK_STALE must be a number of seconds (at least 0.01), not 'soon'" in r.err


def test_a_restore_that_cannot_refresh_its_lock_stops_before_it_could_be_stale(tmp_path):
    repo, env, src = big_vault(tmp_path)
    env = {**env, "COLDVAULT_LOCK_REFRESH": "0.05", "COLDVAULT_LOCK_STALE": "1"}
    locks = os.path.join(repo, "locks")
    with holding(repo, env, ["restore", "dir", "latest", "--target", str(tmp_path / "out")]) as restore:
        (name,) = lock_names(repo)
        os.rename(locks, locks + ".away")
        with open(locks, "w"):
            pass  # the store takes no lock write from now on
        time.sleep(1)  # stopped for longer than half the stale time
    try:
        code, err = finish(restore)
    finally:
        os.unlink(locks)
        os.rename(locks + ".away", locks)
    assert code == 15, err
    (line,) = [x for x in err.splitlines() if x.startswith("coldvault: error:")]
    assert line.startswith(f"coldvault: error: could not refresh the lock locks/{name} for "), err
    assert "stopped before another process could take it over as stale" in err and "Traceback" not in err
