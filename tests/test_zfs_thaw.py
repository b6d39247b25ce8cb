"""Thawing a ZFS snapshot covers its whole chain however it is named (zfs-fuse, a local vault
whose simulated cold tier stays cold for the whole test): by DATASET@SNAP, `latest --source
zfs:...`, a stream's snapshot id, a stream file or `@S.restore/` in the mount, and `restore
zfs --thaw`; the estimate counts every pack of the chain and the output names its streams."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cvtools import run, vault_env
from mounttools import mounted
from zfstools import put, sh, zpool  # noqa: F401 (zpool: a fixture)

pytestmark = pytest.mark.zfs

COLD = 14


def data_packs(repo: str) -> set[str]:
    out = set()
    for d, _, files in os.walk(os.path.join(repo, "data")):
        for f in files:
            if not f.endswith(".cold") and not f.startswith(".tmp-"):
                out.add(os.path.relpath(os.path.join(d, f), repo).replace(os.sep, "/"))
    return out


def test_every_name_of_a_zfs_snapshot_thaws_its_whole_chain(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/photos"
    sh("zfs", "create", ds)
    # Restores requested here stay in progress for the whole test.
    env = vault_env(str(tmp_path / "vault"), XDG_CACHE_HOME=str(tmp_path / "cache"),
                    COLDVAULT_LOCAL_RESTORE_DELAY="3600")
    repo = env["COLDVAULT_REPO"]
    run(["init", "--data-storage-class", "DEEP_ARCHIVE", "--pack-size", "1"], env)
    packs, ids = {}, {}
    for s in ("a", "b", "c"):
        put(os.path.join(root, "photos", f"{s}.bin"), os.urandom(1_500_000))
        sh("zfs", "snapshot", f"{ds}@{s}")
        before = data_packs(repo)
        ids[s] = run(["backup", "zfs", f"{ds}@{s}", "--json"], env).json()["snapshot"]
        packs[s] = data_packs(repo) - before
        assert packs[s]
    chain_c = packs["a"] | packs["b"] | packs["c"]
    chain_b = packs["a"] | packs["b"]

    def plan(*target):
        return run(["thaw", *target, "--dry-run", "--json"], env).json()

    def names(*target):
        return set(plan(*target)["to_restore"]["names"])

    r = plan("latest", "--source", f"zfs:{ds}")
    assert set(r["to_restore"]["names"]) == chain_c and r["to_restore"]["requests"] == len(chain_c)
    assert r["targets"][0]["packs"] == len(chain_c)
    text = run(["thaw", "latest", "--source", f"zfs:{ds}", "--dry-run"], env).out
    assert f"ZFS chain of 3 stream(s) to {ds}@c: @a.zfs, @a..@b.zfs, @b..@c.zfs" in text
    assert f"needed: {len(chain_c)} data pack(s)" in text
    assert names(f"{ds}@c") == chain_c
    assert names(ids["c"][:8]) == chain_c
    assert names(ids["b"]) == chain_b
    assert names(ids["a"][:10]) == packs["a"]
    with mounted(env, tmp_path / "mnt") as m:
        zdir = Path(m.path) / "zfs" / name / "photos"
        assert names(str(zdir / "@b..@c.zfs")) == chain_c
        assert names(str(zdir / "@a..@b.zfs")) == chain_b
        assert names(str(zdir / "@c.restore")) == chain_c
        assert names(str(zdir / "@c.restore" / "0002-@a..@b.zfs")) == chain_b
        text = run(["thaw", str(zdir / "@b..@c.zfs"), "--dry-run"], env).out
        assert "ZFS chain of 3 stream(s)" in text

    # Still cold: restore zfs --thaw asks for the whole chain of @b and says so.
    r = run(["restore", "zfs", f"{ds}@b", "--into", f"{name}/back", "--thaw"], env, check=False)
    assert r.code == COLD and "Traceback" not in r.err
    assert f"requested the restore of {len(chain_b)} pack(s)" in r.out
    assert "for the 2 stream(s) of the chain: @a.zfs, @a..@b.zfs" in r.out
    # thaw latest asks for what is left of @c's chain; after it nothing of the chain is cold.
    r = run(["thaw", "latest", "--source", f"zfs:{ds}", "--json"], env).json()
    assert set(r["requested"]) == packs["c"] and r["restoring"]["packs"] == len(chain_b)
    after = plan(f"{ds}@c")
    assert after["to_restore"]["requests"] == 0 and set(after["restoring"]["names"]) == chain_c
    r = run(["restore", "zfs", f"{ds}@c", "--into", f"{name}/back2"], env, check=False)
    assert r.code == COLD and f"({len(chain_c)} being restored)" in r.err
