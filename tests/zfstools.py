"""A real ZFS for tests: the zfs-fuse daemon and pools on files, with unique names."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid

import pytest


def sh(*args: str, input: bytes | None = None) -> bytes:
    p = subprocess.run(args, capture_output=True, input=input)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {p.stderr.decode(errors='replace')}")
    return p.stdout


ZFS_FUSE_UP = os.path.join(os.path.dirname(__file__), "..", "scripts", "zfs-fuse-up.sh")


def ensure_daemon() -> None:
    """Start zfs-fuse unless it runs (scripts/zfs-fuse-up.sh clears a stale pid file left
    by a daemon that was killed); it stays up for later tests, holding no state of ours."""
    p = subprocess.run([ZFS_FUSE_UP], capture_output=True, text=True)
    assert p.returncode == 0, f"zfs-fuse could not be started: {p.stderr.strip()}"


# Pools made by this test session: tests/conftest.py fails the session if one is left.
CREATED: dict[str, tuple[str, str]] = {}  # name -> (mountpoint, file)


def pool_exists(name: str) -> bool:
    return subprocess.run(["zpool", "list", "-H", "-o", "name", name], capture_output=True).returncode == 0


def _holders(name: str, mnt: str) -> list[int]:
    """Processes that can keep pool `name` busy: a `zfs send`/`receive` (or coldvault) still
    working on it (the pool's name is unique, so it is in their arguments), or a process with
    its working directory or an open file under the pool's mountpoint."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == "zfs-fuse":
                    continue  # the daemon itself, shared by every pool
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            paths = [os.readlink(f"/proc/{entry}/cwd")]
            paths += [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue  # gone, or not ours to look at
        if any(name.encode() in a for a in argv) or any(p == mnt or p.startswith(mnt + "/") for p in paths):
            pids.append(int(entry))
    return pids


def destroy(name: str, mnt: str, img: str, patience: float = 60) -> str | None:
    """Destroy pool `name`, then remove its file; None when done, else what stopped it.

    zfs-fuse refuses a destroy now and then ("pool is busy": a dataset still being unmounted,
    a send or receive that has not let go, another pool's work in the shared daemon): the
    holders are killed, the datasets unmounted and the destroy tried again until `patience`
    runs out. The file stays while the pool exists: a pool without its file cannot be
    exported, only destroyed."""
    deadline = time.monotonic() + patience
    pause = 0.1
    while True:
        p = subprocess.run(["zpool", "destroy", "-f", name], capture_output=True, text=True)
        if not pool_exists(name):
            break
        said = p.stderr.strip() or f"exit status {p.returncode}"
        if time.monotonic() > deadline:
            return f"pool {name} could not be destroyed in {patience:.0f} s: {said}"
        for pid in _holders(name, mnt):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        listed = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", name], capture_output=True, text=True)
        for ds in sorted(listed.stdout.split(), reverse=True):  # children before their parents
            subprocess.run(["zfs", "unmount", "-f", ds], capture_output=True)
        time.sleep(pause)
        pause = min(pause * 2, 2.0)
    CREATED.pop(name, None)
    with contextlib.suppress(OSError):
        os.unlink(img)
    return None


@contextlib.contextmanager
def pool(tmp_path, size: str = "400M"):
    """A pool on a sparse file; yields (pool name, mountpoint of the pool's root dataset).

    The pool is destroyed on the way out, also when the test fails; if it cannot be, a test
    that passed fails here, and the session check in conftest.py reports it in any case."""
    ensure_daemon()
    name = f"cvt{uuid.uuid4().hex[:10]}"
    img = str(tmp_path / f"{name}.img")
    mnt = str(tmp_path / f"{name}-mnt")
    subprocess.run(["truncate", "-s", size, img], check=True)
    CREATED[name] = (mnt, img)
    passed = False
    try:
        sh("zpool", "create", "-m", mnt, name, img)
        yield name, mnt
        passed = True
    finally:
        problem = destroy(name, mnt, img)
        if problem and passed:
            raise AssertionError(problem)


def leftover_pools() -> list[str]:
    """Pools this session made that still exist."""
    return sorted(n for n in CREATED if pool_exists(n))


def destroy_leftover(name: str) -> str | None:
    mnt, img = CREATED[name]
    return destroy(name, mnt, img)


def tree_contents(root: str) -> dict:
    """Relative path -> bytes (files) or None (dirs), for comparing received datasets."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.relpath(os.path.join(dirpath, f), root)] = fh.read()
    return out


@pytest.fixture
def zpool(tmp_path):
    """A fresh pool for one test (import this fixture into a test module)."""
    with pool(tmp_path) as p:
        yield p


def put(path, data: bytes) -> None:
    """Write `data` to `path` in a dataset, making its directories."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def receive_files(files, target):
    """`zfs receive -F target` of each stream file in turn (a restore chain, in order)."""
    for f in files:
        with open(f, "rb") as fh:
            subprocess.run(["zfs", "receive", "-F", target], stdin=fh, check=True, capture_output=True)
