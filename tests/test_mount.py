"""The mount, for real: a subprocess `coldvault mount`, read with ordinary system calls."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
import uuid

import msgpack
import pytest

from cvtools import diff_signatures, run, signature, vault_env
from mounttools import mounted, unmount

STATE = "user.coldvault.state"


def write(path, data: bytes | str, mtime_s: int | None = None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    if mtime_s is not None:
        os.utime(path, (mtime_s, mtime_s))


def read(path) -> bytes:
    """Read like cat does, with raw read(2) calls: buffered Python I/O turns EAGAIN into None."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while block := os.read(fd, 1 << 20):
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)


@pytest.fixture
def seaweed(tmp_path):
    """SeaweedFS filer.backup's incremental example, as three snapshots on two days."""
    src = tmp_path / "src"
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    d = src / "dir1"
    for i in (1, 2, 3):
        write(d / f"file{i}", f"file{i} of March 1st\n", 1614556800 + i)
    run(["backup", "dir", str(src), "--name", "web", "--time", "2021-03-01T12:00:00Z"], env)
    write(d / "file1", "file1 changed on March 2nd\n", 1614643200)
    os.unlink(d / "file3")
    write(d / "file4", "file4 created on March 2nd\n", 1614643201)
    run(["backup", "dir", str(src), "--name", "web", "--time", "2021-03-02T12:00:00Z"], env)
    # A second snapshot that day: file5 created, file4 deleted again.
    write(d / "file5", "file5 created late on March 2nd\n", 1614661200)
    os.unlink(d / "file4")
    run(["backup", "dir", str(src), "--name", "web", "--time", "2021-03-02T18:00:00Z"], env)
    return env, src


def test_views_follow_seaweedfs_incremental_mode(seaweed, tmp_path):
    env, src = seaweed
    with mounted(env, tmp_path / "mnt") as m:
        web = m / "files/web"
        assert sorted(os.listdir(m.path)) == ["files", "zfs"]
        assert sorted(os.listdir(web)) == ["changes", "dates", "latest", "snapshots"]
        assert os.listdir(f"{web}/snapshots") == [
            "2021-03-01T12:00:00Z", "2021-03-02T12:00:00Z", "2021-03-02T18:00:00Z"]
        assert os.listdir(f"{web}/dates") == ["2021-03-01", "2021-03-02"]
        assert os.readlink(f"{web}/latest") == "snapshots/2021-03-02T18:00:00Z"

        assert os.listdir(f"{web}/changes/2021-03-01/dir1") == ["file1", "file2", "file3"]
        assert read(f"{web}/changes/2021-03-01/dir1/file1") == b"file1 of March 1st\n"
        assert read(f"{web}/changes/2021-03-01/dir1/file3") == b"file3 of March 1st\n"
        # Changed that day; deletions not applied (file4 was deleted by the evening).
        assert os.listdir(f"{web}/changes/2021-03-02/dir1") == ["file1", "file4", "file5"]
        assert read(f"{web}/changes/2021-03-02/dir1/file1") == b"file1 changed on March 2nd\n"
        assert read(f"{web}/changes/2021-03-02/dir1/file4") == b"file4 created on March 2nd\n"

        assert os.listdir(f"{web}/dates/2021-03-02/dir1") == ["file1", "file2", "file5"]
        assert os.listdir(f"{web}/snapshots/2021-03-02T12:00:00Z/dir1") == ["file1", "file2", "file4"]
        assert read(f"{web}/snapshots/2021-03-01T12:00:00Z/dir1/file1") == b"file1 of March 1st\n"
        assert not diff_signatures(signature(src), signature(f"{web}/latest/"))
        assert not diff_signatures(signature(src), signature(f"{web}/dates/2021-03-02"))


def test_issue_example_byte_for_byte(tmp_path):
    """The example of issue 3, exactly: two days, one snapshot each; every file of every view read."""
    src = tmp_path / "src"
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    d = src / "dir1"
    day1 = {f"file{i}": f"file{i}, 2021-03-01\n".encode() for i in (1, 2, 3)}
    for name, data in day1.items():
        write(d / name, data, 1614556800)
    run(["backup", "dir", str(src), "--name", "web", "--time", "2021-03-01T12:00:00Z"], env)
    write(d / "file1", b"file1, modified 2021-03-02\n", 1614643200)
    os.unlink(d / "file3")
    write(d / "file4", b"file4, created 2021-03-02\n", 1614643200)
    run(["backup", "dir", str(src), "--name", "web", "--time", "2021-03-02T12:00:00Z"], env)
    day2 = {"file1": b"file1, modified 2021-03-02\n", "file2": day1["file2"], "file4": b"file4, created 2021-03-02\n"}
    with mounted(env, tmp_path / "mnt") as m:
        web = m / "files/web"
        views = {
            "changes/2021-03-01/dir1": day1,
            "changes/2021-03-02/dir1": {k: day2[k] for k in ("file1", "file4")},
            "dates/2021-03-01/dir1": day1,
            "dates/2021-03-02/dir1": day2,
            "latest/dir1": day2,
        }
        for view, files in views.items():
            assert os.listdir(f"{web}/{view}") == sorted(files), view
            for name, data in files.items():
                assert read(f"{web}/{view}/{name}") == data, f"{view}/{name}"


def test_attributes_symlinks_and_stable_inodes(tmp_path):
    src = tmp_path / "src"
    write(src / "docs" / "a.txt", "hello\n", 1_500_000_000)
    write(src / "big.bin", os.urandom(5_000_000))
    os.symlink("docs/a.txt", src / "rel")
    os.symlink("/nowhere/at/all", src / "dangling")
    os.chmod(src / "docs" / "a.txt", 0o4751)
    os.chown(src / "big.bin", 1234, 5678)
    os.makedirs(src / "many")
    for i in range(3000):  # several readdir calls
        write(src / "many" / f"n{i:05d}", b"")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "s"], env)
    with mounted(env, tmp_path / "mnt") as m:
        latest = m / "files/s/latest/"
        assert not diff_signatures(signature(src), signature(latest))
        assert os.listdir(os.path.join(latest, "many")) == sorted(os.listdir(src / "many"))
        f = os.path.join(latest, "docs/a.txt")
        ino = os.stat(f).st_ino
        assert os.stat(f).st_ino == ino
        with open("/proc/sys/vm/drop_caches", "w") as dc:  # the kernel forgets the inodes
            dc.write("2")
        assert os.stat(f).st_ino == ino
        with pytest.raises(OSError) as e:
            open(f, "w")
        assert e.value.errno in (errno.EROFS, errno.EACCES)
        with open(os.path.join(latest, "big.bin"), "rb") as fh:  # seek and read anywhere
            fh.seek(3_999_990)
            assert fh.read(20) == (src / "big.bin").read_bytes()[3_999_990:4_000_010]
        assert os.getxattr(f, STATE) == b"hot"
    with mounted(env, tmp_path / "mnt") as m:  # the same numbers after a remount
        assert os.stat(m / "files/s/latest/docs/a.txt").st_ino == ino


def bdi_read_ahead_kb(mountpoint: str) -> int:
    dev = os.stat(mountpoint).st_dev
    with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb") as f:
        return int(f.read())


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a FUSE mount's readahead needs root")
def test_first_open_gets_1_mib_readahead(tmp_path):
    """The kernel asks for 1 MiB per request from the very first file opened (128 KiB by
    default): the mount raises the readahead when the first file is opened, which is
    after FUSE_INIT and before the kernel sets up that file's readahead."""
    src = tmp_path / "src"
    write(src / "f.bin", os.urandom(3_000_000))
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "s"], env)
    with mounted(env, tmp_path / "mnt café\tx") as m:  # escaped (\011) and raw UTF-8 in mountinfo
        assert bdi_read_ahead_kb(m.path) == 128  # nothing opened yet
        with open(m / "files/s/latest/f.bin", "rb") as f:  # at once after mounting
            assert bdi_read_ahead_kb(m.path) == 1024
            assert f.read() == (src / "f.bin").read_bytes()


def _backup_cold(tmp_path, env, n_files=2, storage_class="DEEP_ARCHIVE"):
    src = tmp_path / "src"
    for i in range(n_files):
        write(src / f"photo{i}.jpg", os.urandom(200_000 + i))
    run(["init", "--data-storage-class", storage_class], env)
    run(["backup", "dir", str(src), "--name", "photos"], env)
    return src


def test_cold_fail_mode_local(tmp_path):
    env = vault_env(str(tmp_path / "vault"), COLDVAULT_LOCAL_RESTORE_DELAY="2")
    src = _backup_cold(tmp_path, env)
    with mounted(env, tmp_path / "mnt") as m:
        f = m / "files/photos/latest/photo0.jpg"
        assert os.stat(f).st_size == 200_000  # stat and listing never touch cold data
        assert os.getxattr(f, STATE) == b"cold"
        with pytest.raises(OSError) as e:
            read(f)
        assert e.value.errno == errno.EAGAIN
        assert "requested restore of 1 pack" in m.log() and "tier Bulk" in m.log()
        assert os.getxattr(f, STATE) == b"restoring"
        deadline = time.monotonic() + 20
        while os.getxattr(f, STATE) != b"restored":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert read(f) == (src / "photo0.jpg").read_bytes()


def test_cold_wait_mode_blocks_until_restored(tmp_path):
    env = vault_env(str(tmp_path / "vault"), COLDVAULT_LOCAL_RESTORE_DELAY="2", COLDVAULT_RESTORE_POLL="0.2")
    src = _backup_cold(tmp_path, env)
    with mounted(env, tmp_path / "mnt", "--cold", "wait", "--restore-tier", "Standard") as m:
        started = time.monotonic()
        assert read(m / "files/photos/latest/photo1.jpg") == (src / "photo1.jpg").read_bytes()
        assert time.monotonic() - started >= 1.5
        assert "tier Standard" in m.log()


def test_cold_wait_is_interruptible(tmp_path):
    env = vault_env(str(tmp_path / "vault"), COLDVAULT_LOCAL_RESTORE_DELAY="3600", COLDVAULT_RESTORE_POLL="0.2")
    _backup_cold(tmp_path, env)
    with mounted(env, tmp_path / "mnt", "--cold", "wait") as m:
        cat = subprocess.Popen(["cat", m / "files/photos/latest/photo0.jpg"], stdout=subprocess.DEVNULL)
        time.sleep(1.5)
        assert cat.poll() is None  # still waiting for the restore
        cat.send_signal(signal.SIGINT)
        cat.wait(timeout=10)
        deadline = time.monotonic() + 10
        while "the reader was interrupted" not in m.log():  # noticed within a poll interval
            assert time.monotonic() < deadline, m.log()
            time.sleep(0.1)
        # The mount keeps serving.
        assert os.listdir(m / "files/photos/latest") == ["photo0.jpg", "photo1.jpg"]


def test_cold_on_s3_deep_archive(tmp_path, moto_endpoint):
    repo = f"s3://cv-{uuid.uuid4().hex[:12]}/photos"
    env = vault_env(repo, COLDVAULT_S3_ENDPOINT=moto_endpoint)
    src = _backup_cold(tmp_path, env)
    with mounted(env, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        f = m / "files/photos/latest/photo0.jpg"
        assert os.getxattr(f, STATE) == b"cold"
        # moto finishes a restore the moment it is asked for, so the kernel's retry of the
        # page read may already succeed; either way the first read asked for the restore.
        try:
            read(f)
        except OSError as e:
            assert e.errno == errno.EAGAIN
        assert "DEEP_ARCHIVE: requested restore of 1 pack(s)" in m.log()
        assert os.getxattr(f, STATE) == b"restored"
        assert read(f) == (src / "photo0.jpg").read_bytes()
        # the stored blob went to the on-disk cache
        assert any(files for _, _, files in os.walk(tmp_path / "cache"))


def test_cold_wait_on_s3_glacier(tmp_path, moto_endpoint):
    """--cold wait against a real S3 endpoint (moto over HTTP), GLACIER class: the read that
    meets archived data requests the restore at the chosen tier and returns the bytes."""
    repo = f"s3://cv-{uuid.uuid4().hex[:12]}/photos"
    env = vault_env(repo, COLDVAULT_S3_ENDPOINT=moto_endpoint, COLDVAULT_RESTORE_POLL="0.2")
    src = _backup_cold(tmp_path, env, storage_class="GLACIER")
    with mounted(env, tmp_path / "mnt", "--cold", "wait", "--restore-tier", "Expedited") as m:
        f = m / "files/photos/latest/photo1.jpg"
        assert os.getxattr(f, STATE) == b"cold"
        assert read(f) == (src / "photo1.jpg").read_bytes()  # no EAGAIN in wait mode
        assert "GLACIER: requested restore of 1 pack(s), " in m.log() and "tier Expedited" in m.log()
        assert os.getxattr(f, STATE) == b"restored"


def test_corrupt_chunk_gives_eio_for_that_file_only(tmp_path):
    src = tmp_path / "src"
    write(src / "damaged.bin", os.urandom(3_000_000))
    write(src / "fine.bin", os.urandom(3_000_000))
    repo = str(tmp_path / "vault")
    env = vault_env(repo, password=None)
    run(["init", "--no-encryption"], env)
    run(["backup", "dir", str(src), "--name", "s"], env)
    # Find the first chunk of damaged.bin through the vault's own index, flip a byte in it.
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault
    vault = Vault.open(LocalStore(repo), None)
    vault.load_index()
    rec = vault.find_snapshot("latest")
    entry = vault.load_tree(rec.tree).find(b"damaged.bin")
    loc = vault.locate(entry.chunks[0])
    with open(os.path.join(repo, loc.object_name), "r+b") as f:
        f.seek(loc.offset + 50)
        b = f.read(1)
        f.seek(loc.offset + 50)
        f.write(bytes([b[0] ^ 0xFF]))
    with mounted(env, tmp_path / "mnt") as m:
        with pytest.raises(OSError) as e:
            read(m / "files/s/latest/damaged.bin")
        assert e.value.errno == errno.EIO
        assert read(m / "files/s/latest/fine.bin") == (src / "fine.bin").read_bytes()
        assert sorted(os.listdir(m / "files/s/latest")) == ["damaged.bin", "fine.bin"]
        log = m.log()
        assert "damaged.bin" in log and loc.pack in log
        assert "Traceback" not in log


def test_hostile_names_never_escape(tmp_path):
    """A tree node written by an attacker: bad names are dropped, the rest lists fine."""
    from coldvault.index import blob as blobfmt
    from coldvault.index.ids import blob_id
    from coldvault.index.pack import PackWriter
    from coldvault.index.snapshot import SnapshotRecord
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    vault = Vault.open(LocalStore(repo), lambda: b"test-password")
    vault.load_index()

    def file_entry(name):
        return {"name": name, "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime": 0, "ctime": 0,
                "size": 0, "ino": 1, "nlink": 1, "chunks": []}

    names = [b"good", b"..", b".", b"", b"../../etc/passwd", b"a/b", b"x\x00y", b"z" * 300, b"good", b"also-good"]
    sub = msgpack.packb({"version": 1, "entries": [file_entry(b"inner")]}, use_bin_type=True)
    sub_id = blob_id(sub, vault.sealer.id_key)
    entries = [file_entry(n) for n in names]
    entries.append({"name": b"..", "type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime": 0, "ctime": 0,
                    "size": 0, "ino": 2, "nlink": 2, "tree": sub_id})
    root = msgpack.packb({"version": 1, "entries": entries}, use_bin_type=True)
    root_id = blob_id(root, vault.sealer.id_key)
    w = PackWriter("tree", vault.sealer)
    for data, bid in ((sub, sub_id), (root, root_id)):
        w.add(bid, blobfmt.TREE, blobfmt.encode(data, bid, vault.sealer, None), len(data))
    pack = w.finish()
    vault.put_pack(pack)
    vault.save_index([pack])
    vault.save_snapshot(SnapshotRecord(kind="tree", source="evil", time=1_600_000_000_000_000_000, tree=root_id))
    with mounted(env, tmp_path / "mnt") as m:
        top = m / "files/evil/latest"
        assert os.listdir(top) == ["also-good", "good"]
        assert os.path.getsize(os.path.join(top, "good")) == 0
        assert "dropped an entry" in m.log()
    assert run(["ls", "latest"], env).out.count("\n") == 2


def test_sigterm_unmounts(tmp_path):
    src = tmp_path / "src"
    write(src / "a", "a")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src)], env)
    with mounted(env, tmp_path / "mnt") as m:
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=10) == 0
        assert not os.path.ismount(m.path)


def test_background_mount(tmp_path):
    src = tmp_path / "src"
    write(src / "a", "in the background")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "bg"], env)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = run(["mount", str(mnt), "--log", str(tmp_path / "bg.log")], env, timeout=30)
        assert "mounted at" in r.out
        assert read(mnt / "files/bg/latest/a") == b"in the background"
        r = run(["mount", str(mnt)], env, check=False)
        assert r.code == 2 and "already a mount point" in r.err
    finally:
        unmount(str(mnt))
