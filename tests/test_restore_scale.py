"""`restore dir` at scale: memory that does not grow with the number of files restored,
and small files of one pack fetched with few ranged reads (issue 10, item 2)."""

from __future__ import annotations

import os
import sys
import time

import trio

from cvtools import diff_signatures, run, signature, vault_env
from coldvault.restore.readplan import coalesce

PASSWORD = "test-password"
MiB = 1024 * 1024

# Runs a command and reports the peak RSS of its child (kB) on the last stderr line.
PEAK_RSS = ("import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(code)\n")


def small_files(root, parts: dict[str, int]) -> None:
    """Under `root`, for each (directory, count): that many small files, 100 to a subdirectory,
    each with its own content (so its own chunk)."""
    for top, count in parts.items():
        for i in range(count):
            d = os.path.join(root, top, f"s{i // 100:03d}")
            if i % 100 == 0:
                os.makedirs(d)
            with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
                f.write(b"%s file %d\n" % (top.encode(), i) * (1 + i % 7))


def restore_peak_kb(env, target, *path) -> int:
    r = run(["restore", "dir", "latest", *path, "--target", str(target)], env,
            prefix=[sys.executable, "-c", PEAK_RSS])
    return int(r.err.strip().splitlines()[-1].split()[1])


def test_restore_memory_does_not_grow_with_the_number_of_files(tmp_path):
    # One vault, one snapshot: the index is the same for both restores, only the
    # number of files restored differs (5,000 below "a", 50,000 in all).
    src = tmp_path / "src"
    small_files(src, {"a": 5_000, "b": 45_000})
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)

    few = restore_peak_kb(env, tmp_path / "few", "a")
    many = restore_peak_kb(env, tmp_path / "many")

    assert diff_signatures(signature(src / "a"), signature(tmp_path / "few")) == []
    assert diff_signatures(signature(src), signature(tmp_path / "many")) == []
    # Ten times the files, about the same memory. The restore's own work is bounded (its
    # batches, reads and walk stack: a few MB at most); what grows is the vault's
    # cache of tree nodes and tree packs (about 20 MB for these 500 directories; vault.py
    # caps it). One task per file cost some 5.8 kB per file: 260 MB more here.
    print(f"peak RSS: {few} kB restoring 5,000 files, {many} kB restoring 50,000")
    assert many - few < 32 * 1024, (few, many)


# ---- coalescing --------------------------------------------------------------------------


def counting_vault(repo: str):
    """The vault at `repo` through a local store that counts its ranged reads of data packs."""
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    class CountingStore(LocalStore):
        data_reads = 0

        def get(self, name, start=0, length=None):
            if name.startswith("data/"):
                CountingStore.data_reads += 1
            return super().get(name, start, length)

    store = CountingStore(repo)
    vault = Vault.open(store, lambda: PASSWORD.encode())
    vault.load_index()
    return vault, store


def test_small_files_of_one_pack_share_ranged_reads(tmp_path):
    from coldvault.restore.dirrestore import DirRestore

    src = tmp_path / "src"
    small_files(src, {"top": 2_000})
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)

    vault, store = counting_vault(repo)
    packs = {name for name, kind, _ in ((f"{k}/{p}", k, s) for p, k, s in vault.index.packs()) if kind == "data"}
    assert len(packs) == 1
    target = tmp_path / "restored"
    stats = trio.run(DirRestore(vault, vault.find_snapshot("latest"), None, str(target)).run)

    assert stats.files == 2_000
    assert diff_signatures(signature(src), signature(target)) == []
    # 2,000 chunks side by side in one pack: a handful of reads, not one per file.
    assert 1 <= store.data_reads <= 20, store.data_reads


def test_coalesce_merges_neighbours_within_bounds():
    blobs = [("p1", 0, 100, "a"), ("p1", 100, 50, "b"), ("p1", 400, 10, "c"),  # gap of 250: merged
             ("p1", 5_000, 10, "d"),  # gap of 4,590: a new read
             ("p2", 0, 10, "e"), ("p1", 150, 250, "f")]
    reads = coalesce(blobs, read_max=1_000, gap_max=300, blobs_max=10)
    assert [(r.pack, r.start, r.length, [k for _, _, k in r.parts]) for r in reads] == [
        ("p1", 0, 410, ["a", "b", "f", "c"]), ("p1", 5_000, 10, ["d"]), ("p2", 0, 10, ["e"])]
    # The length bound, the blob bound, and a blob larger than a read.
    assert [r.length for r in coalesce([("p", i * 100, 100, i) for i in range(10)], read_max=300)] == [300] * 3 + [100]
    assert [len(r.parts) for r in coalesce([("p", i, 1, i) for i in range(10)], blobs_max=4)] == [4, 4, 2]
    assert [(r.start, r.length) for r in coalesce([("p", 0, 10, 0), ("p", 10, 5 * MiB, 1), ("p", 5 * MiB + 10, 1, 2)],
                                                   read_max=MiB)] == [(0, 10), (10, 5 * MiB), (5 * MiB + 10, 1)]


def test_a_damaged_chunk_inside_a_large_file_costs_only_that_file(tmp_path):
    """A file of several chunks, read by several reads, is renamed only when every piece is
    in: one bad chunk leaves no file and no temporary file, and the others are restored."""
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"big{i}").write_bytes(os.urandom(5 * MiB))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--pack-size", "1"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    vault = Vault.open(LocalStore(repo), lambda: PASSWORD.encode())
    vault.load_index()
    entry = vault.load_tree(vault.find_snapshot("latest").tree).find(b"big1")
    assert len(entry.chunks) >= 3
    loc = vault.locate(entry.chunks[1])
    with open(os.path.join(repo, loc.object_name), "r+b") as f:
        f.seek(loc.offset + loc.length // 2)
        b = f.read(1)
        f.seek(loc.offset + loc.length // 2)
        f.write(bytes([b[0] ^ 0x01]))

    target = tmp_path / "target"
    r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False)
    assert r.code == 13, r.err
    assert "1 file(s) could not be restored" in r.err and "big1" in r.err and loc.object_name in r.err
    assert sorted(os.listdir(target)) == ["big0", "big2"]
    for name in ("big0", "big2"):
        assert (target / name).read_bytes() == (src / name).read_bytes()


# ---- writer processes --------------------------------------------------------------------


def writers_of(target) -> list[int]:
    """Pids of restore writer processes that hold the directory `target` open."""
    target = os.path.realpath(target)
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if b"coldvault.restore.writer" not in f.read():
                    continue
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}") == target:
                    pids.append(int(name))
                    break
            except OSError:
                pass
    return pids


def gone_within(target, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while writers_of(target):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def leftovers(root) -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if n.startswith(".coldvault-restore-")]


def small_and_large(tmp_path):
    """A vault holding 3,000 small files and three files of several chunks."""
    src = tmp_path / "src"
    small_files(src, {"small": 3_000})
    for i in range(3):
        (src / f"big{i}").write_bytes(os.urandom(3 * MiB))
    env = vault_env(str(tmp_path / "vault"))
    run(["init", "--pack-size", "1"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    return src, env


def test_a_killed_writer_stops_the_restore_with_one_line_and_leaves_nothing(tmp_path):
    src, env = small_and_large(tmp_path)
    target = tmp_path / "out"
    r = run(["restore", "dir", "latest", "--target", str(target)], env | {"COLDVAULT_CRASH_AT": "restore-writer:2"},
            check=False)
    assert r.code == 1, r
    assert "coldvault: error: a restore writer process was killed by signal 9 before the restore was done" in r.err
    assert "Traceback" not in r.err
    assert gone_within(target, 10)  # the other writers stopped too
    assert leftovers(target) == []  # the temporary files of the large files were removed
    # What was restored is whole; a second run completes the rest.
    run(["restore", "dir", "latest", "--target", str(target), "--overwrite"], env)
    assert diff_signatures(signature(src), signature(target)) == []


def test_a_killed_restore_takes_its_writers_with_it(tmp_path):
    src = tmp_path / "src"
    small_files(src, {"small": 6_000})
    env = vault_env(str(tmp_path / "vault"))
    run(["init", "--pack-size", "1"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    target = tmp_path / "out"
    # SIGKILL to the restoring process after its third message to a writer.
    r = run(["restore", "dir", "latest", "--target", str(target)], env | {"COLDVAULT_CRASH_AT": "restore-sent:3"},
            check=False)
    assert r.code == -9, r
    assert gone_within(target, 10)  # each writer saw its stdin close, finished its message and left
    run(["restore", "dir", "latest", "--target", str(target), "--overwrite"], env)
    assert diff_signatures(signature(src), signature(target)) == []
    assert writers_of(target) == []
