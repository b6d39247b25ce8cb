"""Hostile and broken surroundings (issue 8): decompression bombs, file permissions, a damaged
mount cache, a full disk, a damaged config. Everything runs the real command, on real files,
FUSE mounts, moto S3 and tmpfs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading

import msgpack
import pytest
import zstandard

import mounttools
from cvtools import run, vault_env
from coldvault.index import blob as blobfmt
from coldvault.index import packindex
from coldvault.index.pack import PackWriter
from coldvault.store.local import LocalStore
from coldvault.vault.vault import Vault

PASSWORD = "test-password"
GiB = 1024 ** 3
# Every command of the bomb tests runs with at most 1 GiB of address space: a reader that
# believed the bomb would die of MemoryError (a traceback, exit 1) instead of passing.
LIMITED = ["prlimit", f"--as={GiB}"]
LIMITED_ENV = {"MALLOC_ARENA_MAX": "2"}  # thread arenas reserve address space, not memory
BOMB = 1_600_000_000  # what the hostile blob claims or produces


def assert_clean_error(r, code: int, *words: str) -> None:
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err, r.err
    lines = [ln for ln in r.err.splitlines() if ln.startswith("coldvault: error:")]
    assert len(lines) == 1, r.err
    for w in words:
        assert w in lines[0], (w, r.err)


# ---- item 5: decompression bombs -------------------------------------------------------------


def _zeros_frame(n: int, with_size: bool) -> bytes:
    """A zstd frame of `n` zero bytes, built a piece at a time (never holding `n` bytes)."""
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=with_size)
    cobj = cctx.compressobj(size=n if with_size else -1)
    piece = bytes(16 * 1024 * 1024)
    out = []
    for start in range(0, n, len(piece)):
        out.append(cobj.compress(piece[: min(len(piece), n - start)]))
    out.append(cobj.flush())
    return b"".join(out)


def _plant_bomb(repo: str, frame: bytes, raw_length: int) -> str:
    """Replace the only chunk of big.bin by a blob carrying `frame`, whose index entry says
    `raw_length`; written with coldvault's own encoders. Returns the new pack's name."""
    store = LocalStore(repo)
    v = Vault.open(store, lambda: PASSWORD.encode())
    idx = v.load_index()
    rec = v.find_snapshot("latest")
    bid = v.load_tree(rec.tree).find(b"big.bin").chunks[0]
    old = v.locate(bid)
    records, others = [], []
    for iid in sorted(idx.index_ids):
        doc = packindex.decode(store.get("index/" + iid), v.sealer, iid)
        records += [p for p in doc.packs if p.id != old.pack]
        others += [b for p in doc.packs if p.id == old.pack for b in p.blobs if b.id != bid]
        v.delete_index(iid)
    w = PackWriter("data", v.sealer)
    for b in others:  # the other chunks of that pack move along, untouched
        w.add(b.id, b.type, store.get(old.object_name, b.offset, b.length), b.raw_length)
    store.delete(old.object_name)
    flags = blobfmt.COMPRESSED | blobfmt.ENCRYPTED
    stored = bytes((flags,)) + v.sealer.seal(frame, bid + bytes((flags,)))
    w.add(bid, blobfmt.DATA, stored, raw_length)
    fin = w.finish()
    v.put_pack(fin)
    v.save_index([*records, fin])
    return fin.name


def test_zstd_decompress_never_goes_past_its_bound():
    """The format layer alone: a frame without a size is cut one byte past the bound (this
    frame would otherwise be decompressed whole), a frame claiming too much is refused unread.
    (The commands above prove the memory bound under a limit; this one runs in pytest itself,
    so its bomb stays small.)"""
    from coldvault.index import limits
    from coldvault.index.errors import FormatError

    with pytest.raises(FormatError, match="expands past 4194304"):
        limits.zstd_decompress(_zeros_frame(200_000_000, with_size=False), 4 * 1024 * 1024, "blob x")
    with pytest.raises(FormatError, match=f"claims {BOMB} bytes"):
        limits.zstd_decompress(_zeros_frame(BOMB, with_size=True), 4 * 1024 * 1024, "blob x")
    frame = _zeros_frame(3_000_000, with_size=False)
    assert limits.zstd_decompress(frame, 3_000_000, "blob x") == bytes(3_000_000)
    with pytest.raises(FormatError, match="expands past"):
        limits.zstd_decompress(frame, 2_999_999, "blob x")


@pytest.mark.parametrize("btype, raw_length, length, ok", [
    (blobfmt.DATA, blobfmt.MAX_DATA_BLOB, 100, True),
    (blobfmt.DATA, blobfmt.MAX_DATA_BLOB + 1, 100, False),
    (blobfmt.TREE, blobfmt.MAX_META_BLOB, 100, True),
    (blobfmt.CHUNK_LIST, blobfmt.MAX_META_BLOB + 1, 100, False),
    (blobfmt.DATA, 1000, 1000 + blobfmt.MAX_OVERHEAD, True),
    (blobfmt.DATA, 1000, 1001 + blobfmt.MAX_OVERHEAD, False),  # stored larger than it can be
])
def test_index_entries_are_bounded_by_their_type(btype, raw_length, length, ok):
    from coldvault.index.errors import FormatError
    from coldvault.index.pack import BlobEntry

    e = [b"\1" * 16, btype, 0, length, raw_length]
    if ok:
        assert BlobEntry.from_list(e, "index/x").raw_length == raw_length
    else:
        with pytest.raises(FormatError, match="index/x: blob 0101"):
            BlobEntry.from_list(e, "index/x")


@pytest.fixture
def bomb_vault(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(100_000))  # one chunk
    (src / "small.txt").write_text("still readable\n")
    repo = str(tmp_path / "vault")
    env = vault_env(repo, PASSWORD, **LIMITED_ENV)
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    return repo, env


def test_bomb_index_entry_claims_too_much(tmp_path, bomb_vault, monkeypatch):
    """An index entry with a huge raw_length (and a frame that really claims it) makes its
    index object damaged when the index is read (named, with the size it claims; readers go
    on without it, as with any damaged index object); nothing is allocated for it."""
    repo, env = bomb_vault
    _plant_bomb(repo, _zeros_frame(BOMB, with_size=True), BOMB)
    r = run(["restore", "dir", "latest", "--source", "src", "--target", str(tmp_path / "out")],
            env, check=False, prefix=LIMITED)
    assert_clean_error(r, 13, "index/")
    assert str(BOMB) in r.err  # the warning that left the index object out says why
    r = run(["check"], env, check=False, prefix=LIMITED)
    assert r.code == 13 and "Traceback" not in r.err and "index/" in r.out and str(BOMB) in r.out, (r.out, r.err)

    monkeypatch.setattr(mounttools, "COLDVAULT", [*LIMITED, *mounttools.COLDVAULT])
    with mounttools.mounted(env, tmp_path / "mnt") as m:
        with pytest.raises(OSError) as exc:
            os.listdir(m / "files/src/latest")
        assert exc.value.errno == 5  # EIO: its tree node was indexed only by the damaged object
        assert m.proc.poll() is None
    log = m.log()
    assert "Traceback" not in log and "index/" in log and str(BOMB) in log, log


def test_bomb_frame_without_size_is_cut_at_the_bound(tmp_path, bomb_vault, monkeypatch):
    """A frame that does not say its size and expands to 1.6 GB, behind an honest-looking
    index entry: decompression stops at raw_length; restore and check name the pack, a mount
    answers EIO for that file and goes on serving the rest."""
    repo, env = bomb_vault
    name = _plant_bomb(repo, _zeros_frame(BOMB, with_size=False), 100_000)
    r = run(["restore", "dir", "latest", "--source", "src", "--target", str(tmp_path / "out")],
            env, check=False, prefix=LIMITED)
    assert_clean_error(r, 13, name, "100000")
    r = run(["check", "--read-data"], env, check=False, prefix=LIMITED)
    assert r.code == 13 and "Traceback" not in r.err and name in r.out + r.err, (r.out, r.err)

    monkeypatch.setattr(mounttools, "COLDVAULT", [*LIMITED, *mounttools.COLDVAULT])
    with mounttools.mounted(env, tmp_path / "mnt") as m:
        snap = m / "files/src/latest"
        with pytest.raises(OSError) as exc:
            with open(os.path.join(snap, "big.bin"), "rb") as f:
                f.read()
        assert exc.value.errno == 5  # EIO
        with open(os.path.join(snap, "small.txt")) as f:
            assert f.read() == "still readable\n"
        assert m.proc.poll() is None
        log = m.log()
        assert name in log and "Traceback" not in log and "MemoryError" not in log, log


# ---- item 8: nothing readable by other local users ----------------------------------------


UMASK_022 = ["sh", "-c", 'umask 022 && exec "$@"', "sh"]


def _cold_vault(tmp_path, env, size=3_000_000) -> bytes:
    """A DEEP_ARCHIVE vault with src/big.bin (several chunks), thawed so that it is readable."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(size)
    (src / "big.bin").write_bytes(data)
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env, prefix=UMASK_022)
    run(["backup", "dir", str(src), "--name", "src"], env, prefix=UMASK_022)
    run(["thaw", "latest", "--source", "src"], env, prefix=UMASK_022)
    return data


def _modes(root) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [".", *filenames] if dirpath == str(root) else filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.lstat(p).st_mode)
        for n in dirnames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root) + "/"] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def test_vault_and_caches_are_private_whatever_the_umask(tmp_path):
    cache = tmp_path / "cache"
    repo = tmp_path / "vault"
    env = vault_env(str(repo), PASSWORD, XDG_CACHE_HOME=str(cache))
    data = _cold_vault(tmp_path, env)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # A background mount (its log goes to the cache directory), with its chunk cache there too.
    run(["mount", str(mnt)], env, prefix=UMASK_022, timeout=60)
    try:
        with open(mnt / "files/src/latest/big.bin", "rb") as f:
            assert f.read() == data
    finally:
        mounttools.unmount(str(mnt))
    modes = {**{f"vault/{k}": v for k, v in _modes(repo).items()},
             **{f"cache/{k}": v for k, v in _modes(cache).items()}}
    names = set(modes)
    assert "vault/config" in names and "vault/locks/" in names
    vid = next(n for n in names if n.startswith("cache/coldvault/") and n.count("/") == 3 and n.endswith("/"))
    for want in ("restores.json", "restores.json.lock", "mount.log", "chunks/"):
        assert vid + want in names, (want, sorted(names))
    assert any(n.startswith(vid + "chunks/") and not n.endswith("/") for n in names), sorted(names)
    wrong = {n: oct(m) for n, m in modes.items() if m != (0o700 if n.endswith("/") or n.endswith("/.") else 0o600)}
    assert not wrong, wrong


# ---- item 9: the mount's disk cache --------------------------------------------------------


def _cache_files(cache) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(cache):
        for f in files:
            if not f.startswith(".tmp"):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    out[f] = fh.read()
    return out


def test_damaged_cache_entry_is_fetched_again(tmp_path):
    env = vault_env(str(tmp_path / "vault"), PASSWORD, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    data = _cold_vault(tmp_path, env, size=6_000_000)  # more than the largest chunk: 2 chunks at least
    cache = tmp_path / "chunk-cache"
    with mounttools.mounted(env, tmp_path / "mnt1", "--cache-dir", str(cache)) as m:
        with open(m / "files/src/latest/big.bin", "rb") as f:
            assert f.read() == data
    good = _cache_files(cache)
    assert len(good) >= 2  # several chunks, each cached
    for dirpath, _, files in os.walk(cache):
        for fn in files:
            p = os.path.join(dirpath, fn)
            b = bytearray(good[fn])
            b[len(b) // 2] ^= 0x40  # one flipped bit
            with open(p, "wb") as fh:
                fh.write(b)
    with mounttools.mounted(env, tmp_path / "mnt2", "--cache-dir", str(cache)) as m:
        with open(m / "files/src/latest/big.bin", "rb") as f:
            assert f.read() == data
        log = m.log()
    assert "dropping a damaged copy" in log and "Traceback" not in log, log
    assert _cache_files(cache) == good  # every entry replaced by a good copy


def test_two_mounts_share_one_cache_dir(tmp_path):
    env = vault_env(str(tmp_path / "vault"), PASSWORD, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    data = _cold_vault(tmp_path, env, size=12_000_000)
    cache = tmp_path / "chunk-cache"
    with mounttools.mounted(env, tmp_path / "mnt1", "--cache-dir", str(cache)) as a:
        # What the first mount leaves in the directory while it writes a chunk, and the leftover
        # of a mount that died mid-write (no such process).
        in_flight = cache / f".tmp-{a.proc.pid}-140000000000-{'ab' * 16}"
        in_flight.write_bytes(b"being written")
        dead = cache / f".tmp-{2**22 + 17}-140000000000-{'cd' * 16}"
        dead.write_bytes(b"abandoned")
        with mounttools.mounted(env, tmp_path / "mnt2", "--cache-dir", str(cache)) as b:
            assert in_flight.exists(), "the second mount deleted a running mount's temporary file"
            assert not dead.exists()
            results = {}

            def read(m):
                with open(m / "files/src/latest/big.bin", "rb") as f:
                    results[m.path] = f.read()

            threads = [threading.Thread(target=read, args=(m,)) for m in (a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert results.get(a.path) == data and results.get(b.path) == data
            for m in (a, b):
                assert "Traceback" not in m.log() and "EIO" not in m.log(), m.log()
    assert [f for f in os.listdir(cache) if f.startswith(".tmp")] == [in_flight.name]
    assert len(_cache_files(cache)) >= 5


# ---- item 12a: a full disk --------------------------------------------------------------------


def test_full_disk_is_reported_as_a_full_disk(tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        repo = str(disk / "vault")
        env = vault_env(repo, PASSWORD)
        first = tmp_path / "first"
        first.mkdir()
        (first / "notes.txt").write_text("the first snapshot fits\n" * 100)
        run(["init"], env)
        run(["backup", "dir", str(first), "--name", "src"], env)
        big = tmp_path / "big"
        big.mkdir()
        (big / "video.bin").write_bytes(os.urandom(5_000_000))
        r = run(["backup", "dir", str(big), "--name", "src"], env, check=False)
        assert_clean_error(r, 18, "no space left", repo)
        # Nothing committed; the earlier snapshot restores as it was.
        snaps = run(["snapshots", "--json"], env).json()
        assert len(snaps) == 1, snaps
        out = tmp_path / "out"
        run(["restore", "dir", "latest", "--source", "src", "--target", str(out)], env)
        assert (out / "notes.txt").read_text() == "the first snapshot fits\n" * 100
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ---- item 12c: a damaged config is damage, not a wrong password -----------------------------


def _flip_at(raw: bytes, pos: int) -> bytes:
    b = bytearray(raw)
    b[pos] ^= 0x01
    return bytes(b)


def _config_parts(raw: bytes) -> dict[str, int]:
    """Where to flip one byte of each part of a config written by this coldvault."""
    doc = msgpack.unpackb(raw[4:])
    key_at = raw.index(b"\xa3key")
    parts = {name: raw.index(doc[name]) + len(doc[name]) // 2 for name in ("vault_id", "settings", "checksum")
             if name in doc}
    parts.update({name: raw.index(doc["key"][name]) + len(doc["key"][name]) // 2 for name in ("salt", "wrapped")})
    parts["created"] = raw.index(b"\xa7created") + 8 + 5  # inside its 8-byte integer
    parts["scrypt r"] = raw.index(b"\xa1r", key_at) + 2  # 8 -> 9: valid, but not the vault's
    parts["scrypt p"] = raw.index(b"\xa1p", key_at) + 2  # 1 -> 0: out of range
    return parts


def test_damaged_config_is_damage_not_a_wrong_password(tmp_path):
    repo = str(tmp_path / "vault")
    env = vault_env(repo, PASSWORD)
    run(["init"], env)
    path = os.path.join(repo, "config")
    with open(path, "rb") as f:
        raw = f.read()
    r = run(["snapshots"], {**env, "COLDVAULT_PASSWORD": "not the password"}, check=False)
    assert_clean_error(r, 11, "wrong password")
    for part, pos in _config_parts(raw).items():
        with open(path, "wb") as f:
            f.write(_flip_at(raw, pos))
        r = run(["snapshots"], env, check=False)
        assert r.code == 13, (part, r.code, r.err)
        assert_clean_error(r, 13, "config", repo)
    with open(path, "wb") as f:
        f.write(raw)
    run(["snapshots"], env)


def test_config_without_checksum_reads_as_before(tmp_path):
    """A version 1 config written before the checksum (the golden vault): it opens, and a
    flipped byte of its salt still reads as a wrong password, as it always did."""
    golden = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "golden", "encrypted")
    repo = str(tmp_path / "vault")
    shutil.copytree(golden, repo)
    env = vault_env(repo, "golden")
    assert len(run(["snapshots", "--json"], env).json()) == 2
    path = os.path.join(repo, "config")
    with open(path, "rb") as f:
        raw = f.read()
    assert b"checksum" not in raw
    salt = msgpack.unpackb(raw[4:])["key"]["salt"]
    with open(path, "wb") as f:
        f.write(_flip_at(raw, raw.index(salt) + 5))
    r = run(["snapshots"], env, check=False)
    assert_clean_error(r, 11, "wrong password")
