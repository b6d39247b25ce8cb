"""ZFS for real (zfs-fuse): nightly chains, bypass increments, streams in the mount equal
to fresh `zfs send`, chains received from the mount and by `restore zfs`, safety."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest

from cvtools import COLDVAULT, run, vault_env
from mounttools import mounted
from zfstools import put, receive_files, sh, tree_contents, zpool  # noqa: F401 (zpool: a fixture)

pytestmark = pytest.mark.zfs

USAGE, COLD = 2, 14



def send(dataset, snap, base=None) -> bytes:
    args = ["zfs", "send"] + (["-i", f"{dataset}@{base}"] if base else []) + [f"{dataset}@{snap}"]
    return sh(*args)



def test_nightly_chain_bypass_mount_and_restore(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/photos"
    sh("zfs", "create", ds)
    data = os.path.join(root, "photos")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)

    snaps = []
    for night in range(3):  # three nightly runs from cron: full, increment, increment
        put(f"{data}/night{night}/img.jpg", os.urandom(300_000))
        put(f"{data}/notes.txt", b"notes of night %d\n" % night * 100)
        r = run(["backup", "zfs", ds, "--json"], env).json()
        assert r["new"] is True
        snaps.append(r["stream"].split("@")[1].split()[0])
    first, second, third = snaps
    r = run(["backup", "zfs", ds, "--json"], env).json()
    assert r["stream"].endswith(f"from @{third}")
    fourth = r["stream"].split("@")[1].split()[0]  # (snapshots taken in one second share a time)
    # A bypass increment from the first night straight to the third.
    r = run(["backup", "zfs", f"{ds}@{third}", "--base", f"@{first}", "--json"], env).json()
    assert r["stream"] == f"{ds}@{third} from @{first}" and r["new"] is True

    listing = run(["snapshots", "--source", f"zfs:{ds}"], env).out
    assert f"@{first} (full)" in listing and f"@{first}..@{second}" in listing and f"@{second}..@{third}" in listing
    assert f"@{first}..@{third}" in listing

    expected_files = {
        f"@{first}.zfs": send(ds, first),
        f"@{first}..@{second}.zfs": send(ds, second, first),
        f"@{second}..@{third}.zfs": send(ds, third, second),
        f"@{third}..@{fourth}.zfs": send(ds, fourth, third),
        f"@{first}..@{third}.zfs": send(ds, third, first),
    }
    with mounted(env, tmp_path / "mnt") as m:
        d = m / f"zfs/{name}/photos"
        names = set(os.listdir(d))
        for fname, want in expected_files.items():
            assert fname in names
            with open(os.path.join(d, fname), "rb") as f:
                assert f.read() == want, fname
        # The shortest chain to the third night uses the bypass: two steps, not three.
        assert os.listdir(os.path.join(d, f"@{third}.restore")) == [f"0001-@{first}.zfs", f"0002-@{first}..@{third}.zfs"]
        steps = sorted(os.listdir(os.path.join(d, f"@{fourth}.restore")))
        assert steps == [f"0001-@{first}.zfs", f"0002-@{first}..@{third}.zfs", f"0003-@{third}..@{fourth}.zfs"]
        receive_files([os.path.join(d, f"@{fourth}.restore", s) for s in steps], f"{name}/frommount")
    source = tree_contents(data)
    assert tree_contents(os.path.join(root, "frommount")) == source

    out = run(["restore", "zfs", f"{ds}@{fourth}", "--into", f"{name}/restored"], env).out
    assert "3 stream(s)" in out
    assert tree_contents(os.path.join(root, "restored")) == source
    # Already there: nothing to do. Behind: continue from the snapshot it has.
    assert "already has" in run(["restore", "zfs", f"{ds}@{fourth}", "--into", f"{name}/restored"], env).out
    run(["restore", "zfs", f"{ds}@{second}", "--into", f"{name}/partial"], env)
    out = run(["restore", "zfs", f"{ds}@{fourth}", "--into", f"{name}/partial"], env).out
    assert f"is at @{second}" in out
    assert tree_contents(os.path.join(root, "partial")) == source


def test_recreated_base_is_refused(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/data"
    sh("zfs", "create", ds)
    put(os.path.join(root, "data", "a"), b"a" * 1000)
    sh("zfs", "snapshot", f"{ds}@monday")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "zfs", f"{ds}@monday"], env)
    sh("zfs", "release", "coldvault", f"{ds}@monday")  # the base's hold (test_zfs_nightly.py tests it)
    sh("zfs", "destroy", f"{ds}@monday")
    sh("zfs", "snapshot", f"{ds}@monday")  # same name, new GUID
    put(os.path.join(root, "data", "b"), b"b" * 1000)
    sh("zfs", "snapshot", f"{ds}@tuesday")
    before = run(["snapshots", "--json"], env).json()
    r = run(["backup", "zfs", f"{ds}@tuesday", "--base", "@monday"], env, check=False)
    assert r.code == USAGE
    assert "destroyed and created again" in r.err and "Traceback" not in r.err
    assert run(["snapshots", "--json"], env).json() == before
    # Automatic base selection does not use it either: a full stream is sent.
    r = run(["backup", "zfs", f"{ds}@tuesday", "--json"], env).json()
    assert r["stream"] == f"{ds}@tuesday (full)"


def test_failed_send_leaves_no_record(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/data"
    sh("zfs", "create", ds)
    sh("zfs", "snapshot", f"{ds}@one")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    r = run(["backup", "zfs", f"{ds}@one", "--raw"], env, check=False)  # zfs-fuse has no send -w
    assert r.code != 0 and "zfs send" in r.err and "nothing was recorded" in r.err
    assert "Traceback" not in r.err
    assert run(["snapshots", "--json"], env).json() == []
    r = run(["backup", "zfs", f"{name}/nope"], env, check=False)
    assert r.code == USAGE and "no ZFS dataset" in r.err


def test_kill_mid_upload_resumes_without_reuploading(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/big"
    sh("zfs", "create", ds)
    for i in range(6):
        put(os.path.join(root, "big", f"f{i}"), os.urandom(16 * 1024 * 1024))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--pack-size", "1"], env)
    data_dir = os.path.join(repo, "data")

    def data_packs():
        """pack name -> (inode, mtime): a pack uploaded again would be a new file."""
        out = {}
        for d, _, fs in os.walk(data_dir):
            for f in fs:
                if not f.startswith(".tmp-"):
                    st = os.stat(os.path.join(d, f))
                    out[f] = (st.st_ino, st.st_mtime_ns)
        return out

    proc = subprocess.Popen([*COLDVAULT, "backup", "zfs", ds], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(data_packs()) < 20:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = data_packs()
    assert run(["snapshots", "--json"], env).json() == []  # nothing committed

    r = run(["backup", "zfs", ds, "--json"], env)
    assert "resuming the upload" in r.err
    summary = r.json()
    snaps = [line.split("@")[1] for line in sh("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", ds).decode().split()]
    assert len(snaps) == 1  # the same snapshot, not a new one
    stream = summary["length"]
    # Only what was not stored before the kill was uploaded again (plus the pack in flight).
    assert summary["bytes_new"] <= stream - (len(stored) - 2) * 1024 * 1024
    after = data_packs()
    assert {n: after.get(n) for n in stored} == stored  # none of the stored packs was written again
    assert len(after) - len(stored) <= stream // (1024 * 1024) - len(stored) + 3
    run(["restore", "zfs", f"{ds}@{snaps[0]}", "--into", f"{name}/back"], env)
    assert tree_contents(os.path.join(root, "back")) == tree_contents(os.path.join(root, "big"))


def test_forget_refuses_a_needed_base_unless_bypassed(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    ids = {}
    for s in ("a", "b", "c"):
        put(os.path.join(root, "d", s), s.encode() * 5000)
        sh("zfs", "snapshot", f"{ds}@{s}")
        ids[s] = run(["backup", "zfs", f"{ds}@{s}", "--json"], env).json()["snapshot"]
    r = run(["forget", ids["b"]], env, check=False)  # c is received through b
    assert r.code == USAGE and "@c" in r.err and "depend" in r.err
    r = run(["forget", ids["a"]], env, check=False)
    assert r.code == USAGE and "@b" in r.err and "@c" in r.err
    run(["backup", "zfs", f"{ds}@c", "--base", "@a"], env)  # bypass a -> c
    run(["forget", ids["b"]], env)
    left = [s["zfs"]["snapshot"] for s in run(["snapshots", "--json"], env).json()]
    assert sorted(left) == ["a", "c", "c"]
    run(["restore", "zfs", f"{ds}@c", "--into", f"{name}/r"], env)
    assert tree_contents(os.path.join(root, "r")) == tree_contents(os.path.join(root, "d"))


def test_deep_archive_on_s3(zpool, tmp_path, moto_endpoint):
    name, root = zpool
    ds = f"{name}/cold"
    sh("zfs", "create", ds)
    put(os.path.join(root, "cold", "x.bin"), os.urandom(500_000))
    sh("zfs", "snapshot", f"{ds}@s")
    env = vault_env(f"s3://cv-{uuid.uuid4().hex[:12]}/zfs", COLDVAULT_S3_ENDPOINT=moto_endpoint,
                    COLDVAULT_RESTORE_POLL="0.2")
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    run(["backup", "zfs", f"{ds}@s"], env)
    with mounted(env, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        assert os.getxattr(m / f"zfs/{name}/cold/@s.zfs", "user.coldvault.state") == b"cold"
    r = run(["restore", "zfs", f"{ds}@s", "--into", f"{name}/back"], env, check=False)
    assert r.code == COLD and "--thaw" in r.err
    out = run(["restore", "zfs", f"{ds}@s", "--into", f"{name}/back", "--thaw", "--wait"], env).out
    assert "requested the restore of" in out and "received @s.zfs" in out
    assert tree_contents(os.path.join(root, "back")) == tree_contents(os.path.join(root, "cold"))
