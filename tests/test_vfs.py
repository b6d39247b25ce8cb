"""The mount's filesystem logic, driven without a mount.

The vaults are made by running `coldvault backup` as a user would; the tests then
open them in-process and call VirtualFS (and FuseOps' handlers, for the errno
table) directly under trio. The one test double is a store wrapper that holds
back the GET of one tree pack, to show that a slow fetch stalls no other listing.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyfuse3
import pytest
import trio

from cvtools import run, vault_env
from coldvault.mount import layout
from coldvault.mount.chunkcache import ChunkSource
from coldvault.mount.errors import DamagedFileError, NoAttributeError, NoEntryError, NotADirError
from coldvault.mount.fuse_ops import FuseOps, errno_for
from coldvault.mount.restore_manager import RestoreManager
from coldvault.mount.vfs import ROOT_INODE, STATE_XATTR, VirtualFS
from coldvault.store.local import LocalStore
from coldvault.vault.vault import Vault

PASSWORD = "test-password"
T1, T2, T3 = "2024-05-01T03:00:00Z", "2024-05-02T03:00:00Z", "2024-05-02T09:30:00Z"


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def repo(tmp_path):
    """photos: three snapshots over two days; docs: one. Returns (repo, photos source dir)."""
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    src = tmp_path / "photos"
    write(src / "a.jpg", os.urandom(300_000))
    write(src / "zeta.txt", b"z" * 10)
    run(["backup", "dir", str(src), "--name", "photos", "--time", T1], env)
    write(src / "sub" / "b.jpg", os.urandom(2_500_000))  # more than one chunk
    write(src / "sub" / "c.txt", b"hello\n" * 100)
    run(["backup", "dir", str(src), "--name", "photos", "--time", T2], env)
    write(src / "zeta.txt", b"changed")
    run(["backup", "dir", str(src), "--name", "photos", "--time", T3], env)
    docs = tmp_path / "docs"
    write(docs / "notes" / "todo.txt", b"todo\n")
    run(["backup", "dir", str(docs), "--name", "docs", "--time", T1], env)
    return str(tmp_path / "vault"), src


def open_vault(repo: str, store=None) -> Vault:
    vault = Vault.open(store or LocalStore(repo), lambda: PASSWORD.encode())
    vault.load_index()
    return vault


def make_fs(vault: Vault) -> VirtualFS:
    return VirtualFS(vault, ChunkSource(vault, None), RestoreManager(vault))


async def walk(fs: VirtualFS, path: str):
    node = fs.root
    for name in path.split("/") if path else ():
        node = await fs.lookup(node.ino, name.encode())
    return node


async def names(fs: VirtualFS, path: str) -> list[str]:
    _, listing = await fs.listdir((await walk(fs, path)).ino)
    return [spec.name.decode() for spec in listing]


async def read_all(fs: VirtualFS, path: str) -> bytes:
    node = await walk(fs, path)
    fh = await fs.open(node.ino)
    try:
        out, off = [], 0
        while True:
            piece = bytes(await fs.read(fh, off, 128 * 1024))
            if not piece:
                return b"".join(out)
            out.append(piece)
            off += len(piece)
    finally:
        fs.release(fh)


async def test_layout_names_and_sorted_listings(repo):
    fs = make_fs(open_vault(repo[0]))
    assert await names(fs, "") == ["files", "zfs"]
    assert await names(fs, "files") == ["docs", "photos"]
    assert await names(fs, "zfs") == []
    assert await names(fs, "files/photos") == ["changes", "dates", "latest", "snapshots"]
    assert await names(fs, "files/photos/snapshots") == [T1, T2, T3]
    assert await names(fs, "files/photos/dates") == ["2024-05-01", "2024-05-02"]
    assert await names(fs, "files/photos/changes") == ["2024-05-01", "2024-05-02"]
    latest = await walk(fs, "files/photos/latest")
    assert await fs.readlink(latest.ino) == f"snapshots/{T3}".encode()
    assert await names(fs, f"files/photos/snapshots/{T3}") == ["a.jpg", "sub", "zeta.txt"]
    assert await names(fs, f"files/photos/snapshots/{T2}/sub") == ["b.jpg", "c.txt"]
    # A date is its day's last snapshot; a day's changes hold what that day created or modified.
    assert await read_all(fs, "files/photos/dates/2024-05-02/zeta.txt") == b"changed"
    assert await names(fs, "files/photos/changes/2024-05-02") == ["sub", "zeta.txt"]
    assert await names(fs, "files/photos/changes/2024-05-01") == ["a.jpg", "zeta.txt"]
    # The layout parses those paths back to what they name (thaw's targets use this).
    lay = fs.layout
    place = lay.parse(["files", "photos", "latest", "sub", "b.jpg"])
    assert isinstance(place, layout.InSnapshot) and place.rec.time_str == T3 and place.path == ("sub", "b.jpg")
    place = lay.parse(["files", "photos", "changes", "2024-05-02", "sub"])
    assert isinstance(place, layout.InChanges) and place.day == "2024-05-02" and place.path == ("sub",)
    with pytest.raises(layout.NotInLayoutError, match="no source 'other'"):
        lay.parse(["files", "other", "latest"])
    with pytest.raises(layout.NotInLayoutError, match="no 1999 in snapshots/ of photos"):
        lay.parse(["files", "photos", "snapshots", "1999"])


async def test_inode_numbers_are_stable(repo):
    vault = open_vault(repo[0])
    fs = make_fs(vault)
    path = f"files/photos/snapshots/{T2}/sub/c.txt"
    first = await walk(fs, path)
    ino = first.ino
    assert (await walk(fs, path)).ino == ino
    # Forgotten by the kernel (everything it looked up under the snapshot), then looked
    # up again: the same number, though the records of the snapshot's directories were
    # dropped meanwhile (nothing under them was held).
    live = len(fs.inodes)
    snapshot = await walk(fs, f"files/photos/snapshots/{T2}")  # the snapshot: 3 lookups now
    sub = await walk(fs, f"files/photos/snapshots/{T2}/sub")  # sub: 3 lookups, c.txt: 2
    fs.forget(first.ino, 2)
    assert len(fs.inodes) == live - 1 and fs.inodes.record(sub.ino) is None  # nothing in sub is held
    assert (await walk(fs, f"files/photos/snapshots/{T2}/sub")).ino == sub.ino  # made again
    fs.forget(sub.ino, 4)
    assert len(fs.inodes) == live - 2
    assert fs.inodes.record(sub.ino) is None and fs.inodes.record(snapshot.ino) is None
    again = await walk(fs, path)
    assert again.ino == ino and again is not first
    # Another mount of the same vault: the same numbers, also for layout directories.
    other = make_fs(vault)
    for p in (path, "files/photos", f"files/photos/snapshots/{T1}"):
        assert (await walk(other, p)).ino == (await walk(fs, p)).ino
    assert (await fs.lookup(ROOT_INODE, b"files")).ino != ROOT_INODE


async def test_reading_files_equal_to_the_source(repo):
    repo_path, src = repo
    fs = make_fs(open_vault(repo_path))
    assert await read_all(fs, f"files/photos/snapshots/{T2}/sub/b.jpg") == (src / "sub" / "b.jpg").read_bytes()
    assert await read_all(fs, f"files/photos/snapshots/{T3}/a.jpg") == (src / "a.jpg").read_bytes()
    # A read across a chunk boundary, from the middle.
    node = await walk(fs, f"files/photos/snapshots/{T2}/sub/b.jpg")
    fh = await fs.open(node.ino)
    want = (src / "sub" / "b.jpg").read_bytes()
    assert bytes(await fs.read(fh, 1_000_000, 1_500_000)) == want[1_000_000:2_500_000]
    fs.release(fh)
    assert await fs.getxattr(node.ino, STATE_XATTR) == b"hot"
    assert await fs.listxattr(node.ino) == [STATE_XATTR]


async def test_errors_go_through_one_errno_table(repo, caplog):
    repo_path, _ = repo
    vault = open_vault(repo_path)
    fs = make_fs(vault)
    ops = FuseOps(fs)
    photos = await walk(fs, "files/photos")
    with pytest.raises(NoEntryError) as e:
        await fs.lookup(photos.ino, b"nope")
    assert errno_for(e.value) == errno.ENOENT
    with pytest.raises(pyfuse3.FUSEError) as fe:
        await ops.lookup(photos.ino, b"nope")
    assert fe.value.errno == errno.ENOENT
    a = await walk(fs, f"files/photos/snapshots/{T3}/a.jpg")
    with pytest.raises(NotADirError):
        await fs.lookup(a.ino, b"x")
    with pytest.raises(pyfuse3.FUSEError) as fe:
        await ops.lookup(a.ino, b"x")
    assert fe.value.errno == errno.ENOTDIR
    with pytest.raises(NoAttributeError):
        await fs.getxattr(a.ino, b"user.other")
    with pytest.raises(pyfuse3.FUSEError) as fe:
        await ops.getxattr(a.ino, b"user.other", None)
    assert fe.value.errno == errno.ENODATA

    # A missing data pack: EIO for that file, with one log line naming the file and the pack.
    b = await walk(fs, f"files/photos/snapshots/{T2}/sub/b.jpg")
    pack = vault.locate(b.info.chunks[0]).object_name
    os.remove(os.path.join(repo_path, pack))
    caplog.set_level(logging.ERROR, logger="coldvault.mount.vfs")
    fh = await fs.open(b.ino)
    for _ in range(2):
        with pytest.raises(DamagedFileError) as e:
            await fs.read(fh, 0, 4096)
        assert errno_for(e.value) == errno.EIO
    with pytest.raises(pyfuse3.FUSEError) as fe:
        await ops.read(fh, 0, 4096)
    assert fe.value.errno == errno.EIO
    lines = [r.getMessage() for r in caplog.records if r.name == "coldvault.mount.vfs"]
    assert lines == [f"/files/photos/snapshots/{T2}/sub/b.jpg: pack {pack} is missing from the vault"], lines
    # Other files are still read.
    assert await read_all(fs, f"files/photos/snapshots/{T3}/zeta.txt") == b"changed"


async def test_zfs_streams_and_restore_steps(tmp_path):
    from zfstools import pool, sh

    with pool(tmp_path) as (name, root):
        ds = f"{name}/photos"
        sh("zfs", "create", ds)
        env = vault_env(str(tmp_path / "vault"))
        run(["init"], env)
        write(Path(root) / "photos" / "a.bin", os.urandom(200_000))
        sh("zfs", "snapshot", f"{ds}@a")
        run(["backup", "zfs", f"{ds}@a"], env)
        write(Path(root) / "photos" / "b.bin", os.urandom(200_000))
        sh("zfs", "snapshot", f"{ds}@b")
        run(["backup", "zfs", f"{ds}@b"], env)
        full = sh("zfs", "send", f"{ds}@a")
        incr = sh("zfs", "send", "-i", f"{ds}@a", f"{ds}@b")

        fs = make_fs(open_vault(str(tmp_path / "vault")))
        assert await names(fs, "zfs") == [name]
        assert await names(fs, f"zfs/{name}") == ["photos"]
        d = f"zfs/{name}/photos"
        assert await names(fs, d) == ["@a.zfs", "@a..@b.zfs", "@a.restore", "@b.restore"]
        assert await names(fs, f"{d}/@b.restore") == ["0001-@a.zfs", "0002-@a..@b.zfs"]
        assert await names(fs, f"{d}/@a.restore") == ["0001-@a.zfs"]
        assert await read_all(fs, f"{d}/@a.zfs") == full
        assert await read_all(fs, f"{d}/@b.restore/0002-@a..@b.zfs") == incr
        place = fs.layout.parse(["zfs", name, "photos", "@b.restore", "0001-@a.zfs"])
        assert isinstance(place, layout.StreamFile) and place.stream.file_name == "@a.zfs"
        place = fs.layout.parse(["zfs", name, "photos", "@b.restore"])
        assert isinstance(place, layout.ChainDir) and [s.file_name for s in place.chain] == ["@a.zfs", "@a..@b.zfs"]


class HeldStore:
    """A store that holds back every GET of one object until released (a slow GET)."""

    def __init__(self, inner, held: str):
        self.inner = inner
        self.held = held
        self.started = threading.Event()
        self.release = threading.Event()
        self.gets: list[str] = []

    def get(self, name, start=0, length=None):
        self.gets.append(name)
        if name == self.held:
            self.started.set()
            self.release.wait()
        return self.inner.get(name, start, length)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


async def test_a_slow_tree_fetch_stalls_no_other_listing(repo):
    repo_path, _ = repo
    probe = open_vault(repo_path)
    recs = {(r.source, r.time_str): r for r in probe.snapshots()}
    photos_pack = probe.locate(recs["photos", T3].tree).object_name
    docs_pack = probe.locate(recs["docs", T1].tree).object_name
    assert photos_pack != docs_pack  # separate backups, separate tree packs

    store = HeldStore(LocalStore(repo_path), photos_pack)
    fs = make_fs(open_vault(repo_path, store))
    photos = await walk(fs, f"files/photos/snapshots/{T3}")
    docs = await walk(fs, f"files/docs/snapshots/{T1}")
    listed: dict[str, list] = {}
    docs_listed = trio.Event()

    async def list_photos(key):
        listed[key] = (await fs.listdir(photos.ino))[1]

    async def list_docs():
        listed["docs"] = (await fs.listdir(docs.ino))[1]
        docs_listed.set()

    async with trio.open_nursery() as nursery:
        try:
            nursery.start_soon(list_photos, "first")
            nursery.start_soon(list_photos, "second")  # the same pack: shares the held fetch
            assert await trio.to_thread.run_sync(store.started.wait, 60)
            # The photos pack's GET is held: another pack's listing goes ahead meanwhile
            # (the deadline only turns a stall into a failure instead of a hang).
            nursery.start_soon(list_docs)
            with trio.move_on_after(60):
                await docs_listed.wait()
            during = sorted(listed)
        finally:
            store.release.set()
    assert during == ["docs"], "a listing of another tree pack waited for the held GET"
    assert [e.name for e in listed["docs"]] == [b"notes"]
    assert [e.name for e in listed["first"]] == [b"a.jpg", b"sub", b"zeta.txt"]
    assert [e.name for e in listed["second"]] == [b"a.jpg", b"sub", b"zeta.txt"]
    assert store.gets.count(photos_pack) == 1  # one fetch for both listings


def test_the_layout_is_pure():
    """layout.py is names in, names out: importing it loads no I/O layer, no trio, no FUSE."""
    code = "import sys, coldvault.mount.layout; print(' '.join(sys.modules))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split())
    bad = [m for m in loaded if m.split(".")[0] in ("trio", "pyfuse3", "boto3")
           or m.startswith(("coldvault.vault", "coldvault.store", "coldvault.restore", "coldvault.cli"))]
    assert bad == []
