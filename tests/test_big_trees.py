"""Very deep and very wide trees: backups, restores and the mount stay bounded.

Memory is compared between two sizes of one shape of tree (no absolute limits, no
timings): what a command holds may grow with the depth and the width of a directory,
never with the number of files.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys

import pytest

from cvtools import run, vault_env
from mounttools import mounted

DEEP = 2000  # levels: the recursive walk died at about 1100 (RecursionError)
CONTENTS = [f"content {i}\n".encode() * (i + 1) for i in range(8)]  # few blobs, however many files
# Runs a command and prints its peak RSS (KiB), so the test measures the child alone.
PEAK = [sys.executable, "-c",
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(code)"]


def make_deep(root: str, depth: int) -> None:
    """`depth` nested directories `d`, a file every 100 levels; made relative to open
    directories, as the full path is longer than PATH_MAX."""
    os.makedirs(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(depth):
            if i % 100 == 0:
                put(fd, f"f{i}", f"level {i}\n".encode())
            os.mkdir("d", dir_fd=fd)
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        put(fd, "bottom", b"the bottom\n")
    finally:
        os.close(fd)


def remove_deep(root: str) -> None:
    """Remove a tree made by make_deep (or its restore): shutil.rmtree recurses, and dies
    on 2,000 levels. Each `d` is moved up next to the root first, so no path is long."""
    parent, n = root, 0
    while os.path.isdir(os.path.join(parent, "d")):
        lifted = os.path.join(root, f"lifted-{n}")
        os.rename(os.path.join(parent, "d"), lifted)
        parent, n = lifted, n + 1
    shutil.rmtree(root)


@pytest.fixture
def deep_dirs(tmp_path):
    """Paths for deep trees under tmp_path, removed after the test (pytest could not)."""
    made = []
    yield lambda name: made.append(str(tmp_path / name)) or made[-1]
    for path in made:
        if os.path.exists(path):
            remove_deep(path)


def put(dir_fd: int, name: str, data: bytes) -> None:
    f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640, dir_fd=dir_fd)
    try:
        os.write(f, data)
    finally:
        os.close(f)


def describe(root: str) -> list:
    """(depth, name, type, mode, contents) of everything under `root`, walked with
    descriptors (paths this deep cannot be named whole)."""
    out = []
    stack = [(os.open(root, os.O_RDONLY | os.O_DIRECTORY), 0)]
    while stack:
        fd, depth = stack.pop()
        try:
            subdirs = []
            for name in sorted(os.listdir(fd)):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    out.append((depth, name, "dir", stat.S_IMODE(st.st_mode), None))
                    subdirs.append(name)
                else:
                    f = os.open(name, os.O_RDONLY, dir_fd=fd)
                    try:
                        data = os.read(f, 1 << 20)
                    finally:
                        os.close(f)
                    out.append((depth, name, "file", stat.S_IMODE(st.st_mode), data))
            for name in subdirs:
                stack.append((os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), depth + 1))
        finally:
            os.close(fd)
    return out


def test_a_tree_2000_levels_deep_backs_up_and_restores(tmp_path, deep_dirs):
    src = deep_dirs("src")
    make_deep(src, DEEP)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    first = run(["backup", "dir", src, "--name", "deep", "--json"], env).json()
    assert (first["dirs"], first["files"], first["errors"]) == (DEEP + 1, DEEP // 100 + 1, 0)
    # The bottom file changes: the next backup compares every level with the previous
    # snapshot, reads that one file and nothing else.
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEEP):
        sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = sub
    put(fd, "bottom", b"the bottom, changed\n")
    os.close(fd)
    second = run(["backup", "dir", src, "--name", "deep", "--json"], env).json()
    assert (second["files_read"], second["unchanged_files"], second["errors"]) == (1, DEEP // 100, 0)
    out = deep_dirs("out")
    run(["restore", "dir", "latest", "--source", "deep", "--target", out], env)
    want = describe(src)
    assert len(want) == DEEP + DEEP // 100 + 1
    assert describe(out) == want
    assert (DEEP, "bottom", "file", 0o640, b"the bottom, changed\n") in want


def make_wide(root: str, files: int, per_dir: int = 100) -> None:
    """`files` small files, `per_dir` to a directory, under root/gNN/dNNNN/ (few distinct contents)."""
    for i in range(files):
        d = os.path.join(root, f"g{i // (per_dir * 50):02d}", f"d{i // per_dir:05d}")
        if i % per_dir == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"file-{i:07d}.txt"), "wb") as f:
            f.write(CONTENTS[i % len(CONTENTS)])


def peak_kib(result) -> int:
    line = [ln for ln in result.err.splitlines() if ln.startswith("PEAK_KIB ")][-1]
    return int(line.split()[1])


def test_backup_memory_does_not_grow_with_the_number_of_files(tmp_path):
    """First and unchanged backups of 10,000 and of 40,000 files (same directory sizes):
    the larger tree needs no more memory, give or take a little."""
    peaks = {}
    for n in (10_000, 40_000):
        src = str(tmp_path / f"src{n}")
        make_wide(src, n)
        env = vault_env(str(tmp_path / f"vault{n}"))
        run(["init"], env)
        first = run(["backup", "dir", src, "--name", "wide"], env, prefix=PEAK)
        again = run(["backup", "dir", src, "--name", "wide", "--json"], env, prefix=PEAK)
        assert again.json()["unchanged_files"] == n
        peaks[n] = (peak_kib(first), peak_kib(again))
    (small_first, small_again), (big_first, big_again) = peaks[10_000], peaks[40_000]
    # Before: the unchanged run kept every node of the previous snapshot it read
    # (+15 MiB for the 30,000 more files).
    assert big_first - small_first < 6 * 1024, peaks
    assert big_again - small_again < 6 * 1024, peaks


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))


def test_mount_memory_does_not_grow_with_the_number_of_files(tmp_path):
    """A mount of snapshots of 8,000 and of 32,000 files (same directory sizes), each
    walked twice (os.walk: readdirplus, so the kernel holds every entry): the mount's
    peak memory stays the same, give or take a little. The cache of decoded tree nodes
    is set small, so that its bound is reached in both."""
    peaks = {}
    for n in (8_000, 32_000):
        src = str(tmp_path / f"src{n}")
        make_wide(src, n)
        env = vault_env(str(tmp_path / f"vault{n}"), COLDVAULT_TREE_CACHE_MB="1")
        run(["init"], env)
        run(["backup", "dir", src, "--name", "wide"], env)
        with mounted(env, tmp_path / f"mnt{n}") as m:
            top = m / "files/wide/latest"
            for _ in range(2):
                found = sum(len(dirs) + len(files) for _, dirs, files in os.walk(top))
                assert found == n + n // 100 + -(-n // 5000)
            peaks[n] = vm_hwm_kib(m.proc.pid)
    # Before: every node the kernel held, and every listing, stayed in memory (+27 MiB).
    assert peaks[32_000] - peaks[8_000] < 6 * 1024, peaks
