"""Index objects of version 2 (docs/format.md 6.4) and the compact in-memory index (issue 10).

- every writer splits its records over index objects of bounded size (set low here
  with COLDVAULT_MAX_INDEX_ENTRIES): a backup, a prune and `repair index`;
- a vault of many index objects reads, checks (`check --read-data`), restores and prunes clean;
- a version 1 vault (a copy of the golden one) is read, backed up into, pruned, and then
  holds only version 2 index objects, and still reads and checks clean;
- damaged version 2 records are refused as damage naming the object;
- the first index loaded wins on a blob id given twice;
- the BlobIndex tables answer like a dict would, and leave nothing for the cycle GC.
"""

from __future__ import annotations

import gc
import os
import random
import shutil

import numpy as np
import pytest
from cvtools import diff_signatures, run, signature, vault_env
from hypothesis import given, settings
from hypothesis import strategies as st

from coldvault.index import blob as blobfmt
from coldvault.index import envelope, packindex
from coldvault.index.config import Settings
from coldvault.index.crypto import Sealer
from coldvault.index.errors import FormatError
from coldvault.index.ids import content_id
from coldvault.index.pack import BlobEntry
from coldvault.index.packindex import BLOB_RECORD, PACK_RECORD, IndexDoc, PackRecord
from coldvault.store.local import LocalStore
from coldvault.vault.blobindex import BlobIndex
from coldvault.vault.vault import Vault

GOLDEN_V1 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "golden", "unencrypted")
PLAIN = Sealer(None)


def index_docs(repo: str, password: str | None = "test-password") -> dict[str, tuple[int, IndexDoc]]:
    """index id -> (envelope version, decoded doc) of every index object in a local vault."""
    vault = Vault.open(LocalStore(repo), (lambda: password.encode()) if password else None)
    out = {}
    for name in sorted(os.listdir(os.path.join(repo, "index"))):
        with open(os.path.join(repo, "index", name), "rb") as f:
            data = f.read()
        version = envelope.open_(data, "index", vault.sealer, name)["version"]
        out[name] = (version, packindex.decode(data, vault.sealer, name))
    return out


def make_tree(root, n: int, seed: int) -> None:
    rng = random.Random(seed)
    os.makedirs(root / "sub", exist_ok=True)
    for i in range(n):
        (root / ("sub" if i % 2 else "") / f"f{seed}-{i}.bin").write_bytes(rng.randbytes(rng.randint(1, 40_000)))


def restored_equal(tmp_path, env, snapshot: str, src, name: str) -> None:
    target = tmp_path / name
    run(["restore", "dir", snapshot, "--target", str(target)], env)
    assert not diff_signatures(signature(src), signature(target))


def test_backup_and_prune_split_index_objects(tmp_path):
    """With a bound of 3 records, a backup's index and a prune's index are several objects
    of at most 3 blob and 3 pack records each; the vault of many index objects checks
    (reading every pack), restores and prunes clean."""
    repo = str(tmp_path / "vault")
    env = vault_env(repo, COLDVAULT_MAX_INDEX_ENTRIES="3")
    run(["init", "--pack-size", "1"], env)
    src1, src2 = tmp_path / "one", tmp_path / "two"
    make_tree(src1, 12, 1)
    make_tree(src2, 8, 2)
    run(["backup", "dir", str(src1), "--name", "one"], env)
    docs = index_docs(repo)
    assert len(docs) >= 4, "one backup of 12 files wrote a single index object"
    for version, doc in docs.values():
        assert version == 2 and not doc.pending
        assert len(doc.table.blobs) <= 3 and len(doc.table.packs) <= 3
    run(["backup", "dir", str(src2), "--name", "two"], env)
    before = index_docs(repo)
    assert run(["check", "--read-data"], env).code == 0

    snaps = run(["snapshots", "--json"], env).json()
    one = next(s["id"] for s in snaps if s["source"] == "one")
    two = next(s["id"] for s in snaps if s["source"] == "two")
    restored_equal(tmp_path, env, one, src1, "r1")
    run(["forget", two], env)
    r = run(["prune", "--json"], env).json()
    assert r["indexes_merged"] == len(before) and r["packs_deleted"] >= 1
    after = index_docs(repo)
    assert len(after) >= 4 and not set(after) & set(before)  # all rewritten, the old ones deleted
    for version, doc in after.values():
        assert version == 2 and len(doc.table.blobs) <= 3 and len(doc.table.packs) <= 3
        assert set(doc.supersedes) == set(before)
    assert run(["check", "--read-data"], env).code == 0
    restored_equal(tmp_path, env, one, src1, "r2")
    # the same vault, read with the default bound: nothing depends on the bound of the writer
    plain = vault_env(repo)
    assert run(["check", "--read-data"], plain).code == 0
    assert run(["prune", "--dry-run", "--json"], plain).code == 0


def test_repair_index_splits_its_index(tmp_path):
    """`repair index` rebuilds a lost index as several bounded objects."""
    repo = str(tmp_path / "vault")
    env = vault_env(repo, COLDVAULT_MAX_INDEX_ENTRIES="2")
    run(["init", "--pack-size", "1"], env)
    src = tmp_path / "src"
    make_tree(src, 6, 3)
    run(["backup", "dir", str(src), "--name", "src"], env)
    blobs = sum(len(d.table.blobs) for _, d in index_docs(repo).values())
    for name in os.listdir(os.path.join(repo, "index")):
        os.unlink(os.path.join(repo, "index", name))
    run(["repair", "index"], env)
    docs = index_docs(repo)
    assert len(docs) >= 3
    assert all(v == 2 and len(d.table.blobs) <= 2 and len(d.table.packs) <= 2 for v, d in docs.values())
    assert sum(len(d.table.blobs) for _, d in docs.values()) == blobs
    assert run(["check", "--read-data"], env).code == 0
    restored_equal(tmp_path, env, "latest", src, "r")


def test_version_1_vault_moves_to_version_2(tmp_path):
    """A copy of the golden version 1 vault: read, backed up into (new objects are version 2),
    pruned (the version 1 objects are rewritten), then only version 2 index objects remain
    and it still reads, restores and checks clean."""
    repo = str(tmp_path / "vault")
    shutil.copytree(GOLDEN_V1, repo)
    env = vault_env(repo, password=None)
    v1 = index_docs(repo, None)
    assert {v for v, _ in v1.values()} == {1}
    assert run(["check", "--read-data"], env).code == 0
    first = run(["snapshots", "--json"], env).json()
    golden_restore = tmp_path / "golden-restore"
    run(["restore", "dir", first[-1]["id"], "--target", str(golden_restore)], env)

    src = tmp_path / "src"
    make_tree(src, 5, 4)
    run(["backup", "dir", str(src), "--name", "new"], env)
    mixed = index_docs(repo, None)
    assert sorted(v for v, _ in mixed.values()) == [1, 1, 2]
    assert run(["check", "--read-data"], env).code == 0

    run(["prune"], env)
    after = index_docs(repo, None)
    assert after and {v for v, _ in after.values()} == {2}
    assert not set(after) & set(v1)
    assert run(["check", "--read-data"], env).code == 0
    restored_equal(tmp_path, env, "latest", src, "r-new")
    again = tmp_path / "golden-again"
    run(["restore", "dir", first[-1]["id"], "--target", str(again)], env)
    assert not diff_signatures(signature(golden_restore), signature(again))
    # a version 2 vault with one index object and nothing to delete: prune leaves it alone
    run(["prune"], env)
    assert index_docs(repo, None).keys() == after.keys()


def test_prune_rewrites_a_single_version_1_index(tmp_path):
    """One version 1 index object and nothing to delete is still rewritten (the move to v2)."""
    repo = str(tmp_path / "vault")
    vault = Vault.init(LocalStore(repo), None, Settings())
    rec = PackRecord("ab" * 16, "data", 1000, [BlobEntry(b"\1" * 16, blobfmt.DATA, 0, 10, 10)])
    data = packindex.encode_v1(IndexDoc([rec]), PLAIN)
    vault.store.put("index/" + content_id(data), data)
    from coldvault.vault import pricing, prune

    plan = prune.plan_prune(Vault.open(LocalStore(repo), None), pricing.load())
    assert plan.old_format_indexes == 1 and not plan.delete and plan.rewrites_index


# ---- damaged version 2 records ---------------------------------------------------------------


def _tables(n_blobs: int = 3) -> tuple[np.ndarray, np.ndarray]:
    packs = np.zeros(2, dtype=PACK_RECORD)
    packs["id"] = np.frombuffer(b"\xaa" * 16 + b"\xbb" * 16, dtype="V16")
    packs["size"] = [1000, 500]
    packs["kind"] = [0, 1]
    blobs = np.zeros(n_blobs, dtype=BLOB_RECORD)
    blobs["id"] = np.frombuffer(b"".join(bytes([i + 1]) * 16 for i in range(n_blobs)), dtype="V16")
    blobs["pack"] = [i % 2 for i in range(n_blobs)]
    blobs["type"] = [i % 2 for i in range(n_blobs)]
    blobs["offset"] = [100 * i for i in range(n_blobs)]
    blobs["length"] = 50
    blobs["raw_length"] = 60
    return packs, blobs


def _v2(packs, blobs, **extra) -> bytes:
    return envelope.seal({"version": 2, "features": [], "packs": packs.tobytes() if hasattr(packs, "tobytes") else packs,
                          "blobs": blobs.tobytes() if hasattr(blobs, "tobytes") else blobs, "supersedes": [], **extra},
                         "index", PLAIN)


def _damage(field: str, value, row: int = 1, table: str = "blobs"):
    packs, blobs = _tables()
    packs, blobs = packs.copy(), blobs.copy()
    (blobs if table == "blobs" else packs)[field][row] = value
    return _v2(packs, blobs)


DAMAGED = [
    pytest.param(_damage("offset", 460), "past the end of pack bbbbbbbb", id="past-pack-end"),
    pytest.param(_damage("offset", 2**48), "bad blob entry", id="offset-too-large"),
    pytest.param(_damage("type", 3), "bad blob entry", id="unknown-type"),
    pytest.param(_damage("pack", 2), "bad blob entry", id="pack-out-of-range"),
    pytest.param(_damage("raw_length", blobfmt.MAX_DATA_BLOB + 1, row=0),
                 f"claims {blobfmt.MAX_DATA_BLOB + 1} bytes", id="raw-over-type-cap"),
    pytest.param(_damage("length", 60 + blobfmt.MAX_OVERHEAD + 1), "stored for 60 bytes", id="length-over-raw"),
    pytest.param(_damage("kind", 2, row=0, table="packs"), "bad pack record aaaa", id="unknown-pack-kind"),
    pytest.param(_damage("size", 2**48, row=0, table="packs"), "bad pack record", id="pack-size-too-large"),
    pytest.param(_v2(_tables()[0], _tables()[1].tobytes()[:-1]), "bad blob table", id="blob-table-cut"),
    pytest.param(_v2(_tables()[0].tobytes() + b"\0", _tables()[1]), "bad pack table", id="pack-table-cut"),
    pytest.param(_v2([], _tables()[1]), "bad pack table", id="packs-a-list"),
    pytest.param(envelope.seal({"version": 2, "packs": b""}, "index", PLAIN), "bad blob table", id="no-blobs"),
]


@pytest.mark.parametrize("data,message", DAMAGED)
def test_damaged_version_2_records_are_refused(tmp_path, data, message):
    """In the format layer a FormatError; through the vault a DamagedError naming the object,
    which is left out (the other index objects still count)."""
    with pytest.raises(FormatError, match=message):
        packindex.decode(data, PLAIN, "index/x")
    repo = str(tmp_path / "vault")
    vault = Vault.init(LocalStore(repo), None, Settings())
    good = PackRecord("cc" * 16, "data", 100, [BlobEntry(b"\7" * 16, blobfmt.DATA, 0, 10, 10)])
    vault.save_index([good])
    iid = content_id(data)
    vault.store.put("index/" + iid, data)
    vault = Vault.open(LocalStore(repo), None)
    vault.load_index()
    err = vault.damaged_indexes[iid]
    assert f"index/{iid} is damaged" in err.message and message in err.message
    assert vault.index.lookup(b"\7" * 16).pack == "cc" * 16
    r = run(["check"], vault_env(repo, password=None), check=False)
    assert r.code == 13 and f"index/{iid}" in r.out + r.err


def test_good_version_2_tables_decode():
    packs, blobs = _tables(5)
    doc = packindex.decode(_v2(packs, blobs, pending=True), PLAIN, "i")
    assert doc.pending and doc.version == 2
    assert [(p.id, p.kind, p.size, [b.offset for b in p.blobs]) for p in doc.packs] == [
        ("aa" * 16, "data", 1000, [0, 200, 400]), ("bb" * 16, "tree", 500, [100, 300])]


def test_split_bounds_every_group():
    rng = random.Random(5)
    recs = [PackRecord(f"{i:032x}", "data", 10**6,
                       [BlobEntry(rng.randbytes(16), 0, j * 10, 10, 10) for j in range(rng.choice([0, 1, 2, 5, 13]))])
            for i in range(40)]
    for bound in (1, 2, 3, 7, 100):
        groups = packindex.split(recs, bound)
        assert all(len(g) <= bound and sum(len(p.blobs) for p in g) <= bound for g in groups)
        merged: dict[str, list] = {}
        for g in groups:
            for p in g:
                merged.setdefault(p.id, []).extend(p.blobs)
        assert merged == {r.id: r.blobs for r in recs}
        assert [p.id for g in groups for p in g if not p.blobs] == [r.id for r in recs if not r.blobs]


# ---- the in-memory index ---------------------------------------------------------------------------


def test_first_loaded_wins_on_duplicate_ids(tmp_path):
    """Two index objects give one blob id different (valid) places: the object whose name
    sorts first is loaded first and wins, as in version 1; a pack named twice keeps its
    first record."""
    repo = str(tmp_path / "vault")
    vault = Vault.init(LocalStore(repo), None, Settings())
    bid = b"\x42" * 16
    recs = [PackRecord(f"{i:02x}" * 16, "data", 1000, [BlobEntry(bid, blobfmt.DATA, 10 * i, 5, 5),
                                                       BlobEntry(bytes([i]) * 16, blobfmt.DATA, 100, 5, 5)])
            for i in (1, 2, 3)]
    ids = [vault.save_index([r])[0] for r in recs]
    first = recs[ids.index(min(ids))]
    # the same pack again in another object, with one more blob
    again = PackRecord(first.id, "data", 1000, [BlobEntry(b"\x77" * 16, blobfmt.DATA, 200, 5, 5)])
    vault.save_index([again])
    vault = Vault.open(LocalStore(repo), None)
    index = vault.load_index()
    loc = index.lookup(bid)
    assert (loc.pack, loc.offset) == (first.id, first.blobs[0].offset)
    assert len(index) == 5 and index.pack_count() == 3
    assert index.pack_of(b"\x77" * 16) == first.id
    assert sorted(b.offset for b in index.blobs_by_pack([first.id])[first.id]) == [first.blobs[0].offset, 100, 200]


def test_blob_index_answers_like_a_dict():
    """Tables built by add_tables, then packs added one at a time (the overlay, merged once
    it grows past MERGE_AT), against a plain dict of the same facts."""
    rng = random.Random(7)
    expected: dict[bytes, tuple] = {}
    pack_info: dict[str, tuple] = {}

    def records(n_packs: int, per_pack: int, share: float = 0.0):
        recs = []
        known = list(expected)
        for _ in range(n_packs):
            pid = rng.randbytes(16).hex()
            kind = rng.choice(["data", "tree"])
            blobs = []
            for j in range(per_pack):
                # some ids share their first 8 bytes with another; some repeat a known id
                if known and rng.random() < share:
                    b = rng.choice(known)
                elif rng.random() < 0.05 and blobs:
                    b = blobs[-1].id[:8] + rng.randbytes(8)
                else:
                    b = rng.randbytes(16)
                blobs.append(BlobEntry(b, 1 if kind == "tree" else 0, j * 100, 90, 95))
            size = per_pack * 100 + 10
            recs.append(PackRecord(pid, kind, size, blobs))
            pack_info[pid] = (kind, size)
            for e in blobs:
                expected.setdefault(e.id, (pid, kind, e.offset, e.length, e.raw_length, e.type))
        return recs

    index = BlobIndex()
    tables = [packindex.IndexTable.from_records(records(300, 40, 0.02)) for _ in range(3)]
    index.add_tables(tables)
    for _ in range(140):  # 112,000 blobs one pack at a time: past MERGE_AT, so merged once
        (rec,) = records(1, 800, 0.01)
        index.add_pack(rec)
    index.add_table(packindex.IndexTable.from_records(records(10, 10, 0.5)))

    assert len(index) == len(expected)
    assert index.pack_count() == len(pack_info)
    assert sorted(index.packs()) == sorted((p, k, s) for p, (k, s) in pack_info.items())
    sample = rng.sample(list(expected), 3000)
    for bid in sample:
        pid, kind, off, ln, raw, ty = expected[bid]
        loc = index.lookup(bid)
        assert (loc.pack, loc.kind, loc.offset, loc.length, loc.raw_length, loc.type) == (pid, kind, off, ln, raw, ty)
        assert bid in index and index.raw_length(bid) == raw and index.pack_of(bid) == pid
    missing = [rng.randbytes(16) for _ in range(100)] + [sample[0][:8] + b"\0" * 8]
    assert not any(b in index for b in missing)
    assert index.lookup(missing[0]) is None and index.raw_length(missing[0]) is None
    assert index.contains_all(sample) and index.contains_all([]) and not index.contains_all(sample + missing[:1])
    # lookup_many (one vectorised search; a restore's walk): the same answers, in order,
    # with None for a missing id, whether the id is in the tables or the overlay.
    mixed = sample[:500] + missing + sample[500:1000] + [sample[1]]
    assert index.lookup_many(mixed) == [index.lookup(b) for b in mixed]
    assert index.lookup_many([]) == []
    # pack_names (a restore's check): the packs of those ids, and where the first missing one is.
    found = sample[:500] + sample[500:1000] + [sample[1]]
    assert index.pack_names(found) == ({loc.object_name for loc in index.lookup_many(found)}, None)
    assert index.pack_names(mixed)[1] == 500
    assert index.pack_names([]) == (set(), None)
    assert BlobIndex().pack_names(sample[:3]) == (set(), 0)
    assert not index.has_pack("00" * 16) and index.pack("00" * 16) is None
    some = rng.sample(list(pack_info), 20)
    by_pack = index.blobs_by_pack(some)
    for pid in some:
        assert pid in by_pack and index.has_pack(pid) and index.pack(pid) == pack_info[pid]
        assert {e.id for e in by_pack[pid]} == {b for b, v in expected.items() if v[0] == pid}
    everything = index.blobs_by_pack()
    assert sum(len(v) for v in everything.values()) == len(expected)


def test_merge_of_a_million_rows_keeps_the_first_record_of_each_id():
    """A merge large enough to gather its columns on two threads, sorted with numpy's
    unstable sort: ids repeated across objects and inside one, ids sharing their first 8
    bytes, a pack named in two objects. Each id keeps the record loaded first, each pack
    its first record, against a plain dict of the same facts."""
    rng = np.random.default_rng(11)
    per_table, per_pack = 400_000, 16  # 1.2 million rows: past blobindex.PARALLEL_ROWS
    tables, expected, packs_seen, special = [], {}, {}, []
    earlier = None
    for t in range(3):
        ids = rng.integers(0, 256, size=(per_table, 16), dtype=np.uint8)
        if earlier is not None:
            ids[:2000] = earlier[rng.choice(len(earlier), 2000, replace=False)]  # loaded before: they lose
            ids[2000:3000, :8] = earlier[:1000, :8]  # same first 8 bytes, other ids
        ids[3000:3500] = ids[4000:4500]  # twice in one object: its first row wins
        special += [bytes(i) for i in ids[:4500]]
        n_packs = per_table // per_pack
        packs = np.zeros(n_packs, dtype=PACK_RECORD)
        packs["id"] = rng.integers(0, 256, size=(n_packs, 16), dtype=np.uint8).view("V16")[:, 0]
        if t == 1:
            packs["id"][:3] = tables[0].packs["id"][:3]  # the same packs again: their first record stands
        packs["size"] = 1 << 30
        packs["kind"] = rng.integers(0, 2, n_packs)
        blobs = np.zeros(per_table, dtype=BLOB_RECORD)
        blobs["id"] = ids.view("V16")[:, 0]
        blobs["pack"] = np.arange(per_table) // per_pack
        blobs["offset"] = rng.integers(0, 1 << 29, per_table)
        blobs["length"] = rng.integers(1, 1000, per_table)
        blobs["raw_length"] = blobs["length"]
        blobs["type"] = rng.integers(0, 3, per_table)
        order = np.argsort(blobs["id"], kind="stable")  # as writers store them: sorted by id
        blobs = blobs[order]
        tables.append(packindex.IndexTable(packs, blobs))
        for p in packs.tolist():
            packs_seen.setdefault(bytes(p[0]).hex(), (packindex.PACK_KINDS[p[2]], p[1]))
        pack_ids = [bytes(i).hex() for i in packs["id"].tolist()]
        for b in blobs.tolist():  # (id, pack, type, offset, length, raw_length)
            expected.setdefault(bytes(b[0]), (pack_ids[b[1]], b[3], b[4], b[2]))
        earlier = ids
    index = BlobIndex()
    index.add_tables(list(tables))
    assert len(index) == len(expected) < 3 * per_table
    assert index.pack_count() == len(packs_seen)
    assert sorted(index.packs()) == sorted((p, k, s) for p, (k, s) in packs_seen.items())
    assert all(index.pack(p) == v for p, v in packs_seen.items())
    keys = list(expected)
    sample = [keys[i] for i in rng.choice(len(keys), 20_000, replace=False)]
    sample += special
    for bid, loc in zip(sample, index.lookup_many(sample)):
        assert (loc.pack, loc.offset, loc.length, loc.type) == expected[bid]
    assert index.lookup_many([b"\0" * 16]) == [None]


def test_loaded_index_leaves_nothing_for_the_cycle_gc(tmp_path):
    """200,000 blobs loaded: a few objects for the cycle GC to track, not one per blob."""
    repo = str(tmp_path / "vault")
    vault = Vault.init(LocalStore(repo), None, Settings())
    rng = random.Random(9)
    packs = np.zeros(12_500, dtype=PACK_RECORD)
    packs["id"] = np.frombuffer(rng.randbytes(16 * len(packs)), dtype="V16")
    packs["size"] = 16 * 2**20
    blobs = np.zeros(200_000, dtype=BLOB_RECORD)
    blobs["id"] = np.frombuffer(rng.randbytes(16 * len(blobs)), dtype="V16")
    blobs["pack"] = np.arange(len(blobs)) // 16
    blobs["offset"] = (np.arange(len(blobs)) % 16) * 2**20
    blobs["length"] = blobs["raw_length"] = 2**20
    for part in range(2):
        data = _v2(packs, blobs[part * 100_000:(part + 1) * 100_000])
        vault.store.put("index/" + content_id(data), data)
    vault = Vault.open(LocalStore(repo), None)
    gc.collect()
    before = len(gc.get_objects())
    index = vault.load_index()
    gc.collect()
    assert len(index) == 200_000 and index.pack_count() == 12_500
    assert len(gc.get_objects()) - before < 5_000


@settings(max_examples=300, deadline=None)
@given(packs=st.lists(st.binary(min_size=25, max_size=25), max_size=4),
       blobs=st.lists(st.binary(min_size=37, max_size=37), max_size=6),
       cut=st.integers(0, 2))
def test_arbitrary_version_2_tables_decode_or_are_refused(packs, blobs, cut):
    """Any bytes in the two tables: a FormatError, or records that pass every bound."""
    data = envelope.seal({"version": 2, "features": [], "packs": b"".join(packs),
                          "blobs": b"".join(blobs)[:len(b"".join(blobs)) - cut]}, "index", PLAIN)
    try:
        doc = packindex.decode(data, PLAIN, "index")
    except FormatError:
        return
    for p in doc.packs:
        assert p.kind in ("data", "tree") and 0 <= p.size < 2**48
        for b in p.blobs:
            assert b.type in blobfmt.BLOB_TYPES and b.offset + b.length <= p.size
            assert b.raw_length <= blobfmt.max_plaintext(b.type) and b.length <= b.raw_length + blobfmt.MAX_OVERHEAD
