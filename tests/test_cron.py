"""Unattended use: locks, hooks, consistent SQLite copies, quiet output for cron."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time

from cvtools import COLDVAULT, run, vault_env

LOCKED, PARTIAL = 16, 3


def start_stdin_backup(env, source):
    """A backup that holds its lock until we close its stdin."""
    proc = subprocess.Popen([*COLDVAULT, "backup", "stdin", "--name", "dump.sql", "--source", source],
                            env={**os.environ, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(b"-- dump\n" * 1000)
    proc.stdin.flush()
    return proc


def lock_names(repo) -> list[str]:
    """Lock objects in a local vault: not the temporary files a put writes first (a kill
    right after such a file appeared would leave no lock at all)."""
    d = os.path.join(repo, "locks")
    return [n for n in os.listdir(d) if not n.startswith(".tmp-")] if os.path.isdir(d) else []


def wait_for_lock(repo, n=1):
    deadline = time.monotonic() + 20
    while len(lock_names(repo)) < n:
        assert time.monotonic() < deadline, "no lock appeared"
        time.sleep(0.05)


def test_second_run_of_a_source_is_locked_out(tmp_path):
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    first = start_stdin_backup(env, "db")
    try:
        wait_for_lock(repo)
        started = time.monotonic()
        r = run(["backup", "stdin", "--name", "dump.sql", "--source", "db"], env, input=b"x", check=False)
        assert r.code == LOCKED
        assert time.monotonic() - started < 10  # at once, not after waiting
        assert f"pid {first.pid}" in r.err and "backup stdin db" in r.err and "Traceback" not in r.err
        # Another source is not held up.
        run(["backup", "stdin", "--name", "other.sql", "--source", "other"], env, input=b"y")
    finally:
        first.stdin.close()
        assert first.wait(timeout=30) == 0
    assert lock_names(repo) == []  # released
    sources = sorted(s["source"] for s in run(["snapshots", "--json"], env).json())
    assert sources == ["db", "other"]


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    first = start_stdin_backup(env, "db")
    wait_for_lock(repo)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(lock_names(repo)) == 1  # left behind
    r = run(["backup", "stdin", "--name", "dump.sql", "--source", "db"], env, input=b"after the crash")
    assert "taking over the stale lock" in r.err
    assert lock_names(repo) == []


def test_hooks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    log = tmp_path / "hooks.log"
    r = run(["backup", "dir", str(src), "--pre-hook", "exit 7",
             "--post-hook", f'echo "post $COLDVAULT_STATUS" >> {log}'], env, check=False)
    assert r.code == 2 and "pre-hook failed with status 7" in r.err
    assert run(["snapshots", "--json"], env).json() == []
    run(["backup", "dir", str(src), "--pre-hook", f"echo pre >> {log}",
         "--post-hook", f'echo "post $COLDVAULT_STATUS $COLDVAULT_SNAPSHOT" >> {log}'], env)
    snap = run(["snapshots", "--json"], env).json()[0]["id"]
    assert log.read_text().splitlines() == ["pre", f"post ok {snap}"]
    r = run(["backup", "dir", str(src), "--post-hook", "exit 3"], env, check=False)
    assert r.code == 1 and "post-hook failed" in r.err


def test_sqlite_consistent_while_written(tmp_path):
    """A database in WAL mode, written to all through the backup, is stored as a valid commit
    that includes what is only in the WAL: a copy of the main file alone would not even hold
    the table (no checkpoint runs: autocheckpoint is off and a connection stays open)."""
    src = tmp_path / "seafile"
    src.mkdir()
    db_path = src / "seahub.db"
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (i INTEGER, pad TEXT)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x" * 500) for i in range(20000)])
    db.commit()
    stop, writing = threading.Event(), threading.Event()

    def writer():
        w = sqlite3.connect(db_path)
        w.execute("PRAGMA wal_autocheckpoint=0")
        i = 20000
        while not stop.is_set():
            w.executemany("INSERT INTO t VALUES (?, ?)", [(i + k, "y" * 500) for k in range(200)])
            w.commit()
            i += 200
            writing.set()
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    env = vault_env(str(tmp_path / "vault"))
    try:
        run(["init"], env)
        assert writing.wait(30)
        assert os.path.getsize(str(db_path) + "-wal") > 10_000_000  # the rows are in the WAL
        run(["backup", "dir", str(src), "--sqlite-consistent"], env)
    finally:
        stop.set()
        t.join()
    db.close()
    listing = run(["ls", "latest"], env).out
    assert "seahub.db" in listing and "seahub.db-wal" not in listing and "seahub.db-shm" not in listing
    run(["restore", "dir", "latest", "--target", str(tmp_path / "r")], env)
    restored = sqlite3.connect(tmp_path / "r" / "seahub.db")
    assert restored.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    count = restored.execute("SELECT count(*) FROM t").fetchone()[0]
    assert count >= 20200 and count % 200 == 0  # whole transactions only, the writer's among them


def test_cron_output_is_one_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    env = vault_env(str(tmp_path / "vault"))
    run(["init", "-q"], env)
    r = run(["backup", "dir", str(src)], env)  # not a terminal: no progress display
    assert r.out.count("\n") == 1 and r.err == ""
    assert run(["backup", "dir", str(src), "-q"], env).out == ""
    summary = run(["backup", "dir", str(src), "--json"], env).json()
    assert summary["incomplete"] is False and summary["files"] == 1
