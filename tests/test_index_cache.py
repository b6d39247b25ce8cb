"""The local index cache (vault/indexcache.py, docs/format.md section 15), through the command
line as a user runs it: built by the first command that loads the index, used by the next ones
(which then decode no index object: the -vv line "index: N index objects from the cache ..., 0
read" counts the objects `load_index` reads), brought up to date after a backup, rebuilt after a
prune, ignored (and rewritten) when damaged, never used by check, turned off by --no-cache or
COLDVAULT_NO_CACHE, private to its owner."""

from __future__ import annotations

import glob
import json
import os
import re
import stat

import pytest
from cvtools import run, sample_vault

from coldvault.errors import ExitCode
from coldvault.index.pack import BlobEntry
from coldvault.index.packindex import PackRecord
from coldvault.store.local import LocalStore
from coldvault.vault import Vault

PASSWORD = b"test-password"


@pytest.fixture
def cached(tmp_path):
    """A sample vault (one snapshot of source "src") whose index cache goes to tmp/cache."""
    cache = tmp_path / "cache"
    repo, env, src = sample_vault(tmp_path)
    env = env | {"COLDVAULT_CACHE_DIR": str(cache)}
    return repo, env, src, cache


def loads(err: str) -> tuple[int | None, int]:
    """(index objects taken from the cache or None if it was not used, index objects read) of
    the -vv log of one command."""
    m = re.search(r"index: (\d+) index objects from the cache, (\d+) read", err)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = re.search(r"index: (\d+) index objects read", err)
    assert m, err
    return None, int(m.group(1))


def cache_file(cache) -> str:
    (path,) = glob.glob(os.path.join(str(cache), "*", "index-cache"))
    return path


def index_objects(repo: str) -> list[str]:
    return sorted(glob.glob(os.path.join(repo, "index", "*")))


def ls(env, *extra) -> tuple[str, str]:
    """`ls --recursive` of the latest snapshot of "src", at -vv: (output, log)."""
    r = run(["-vv", "ls", "latest", "--source", "src", "--recursive", *extra], env)
    return r.out, r.err


def test_built_by_the_first_command_and_used_by_the_next(cached, tmp_path):
    repo, env, src, cache = cached
    out1, err1 = ls(env)
    assert loads(err1) == (None, 1)  # the one index object the backup wrote
    path = cache_file(cache)
    assert "written" in err1
    out2, err2 = ls(env)
    assert loads(err2) == (1, 0)  # no index object decoded
    assert out2 == out1 and "photo.jpg" in out2
    # A restore from the cached index writes the same bytes.
    target = tmp_path / "restored"
    r = run(["-vv", "restore", "dir", "latest", "--source", "src", "--target", str(target)], env)
    assert loads(r.err) == (1, 0)
    assert (target / "photo.jpg").read_bytes() == (src / "photo.jpg").read_bytes()
    assert (target / "docs" / "report.txt").read_bytes() == (src / "docs" / "report.txt").read_bytes()
    assert os.path.getsize(path) > 0


def _damage_unseen(path: str) -> None:
    """Flip a byte of `path` and give it back its size and mtime: the listing does not show it."""
    st = os.stat(path)
    _flip(path, 40)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_cache_is_all_the_second_command_reads(cached):
    """Proof that a warm command does not read the index objects: with every one of them
    damaged (behind the listing's back: same size, same mtime), it still answers; the same
    command without the cache reads them, and warns."""
    repo, env, src, cache = cached
    out1, _ = ls(env)
    for name in index_objects(repo):
        _damage_unseen(name)
    out2, err2 = ls(env)
    assert out2 == out1 and loads(err2) == (1, 0)
    assert "damaged" not in err2
    r = run(["ls", "latest", "--source", "src", "--recursive", "--no-cache"], env, check=False)
    assert "damaged" in r.err  # the full load reads them, and warns


def test_an_index_object_changed_in_place_is_read_again(cached):
    """An index object rewritten in place (damaged: another mtime or size in the listing) is
    not trusted from the cache: the next command reads everything, and warns."""
    repo, env, src, cache = cached
    ls(env)
    (idx,) = index_objects(repo)
    _flip(idx, 40)
    r = run(["-vv", "ls", "latest", "--source", "src"], env, check=False)
    assert "changed" in r.err and loads(r.err) == (None, 1)
    assert f"index/{os.path.basename(idx)}" in r.err and "damaged" in r.err


def test_a_backup_adds_to_the_cache_and_sees_its_own_blobs(cached, tmp_path):
    repo, env, src, cache = cached
    ls(env)
    (src / "new.txt").write_text("a new file\n" * 100)
    r = run(["-vv", "backup", "dir", str(src), "--name", "src", "--json"], env)
    assert loads(r.err) == (1, 0)
    assert len(index_objects(repo)) == 2
    out, err = ls(env)
    assert "new.txt" in out
    assert loads(err) == (1, 1)  # the cache's object, and the backup's new one read
    assert "written" in err  # a small vault: merged and written again at once
    out2, err2 = ls(env)
    assert out2 == out and loads(err2) == (2, 0)
    # The same tree again: every blob is known (from the cache), nothing new is stored.
    again = run(["-vv", "backup", "dir", str(src), "--name", "src", "--json"], env)
    assert loads(again.err) == (2, 0)
    assert json.loads(again.out)["bytes_new"] == 0
    target = tmp_path / "restored"
    run(["restore", "dir", "latest", "--source", "src", "--target", str(target)], env)
    assert (target / "new.txt").read_text() == "a new file\n" * 100


def test_a_prune_makes_the_next_command_rebuild_it(cached):
    repo, env, src, cache = cached
    (src / "more.bin").write_bytes(os.urandom(100_000))
    run(["backup", "dir", str(src), "--name", "src"], env)
    ls(env)
    assert loads(ls(env)[1]) == (2, 0)
    run(["forget", "--keep-last", "1"], env)
    p = run(["-vv", "prune"], env)
    assert loads(p.err)[0] is None  # prune reads every index object itself
    before = set(index_objects(repo))
    out, err = ls(env)
    assert "gone" in err and loads(err)[0] is None  # objects it was built from were deleted
    assert "more.bin" in out and "photo.jpg" in out
    assert loads(ls(env)[1]) == (len(before), 0)


def _flip(path: str, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x10]))


DAMAGE = {
    "a byte in the columns": lambda p: _flip(p, 40),
    "a byte of the header": lambda p: _flip(p, os.path.getsize(p) - 60),
    "truncated by a byte": lambda p: os.truncate(p, os.path.getsize(p) - 1),
    "truncated to its start": lambda p: os.truncate(p, 20),
    "empty": lambda p: os.truncate(p, 0),
    "other bytes": lambda p: open(p, "wb").write(os.urandom(4096)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_file_is_ignored_and_rewritten(cached, damage):
    repo, env, src, cache = cached
    out1, _ = ls(env)
    path = cache_file(cache)
    DAMAGE[damage](path)
    out2, err2 = ls(env)
    assert out2 == out1
    assert loads(err2) == (None, 1) and "reading every index object" in err2
    assert "Traceback" not in err2 and "WARNING" not in err2.upper().replace("COLDVAULT:", "")
    assert loads(ls(env)[1]) == (1, 0)  # written again, whole


def test_a_cache_of_another_vault_is_not_used(cached, tmp_path):
    repo, env, src, cache = cached
    ls(env)
    mine = cache_file(cache)
    other_repo, other_env, _ = sample_vault(tmp_path / "other")
    other_env = other_env | {"COLDVAULT_CACHE_DIR": str(cache)}
    ls(other_env)
    theirs = [p for p in glob.glob(os.path.join(str(cache), "*", "index-cache")) if p != mine]
    # The other vault's file copied over this one's: refused (another vault), read in full.
    with open(theirs[0], "rb") as f:
        data = f.read()
    with open(mine, "wb") as f:
        f.write(data)
    out1, err1 = ls(env)
    assert "of another vault" in err1 and loads(err1) == (None, 1)
    assert "photo.jpg" in out1


@pytest.mark.parametrize("how", ["--no-cache", "COLDVAULT_NO_CACHE"])
def test_no_cache(cached, how):
    repo, env, src, cache = cached
    args = ["--no-cache"] if how == "--no-cache" else []
    if how == "COLDVAULT_NO_CACHE":
        env = env | {"COLDVAULT_NO_CACHE": "1"}
    for _ in range(2):
        r = run(["-vv", *args, "ls", "latest", "--source", "src"], env)
        assert loads(r.err) == (None, 1)
    assert not os.path.exists(cache)  # nothing written
    ls(dict(env, COLDVAULT_NO_CACHE="0") if how == "COLDVAULT_NO_CACHE" else env)  # now one is made
    r = run(["-vv", *args, "ls", "latest", "--source", "src"], env)
    assert loads(r.err) == (None, 1)  # and not used


def test_private_files_whatever_the_umask(cached):
    repo, env, src, cache = cached
    run(["ls", "latest", "--source", "src"], env, prefix=["sh", "-c", 'umask 000; exec "$@"', "sh"])
    path = cache_file(cache)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n != "index-cache"]
    assert leftovers == []


def test_a_killed_writers_temporary_file_is_removed(cached):
    repo, env, src, cache = cached
    ls(env)
    d = os.path.dirname(cache_file(cache))
    stale = os.path.join(d, ".tmp-999999999-1-index-cache")  # no such process
    with open(stale, "wb") as f:
        f.write(b"x" * 1000)
    os.remove(cache_file(cache))
    ls(env)
    assert sorted(os.listdir(d)) == ["index-cache"]


def test_check_reads_every_index_object(cached):
    """A damaged index object is found by check even when a warm cache holds its records."""
    repo, env, src, cache = cached
    ls(env)
    idx = index_objects(repo)[0]
    _damage_unseen(idx)
    assert loads(ls(env)[1]) == (1, 0)  # the cache still answers for it
    r = run(["-vv", "check", "--json"], env, check=False)
    assert r.code == ExitCode.DAMAGED
    assert "index/" + os.path.basename(idx) in {d["object"] for d in r.json()["damage"]}
    assert "from the cache" not in r.err


def test_a_new_object_named_first_that_repeats_a_cached_blob_wins(tmp_path, monkeypatch):
    """Two index objects naming one blob: the one whose name sorts first is used, cache or not
    (docs/format.md 6.4). A new object named before the cached ones that repeats a cached blob
    makes the loader read everything again, as a full load would."""
    monkeypatch.setenv("COLDVAULT_CACHE_DIR", str(tmp_path / "cache"))
    store = LocalStore(str(tmp_path / "vault"))
    from coldvault.index.config import Settings

    v = Vault.init(store, None, Settings())
    blob = os.urandom(16)
    first = v.save_index([PackRecord(os.urandom(16).hex(), "data", 10_000, [BlobEntry(blob, 0, 0, 100, 100)])])
    Vault.open(store, None).load_index()  # builds the cache from `first`
    while True:  # a second record of the same blob, in an object named before the first
        rec = PackRecord(os.urandom(16).hex(), "data", 10_000, [BlobEntry(blob, 0, 500, 100, 100)])
        w = Vault.open(store, None)
        ids = w.save_index([rec])
        if ids[0] < first[0]:
            break
        store.delete("index/" + ids[0])
    warm = Vault.open(store, None)
    warm.load_index()
    cold = Vault.open(store, None)
    cold.load_index(cache=False)
    assert warm.index.lookup(blob) == cold.index.lookup(blob)
    assert warm.index.pack_of(blob) == rec.id


def test_commands_at_once_each_see_a_whole_file(cached):
    """Three cold commands at once: each builds and renames its own file; all answer, and the
    file left is whole (the next command uses it)."""
    import subprocess

    from cvtools import COLDVAULT

    repo, env, src, cache = cached
    expected, _ = ls(env)
    os.remove(cache_file(cache))
    procs = [subprocess.Popen([*COLDVAULT, "ls", "latest", "--source", "src", "--recursive"], env=os.environ | env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.decode() == expected
    assert loads(ls(env)[1]) == (1, 0)
    assert sorted(os.listdir(os.path.dirname(cache_file(cache)))) == ["index-cache"]


def test_a_cache_that_cannot_be_written_costs_a_warning(cached, tmp_path):
    repo, env, src, cache = cached
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    env = env | {"COLDVAULT_CACHE_DIR": str(blocked)}
    out, err = ls(env)
    assert "photo.jpg" in out
    assert "could not write the index cache" in err and "Traceback" not in err


def _records(n: int, per_pack: int = 16) -> list[PackRecord]:
    recs = []
    for p in range(0, n, per_pack):
        blobs = [BlobEntry(os.urandom(16), 0, 1000 * i, 900, 900) for i in range(min(per_pack, n - p))]
        recs.append(PackRecord(os.urandom(16).hex(), "data", 1000 * per_pack, blobs))
    return recs


def _load(store, caplog) -> tuple[Vault, str]:
    caplog.clear()
    v = Vault.open(store, None)
    v.load_index()
    return v, caplog.text


def test_few_new_records_stay_beside_the_cache_many_are_merged(tmp_path, monkeypatch, caplog):
    """At scale: a small backup's index object is read by each command and kept beside the
    mapped tables (the cache is not rewritten for it); many new records are merged and the
    cache rewritten; more new records than the cache holds: every object is read."""
    import logging

    from coldvault.index.config import Settings

    caplog.set_level(logging.DEBUG, logger="coldvault")
    monkeypatch.setenv("COLDVAULT_CACHE_DIR", str(tmp_path / "cache"))
    store = LocalStore(str(tmp_path / "vault"))
    Vault.init(store, None, Settings()).save_index(_records(20_000))
    _, log = _load(store, caplog)
    assert loads(log) == (None, 1) and "written" in log

    small = _records(10)
    Vault.open(store, None).save_index(small)
    for _ in range(2):
        v, log = _load(store, caplog)
        assert loads(log) == (1, 1) and "written" not in log  # read again each time, not merged
        assert v.index.pack_of(small[0].blobs[0].id) == small[0].id
        assert len(v.index) == 20_010

    more = _records(1_000)  # over 1/64 of the cache: merged, the cache rewritten with both objects
    Vault.open(store, None).save_index(more)
    v, log = _load(store, caplog)
    assert loads(log) == (1, 2) and "written" in log
    assert loads(_load(store, caplog)[1]) == (3, 0)
    assert v.index.pack_of(more[-1].blobs[-1].id) == more[-1].id

    huge = _records(60_000)  # more than the cache holds (and than 50,000): a full load is cheaper
    Vault.open(store, None).save_index(huge)
    v, log = _load(store, caplog)
    assert loads(log) == (None, 4) and "written" in log
    assert len(v.index) == 81_010
    assert v.index.pack_of(huge[0].blobs[0].id) == huge[0].id
