"""`coldvault check`: structure always, data with --read-data; damage named with the files it costs."""

from __future__ import annotations

import io
import os
import uuid

import pytest
import trio

from cvtools import run, sample_vault, vault_env

DAMAGED, USAGE = 13, 2
PASSWORD = "test-password"


def damage_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("damaged:")]


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("coldvault: error:")]
    assert len(lines) == 1, err
    return lines[0]


def pack_files(repo: str, prefix: str) -> list[str]:
    return sorted(os.path.join(dp, n) for dp, _, ns in os.walk(os.path.join(repo, prefix))
                  for n in ns if not n.endswith(".cold"))


def open_vault(store):
    from coldvault.vault import Vault

    vault = Vault.open(store, lambda: PASSWORD.encode())
    vault.load_index()
    return vault


def local_vault(repo: str):
    from coldvault.store.local import LocalStore

    return open_vault(LocalStore(repo))


def chunk_location(repo: str, path: bytes):
    """Where the first chunk of `path` (in the newest snapshot) is stored, by the vault's own index."""
    vault = local_vault(repo)
    rec = vault.find_snapshot("latest")
    *dirs, name = path.split(b"/")
    node = vault.load_tree(rec.tree)
    for d in dirs:
        node = vault.load_tree(node.find(d).tree)
    return vault.locate(node.find(name).chunks[0])


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


@pytest.fixture
def vault(tmp_path):
    """Two snapshots of a small tree; report.txt is unchanged between them, photo.jpg is not.

    Returns (repo, env, [short ids oldest first]).
    """
    repo, env, src = sample_vault(tmp_path)
    (src / "photo.jpg").write_bytes(os.urandom(200_000))
    run(["backup", "dir", str(src), "--name", "src"], env)
    ids = [s["short_id"] for s in run(["snapshots", "--json"], env).json()]
    return repo, env, ids


def test_clean_vault(vault):
    repo, env, ids = vault
    r = run(["check"], env)
    assert "checked 2 snapshots" in r.out and "no damage found" in r.out
    assert run(["check", "-q"], env).out == ""
    report = run(["check", "--read-data", "--json"], env).json()
    assert report["ok"] is True and report["damage"] == []
    c, d = report["counts"], report["read_data"]
    # The unchanged docs/ (and report.txt in it) is one tree, visited once.
    assert c["snapshots"] == 2 and c["trees"] == 3 and c["files"] == 3
    assert d["mode"] == "all"
    assert d["packs_read"] == c["packs"] == len(pack_files(repo, "data")) + len(pack_files(repo, "trees"))
    assert d["blobs_read"] == c["blobs_indexed"] and d["bytes_read"] == c["pack_bytes"]
    assert report["skipped"]["cold_packs"] == [] and report["leftovers"]["unindexed_packs"] == []


def test_flipped_byte_in_a_data_pack(vault):
    repo, env, ids = vault
    loc = chunk_location(repo, b"docs/report.txt")
    flip_byte(os.path.join(repo, loc.object_name), loc.offset + loc.length // 2)
    # The structure is intact: only reading the data finds it.
    assert "no damage found" in run(["check"], env).out
    r = run(["check", "--read-data"], env, check=False)
    assert r.code == DAMAGED, r.err
    (line,) = damage_lines(r.out)
    assert loc.object_name in line and "docs/report.txt" in line
    assert "photo.jpg" not in line  # its blobs in the same pack are fine
    assert ids[0] in line and ids[1] in line  # the unchanged file is in both snapshots
    assert "damaged" in one_error_line(r.err)
    report = run(["check", "--read-data", "--json"], env, check=False).json()
    (d,) = report["damage"]
    assert d["object"] == loc.object_name and d["files"] == ["docs/report.txt"]
    assert sorted(s["short_id"] for s in d["snapshots"]) == sorted(ids)


def test_deleted_data_pack(vault):
    repo, env, ids = vault
    loc = chunk_location(repo, b"docs/report.txt")  # the first run's pack: report.txt and the old photo.jpg
    os.remove(os.path.join(repo, loc.object_name))
    r = run(["check"], env, check=False)
    assert r.code == DAMAGED
    (line,) = damage_lines(r.out)
    assert loc.object_name in line and "missing" in line
    assert "docs/report.txt" in line and "photo.jpg" in line and ids[0] in line and ids[1] in line
    assert "damaged" in one_error_line(r.err)
    q = run(["check", "-q"], env, check=False)
    assert q.code == DAMAGED and q.out.splitlines() == [line]  # quiet: the problems only


def test_truncated_tree_pack(vault):
    repo, env, ids = vault
    tree_pack = pack_files(repo, "trees")[0]
    with open(tree_pack, "r+b") as f:
        f.truncate(os.path.getsize(tree_pack) - 7)
    r = run(["check"], env, check=False)
    assert r.code == DAMAGED
    (line,) = damage_lines(r.out)
    assert os.path.basename(tree_pack) in line and "truncated" in line
    assert run(["check", "--read-data"], env, check=False).code == DAMAGED


def test_damaged_index_object(vault):
    repo, env, ids = vault
    idx = pack_files(repo, "index")[0]
    with open(idx, "r+b") as f:
        f.truncate(30)
    r = run(["check", "--json"], env, check=False)
    assert r.code == DAMAGED
    objects = {d["object"] for d in r.json()["damage"]}
    # The damaged index is named, and so is what its loss costs: blobs no index knows.
    assert "index/" + os.path.basename(idx) in objects and "index" in objects


def test_damaged_snapshot_record(vault):
    repo, env, ids = vault
    snap = [p for p in pack_files(repo, "snapshots") if os.path.basename(p).startswith(ids[0])][0]
    with open(snap, "r+b") as f:
        f.truncate(20)
    r = run(["check"], env, check=False)
    assert r.code == DAMAGED
    (line,) = damage_lines(r.out)
    assert f"snapshots/{os.path.basename(snap)}" in line
    assert "checked 1 snapshot," in r.out  # the other one is still checked


def test_leftovers_are_harmless(vault):
    """A pack in no index (a checkpoint lost, say), a superseded checkpoint index, a pending
    checkpoint whose pack never arrived (a backup killed between the two) and an indexed pack
    no snapshot uses: each reported for prune, exit 0."""
    repo, env, ids = vault
    from coldvault.index import blob as blobfmt
    from coldvault.index.ids import blob_id
    from coldvault.index.pack import PackWriter
    from coldvault.index.packindex import PackRecord

    v = local_vault(repo)

    def pack_of(data: bytes, store: bool = True):
        w = PackWriter("data", v.sealer)
        bid = blob_id(data, v.sealer.id_key)
        w.add(bid, blobfmt.DATA, blobfmt.encode(data, bid, v.sealer, 3), len(data))
        pack = w.finish()
        if store:
            v.put_pack(pack)
        return pack

    orphan = pack_of(os.urandom(5000))
    unused = pack_of(os.urandom(6000))
    rec = PackRecord(unused.id, unused.kind, len(unused.data), unused.blobs)
    (checkpoint,) = v.save_index([rec])
    v.save_index([rec], supersedes=[checkpoint])
    never = pack_of(os.urandom(7000), store=False)
    v.save_index([PackRecord(never.id, never.kind, len(never.data), never.blobs)], pending=True)

    r = run(["check", "--read-data"], env)
    assert damage_lines(r.out) == [] and "no damage found" in r.out
    leftover = [line for line in r.out.splitlines() if line.startswith("leftover:")]
    assert len(leftover) == 4 and all("coldvault prune" in line for line in leftover)
    assert orphan.name in leftover[0] and "in no index" in leftover[0]
    assert f"index/{checkpoint}" in leftover[1]
    assert never.name in leftover[2] and "never stored" in leftover[2]
    assert unused.name in leftover[3]
    j = run(["check", "--json"], env).json()["leftovers"]
    assert [p["name"] for p in j["unindexed_packs"]] == [orphan.name]
    assert j["superseded_indexes"] == [f"index/{checkpoint}"]
    assert j["unstored_packs"] == [never.name]
    assert [p["name"] for p in j["unused_packs"]] == [unused.name]


def test_cold_packs_are_skipped_until_restored(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(100_000))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)  # COLDVAULT_LOCAL_RESTORE_DELAY=0
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    run(["backup", "dir", str(src)], env)
    (pack,) = pack_files(repo, "data")
    name = os.path.relpath(pack, repo)
    assert "no damage found" in run(["check"], env).out  # reads nothing cold
    r = run(["check", "--read-data"], env)
    (line,) = [line for line in r.out.splitlines() if line.startswith("skipped:")]
    assert "1 cold pack" in line and name in line and "coldvault thaw" in line
    j = run(["check", "--read-data", "--json"], env).json()
    assert [p["name"] for p in j["skipped"]["cold_packs"]] == [name]
    assert j["skipped"]["cold_packs"][0]["storage_class"] == "DEEP_ARCHIVE"
    assert j["read_data"]["packs_read"] == 1  # the tree pack, which is hot
    # Restored, it is read like any other.
    from coldvault.store.local import LocalStore

    LocalStore(repo).restore(name, days=1)
    j = run(["check", "--read-data", "--json"], env).json()
    assert j["skipped"]["cold_packs"] == [] and j["read_data"]["packs_read"] == 2 and j["ok"]


def test_read_data_subset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.bin").write_bytes(os.urandom(700_000))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--pack-size", "1"], env)
    run(["backup", "dir", str(src)], env)
    j = run(["check", "--read-data-subset", "50%", "--json"], env).json()
    packs = j["counts"]["packs"]
    assert packs >= 4
    assert j["read_data"]["mode"] == "subset" and j["read_data"]["percent"] == 50
    assert 0 < j["read_data"]["packs_read"] < packs
    assert j["read_data"]["packs_read"] == j["read_data"]["packs_selected"]
    r = run(["check", "--read-data-subset", "1"], env)  # the % is optional; at least one pack
    assert f"read 1 of {packs} packs (a random 1%: 1)" in r.out
    for bad in ("0%", "150%", "half"):
        r = run(["check", "--read-data-subset", bad], env, check=False)
        assert r.code == USAGE and "Traceback" not in r.err
    r = run(["check", "--read-data", "--read-data-subset", "5%"], env, check=False)
    assert r.code == USAGE


def _zfs_snapshot(repo: str, stream: bytes, dataset: str, snap: str) -> None:
    """A `zfs` snapshot record made through the backup pipeline, as `backup zfs` makes it
    (without zfs itself): the stream's chunks, a CHUNK_LIST blob, the record."""
    import xxhash

    from coldvault.index import blob as blobfmt
    from coldvault.index.snapshot import SnapshotRecord
    from coldvault.uploader.session import BackupSession
    from coldvault.index import chunklist

    vault = local_vault(repo)
    session = BackupSession(vault)

    async def body():
        ids, total = await trio.to_thread.run_sync(session.chunker.chunk_stream, io.BytesIO(stream))
        return await session.save_meta_blob(chunklist.encode(ids), blobfmt.CHUNK_LIST)

    async def backup():
        list_id = await session.run(body)
        rec = SnapshotRecord(
            kind="zfs", source=f"zfs:{dataset}", time=1_700_000_000 * 10**9, paths=[f"{dataset}@{snap}"],
            zfs={"dataset": dataset, "snapshot": snap, "guid": 42, "createtxg": 7, "creation": 1_700_000_000,
                 "base": None, "flags": [], "length": len(stream), "xxh3": xxhash.xxh3_128_digest(stream),
                 "chunks": list_id},
        )
        await session.commit(rec)

    trio.run(backup)


def test_zfs_stream_records(tmp_path):
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    _zfs_snapshot(repo, os.urandom(400_000), "tank/photos", "nightly-1")
    j = run(["check", "--read-data", "--json"], env).json()
    assert j["ok"] and j["counts"]["streams"] == 1 and j["counts"]["chunk_references"] >= 1
    assert "(1 zfs stream)" in run(["check"], env).out
    (pack,) = pack_files(repo, "data")
    os.remove(pack)
    r = run(["check"], env, check=False)
    assert r.code == DAMAGED
    (line,) = damage_lines(r.out)
    assert os.path.basename(pack) in line and "tank/photos@nightly-1" in line


def test_s3_deep_archive(tmp_path, moto_endpoint):
    """On S3 the listing gives sizes and storage classes, but not restore states: check asks."""
    from coldvault.store.s3 import S3Store

    bucket = f"cv-{uuid.uuid4().hex[:12]}"
    env = vault_env(f"s3://{bucket}/v", COLDVAULT_S3_ENDPOINT=moto_endpoint)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(100_000))
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    run(["backup", "dir", str(src), "--name", "a"], env)
    assert "no damage found" in run(["check"], env).out
    j = run(["check", "--read-data", "--json"], env).json()
    (cold,) = j["skipped"]["cold_packs"]
    assert j["ok"] and cold["name"].startswith("data/") and j["read_data"]["packs_read"] == 1
    store = S3Store(bucket, "v", endpoint_url=moto_endpoint)
    store.restore(cold["name"], days=1)  # moto restores at once
    j = run(["check", "--read-data", "--json"], env).json()
    assert j["ok"] and j["skipped"]["cold_packs"] == [] and j["read_data"]["packs_read"] == 2
    store.delete(cold["name"])
    r = run(["check"], env, check=False)
    assert r.code == DAMAGED
    (line,) = damage_lines(r.out)
    assert cold["name"] in line and "missing" in line and "a.bin" in line
