"""`backup dir PATH... --watch`: continuous mode, run as a user runs it.

Each test starts `coldvault backup dir ... --watch --settle 1` as a subprocess, changes
the tree, and waits (polling `snapshots --json`, with a generous deadline) for a
snapshot taken after the change; then restores it, stops the process with SIGTERM or
SIGINT (exit 0), and checks that the lock is gone and `check` is clean. The process is
always killed in a `finally`. Nothing here asserts how long anything takes.
"""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import threading
import time
import uuid

import pytest

from cvtools import COLDVAULT, diff_signatures, run, signature, vault_env
from doctools import bin_dir, block, replace_all
from faultproxy import FaultProxy

DEADLINE = 180.0  # seconds: for a snapshot to appear (generous: a loaded machine)


class Watch:
    """`coldvault backup dir ARGS --watch --settle 1` running in the background."""

    def __init__(self, tmp_path, env: dict, args: list[str], prefix: list[str] = (), name: str = "watch",
                 argv: list[str] | None = None):
        """`argv`: run that instead (a documented command line)."""
        self.out_path = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.out"
        self.err_path = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.err"
        self.env = env
        self.cmd = argv or [*prefix, *COLDVAULT, "-v", "backup", "dir", *args, "--watch",
                            *([] if "--settle" in args else ["--settle", "1"])]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Watch":
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def alive(self) -> None:
        assert self.proc.poll() is None, f"the watch exited {self.proc.returncode}:\n{self.out}\n{self.err}"

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=120)

    def wait_for(self, what: str, predicate) -> None:
        deadline = time.monotonic() + DEADLINE
        while not predicate():
            self.alive()
            assert time.monotonic() < deadline, f"no {what} in {DEADLINE} s:\n{self.out}\n{self.err}"
            time.sleep(0.2)


def snapshots(env: dict, source: str) -> list[dict]:
    return run(["snapshots", "--source", source, "--json"], env).json()


def snapshot_after(watch: Watch, env: dict, source: str, t_ns: int) -> dict:
    """The first snapshot of `source` taken after `t_ns` (time.time_ns()): it holds every
    change made before then. The watch owes one: either the change came before a snapshot
    started (and that snapshot is stamped later), or it makes the next one."""
    found: list[dict] = []
    seen = [-1]  # summary lines on the watch's stdout when the vault was last asked

    def ready() -> bool:
        saved = watch.out.count("\nsnapshot ") + watch.out.startswith("snapshot ")
        if saved == seen[0]:
            return False  # no new snapshot line: no need to ask the vault (a process each time)
        seen[0] = saved
        found[:] = [s for s in snapshots(env, source) if s["time_ns"] > t_ns]
        return bool(found)

    watch.wait_for(f"snapshot of {source} after the change", ready)
    return min(found, key=lambda s: s["time_ns"])


def assert_restores_to(env: dict, snap: dict, want: dict, target) -> None:
    run(["restore", "dir", snap["id"], "--target", str(target)], env)
    got = signature(str(target))
    assert not diff_signatures(want, got), diff_signatures(want, got)


def assert_clean_stop(code: int, watch: Watch, env: dict, locks_dir=None) -> None:
    assert code == 0, f"exit {code}\n{watch.out}\n{watch.err}"
    assert "Traceback" not in watch.err, watch.err
    if locks_dir is not None:
        assert not os.path.exists(locks_dir) or not os.listdir(locks_dir), os.listdir(locks_dir)
    assert run(["unlock", "--json"], env).json()["kept"] == [], "a lock was left behind"
    run(["check"], env)


def make_tree(root) -> None:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "report.txt").write_text("quarterly report\n" * 1000)
    (root / "photo.jpg").write_bytes(os.urandom(300_000))
    (root / "old.txt").write_text("to be deleted\n")


def test_watch_snapshots_changes_with_backup_dir_options_and_stops_on_sigterm(tmp_path):
    """Two trees in one source (--name, --tag): a snapshot at start, one after the changes
    settle (restored: exactly the trees), the summary line of each on stdout; SIGTERM ends it
    with exit 0, no lock left, check clean."""
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a)
    (b / "notes").mkdir(parents=True)
    (b / "notes" / "one.txt").write_text("one\n")
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    t0 = time.time_ns()
    with Watch(tmp_path, env, [str(a), str(b), "--name", "both", "--tag", "live"]) as w:
        first = snapshot_after(w, env, "both", t0)
        assert first["tags"] == ["live"] and first["paths"] == [str(a), str(b)]

        (a / "docs" / "report.txt").write_text("revised report\n" * 2000)
        (a / "old.txt").unlink()
        (a / "new").mkdir()
        (a / "new" / "added.bin").write_bytes(os.urandom(70_000))
        os.chmod(b / "notes" / "one.txt", 0o600)
        done = time.time_ns()
        snap = snapshot_after(w, env, "both", done)
        want = {k: v for k, v in signature(str(tmp_path)).items() if k.split(b"/")[0] in (b"a", b"b")}
        assert_restores_to(env, snap, want, tmp_path / "restored")
        assert snap["tags"] == ["live"]
        code = w.stop(signal.SIGTERM)
    assert_clean_stop(code, w, env, os.path.join(repo, "locks"))
    saved = [line for line in w.out.splitlines() if line.startswith("snapshot ")]
    assert len(saved) == len(snapshots(env, "both")) >= 2, w.out
    assert all(" of both saved: " in line for line in saved), saved


def test_a_restart_loses_nothing_and_reads_only_what_changed(tmp_path):
    """Changes made while no watch runs are in the snapshot the next start takes at once,
    which reads only the changed and the new file (the backup's comparison with the previous
    snapshot); SIGINT stops it as SIGTERM does."""
    src = tmp_path / "src"
    make_tree(src)
    for n in range(20):
        (src / "docs" / f"page{n}.txt").write_text(f"page {n}\n" * 100)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    t0 = time.time_ns()
    with Watch(tmp_path, env, [str(src)], name="first") as w:
        snapshot_after(w, env, "src", t0)
        code = w.stop(signal.SIGTERM)
    assert_clean_stop(code, w, env)

    with open(src / "docs" / "page3.txt", "a") as f:
        f.write("one more line\n")
    (src / "later.txt").write_text("written while nothing watched\n")
    changed = os.path.getsize(src / "docs" / "page3.txt") + os.path.getsize(src / "later.txt")
    done = time.time_ns()
    with Watch(tmp_path, env, [str(src)], name="second") as w:
        snap = snapshot_after(w, env, "src", done)
        s = snap["summary"]
        assert s["files_read"] == 2, s
        assert s["bytes_read"] == changed, s
        assert s["unchanged_files"] == s["files"] - 2, s
        assert_restores_to(env, snap, signature(str(src)), tmp_path / "restored")
        code = w.stop(signal.SIGINT)
    assert_clean_stop(code, w, env)


def test_changes_in_excluded_paths_make_no_snapshot(tmp_path):
    """Writes to files and directories left out by --exclude and --exclude-if-present do not
    trigger a snapshot; a real change still does, and only that one."""
    src = tmp_path / "src"
    make_tree(src)
    (src / "private").mkdir()
    (src / "private" / ".nobackup").write_text("")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    t0 = time.time_ns()
    with Watch(tmp_path, env, [str(src), "--exclude", "*.tmp", "--exclude", "cache",
                               "--exclude-if-present", ".nobackup"]) as w:
        snapshot_after(w, env, "src", t0)
        for n in range(5):
            (src / f"scratch{n}.tmp").write_text("scratch\n")
            (src / "docs" / f"draft{n}.tmp").write_text("draft\n")
        (src / "cache" / "deep").mkdir(parents=True)
        (src / "cache" / "deep" / "blob").write_bytes(os.urandom(1000))
        (src / "private" / "secret.txt").write_text("not backed up\n")
        (src / "scratch0.tmp").unlink()
        time.sleep(3)  # time for a wrong snapshot (settle is 1 s): there must be none
        (src / "docs" / "report.txt").write_text("the one real change\n")
        done = time.time_ns()
        snap = snapshot_after(w, env, "src", done)
        assert len(snapshots(env, "src")) == 2, w.out
        listing = run(["ls", snap["id"], "--recursive"], env).out
        assert "report.txt" in listing and "private" in listing, listing
        assert ".tmp" not in listing and "secret.txt" not in listing, listing
        code = w.stop()
    assert_clean_stop(code, w, env)


def saved_lines(w: Watch) -> int:
    return sum(1 for line in w.out.splitlines() if line.startswith("snapshot "))


def test_a_tree_that_never_settles_gets_a_snapshot_every_max_delay(tmp_path):
    """A file appended to every 0.2 s never leaves --settle 1 of quiet; --max-delay 2 still
    makes snapshots while it goes on, each holding the file as it was."""
    src = tmp_path / "src"
    make_tree(src)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            with open(src / "busy.log", "a") as f:
                f.write(f"line {n}\n")
            n += 1
            time.sleep(0.2)

    t0 = time.time_ns()
    thread = threading.Thread(target=writer, daemon=True)
    with Watch(tmp_path, env, [str(src), "--settle", "1", "--max-delay", "2"]) as w:
        try:
            snapshot_after(w, env, "src", t0)
            thread.start()
            w.wait_for("two snapshots while the writer runs", lambda: saved_lines(w) >= 3)
            assert thread.is_alive()
        finally:
            stop.set()
            if thread.ident:
                thread.join()
        code = w.stop()
    assert_clean_stop(code, w, env)
    sizes = [s["summary"]["bytes_total"] for s in snapshots(env, "src")]
    assert len(sizes) >= 3 and sizes[1] < sizes[2], sizes


def test_sqlite_consistent_copies_make_no_snapshot_loop(tmp_path):
    """With --sqlite-consistent, the backup opens a live WAL database through SQLite, which
    (run as root) chowns its -wal and -shm: that is no change. A commit is one."""
    src = tmp_path / "src"
    make_tree(src)
    db = sqlite3.connect(src / "app.db")
    try:
        db.execute("pragma journal_mode=wal")
        db.execute("create table notes(text)")
        db.execute("insert into notes values ('first')")
        db.commit()
        env = vault_env(str(tmp_path / "vault"))
        run(["init"], env)
        t0 = time.time_ns()
        with Watch(tmp_path, env, [str(src), "--sqlite-consistent"]) as w:
            snapshot_after(w, env, "src", t0)
            time.sleep(3)  # time for a wrong snapshot (settle is 1 s): there must be none
            assert saved_lines(w) == 1, w.out
            db.execute("insert into notes values ('second')")
            db.commit()
            done = time.time_ns()
            snap = snapshot_after(w, env, "src", done)
            time.sleep(3)
            assert saved_lines(w) == 2, w.out
            code = w.stop()
        assert_clean_stop(code, w, env)
    finally:
        db.close()
    run(["restore", "dir", snap["id"], "--target", str(tmp_path / "restored")], env)
    copy = sqlite3.connect(tmp_path / "restored" / "app.db")
    try:
        assert [r[0] for r in copy.execute("select text from notes")] == ["first", "second"]
    finally:
        copy.close()


def test_a_vault_inside_the_watched_tree_does_not_retrigger_itself(tmp_path):
    """Each snapshot writes packs, an index, a record and a lock into a local vault; when that
    vault lies inside the watched tree, those writes are no change to back up."""
    src = tmp_path / "src"
    make_tree(src)
    env = vault_env(str(src / "vault"))
    run(["init"], env)
    t0 = time.time_ns()
    with Watch(tmp_path, env, [str(src)]) as w:
        snapshot_after(w, env, "src", t0)
        time.sleep(3)  # time for a wrong snapshot (settle is 1 s): there must be none
        assert saved_lines(w) == 1, w.out
        (src / "photo.jpg").write_bytes(os.urandom(1000))
        snapshot_after(w, env, "src", time.time_ns())
        time.sleep(3)
        assert saved_lines(w) == 2, w.out
        code = w.stop()
    assert_clean_stop(code, w, env)


def test_a_failing_pre_hook_is_retried_and_the_watch_goes_on(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    flag = tmp_path / "not-yet"
    flag.write_text("")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    with Watch(tmp_path, env, [str(src), "--pre-hook", f"test ! -e {flag}"]) as w:
        w.wait_for("second failure", lambda: "snapshot failed (2 times in a row)" in w.err)
        assert "the pre-hook failed with status 1" in w.err, w.err
        assert snapshots(env, "src") == []
        flag.unlink()
        snap = snapshot_after(w, env, "src", 0)
        assert_restores_to(env, snap, signature(str(src)), tmp_path / "restored")
        code = w.stop()
    assert_clean_stop(code, w, env)
    assert "snapshot taken after" in w.err, w.err


def test_a_store_outage_is_retried_and_leaves_no_lock_in_the_way(tmp_path, moto_endpoint):
    """The S3 store goes down in the middle of the first snapshot (after its lock was taken:
    the release cannot reach the store either) and stays down for a few retries; when it is
    back, the watch saves the tree, without waiting for its own leftover lock to go stale."""
    src = tmp_path / "src"
    make_tree(src)
    started, go = tmp_path / "hook-started", tmp_path / "hook-go"
    hook = f"touch {started}; while [ ! -e {go} ]; do sleep 0.1; done"
    repo = f"s3://cv-{uuid.uuid4().hex[:12]}/vault"
    with FaultProxy(moto_endpoint, rate=0.0, kinds=["503"]) as proxy:
        env = vault_env(repo, COLDVAULT_S3_ENDPOINT=proxy.endpoint, COLDVAULT_RETRY_ATTEMPTS="2",
                        COLDVAULT_RETRY_DELAY="0.02")
        direct = {**env, "COLDVAULT_S3_ENDPOINT": moto_endpoint}
        run(["init"], direct)
        with Watch(tmp_path, env, [str(src), "--pre-hook", hook]) as w:
            w.wait_for("pre-hook start", started.exists)
            proxy.rate = 1.0  # the store is down from now on
            go.write_text("")
            w.wait_for("third failure", lambda: "snapshot failed (3 times in a row)" in w.err)
            proxy.rate = 0.0  # back
            snap = snapshot_after(w, direct, "src", 0)
            assert_restores_to(direct, snap, signature(str(src)), tmp_path / "restored")
            (src / "after.txt").write_text("after the outage\n")
            done = time.time_ns()
            snapshot_after(w, direct, "src", done)
            code = w.stop()
        assert "removing lock locks/" in w.err, w.err
        assert_clean_stop(code, w, direct)


def test_sigterm_in_the_middle_of_a_snapshot_leaves_a_sound_vault(tmp_path):
    """SIGTERM while the pre-hook runs, then SIGINT while a big file is being read: each stops
    the watch with exit 0, the snapshot under way is interrupted as Ctrl-C interrupts a
    backup, no lock stays, check is clean; the next start saves the tree."""
    src = tmp_path / "src"
    make_tree(src)
    started = tmp_path / "hook-started"
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    with Watch(tmp_path, env, [str(src), "--pre-hook", f"touch {started}; sleep 120"], name="hook") as w:
        w.wait_for("pre-hook start", started.exists)
        code = w.stop(signal.SIGTERM)
    assert_clean_stop(code, w, env)
    assert "stopped by SIGTERM in the middle of a snapshot" in w.err, w.err
    assert snapshots(env, "src") == []

    with open(src / "big.bin", "wb") as f:
        for _ in range(96):
            f.write(os.urandom(1 << 20))
    started.unlink()
    with Watch(tmp_path, env, [str(src), "--pre-hook", f"touch {started}"], name="big") as w:
        w.wait_for("pre-hook start", started.exists)
        code = w.stop(signal.SIGINT)  # most likely while big.bin is read; after it, it is a stop between snapshots
    assert_clean_stop(code, w, env)

    t0 = time.time_ns()
    with Watch(tmp_path, env, [str(src)], name="again") as w:
        snap = snapshot_after(w, env, "src", t0)
        assert_restores_to(env, snap, signature(str(src)), tmp_path / "restored")
        code = w.stop()
    assert_clean_stop(code, w, env)


def test_too_many_directories_for_inotify_is_one_clear_line(tmp_path):
    """In a user namespace whose inotify watch limit is 4: a tree of 6 directories is
    refused at start (exit 2, the sysctl to raise); one of 3 is watched until it grows past
    the limit, then the watch ends the same way."""
    big = tmp_path / "big"
    for n in range(5):
        (big / f"d{n}").mkdir(parents=True)
    small = tmp_path / "small"
    (small / "one").mkdir(parents=True)
    (small / "two").mkdir()
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    limit = ["unshare", "-U", "-r", "sh", "-c", 'echo 4 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh"]
    with Watch(tmp_path, env, [str(big)], prefix=limit, name="big") as w:
        code = w.proc.wait(timeout=120)
    assert code == 2, w.err
    assert ("coldvault: error: too many directories to watch: inotify's limit fs.inotify.max_user_watches (now 4) "
            f"was reached at {big}/d") in w.err, w.err
    assert "sysctl -w fs.inotify.max_user_watches=" in w.err and "Traceback" not in w.err, w.err
    assert snapshots(env, "big") == []

    t0 = time.time_ns()
    with Watch(tmp_path, env, [str(small)], prefix=limit, name="small") as w:
        snapshot_after(w, env, "small", t0)
        (small / "three").mkdir()
        (small / "four").mkdir()
        code = w.proc.wait(timeout=DEADLINE)
    assert code == 2, w.err
    assert "too many directories to watch" in w.err and "Traceback" not in w.err, w.err


@pytest.mark.parametrize("args, message", [
    (["--settle", "5"], "--settle goes with --watch"),
    (["--max-delay", "5"], "--max-delay goes with --watch"),
    (["--watch", "--settle", "0"], "--settle must be more than 0 seconds"),
    (["--watch", "--settle", "soon"], "--settle must be a number of seconds"),
    (["--watch", "--settle", "5", "--max-delay", "2"], "--max-delay (2 s) must not be shorter than --settle (5 s)"),
    (["--watch", "--time", "2024-05-14T03:00:00Z"], "--time does not go with --watch"),
    (["--watch", "--json"], "--json does not go with --watch"),
])
def test_bad_watch_options_are_one_line(tmp_path, args, message):
    src = tmp_path / "src"
    src.mkdir()
    env = vault_env(str(tmp_path / "vault"))
    r = run(["backup", "dir", str(src), *args], env, check=False, timeout=60)
    assert r.code == 2 and r.err.startswith(f"coldvault: error: {message}"), r


DOC_COMMAND = "coldvault backup dir /srv/photos --name photos --watch --settle 30 --exclude '*.tmp'"
UNIT = "contrib/systemd/coldvault-watch@.service"
UNIT_EXEC = "/usr/local/bin/coldvault backup dir $WATCH_PATHS --name %i --watch $WATCH_OPTIONS"


def test_documented_watch_command_and_unit(tmp_path):
    """docs/watch.md's command as printed (in /bin/sh, `coldvault` on PATH), and the
    unit's ExecStart= as systemd runs it (no shell; %i the instance; an unbraced $VAR of
    its environment file split at spaces): each takes its first snapshot at once and
    stops on SIGTERM with exit 0."""
    photos = tmp_path / "srv-photos"
    make_tree(photos)
    (photos / "draft.tmp").write_text("left out\n")
    bindir = bin_dir(str(tmp_path / "bin"), "#!/bin/sh\nexit 1\n")
    env = vault_env(str(tmp_path / "vault"))
    env["PATH"] = bindir + ":" + os.environ["PATH"]
    run(["init"], env)

    (cmd,) = block("docs/watch.md", DOC_COMMAND).text.strip().splitlines()
    script = replace_all(cmd, {"/srv/photos": str(photos)})
    t0 = time.time_ns()
    with Watch(tmp_path, env, [], argv=["/bin/sh", "-c", "exec " + script], name="doc") as w:
        snap = snapshot_after(w, env, "photos", t0)
        assert "draft.tmp" not in run(["ls", snap["id"], "--recursive"], env).out
        code = w.stop()
    assert_clean_stop(code, w, env)

    with open(os.path.join(os.path.dirname(__file__), "..", UNIT)) as f:
        unit = f.read()
    assert f"ExecStart={UNIT_EXEC}\n" in unit and "RestartPreventExitStatus=2 11 12" in unit
    example = dict(line[1:].strip().split("=", 1) for line in unit.splitlines() if line.startswith("#   WATCH_"))
    assert sorted(example) == ["WATCH_OPTIONS", "WATCH_PATHS"]
    unit_env = {**env, **{k: replace_all(v, {"/srv/photos": str(photos)}) for k, v in example.items()}}
    argv = []
    for word in shlex.split(block(UNIT, UNIT_EXEC).text):
        if word.startswith("$"):
            argv += unit_env[word[1:]].split()
        else:
            argv.append({"%i": "photos-live", "/usr/local/bin/coldvault": os.path.join(bindir, "coldvault")}.get(word, word))
    t0 = time.time_ns()
    with Watch(tmp_path, unit_env, [], argv=argv, name="unit") as w:
        snap = snapshot_after(w, env, "photos-live", t0)
        assert snap["tags"] == ["live"] and snap["paths"] == [str(photos)]
        assert "draft.tmp" not in run(["ls", snap["id"], "--recursive"], env).out
        code = w.stop()
    assert_clean_stop(code, w, env)
