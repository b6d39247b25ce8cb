"""The golden sample vaults (tests/fixtures/golden/) still read exactly as they were written.

The version 1 vaults were written once by coldvault 0.1.0 and committed; the version 2
ones (index objects of format version 2, golden/v2/, their values in expected.json)
were written when that version came in; see tests/fixtures/golden/README.md. Every value asserted here is hard-coded:
if one of these tests fails, a change made existing vaults read differently.
That is a format change: fix the code, or make it deliberate (docs/format.md,
"Changes"), never regenerate the fixtures to make the test pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys

import pytest
import xxhash

from coldvault.errors import BadPasswordError
from coldvault.index import FORMAT_VERSION
from coldvault.index import blob as blobfmt
from coldvault.index import config as configfmt
from coldvault.index import envelope, pack, packindex, snapshot, tree
from coldvault.index.crypto import Sealer
from coldvault.restore.dirrestore import DirRestore
from coldvault.store.local import LocalStore
from coldvault.vault.paths import resolve
from coldvault.vault.vault import Vault

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "fixtures", "golden")
FORMAT_MD = os.path.join(HERE, "..", "docs", "format.md")
PASSWORD = b"golden"
SEC = 1_000_000_000
CAFE = b"caf\xe9.txt"  # latin-1, not UTF-8

# ---- what both vaults hold -------------------------------------------------------------

HELLO_1 = b"Hello, coldvault!\n"
HELLO_2 = b"Hello again, coldvault! Second snapshot.\n"
RUN_SH = b"#!/bin/sh\necho golden\n"
CAFE_DATA = b"latin-1 name\n"
ADDED = b"added before snapshot 2\n"
NOTES_1 = (17286, "205b7a3294611d4c399fd355e25415fc85813e7bce90ad7d78f8faa37c9ddbf3",
           b"0150 pack chunk cold restore photo snapshot scrypt length trailer msgpack msgpack")
NOTES_2 = (17256, "72005a85b2afc1558a585e3441c24767372d35e0c9465e1d002aa2ca0b016ab0",
           b"0150 this line was edited between the two snapshots")
NOTES_FIRST_LINE = b"0000 blob msgpack pool zstd pool trailer zstd head"

T1 = 1700000000 * SEC
T2 = 1704200000 * SEC

# path -> (type, mode, uid, gid, mtime, size, content | notes tuple | symlink target | None)
TREE_1 = {
    b"bin": ("dir", 0o755, 0, 0, T1 + 7 * SEC, 0, None),
    b"bin/run.sh": ("file", 0o755, 0, 0, T1 + 3 * SEC, 22, RUN_SH),
    CAFE: ("file", 0o600, 1000, 100, T1 + 1 * SEC, 13, CAFE_DATA),
    b"docs": ("dir", 0o750, 0, 0, T1 + 8 * SEC, 0, None),
    b"docs/notes-copy.md": ("file", 0o640, 1000, 1000, T1 + 5 * SEC, 17286, NOTES_1),
    b"docs/notes.md": ("file", 0o644, 1000, 1000, T1 + 4 * SEC, 17286, NOTES_1),
    b"empty": ("file", 0o644, 1000, 1000, T1 + 2 * SEC, 0, b""),
    b"hello.txt": ("file", 0o644, 1000, 1000, T1, 18, HELLO_1),
    b"link": ("symlink", 0o777, 0, 0, T1 + 6 * SEC, 9, b"hello.txt"),
}
TREE_2 = {
    b"bin": TREE_1[b"bin"],
    b"bin/run.sh": TREE_1[b"bin/run.sh"],
    CAFE: TREE_1[CAFE],
    b"docs": ("dir", 0o750, 0, 0, T2 + 3 * SEC, 0, None),
    b"docs/added.txt": ("file", 0o644, 1000, 1000, T2 + 2 * SEC, 24, ADDED),
    b"docs/notes.md": ("file", 0o644, 1000, 1000, T2 + 1 * SEC, 17256, NOTES_2),
    b"empty": TREE_1[b"empty"],
    b"hello.txt": ("file", 0o644, 1000, 1000, T2, 41, HELLO_2),
    b"link": TREE_1[b"link"],
}

SUMMARY_1 = {"files": 6, "dirs": 3, "symlinks": 1, "unchanged_files": 0, "files_read": 6, "bytes_total": 34625,
             "errors": 0, "bytes_read": 34625, "bytes_new": 17339}
SUMMARY_2 = {"files": 6, "dirs": 3, "symlinks": 1, "unchanged_files": 3, "files_read": 3, "bytes_total": 17356,
             "errors": 0, "bytes_read": 17321}
SUMMARY_KEYS = {"files", "dirs", "symlinks", "unchanged_files", "files_read", "bytes_total", "errors", "bytes_read",
                "bytes_new", "bytes_stored", "chunks_new", "packs", "bytes_uploaded", "duration"}

# ---- what differs between the two vaults ---------------------------------------------------

EXPECTED = {
    "encrypted": {
        "password": PASSWORD,
        "vault_id": "b81cad25c708c6a5499fc2392559293b",
        "created": 1795319361812241104,
        "chunker_seed": 558492317811763709,
        "snapshots": ["e45d5a398c3d2d6aa170bac14b6c1c0d", "e214736691c239f78d6b4ed52eb8f2cf"],
        "roots": ["5454157a785a875d9bf25a0ebf79d9ac", "10a00c1d267141b5761047e81e34d2da"],
        "bin_tree": "ea99a0a63b153cb17aa06f9a778bdf62",
        "summaries": [
            {"bytes_stored": 5068, "chunks_new": 7, "packs": 3, "bytes_uploaded": 6362},
            {"bytes_new": 4324, "bytes_stored": 1366, "chunks_new": 3, "packs": 2, "bytes_uploaded": 2326},
        ],
        "notes_chunks": [4, 4],
        "notes_shared": 3,
        "blobs": 15,
        "packs": {"data": 3, "tree": 2},
        # the index written by the first backup run (its 3 checkpoints were deleted)
        "index": ("89aa5b11a099d27a6cc3c004bed225f6", [
            ("1189de66e3c910a7297fc8c777f2befd", "data", 3012, [0, 0, 0, 0]),
            ("a58606cfa6b51ce22225ed297712f0a4", "data", 2359, [0, 0, 0]),
            ("e5245ec6d27cb8b27c01a2da8d48df31", "tree", 991, [1, 1, 1]),
        ], 3),
        "other_index": "f469cba94030a07a944585be80d95e6f",
    },
    "unencrypted": {
        "password": None,
        "vault_id": "439b098c9d976f62fd2b8aabdc6ca883",
        "created": 1795319362030680822,
        "chunker_seed": 0,
        "snapshots": ["767bd7f9e502319012a44f44776cbccf", "338693aef13b9c5fa76dba101adbcb65"],
        "roots": ["fbebe189bac3e47c58d4bc5b9694fdc6", "9faf17d2932f05c36fd2a77b1754764e"],
        "bin_tree": "a5e3c745c498aa7af42e634cf5c2d495",
        "summaries": [
            {"bytes_stored": 4980, "chunks_new": 8, "packs": 4, "bytes_uploaded": 6184},
            {"bytes_new": 8683, "bytes_stored": 2337, "chunks_new": 3, "packs": 2, "bytes_uploaded": 3203},
        ],
        "notes_chunks": [5, 5],
        "notes_shared": 4,
        "blobs": 16,
        "packs": {"data": 4, "tree": 2},
        "index": ("7dc23ba5a389cb4eaaa8f1073efb5554", [
            ("9e81f4c54e6fb5f02bdf382a295add05", "data", 2515, [0, 0, 0, 0, 0, 0]),
            ("ad1b931d017eb334e9d328653af8a3e2", "data", 461, [0]),
            ("fd34b99107d428fe1815a0a0b5db5dd2", "data", 2311, [0]),
            ("79d622ee4d08c8675e3dbd51cb6cc001", "tree", 897, [1, 1, 1]),
        ], 4),
        "other_index": "3dc43c579f73e45d85dab0957d027145",
    },
}
with open(os.path.join(GOLDEN, "v2", "expected.json"), encoding="utf-8") as _f:
    for _name, _exp in json.load(_f).items():
        _exp["password"] = _exp["password"].encode() if _exp["password"] else None
        _exp["index"] = (_exp["index"][0], [tuple(p) for p in _exp["index"][1]], _exp["index"][2])
        EXPECTED["v2/" + _name] = _exp
KINDS = sorted(EXPECTED)  # encrypted, unencrypted (version 1), v2/encrypted, v2/unencrypted
INDEX_VERSION = {k: 2 if k.startswith("v2/") else 1 for k in KINDS}


@pytest.fixture(params=KINDS)
def golden(request, tmp_path):
    """(kind, path of a private copy of that golden vault, expected values)."""
    path = str(tmp_path / "vault")
    shutil.copytree(os.path.join(GOLDEN, request.param), path)
    return request.param, path, EXPECTED[request.param]


def open_vault(path: str, exp: dict, load_index: bool = True) -> Vault:
    pw = exp["password"]
    vault = Vault.open(LocalStore(path), (lambda: pw) if pw is not None else None)
    if load_index:
        vault.load_index()
    return vault


def read_file(vault: Vault, e: tree.Entry) -> bytes:
    return b"".join(vault.read_blob(c) for c in e.chunks)


def listing(vault: Vault, root: bytes) -> dict[bytes, tree.Entry]:
    out = {}

    def walk(node_id, rel: bytes):
        for e in vault.load_tree(node_id).entries:
            p = rel + b"/" + e.name if rel else e.name
            out[p] = e
            if e.type == tree.DIR:
                walk(e.tree, p)

    walk(root, b"")
    return out


def check_content(data: bytes, expected) -> None:
    if isinstance(expected, tuple):  # notes.md: size, sha256, line 150
        size, sha, line150 = expected
        assert len(data) == size
        assert hashlib.sha256(data).hexdigest() == sha
        lines = data.split(b"\n")
        assert lines[0].startswith(NOTES_FIRST_LINE) and lines[150] == line150 and len(lines) == 301
    else:
        assert data == expected


# ---- config --------------------------------------------------------------------------------


def test_config_is_version_1(golden):
    kind, path, exp = golden
    with open(os.path.join(path, "config"), "rb") as f:
        raw = f.read()
    assert raw[:4] == b"CV\x01\x00"  # envelope v1, never compressed, never encrypted
    cfg = configfmt.decode(raw)
    assert FORMAT_VERSION == 1
    assert envelope.open_(raw, "config", Sealer(None), "config")["version"] == 1
    assert cfg.features == []
    assert cfg.vault_id.hex() == exp["vault_id"]
    assert cfg.created == exp["created"]
    assert cfg.encrypted == (exp["password"] is not None)
    if cfg.encrypted:
        k = cfg.key
        assert (k["kdf"], k["n"], k["r"], k["p"]) == ("scrypt", 2**15, 8, 1)
        assert len(k["salt"]) == 32
        assert len(k["wrapped"]) == 12 + 16 + 84  # nonce, tag, msgpack {"enc_key": bin32, "id_key": bin32}
        assert cfg.settings_blob[:4] == b"CV\x01\x02"  # settings: encrypted, not compressed
    else:
        assert cfg.key is None
        assert cfg.settings_blob[:4] == b"CV\x01\x00"

    vault = open_vault(path, exp, load_index=False)
    assert vault.settings == configfmt.Settings(
        chunker_min=1024, chunker_avg=4096, chunker_max=16384, chunker_seed=exp["chunker_seed"],
        compression_level=3, data_class="STANDARD", tree_class="STANDARD", index_class="STANDARD",
        snapshot_class="STANDARD", data_pack_size=2048, tree_pack_size=65536,
    )


def test_password(tmp_path):
    path = str(tmp_path / "vault")
    shutil.copytree(os.path.join(GOLDEN, "encrypted"), path)
    with pytest.raises(BadPasswordError):
        Vault.open(LocalStore(path), lambda: b"not golden")
    with pytest.raises(BadPasswordError):
        Vault.open(LocalStore(path), None)
    assert Vault.open(LocalStore(path), lambda: PASSWORD).keys is not None
    # an unencrypted vault never asks
    path2 = str(tmp_path / "plain")
    shutil.copytree(os.path.join(GOLDEN, "unencrypted"), path2)

    def ask():
        raise AssertionError("asked for a password")

    assert Vault.open(LocalStore(path2), ask).keys is None


# ---- object names, content ids, indexes, packs ------------------------------------------------


def all_objects(path: str) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(path):
        for fn in files:
            out.append(os.path.relpath(os.path.join(dirpath, fn), path).replace(os.sep, "/"))
    return sorted(out)


def test_object_names_and_content_ids(golden):
    kind, path, exp = golden
    names = all_objects(path)
    index_ids = sorted([exp["index"][0], exp["other_index"]])
    packs = [n for n in names if n.startswith(("data/", "trees/"))]
    assert names == sorted(
        ["config"] + [f"index/{i}" for i in index_ids] + [f"snapshots/{s}" for s in exp["snapshots"]] + packs
    )
    assert sum(n.startswith("data/") for n in packs) == exp["packs"]["data"]
    assert sum(n.startswith("trees/") for n in packs) == exp["packs"]["tree"]
    for n in names:
        if n == "config":
            continue
        with open(os.path.join(path, n), "rb") as f:
            data = f.read()
        prefix, *middle, oid = n.split("/")
        assert re.fullmatch(r"[0-9a-f]{32}", oid)
        assert xxhash.xxh3_128_hexdigest(data) == oid, n  # every name is the content id of its bytes
        if prefix in ("data", "trees"):
            assert middle == [oid[:2]]
            assert data.endswith(b"CVPACK1\0")


def test_known_index_object(golden):
    kind, path, exp = golden
    iid, expected_packs, n_checkpoints = exp["index"]
    with open(os.path.join(path, "index", iid), "rb") as f:
        raw = f.read()
    enc = exp["password"] is not None
    assert raw[:3] == b"CV\x01" and raw[3] & blobfmt.ENCRYPTED == (blobfmt.ENCRYPTED if enc else 0)
    vault = open_vault(path, exp, load_index=False)
    doc = packindex.decode(raw, vault.sealer, iid)
    assert envelope.open_(raw, "index", vault.sealer, iid)["version"] == INDEX_VERSION[kind]
    if INDEX_VERSION[kind] == 2:
        assert not raw[3] & blobfmt.COMPRESSED  # tables of random ids are written uncompressed (6.4)
    assert [(p.id, p.kind, p.size, [b.type for b in p.blobs]) for p in doc.packs] == expected_packs
    assert sum(len(p.blobs) for p in doc.packs) == sum(len(t) for *_, t in expected_packs)
    # the run's checkpoint indexes, named here and deleted after the snapshot record was written
    assert len(doc.supersedes) == n_checkpoints
    assert all(re.fullmatch(r"[0-9a-f]{32}", s) for s in doc.supersedes)
    assert not set(doc.supersedes) & set(os.listdir(os.path.join(path, "index")))
    if not enc:  # unencrypted envelopes are deterministic: the writer still makes the same bytes
        encode = packindex.encode if INDEX_VERSION[kind] == 2 else packindex.encode_v1
        assert encode(doc, vault.sealer) == raw

    vault.load_index()
    assert sorted(vault.index.index_ids) == sorted([iid, exp["other_index"]])
    assert len(vault.index) == exp["blobs"]
    assert vault.index.pack_count() == sum(exp["packs"].values())


def test_pack_headers_match_the_index(golden):
    kind, path, exp = golden
    vault = open_vault(path, exp)
    for pid, pkind, size in vault.index.packs():
        name = pack.object_name(pkind, pid)
        with open(os.path.join(path, name), "rb") as f:
            data = f.read()
        assert len(data) == size
        (hlen,) = struct.unpack("<I", data[-12:-8])
        header = data[-12 - hlen:-12]
        assert header[:3] == b"CV\x01"
        entries = pack.read_header(data, len(data), vault.sealer, name)
        assert entries, name
        for e in entries:
            assert vault.index.lookup(e.id).pack == pid
            loc = vault.locate(e.id)
            assert (loc.offset, loc.length, loc.raw_length, loc.type) == (e.offset, e.length, e.raw_length, e.type)
            assert e.type == (blobfmt.TREE if pkind == "tree" else blobfmt.DATA)
        # blobs are laid end to end from offset 0, then the header, its length and the magic
        ordered = sorted(entries, key=lambda e: e.offset)
        assert ordered[0].offset == 0
        assert all(a.offset + a.length == b.offset for a, b in zip(ordered, ordered[1:]))
        assert ordered[-1].offset + ordered[-1].length + hlen + 12 == size


def test_stored_blob_layout(golden):
    """Flag byte and length of stored blobs: small ones are not compressed, notes.md chunks are."""
    kind, path, exp = golden
    vault = open_vault(path, exp)
    enc = exp["password"] is not None
    rec = vault.snapshots()[1]
    files = listing(vault, rec.tree)
    for name in (b"hello.txt", b"bin/run.sh", CAFE, b"docs/added.txt"):
        (cid,) = files[name].chunks
        loc = vault.locate(cid)
        stored = vault.store.get(loc.object_name, loc.offset, loc.length)
        assert stored[0] == (blobfmt.ENCRYPTED if enc else 0)
        assert len(stored) == 1 + (12 + 16 if enc else 0) + files[name].size
        if not enc:  # unencrypted: the stored bytes are the plaintext, the id its plain XXH3-128
            assert stored[1:] == read_file(vault, files[name])
            assert cid == xxhash.xxh3_128_digest(stored[1:])
    for cid in files[b"docs/notes.md"].chunks:
        loc = vault.locate(cid)
        stored = vault.store.get(loc.object_name, loc.offset, loc.length)
        assert stored[0] == blobfmt.COMPRESSED | (blobfmt.ENCRYPTED if enc else 0)
        assert loc.length < loc.raw_length
    if enc:  # keyed ids: the plain hash of the plaintext is not the id
        (cid,) = files[b"hello.txt"].chunks
        assert cid != xxhash.xxh3_128_digest(HELLO_2)
        assert cid == xxhash.xxh3_128_digest(vault.keys.id_key + HELLO_2)


# ---- snapshots and trees --------------------------------------------------------------------


def test_snapshot_records(golden):
    kind, path, exp = golden
    vault = open_vault(path, exp, load_index=False)
    recs = vault.snapshots()
    assert [r.id for r in recs] == exp["snapshots"]
    assert [r.time for r in recs] == [1704164645 * SEC, 1704251045 * SEC]
    assert [r.time_str for r in recs] == ["2024-01-02T03:04:05Z", "2024-01-03T03:04:05Z"]
    assert [r.tree.hex() for r in recs] == exp["roots"]
    assert [r.parent for r in recs] == [None, exp["snapshots"][0]]
    for r, summary, extra in zip(recs, (SUMMARY_1, SUMMARY_2), exp["summaries"]):
        assert (r.kind, r.source, r.hostname, r.paths) == (
            "tree", "golden-src", "golden-host", ["/tmp/coldvault-golden/golden-src"])
        assert (r.incomplete, r.errors, r.tags, r.zfs, r.program) == (False, [], [], None, "coldvault 0.1.0")
        assert set(r.summary) == SUMMARY_KEYS
        assert {k: r.summary[k] for k in {**summary, **extra}} == {**summary, **extra}
        assert isinstance(r.summary["duration"], float)
        with open(os.path.join(path, "snapshots", r.id), "rb") as f:
            raw = f.read()
        assert raw[:3] == b"CV\x01"
        if exp["password"] is None:
            assert snapshot.encode(r, vault.sealer) == raw


@pytest.mark.parametrize("which", [0, 1])
def test_trees(golden, which):
    kind, path, exp = golden
    vault = open_vault(path, exp)
    rec = vault.snapshots()[which]
    files = listing(vault, rec.tree)
    expected = (TREE_1, TREE_2)[which]
    assert sorted(files) == sorted(expected)
    for p, (etype, mode, uid, gid, mtime, size, content) in expected.items():
        e = files[p]
        assert (e.type, e.mode, e.uid, e.gid, e.mtime, e.size) == (etype, mode, uid, gid, mtime, size), p
        assert e.nlink == (2 if etype == "dir" else 1)
        if etype == "file":
            check_content(read_file(vault, e), content)
        elif etype == "symlink":
            assert e.target == content and e.chunks == [] and e.tree is None
        else:
            assert e.tree is not None and e.chunks == []
    assert files[b"empty"].chunks == []
    assert len(files[b"docs/notes.md"].chunks) == exp["notes_chunks"][which]
    assert files[b"bin"].tree.hex() == exp["bin_tree"]
    # names are raw bytes: the non-UTF-8 one is found by bytes and by its surrogate-escaped str
    assert vault.load_tree(rec.tree).find(CAFE) is files[CAFE]
    assert resolve(vault, rec, os.fsdecode(CAFE)).name == CAFE
    # tree nodes re-encode to the very bytes stored (so unchanged directories keep their ids)
    for node_id in [rec.tree] + [e.tree for e in files.values() if e.type == tree.DIR]:
        assert tree.encode(vault.load_tree(node_id)) == vault.read_blob(node_id)


def test_dedup_across_files_and_snapshots(golden):
    kind, path, exp = golden
    vault = open_vault(path, exp)
    s1, s2 = (listing(vault, r.tree) for r in vault.snapshots())
    assert s1[b"docs/notes.md"].chunks == s1[b"docs/notes-copy.md"].chunks
    shared = set(s1[b"docs/notes.md"].chunks) & set(s2[b"docs/notes.md"].chunks)
    assert len(shared) == exp["notes_shared"]
    for name in (b"bin/run.sh", CAFE, b"empty"):
        assert s1[name].chunks == s2[name].chunks
    assert s1[b"bin"].tree == s2[b"bin"].tree  # the unchanged directory is the same tree node


# ---- restore ------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1])
async def test_restore(golden, tmp_path, which):
    kind, path, exp = golden
    vault = open_vault(path, exp)
    rec = vault.snapshots()[which]
    target = tmp_path / "restored"
    stats = await DirRestore(vault, rec, None, str(target)).run()
    expected = (TREE_1, TREE_2)[which]
    assert (stats.files, stats.dirs, stats.symlinks) == (6, 2, 1)
    root = os.fsencode(target)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            found.append(os.path.relpath(os.path.join(dirpath, n), root))
    assert sorted(found) == sorted(expected)
    for p, (etype, mode, uid, gid, mtime, size, content) in expected.items():
        full = os.path.join(root, p)
        st = os.lstat(full)
        assert st.st_mtime_ns == mtime, p
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (uid, gid), p
        if etype == "symlink":
            assert stat.S_ISLNK(st.st_mode) and os.readlink(full) == content
            continue
        assert stat.S_IMODE(st.st_mode) == mode, p
        if etype == "dir":
            assert stat.S_ISDIR(st.st_mode)
        else:
            assert stat.S_ISREG(st.st_mode) and st.st_size == size
            with open(full, "rb") as f:
                check_content(f.read(), content)


# ---- docs/format.md, "Reading a vault by hand" -----------------------------------------------------


def hand_reader() -> str:
    with open(FORMAT_MD, encoding="utf-8") as f:
        text = f.read()
    section = re.split(r"^## [0-9. ]*Reading a vault by hand", text, maxsplit=1, flags=re.M)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_hand_reader(tmp_path, path: str, password: bytes | None) -> list[str]:
    script = tmp_path / "read_vault.py"
    script.write_text(hand_reader())
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDVAULT_")}
    if password is not None:
        env["COLDVAULT_PASSWORD"] = password.decode()
    p = subprocess.run([sys.executable, "-I", str(script), path], env=env, capture_output=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode().splitlines()


def test_hand_reader_in_format_md(golden, tmp_path):
    """The snippet in docs/format.md decodes the golden vault with msgpack, xxhash, zstandard, cryptography."""
    kind, path, exp = golden
    lines = run_hand_reader(tmp_path, path, exp["password"])
    assert lines[:2] == ["2024-01-02T03:04:05Z tree golden-src 6 files", "2024-01-03T03:04:05Z tree golden-src 6 files"]
    assert set(lines[2:]) == {
        "0o755 b'/bin/run.sh' 22 b'#!/bin/sh\\necho golden\\n'",
        "0o600 b'/caf\\xe9.txt' 13 b'latin-1 name\\n'",
        "0o644 b'/docs/added.txt' 24 b'added before snapshot 2\\n'",
        "0o644 b'/docs/notes.md' 17256 b'0000 blob msgpack pool zstd pool trailer'",
        "0o644 b'/empty' 0 b''",
        "0o644 b'/hello.txt' 41 b'Hello again, coldvault! Second snapshot.'",
        "0o777 b'/link' -> b'hello.txt'",
    }


@pytest.mark.parametrize("password", [PASSWORD, None], ids=["encrypted", "unencrypted"])
async def test_current_writer_is_read_by_the_spec(tmp_path, password):
    """What today's code writes is what the spec says (index objects of version 2): the hand
    reader of docs/format.md, which implements the spec independently of coldvault, decodes a
    vault written now."""
    from coldvault.uploader.dirbackup import DirBackup

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "hello.txt").write_bytes(HELLO_1)
    (src / "empty").write_bytes(b"")
    os.chmod(src / "empty", 0o600)
    with open(os.path.join(os.fsencode(src), CAFE), "wb") as f:
        f.write(CAFE_DATA)
    text = b"".join(b"%04d %s\n" % (i, b"cold vault pack " * (i % 7 + 1)) for i in range(400))
    (src / "sub" / "text.md").write_bytes(text)
    os.symlink("../hello.txt", src / "sub" / "link")
    for name, mode in ((b"hello.txt", 0o644), (CAFE, 0o600), (b"sub/text.md", 0o644)):
        os.chmod(os.path.join(os.fsencode(src), name), mode)
    path = str(tmp_path / "vault")
    settings = configfmt.Settings(chunker_min=1024, chunker_avg=4096, chunker_max=16384, data_pack_size=4096)
    vault = Vault.init(LocalStore(path), password, settings)
    vault.load_index()
    await DirBackup(vault, str(src), "src", 1704164645 * SEC, None).run()
    lines = run_hand_reader(tmp_path, path, password)
    assert lines[0] == "2024-01-02T03:04:05Z tree src 4 files"
    assert set(lines[1:]) == {
        "0o600 b'/caf\\xe9.txt' 13 b'latin-1 name\\n'",
        "0o600 b'/empty' 0 b''",
        "0o644 b'/hello.txt' 18 b'Hello, coldvault!\\n'",
        f"0o644 b'/sub/text.md' {len(text)} {text[:40]!r}",
        "0o777 b'/sub/link' -> b'../hello.txt'",
    }


def test_hand_reader_after_a_killed_backup(tmp_path):
    """The spec's reader copes with what a kill leaves: a pending checkpoint whose pack was
    never stored (format.md 6.4) and a temporary file of a write cut short."""
    from cvtools import run, vault_env

    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.txt").write_bytes(b"committed before the crash\n")
    path = str(tmp_path / "vault")
    env = vault_env(path)
    run(["init", "--pack-size", "1"], env)
    run(["backup", "dir", str(src), "--name", "src", "--time", "2024-01-02T03:04:05Z"], env)
    for i in range(6):
        (src / f"new{i}.bin").write_bytes(os.urandom(600_000))
    r = run(["backup", "dir", str(src), "--name", "src"], {**env, "COLDVAULT_CRASH_AT": "checkpoint-stored:2"},
            check=False)
    assert r.code == -9, r.err
    sealer = Vault.open(LocalStore(path), lambda: b"test-password").sealer
    docs = []
    for name in os.listdir(os.path.join(path, "index")):
        with open(os.path.join(path, "index", name), "rb") as f:
            docs.append(packindex.decode(f.read(), sealer, name))
    packs = {o for _, _, files in os.walk(os.path.join(path, "data")) for o in files}
    assert any(d.pending and any(p.id not in packs for p in d.packs) for d in docs), \
        "the kill left no checkpoint of a pack never stored"
    with open(os.path.join(path, "index", ".tmp-999999999-1-abandoned"), "wb") as f:
        f.write(b"half an index")
    lines = run_hand_reader(tmp_path, path, b"test-password")
    assert lines == ["2024-01-02T03:04:05Z tree src 1 files", "0o644 b'/kept.txt' 27 b'committed before the crash\\n'"]


# ---- golden/keys/: vaults with several passwords (docs/format.md 6.3, 14) -------------------------

with open(os.path.join(GOLDEN, "keys", "expected.json"), encoding="utf-8") as _f:
    KEYS_EXPECTED = json.load(_f)


@pytest.fixture(params=sorted(KEYS_EXPECTED))
def golden_keys(request, tmp_path):
    """(name, path of a private copy of golden/keys/<name>, its expected keys)."""
    path = str(tmp_path / "vault")
    shutil.copytree(os.path.join(GOLDEN, "keys", request.param), path)
    return request.param, path, KEYS_EXPECTED[request.param]


def test_keys_config_and_key_objects(golden_keys):
    from coldvault.index import keys as keyfmt
    from coldvault.index.ids import content_id

    name, path, exp = golden_keys
    with open(os.path.join(path, "config"), "rb") as f:
        cfg = configfmt.decode(f.read())
    base = EXPECTED["v2/encrypted"]
    assert cfg.vault_id.hex() == base["vault_id"] and cfg.created == base["created"] and cfg.encrypted
    if name == "added":  # the config keeps its key: an older coldvault opens it with "golden"
        assert cfg.features == [] and keyfmt.config_key_id(cfg.key) == exp["passwords"]["golden"]
    else:  # the config's key was removed: an older coldvault refuses the feature
        assert cfg.features == ["keys"] and cfg.key is None
    objects = sorted(os.listdir(os.path.join(path, "keys")))
    assert objects == sorted(k["id"] for k in exp["keys"] if k["stored"] != "config")
    for kid in objects:
        with open(os.path.join(path, "keys", kid), "rb") as f:
            raw = f.read()
        assert raw[:4] == b"CV\x01\x00" and content_id(raw) == kid  # never compressed nor encrypted
        rec = keyfmt.decode(raw, "keys/" + kid)
        [want] = [k for k in exp["keys"] if k["id"] == kid]
        assert (rec.created, rec.hostname, rec.user) == (want["created"], "golden-host", "golden-user")
        k = rec.key
        assert (k["kdf"], k["n"], k["r"], k["p"], len(k["salt"]), len(k["wrapped"])) == ("scrypt", 2**15, 8, 1, 32, 112)


def test_keys_each_password_opens_and_reads_the_same_vault(golden_keys):
    from coldvault.vault import keys

    name, path, exp = golden_keys
    base = EXPECTED["v2/encrypted"]
    for password, kid in exp["passwords"].items():
        vault = open_vault(path, {"password": password.encode()})
        assert vault.key_id == kid
        listed = [{"id": e.id, "stored": e.stored, "created": e.created, "hostname": e.hostname, "user": e.user}
                  for e in keys.list_keys(vault)]
        assert listed == exp["keys"]
        assert [e.current for e in keys.list_keys(vault)] == [e["id"] == kid for e in exp["keys"]]
        assert vault.settings.chunker_seed == base["chunker_seed"]
        assert [r.id for r in vault.snapshots()] == base["snapshots"]
        files = listing(vault, vault.snapshots()[1].tree)
        check_content(read_file(vault, files[b"hello.txt"]), HELLO_2)
        check_content(read_file(vault, files[b"docs/notes.md"]), NOTES_2)
    for wrong in (b"golden" if name == "passwd" else b"golden-one", b"not golden"):
        with pytest.raises(BadPasswordError):
            Vault.open(LocalStore(path), lambda: wrong)


def test_keys_hand_reader_in_format_md(golden_keys, tmp_path):
    name, path, exp = golden_keys
    for password in exp["passwords"]:
        lines = run_hand_reader(tmp_path, path, password.encode())
        assert lines[:2] == ["2024-01-02T03:04:05Z tree golden-src 6 files",
                             "2024-01-03T03:04:05Z tree golden-src 6 files"]
        assert "0o644 b'/hello.txt' 41 b'Hello again, coldvault! Second snapshot.'" in lines
