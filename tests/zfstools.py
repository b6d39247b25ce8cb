"""A real ZFS for tests: the zfs-fuse daemon and pools on files, with unique names."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid


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


@contextlib.contextmanager
def pool(tmp_path, size: str = "400M"):
    """A pool on a sparse file; yields (pool name, mountpoint of the pool's root dataset)."""
    ensure_daemon()
    name = f"cvt{uuid.uuid4().hex[:10]}"
    img = tmp_path / f"{name}.img"
    mnt = tmp_path / f"{name}-mnt"
    subprocess.run(["truncate", "-s", size, str(img)], check=True)
    sh("zpool", "create", "-m", str(mnt), name, str(img))
    try:
        yield name, str(mnt)
    finally:
        subprocess.run(["zpool", "destroy", "-f", name], capture_output=True)
        with contextlib.suppress(OSError):
            os.unlink(img)


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
