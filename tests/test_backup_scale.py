"""`backup dir` at scale: the memory of a first backup does not grow with the number of
new files (issue 10: "Backup of 1,000,000 small files: ... peak memory at most 1.5x
restic's"). Memory is compared between two sizes of one shape of tree, no absolute
limits and no timings."""

from __future__ import annotations

import os
import random
import sys

from cvtools import run, vault_env

# Runs a command and reports the peak RSS of its child (kB) on the last stderr line.
PEAK_RSS = ("import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(code)\n")


def small_files(root, count: int, seed: int) -> None:
    """`count` files of 100-300 random bytes (each its own chunk), 100 to a directory."""
    rng = random.Random(seed)
    for i in range(count):
        d = os.path.join(root, f"d{i // 10_000:02d}", f"s{i // 100 % 100:02d}")
        if i % 100 == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
            f.write(rng.randbytes(rng.randrange(100, 300)))


def first_backup_peak_kb(tmp_path, name: str, count: int) -> int:
    src = tmp_path / name
    small_files(src, count, seed=count)
    # The run's index is written (and its records dropped) every 10,000 blobs, in both runs.
    env = vault_env(str(tmp_path / f"vault-{name}"), COLDVAULT_MAX_INDEX_ENTRIES="10000")
    # 1 MiB packs: the packs in flight weigh little, what grows with the files shows.
    run(["init", "--pack-size", "1"], env)
    r = run(["backup", "dir", str(src), "--name", name, "--json"], env, prefix=[sys.executable, "-c", PEAK_RSS])
    assert r.json()["files"] == count
    return int(r.err.strip().splitlines()[-1].split()[1])


def test_first_backup_memory_does_not_grow_with_the_number_of_new_files(tmp_path):
    few = first_backup_peak_kb(tmp_path, "few", 10_000)
    many = first_backup_peak_kb(tmp_path, "many", 100_000)
    # Ten times the files (90,000 more new blobs), about the same memory. What must grow is
    # the index of the vault's blobs: 37 bytes a blob in its tables (and a copy while new
    # rows are merged in), and its overlay of blobs added since the last merge (at most
    # 20,000 or an eighth of the tables): about 30 MB here. A run that kept every new
    # blob's pack record and claim until its end grew by some 75 MB.
    print(f"peak RSS: {few} kB backing up 10,000 new files, {many} kB 100,000")
    assert many - few < 40 * 1024, (few, many)


def source_file_fds(trace: str) -> tuple[int, int, int]:
    """From `strace -e openat,fadvise64,close` of one thread: (files opened relative to a
    directory, fadvise64 WILLNEED calls on them, most of them open at once)."""
    opened, advised, most = 0, 0, 0
    open_now: set[str] = set()
    for line in open(trace, errors="replace"):
        name, _, rest = line.partition("(")
        args, _, result = rest.rpartition(" = ")
        args = args.strip().removesuffix(")")
        if name == "openat" and not args.startswith("AT_FDCWD") and "O_DIRECTORY" not in args:
            if result.split()[0].isdigit():
                opened += 1
                open_now.add(result.split()[0])
                most = max(most, len(open_now))
        elif name == "fadvise64" and "POSIX_FADV_WILLNEED" in args and args.split(",")[0] in open_now:
            advised += 1
        elif name == "close":
            open_now.discard(args)
    return opened, advised, most


def test_files_ahead_of_the_read_are_opened_and_announced_to_the_kernel_within_a_bound(tmp_path):
    """A first backup on a cold page cache waited for the disk one small file at a time (issue
    10): the walk now opens the next files of a directory and asks the kernel to read them
    (posix_fadvise WILLNEED) before it reads them, at most READ_AHEAD_FILES at once."""
    from coldvault.uploader.dirbackup import READ_AHEAD_FILES

    src = tmp_path / "src"
    small_files(src, 300, seed=7)  # 3 directories of 100 files
    (src / "empty").write_bytes(b"")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    trace = tmp_path / "trace"
    strace = ["strace", "-f", "-ff", "-qq", "-e", "trace=openat,fadvise64,close", "-o", str(trace)]
    r = run(["backup", "dir", str(src), "--name", "small", "--json"], env, prefix=strace)
    assert r.json()["files_read"] == 301
    # The walking thread is the one that opened the source files.
    (opened, advised, most), = [c for c in (source_file_fds(str(p)) for p in tmp_path.glob("trace.*"))
                                if c[0]]
    assert opened == 301  # each file once
    assert advised == 300  # each non-empty file announced to the kernel
    assert 2 <= most <= READ_AHEAD_FILES, most  # read ahead, within its bound
    out = tmp_path / "out"
    run(["restore", "dir", "latest", "--source", "small", "--target", str(out)], env)
    for d, _, names in os.walk(src):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as a, open(os.path.join(out, os.path.relpath(p, src)), "rb") as b:
                assert a.read() == b.read(), p
