"""The commands a restic or borg user reaches for on day one (issue 12, item 4):
dump, diff, find, stats, unlock, completion; each run as a user runs it."""

from __future__ import annotations

import io
import os
import pty
import shlex
import subprocess
import signal
import tarfile
import time

from cvtools import COLDVAULT, run, vault_env

USAGE, COLD = 2, 14


def _tree(root):
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "report.txt").write_text("quarterly report\n" * 1000)
    (root / "photo.jpg").write_bytes(os.urandom(3_000_000))
    os.symlink("docs/report.txt", root / "link")
    os.chmod(root / "docs" / "report.txt", 0o640)
    os.utime(root / "photo.jpg", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def _dump(args, env) -> bytes:
    p = subprocess.run([*COLDVAULT, "dump", *args], env={**os.environ, **env}, capture_output=True)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


def test_dump_file_directory_and_errors(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    assert _dump(["latest", "photo.jpg"], env) == (src / "photo.jpg").read_bytes()
    assert _dump(["latest", "docs/report.txt", "--source", "src"], env) == (src / "docs" / "report.txt").read_bytes()
    # A directory: a tar stream with modes, mtimes and symlinks kept.
    with tarfile.open(fileobj=io.BytesIO(_dump(["latest"], env)), mode="r|") as tar:
        members = {}
        for m in tar:
            members[m.name] = (m, tar.extractfile(m).read() if m.isfile() else None)
    assert set(members) == {"docs", "docs/report.txt", "photo.jpg", "link"}
    m, data = members["docs/report.txt"]
    assert data == (src / "docs" / "report.txt").read_bytes() and m.mode == 0o640
    m, data = members["photo.jpg"]
    assert data == (src / "photo.jpg").read_bytes() and abs(m.mtime - 1_600_000_000.123456789) < 1e-6
    assert members["link"][0].issym() and members["link"][0].linkname == "docs/report.txt"
    with tarfile.open(fileobj=io.BytesIO(_dump(["latest", "docs"], env)), mode="r|") as tar:
        assert [m.name for m in tar] == ["docs", "docs/report.txt"]
    # Bad input: one line, exit 2.
    for args, words in ((["latest", "nope.txt"], "no nope.txt in snapshot"),
                        (["0000ffff", "photo.jpg"], "no snapshot '0000ffff'")):
        r = run(["dump", *args], env, check=False)
        assert r.code == USAGE and r.err.startswith(f"coldvault: error: {words}") and "Traceback" not in r.err
        assert r.out == ""


def test_dump_writes_no_tar_to_a_terminal(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    (src / "docs" / "note.txt").write_text("hello\n")  # small: read only after the dump ends
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    outputs = []
    for path in ("docs", "docs/note.txt"):
        leader, follower = pty.openpty()
        try:
            p = subprocess.run([*COLDVAULT, "dump", "latest", path], env={**os.environ, **env}, stdout=follower,
                               stderr=subprocess.PIPE, timeout=120)
            os.close(follower)
            got = b""
            while True:
                try:
                    block = os.read(leader, 65536)
                except OSError:  # EIO: the terminal's other side is closed and drained
                    break
                if not block:
                    break
                got += block
        finally:
            os.close(leader)
        outputs.append((p.returncode, got, p.stderr.decode()))
    (code, got, err), (code2, got2, _) = outputs
    assert code == USAGE and got == b""
    assert err.startswith("coldvault: error: dump would write a tar stream of docs in snapshot ")
    assert code2 == 0 and got2.replace(b"\r\n", b"\n") == b"hello\n"  # a file: as cat


def test_dump_of_cold_data_says_what_to_thaw(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    env = vault_env(str(tmp_path / "vault"))
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    for path in ("photo.jpg", "docs"):
        r = run(["dump", "latest", path], env, check=False)
        assert r.code == COLD and r.out == "", r.err
        assert "in a cold tier: data/" in r.err and "coldvault thaw " in r.err and f":{path}'" in r.err


def _ids(env) -> list[str]:
    return [s["id"] for s in run(["snapshots", "--json"], env).json()]


def test_diff_lines_summary_json_and_identical_subtrees_unread(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    for i in range(50):  # a big subtree that does not change
        (src / "same" / f"d{i}").mkdir(parents=True)
        (src / "same" / f"d{i}" / "f").write_text(str(i))
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    first_trees = set((tmp_path / "vault" / "trees").rglob("*"))
    (src / "top.txt").write_text("one")  # only the root node and docs/ change
    (src / "docs" / "report.txt").write_text("second\n")
    run(["backup", "dir", str(src), "--name", "src"], env)
    (src / "docs" / "report.txt").write_text("changed\n")
    os.chmod(src / "photo.jpg", 0o600)
    os.unlink(src / "link")
    (src / "link").mkdir()
    (src / "new" / "x").mkdir(parents=True)
    (src / "new" / "x" / "f").write_text("n")
    os.unlink(src / "top.txt")
    run(["backup", "dir", str(src), "--name", "src"], env)
    a, b, c = _ids(env)
    r = run(["diff", b[:8], c], env)
    lines = r.out.split("\n\n")[0].splitlines()
    assert lines == ["M    docs/report.txt", "T    link/", "+    new/", "+    new/x/", "+    new/x/f",
                     "U    photo.jpg", "-    top.txt"], r.out
    assert "Files:       1 new,      1 removed,      1 changed,      1 metadata only" in r.out
    assert "Dirs:        2 new,      0 removed" in r.out
    doc = run(["diff", b, c, "--json"], env).json()
    assert doc["a"] == b and doc["b"] == c
    assert {"change": "+", "path": "new/x/f", "type": "file"} in doc["changes"]
    assert doc["summary"]["file"] == {"added": 1, "removed": 1, "modified": 1, "metadata": 0 + 1, "type": 0}
    assert run(["diff", c, c], env).out.startswith("\nFiles:       0 new")
    assert run(["diff", b, c, "docs"], env).out.startswith("M    docs/report.txt\n\n")
    # Identical subtrees are skipped by tree id, never read: with the first backup's tree
    # packs gone ("same/" is only there), the second and third still compare.
    for p in first_trees:
        if p.is_file():
            p.unlink()
    r = run(["diff", b, c], env)
    assert "same" not in r.out
    assert run(["ls", b, "same/d0"], env, check=False).code != 0  # it really is unreadable now
    # Bad input.
    for args, words in (([a, "ffff0000"], "no snapshot 'ffff0000'"), ([b, c, "nope"], "no nope in snapshot"),
                        ([b, c, "photo.jpg"], "photo.jpg is not a directory in snapshot")):
        r = run(["diff", *args], env, check=False)
        assert r.code == USAGE and r.err.startswith(f"coldvault: error: {words}"), r.err


def test_find_newest_first_name_and_path_patterns(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    (src / "a" / "deep").mkdir(parents=True)
    (src / "a" / "deep" / "notes.txt").write_text("x")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    os.rename(src / "a", src / "b")  # the same tree (same id) at another path
    (src / "late.txt").write_text("y")
    run(["backup", "dir", str(src), "--name", "src"], env)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("z")
    run(["backup", "dir", str(other), "--name", "other"], env)
    first, second, third = _ids(env)
    doc = run(["find", "*.txt", "--json"], env).json()
    assert [d["snapshot"] for d in doc] == [third, second, first]  # newest first
    paths = [[m["path"] for m in d["matches"]] for d in doc]
    assert paths == [["notes.txt"], ["b/deep/notes.txt", "docs/report.txt", "late.txt"],
                     ["a/deep/notes.txt", "docs/report.txt"]]
    # A '/' in the pattern: matched against the whole path (a tree seen under another path
    # is matched again there, not taken from what was found under the first one).
    doc = run(["find", "a/*/notes.txt", "--json"], env).json()
    assert [(d["snapshot"], [m["path"] for m in d["matches"]]) for d in doc] == [(first, ["a/deep/notes.txt"])]
    doc = run(["find", "/b/deep", "--json"], env).json()
    assert [(d["snapshot"], d["matches"][0]["type"]) for d in doc] == [(second, "dir")]
    lines = run(["find", "notes.txt", "--source", "src"], env).out.splitlines()
    assert len(lines) == 4 and lines[1::2] == ["  b/deep/notes.txt", "  a/deep/notes.txt"]
    assert lines[0].startswith(f"snapshot {second[:8]} of src at 20") and lines[2].startswith(f"snapshot {first[:8]} ")
    r = run(["find", "nothing-like-it"], env)
    assert r.out == "" and "no snapshot holds 'nothing-like-it'" in r.err
    r = run(["find", "*.txt", "--source", "nope"], env, check=False)
    assert r.code == USAGE and r.err.startswith("coldvault: error: there are no snapshots of source 'nope'")


def test_stats_by_kind_and_class_dedup_and_monthly_cost(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    env = vault_env(str(tmp_path / "vault"))
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    run(["backup", "dir", str(src), "--name", "one"], env)
    run(["backup", "dir", str(src), "--name", "two"], env)  # the same files again: stored once
    doc = run(["stats", "--json"], env).json()
    files_bytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    assert doc["snapshots"] == 2 and doc["files"] == 4 and doc["logical_bytes"] == 2 * files_bytes
    # (not the .cold marks of the local store)
    data = [p for p in (tmp_path / "vault" / "data").rglob("*") if p.is_file() and "." not in p.name]
    stored = sum(p.stat().st_size for p in data)
    assert doc["by_kind"]["data packs"] == {"objects": len(data), "bytes": stored}
    assert doc["by_kind"]["snapshots"]["objects"] == 2 and doc["by_kind"]["index"]["objects"] >= 1
    assert doc["stored_data_bytes"] == stored and abs(doc["dedup_ratio"] - 2 * files_bytes / stored) < 1e-9
    assert doc["by_storage_class"]["DEEP_ARCHIVE"] == {"objects": len(data), "bytes": stored}
    hot = doc["by_storage_class"]["STANDARD"]
    assert hot["objects"] + len(data) == sum(t["objects"] for t in doc["by_kind"].values())
    # docs/cold-storage.md's prices: Deep Archive $0.00099/GB-month plus 32 KiB of it and
    # 8 KiB of STANDARD ($0.023) per object; STANDARD $0.023/GB-month.
    gb = 2**30
    deep = stored / gb * 0.00099 + len(data) * (32 * 1024 / gb * 0.00099 + 8 * 1024 / gb * 0.023)
    cost = doc["monthly_cost"]
    assert abs(cost["by_storage_class"]["DEEP_ARCHIVE"] - deep) < 1e-12
    assert abs(cost["by_storage_class"]["STANDARD"] - hot["bytes"] / gb * 0.023) < 1e-12
    assert cost["currency"] == "USD" and abs(cost["total"] - deep - hot["bytes"] / gb * 0.023) < 1e-12
    out = run(["stats"], env).out
    assert "DEEP_ARCHIVE" in out and "dedup ratio: 2.0" in out and "cost per month: $" in out
    # Prices from a file; a bad one is one line.
    prices = tmp_path / "prices.json"
    prices.write_text('{"storage_per_gb_month": {"DEEP_ARCHIVE": 1.0}}')
    doc = run(["stats", "--json", "--prices", str(prices)], env).json()
    assert abs(doc["monthly_cost"]["by_storage_class"]["DEEP_ARCHIVE"]
               - (stored / gb + len(data) * (32 * 1024 / gb + 8 * 1024 / gb * 0.023))) < 1e-12
    prices.write_text("{")
    r = run(["stats", "--prices", str(prices)], env, check=False)
    assert r.code == USAGE and r.err.startswith(f"coldvault: error: prices file {prices} is not valid JSON")


def _locks(repo) -> list[str]:
    d = os.path.join(repo, "locks")
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if os.path.isdir(d) else []


def _holder(repo, env, name: str) -> subprocess.Popen:
    """A backup that holds its source lock while its command sleeps (its own process group)."""
    before = set(_locks(repo))
    proc = subprocess.Popen([*COLDVAULT, "backup", "stdin", "--name", name, "--command", "--", "sleep", "120"],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not set(_locks(repo)) - before:
        assert proc.poll() is None and time.monotonic() < deadline, "the backup never took its lock"
        time.sleep(0.01)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_unlock_removes_stale_locks_and_remove_all_every_lock(tmp_path):
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    dead = _holder(repo, env, "dead")
    _kill(dead)  # a lock of a process that is gone (this host): stale
    (stale,) = _locks(repo)
    live = _holder(repo, env, "live")
    try:
        (alive,) = set(_locks(repo)) - {stale}
        r = run(["unlock"], env)
        assert f"removed lock {stale} of 'backup stdin" in r.out and f"pid {dead.pid}" in r.out
        assert f"kept live lock {alive} of 'backup stdin" in r.out and r.err == ""
        assert _locks(repo) == [alive]
        assert run(["unlock", "--json"], env).json() == {"removed": [], "kept": [alive], "unreadable": [],
                                                          "unreadable_removed": False}
        r = run(["unlock", "--remove-all"], env)
        assert r.err.startswith("coldvault: warning: removing every lock, live ones too")
        assert len(r.err.splitlines()) == 1
        assert f"removed lock {alive} of 'backup stdin" in r.out
        assert _locks(repo) == []
        assert run(["unlock"], env).out == "no locks\n"
    finally:
        _kill(live)
    r = run(["unlock"], vault_env(str(tmp_path / "none")), check=False)
    assert r.code == 10 and r.err.startswith("coldvault: error: no vault at ")


def _bash_complete(script: str, words: list[str]) -> list[str]:
    """What bash offers for `words` (the last one being typed) with the generated script."""
    line = " ".join(words)
    prog = (f"source {shlex.quote(script)}; COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); "
            f"COMP_CWORD={len(words) - 1}; COMP_LINE={shlex.quote(line)}; COMP_POINT={len(line)}; "
            f"_shtab_coldvault coldvault {shlex.quote(words[-1])} {shlex.quote(words[-2])}; "
            'printf "%s\\n" "${COMPREPLY[@]}"')
    return subprocess.run(["bash", "-c", prog], capture_output=True, text=True, check=True).stdout.split()


def test_completion_scripts_generated_from_the_parser(tmp_path):
    for shell in ("bash", "zsh", "fish"):
        out = run(["completion", shell]).out
        assert "shtab" in out  # generated, not written by hand
        for word in ("unlock", "completion", "remove-all", "read-data"):  # (fish: -l remove-all)
            assert word in out, (shell, word)
    script = tmp_path / "coldvault.bash"
    script.write_text(run(["completion", "bash"]).out)
    assert _bash_complete(str(script), ["coldvault", "un"]) == ["unlock"]
    assert set(_bash_complete(str(script), ["coldvault", "d"])) == {"diff", "dump"}
    assert _bash_complete(str(script), ["coldvault", "diff", "--j"]) == ["--json"]
    assert _bash_complete(str(script), ["coldvault", "completion", "f"]) == ["fish"]
    r = run(["completion", "csh"], check=False)
    assert r.code == USAGE and "invalid choice: 'csh'" in r.err
