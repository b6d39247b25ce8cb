"""`coldvault dump` of a ZFS snapshot writes the stream `zfs receive` takes (zfs-fuse)."""

from __future__ import annotations

import os
import subprocess

import pytest

from cvtools import COLDVAULT, run, vault_env
from zfstools import put, sh, tree_contents, zpool  # noqa: F401 (zpool: a fixture)

pytestmark = pytest.mark.zfs
USAGE = 2


def test_dump_zfs_streams_receive_as_the_chain(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/photos"
    sh("zfs", "create", ds)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    put(os.path.join(root, "photos", "a.bin"), os.urandom(200_000))
    run(["backup", "zfs", ds], env)
    full = tree_contents(os.path.join(root, "photos"))
    put(os.path.join(root, "photos", "b.txt"), b"second night\n")
    run(["backup", "zfs", ds], env)
    second = tree_contents(os.path.join(root, "photos"))
    recs = run(["snapshots", "--source", f"zfs:{ds}", "--json"], env).json()
    assert len(recs) == 2
    target = f"{name}/back"
    for rec, want in zip(recs, (full, second)):
        stream = tmp_path / f"{rec['id']}.zfs"
        with open(stream, "wb") as f:
            p = subprocess.run([*COLDVAULT, "dump", rec["id"][:8]], env={**os.environ, **env}, stdout=f,
                               stderr=subprocess.PIPE)
        assert p.returncode == 0, p.stderr.decode()
        with open(stream, "rb") as f:
            subprocess.run(["zfs", "receive", "-F", target], stdin=f, check=True, capture_output=True)
        assert tree_contents(os.path.join(root, "back")) == want
    r = run(["dump", recs[0]["id"], "a.bin"], env, check=False)
    assert r.code == USAGE and r.err.startswith(f"coldvault: error: snapshot {recs[0]['id'][:8]} is a ZFS stream")
