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
