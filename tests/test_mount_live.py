"""A live mount (issue 12, item 8): snapshots made or forgotten while `coldvault mount` runs
appear and disappear without remounting. Real mounts of real vaults; the vault is changed by
`coldvault backup`, `forget` and `prune` run as separate processes, as a user would."""

from __future__ import annotations

import errno
import os
import time
import uuid

import pytest

from cvtools import run, vault_env
from doctools import DocShell, bin_dir, block, commands
from faultproxy import FaultProxy
from mounttools import mounted, unmount
from test_stdin_command import MYSQLDUMP

T0, T1, T2 = "2024-04-30T03:00:00Z", "2024-05-01T03:00:00Z", "2024-05-03T03:00:00Z"


def write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def wait_for(what: str, predicate, m, timeout: float = 120) -> None:
    """Poll until `predicate()` holds; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert m.proc.poll() is None, f"the mount ended:\n{m.log()}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}:\n{m.log()}"
        time.sleep(0.2)


def snapshot_id(env, source: str, time_str: str) -> str:
    recs = run(["snapshots", "--json", "--source", source], env).json()
    (sid,) = [r["id"] for r in recs if r["time"].startswith(time_str[:19])]
    return sid


@pytest.fixture
def vault(tmp_path):
    """photos: T0 (keep.jpg), T1 (keep.jpg and only_t1.bin, whose data no other snapshot has);
    docs: T0. Returns (env, photos source dir)."""
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    src = tmp_path / "photos"
    write(src / "keep.jpg", os.urandom(700_000))
    run(["backup", "dir", str(src), "--name", "photos", "--time", T0], env)
    write(src / "only_t1.bin", os.urandom(600_000))
    run(["backup", "dir", str(src), "--name", "photos", "--time", T1], env)
    docs = tmp_path / "docs"
    write(docs / "notes" / "todo.txt", b"todo\n" * 100)
    run(["backup", "dir", str(docs), "--name", "docs", "--time", T0], env)
    return env, src


def test_new_and_forgotten_snapshots_show_without_remounting(vault, tmp_path):
    env, src = vault
    with mounted(env, tmp_path / "mnt", "--refresh", "1") as m:
        photos = m / "files/photos"
        # What the kernel holds before the vault changes: listings, stats, open files.
        assert sorted(os.listdir(m / "files")) == ["docs", "photos"]
        assert sorted(os.listdir(f"{photos}/snapshots")) == [T0, T1]
        assert sorted(os.listdir(f"{photos}/dates")) == ["2024-04-30", "2024-05-01"]
        assert os.readlink(f"{photos}/latest") == f"snapshots/{T1}"
        untouched = m / f"files/docs/snapshots/{T0}/notes"
        todo = os.path.join(untouched, "todo.txt")
        stable = {p: os.stat(p).st_ino for p in (untouched, m / "files/docs", photos, f"{photos}/snapshots/{T0}")}
        kept_open = open(f"{photos}/snapshots/{T1}/keep.jpg", "rb")  # its data stays: T0 has it too
        doomed = open(f"{photos}/snapshots/{T1}/only_t1.bin", "rb")  # its only pack goes with T1
        try:
            # A backup in another process: a new day of photos, and a new source.
            os.unlink(src / "only_t1.bin")
            write(src / "new.bin", os.urandom(1_500_000))
            write(src / "later.bin", os.urandom(400_000))
            run(["backup", "dir", str(src), "--name", "photos", "--time", T2], env)
            music = tmp_path / "music"
            write(music / "song.flac", os.urandom(200_000))
            run(["backup", "dir", str(music), "--name", "music", "--time", T2], env)

            wait_for("the new snapshot shows", lambda: T2 in os.listdir(f"{photos}/snapshots"), m)
            wait_for("the new source shows", lambda: "music" in os.listdir(m / "files"), m)
            # In every view: snapshots/, dates/, changes/, latest, and the new source's own.
            assert sorted(os.listdir(f"{photos}/snapshots")) == [T0, T1, T2]
            assert sorted(os.listdir(f"{photos}/dates")) == ["2024-04-30", "2024-05-01", "2024-05-03"]
            assert sorted(os.listdir(f"{photos}/changes")) == ["2024-04-30", "2024-05-01", "2024-05-03"]
            assert sorted(os.listdir(f"{photos}/changes/2024-05-03")) == ["later.bin", "new.bin"]
            assert os.readlink(f"{photos}/latest") == f"snapshots/{T2}"
            assert read(f"{photos}/latest/new.bin") == read(src / "new.bin")
            assert read(f"{photos}/snapshots/{T2}/new.bin") == read(src / "new.bin")
            assert read(f"{photos}/dates/2024-05-03/keep.jpg") == read(src / "keep.jpg")
            assert read(m / "files/music/latest/song.flac") == read(music / "song.flac")
            assert sorted(os.listdir(m / "files/music")) == ["changes", "dates", "latest", "snapshots"]
            # What stayed kept its inode number.
            assert {p: os.stat(p).st_ino for p in stable} == stable

            # forget + prune while mounted: T1 goes, and the pack only it used.
            run(["forget", snapshot_id(env, "photos", T1)], env)
            r = run(["prune"], env)
            assert "deleted 0 pack" not in r.out, r.out
            wait_for("the forgotten snapshot goes", lambda: T1 not in os.listdir(f"{photos}/snapshots"), m)
            assert sorted(os.listdir(f"{photos}/snapshots")) == [T0, T2]
            assert sorted(os.listdir(f"{photos}/dates")) == ["2024-04-30", "2024-05-03"]
            assert sorted(os.listdir(f"{photos}/changes")) == ["2024-04-30", "2024-05-03"]
            assert not os.path.exists(f"{photos}/snapshots/{T1}/keep.jpg")
            # Open files of the forgotten snapshot: read on while their data exists, EIO once pruned.
            assert kept_open.read() == read(src / "keep.jpg")
            with pytest.raises(OSError) as e:
                doomed.read()
            assert e.value.errno == errno.EIO
            # The snapshots that stay read as before, after the prune rewrote the index.
            assert read(f"{photos}/snapshots/{T0}/keep.jpg") == read(src / "keep.jpg")
            assert read(f"{photos}/snapshots/{T2}/later.bin") == read(src / "later.bin")
            assert read(todo) == b"todo\n" * 100
            assert {p: os.stat(p).st_ino for p in stable} == stable
        finally:
            kept_open.close()
            doomed.close()
        log = m.log()
        assert "only_t1.bin" in log and "Traceback" not in log, log


async def test_the_tree_follows_the_vault_without_a_mount(vault, tmp_path):
    """The same refresh in-process, on the virtual tree (no FUSE): what it tells the kernel to
    forget, the holes that keep inode numbers, the index loaded again after a prune."""
    from coldvault.mount.chunkcache import ChunkSource
    from coldvault.mount.live import Refresher
    from coldvault.mount.restore_manager import RestoreManager
    from coldvault.mount.vfs import VirtualFS
    from coldvault.store.local import LocalStore
    from coldvault.vault.vault import Vault

    env, src = vault
    v = Vault.open(LocalStore(env["COLDVAULT_REPO"]), lambda: env["COLDVAULT_PASSWORD"].encode())
    v.load_index()
    fs = VirtualFS(v, ChunkSource(v, None), RestoreManager(v))
    told = []

    async def notify(entries, inodes):
        told.append(entries)

    refresher = Refresher(fs, 1, notify)

    async def walk(path):
        node = fs.root
        for name in path.split("/"):
            node = await fs.lookup(node.ino, name.encode())
        return node

    async def listing(path):
        return [spec.name.decode() if spec is not None else None
                for spec in (await fs.listdir((await walk(path)).ino))[1]]

    assert await listing("files/photos/snapshots") == [T0, T1]
    photos, snapshots = await walk("files/photos"), await walk("files/photos/snapshots")
    t0 = (await walk(f"files/photos/snapshots/{T0}")).ino
    await refresher.refresh()
    assert told == []  # nothing changed: nothing read but two listings, nothing to tell

    run(["backup", "dir", str(src), "--name", "photos", "--time", T2], env)
    await refresher.refresh()
    assert await listing("files/photos/snapshots") == [T0, T1, T2]
    entries = told.pop()
    assert (snapshots.ino, T2.encode()) in entries and (photos.ino, b"latest") in entries
    assert (await walk(f"files/photos/snapshots/{T0}")).ino == t0
    assert await fs.readlink((await walk("files/photos/latest")).ino) == f"snapshots/{T2}".encode()

    run(["forget", snapshot_id(env, "photos", T1)], env)
    run(["prune"], env)
    generation = refresher.generation
    await refresher.refresh()
    assert await listing("files/photos/snapshots") == [T0, None, T2]  # T1's index stays taken
    assert (snapshots.ino, T1.encode()) in told.pop()
    assert refresher.generation > generation  # prune rewrote the index: loaded again
    assert (await walk(f"files/photos/snapshots/{T0}")).ino == t0
    node = await walk(f"files/photos/snapshots/{T2}/keep.jpg")
    fh = await fs.open(node.ino)
    try:
        assert bytes(await fs.read(fh, 0, 1 << 20)) == read(src / "keep.jpg")
    finally:
        fs.release(fh)


def test_a_backup_made_again_after_a_prune_reads_from_its_new_pack(vault, tmp_path):
    """prune deletes a pack; a later backup stores the same data again, in a new pack: the
    mount's index must point at the new one (the old entry named the deleted pack)."""
    env, src = vault
    with mounted(env, tmp_path / "mnt", "--refresh", "1") as m:
        photos = m / "files/photos"
        os.listdir(f"{photos}/snapshots")
        run(["forget", snapshot_id(env, "photos", T1)], env)
        r = run(["prune"], env)
        assert "deleted 0 pack" not in r.out, r.out
        wait_for("the forgotten snapshot goes", lambda: T1 not in os.listdir(f"{photos}/snapshots"), m)
        run(["backup", "dir", str(src), "--name", "photos", "--time", T2], env)  # only_t1.bin again
        wait_for("the new snapshot shows", lambda: T2 in os.listdir(f"{photos}/snapshots"), m)
        assert read(f"{photos}/snapshots/{T2}/only_t1.bin") == read(src / "only_t1.bin")
        assert "Traceback" not in m.log()


def test_a_refresh_that_fails_keeps_serving_and_tries_again(tmp_path, moto_endpoint):
    """The store goes down (every request a 503, through a proxy in front of moto): each refresh
    fails with a log line, the mount serves what it has; once the store is back, the next one
    shows what changed meanwhile."""
    src = tmp_path / "photos"
    write(src / "keep.jpg", os.urandom(300_000))
    with FaultProxy(moto_endpoint, rate=0.0, kinds=["503"]) as proxy:
        env = vault_env(f"s3://cv-{uuid.uuid4().hex[:12]}/vault", COLDVAULT_S3_ENDPOINT=proxy.endpoint,
                        COLDVAULT_RETRY_ATTEMPTS="2", COLDVAULT_RETRY_DELAY="0.02")
        run(["init"], env)
        run(["backup", "dir", str(src), "--name", "photos", "--time", T0], env)
        with mounted(env, tmp_path / "mnt", "--refresh", "1") as m:
            photos = m / "files/photos"
            assert read(f"{photos}/latest/keep.jpg") == read(src / "keep.jpg")
            proxy.rate = 1.0
            wait_for("a failed refresh is logged", lambda: "could not refresh the mount's view" in m.log(), m)
            assert os.listdir(f"{photos}/snapshots") == [T0]  # still served
            proxy.rate = 0.0
            run(["backup", "dir", str(src), "--name", "photos", "--time", T1], env)
            wait_for("the new snapshot shows", lambda: T1 in os.listdir(f"{photos}/snapshots"), m)
            assert read(f"{photos}/snapshots/{T1}/keep.jpg") == read(src / "keep.jpg")
            log = m.log()
            assert "works again" in log and "Traceback" not in log, log


def test_refresh_0_is_a_fixed_view(vault, tmp_path):
    env, src = vault
    with mounted(env, tmp_path / "mnt", "--refresh", "0") as m:
        photos = m / "files/photos"
        assert sorted(os.listdir(f"{photos}/snapshots")) == [T0, T1]
        run(["backup", "dir", str(src), "--name", "photos", "--time", T2], env)
        time.sleep(3)  # a negative check: nothing is looked for, so nothing shows
        assert sorted(os.listdir(f"{photos}/snapshots")) == [T0, T1]
        assert os.readlink(f"{photos}/latest") == f"snapshots/{T1}"
        # It holds the read lock: prune refuses to run until the unmount.
        assert run(["prune"], env, check=False).code == 16


def test_refresh_must_be_a_number_of_seconds(vault, tmp_path):
    env, _ = vault
    os.makedirs(tmp_path / "mnt")
    r = run(["mount", str(tmp_path / "mnt"), "--refresh", "-1", "--foreground"], env, check=False)
    assert r.code == 2 and r.err.startswith("coldvault: error: --refresh must be 0"), r.err
    assert not os.path.ismount(tmp_path / "mnt")


def test_mount_md_as_printed(tmp_path):
    """docs/mount.md's live-mount block, as printed: a background mount, a backup, `ls` (run
    until the new snapshot is there), the unmount."""
    src = tmp_path / "photos"
    write(src / "a.jpg", os.urandom(100_000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDVAULT_")}
    env.update(vault_env(str(tmp_path / "vault")), HOME=str(tmp_path / "home"),
               PATH=f"{bin_dir(str(tmp_path / 'bin'), MYSQLDUMP)}:{os.environ['PATH']}")
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "photos", "--time", T0], env)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    shell = DocShell(env, {"/mnt/vault": str(mnt), "/srv/photos": str(src)}, str(tmp_path))
    mount, backup, ls, umount = commands(block("docs/mount.md", DOC_BLOCK).text)
    try:
        assert "mounted at" in shell.run(mount).stdout
        assert len(shell.run(ls).stdout.split()) == 1
        shell.run(backup)
        deadline = time.monotonic() + 120
        while len(shell.run(ls).stdout.split()) < 2:
            assert time.monotonic() < deadline, "the new snapshot did not show"
            time.sleep(0.5)
        shell.run(umount)
        assert not os.path.ismount(mnt)
    finally:
        unmount(str(mnt))


DOC_BLOCK = "coldvault mount /mnt/vault --refresh 10         # looks for new and forgotten snapshots every 10 s"


def test_zfs_streams_show_as_they_are_backed_up(tmp_path):
    """The zfs/ views follow too: a dataset's folder, its streams and chains appear as
    `backup zfs` stores them."""
    from zfstools import pool, sh

    with pool(tmp_path) as (name, root):
        ds = f"{name}/photos"
        sh("zfs", "create", ds)
        env = vault_env(str(tmp_path / "vault"))
        run(["init"], env)
        src = tmp_path / "docs"
        write(src / "a.txt", b"a")
        run(["backup", "dir", str(src), "--name", "docs", "--time", T0], env)
        with mounted(env, tmp_path / "mnt", "--refresh", "1") as m:
            assert os.listdir(m / "zfs") == []
            write(os.path.join(root, "photos", "a.bin"), os.urandom(200_000))
            sh("zfs", "snapshot", f"{ds}@a")
            run(["backup", "zfs", f"{ds}@a"], env)
            d = m / f"zfs/{name}/photos"
            wait_for("the dataset shows", lambda: os.path.isdir(d), m)
            assert sorted(os.listdir(d)) == ["@a.restore", "@a.zfs"]
            assert read(f"{d}/@a.zfs") == sh("zfs", "send", f"{ds}@a")
            write(os.path.join(root, "photos", "b.bin"), os.urandom(100_000))
            sh("zfs", "snapshot", f"{ds}@b")
            run(["backup", "zfs", f"{ds}@b"], env)
            wait_for("the incremental stream shows", lambda: "@a..@b.zfs" in os.listdir(d), m)
            assert sorted(os.listdir(d)) == ["@a..@b.zfs", "@a.restore", "@a.zfs", "@b.restore"]
            assert sorted(os.listdir(f"{d}/@b.restore")) == ["0001-@a.zfs", "0002-@a..@b.zfs"]
            assert read(f"{d}/@b.restore/0002-@a..@b.zfs") == sh("zfs", "send", "-i", f"{ds}@a", f"{ds}@b")
