"""One damaged index object must not lock the user out: readers use every index object they
can read (one warning line names the damaged one), and `coldvault repair index` rebuilds the
rest from the packs' own headers, so every snapshot comes back byte for byte.

Every step runs the `coldvault` command as a user would, on local vaults (with the simulated
cold tier) and on a moto S3 server over HTTP.
"""

from __future__ import annotations

import os
import uuid

import pytest

from cvtools import diff_signatures, run, signature, vault_env

DAMAGED, COLD = 13, 14


def files_in(repo: str) -> dict[str, bytes]:
    """Every object of a local vault (locks aside) with its bytes: to see that nothing changed."""
    out = {}
    for dp, _, names in os.walk(repo):
        for n in names:
            p = os.path.join(dp, n)
            rel = os.path.relpath(p, repo)
            if not rel.startswith("locks"):
                with open(p, "rb") as f:
                    out[rel] = f.read()
    return out


def index_ids(repo: str) -> set[str]:
    d = os.path.join(repo, "index")
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def warnings(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if "is damaged" in line and line.startswith("coldvault: object index/")]


def assert_restores(env: dict, snap: str, src, target) -> None:
    run(["restore", "dir", snap, "--target", str(target)], env)
    assert diff_signatures(signature(src), signature(target)) == []


def make_tree(root, seed: int) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "notes.txt").write_text(f"notes {seed}\n" * 2000)
    (root / "blob.bin").write_bytes(os.urandom(250_000 + seed))


@pytest.fixture
def two_sources(tmp_path):
    """Two backups of two different trees, so each snapshot's blobs are in its own index object.

    Returns (repo, env, {source: (src dir, snapshot id, index id)})."""
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    out = {}
    for seed, name in enumerate(("a", "b")):
        src = tmp_path / name
        make_tree(src, seed)
        before = index_ids(repo)
        run(["backup", "dir", str(src), "--name", name], env)
        (iid,) = index_ids(repo) - before
        sid = run(["snapshots", "--source", name, "--json"], env).json()[0]["id"]
        out[name] = (src, sid, iid)
    return repo, env, out


@pytest.mark.parametrize("bad", ["a", "b"])
def test_one_damaged_index_of_two(two_sources, tmp_path, bad):
    repo, env, srcs = two_sources
    good = "b" if bad == "a" else "a"
    bad_src, bad_sid, bad_iid = srcs[bad]
    good_src, good_sid, _ = srcs[good]
    flip(os.path.join(repo, "index", bad_iid), 40)

    # The snapshot the good index covers reads as before, with one warning naming the bad index.
    r = run(["snapshots", "--json"], env)
    assert {s["id"] for s in r.json()} == {bad_sid, good_sid}
    r = run(["ls", good_sid[:8], "sub"], env)
    assert "notes.txt" in r.out
    (w,) = warnings(r.err)
    assert f"index/{bad_iid}" in w
    r = run(["restore", "dir", good_sid[:8], "--target", str(tmp_path / "good")], env)
    assert len(warnings(r.err)) == 1
    assert diff_signatures(signature(good_src), signature(tmp_path / "good")) == []

    # The other one fails, naming what is missing and the way out.
    r = run(["restore", "dir", bad_sid[:8], "--target", str(tmp_path / "bad")], env, check=False)
    assert r.code == DAMAGED
    (error,) = [line for line in r.err.splitlines() if line.startswith("coldvault: error:")]
    assert "not in any index" in error and f"index/{bad_iid}" in error
    assert "coldvault: hint:" in r.err and "coldvault repair index" in r.err
    assert not os.path.exists(tmp_path / "bad") or os.listdir(tmp_path / "bad") == []

    # check says so, and suggests the repair; prune refuses to delete the unindexed packs.
    r = run(["check"], env, check=False)
    assert r.code == DAMAGED and f"damaged: index/{bad_iid}" in r.out
    hint = [line for line in r.err.splitlines() if line.startswith("coldvault: hint:")]
    assert len(hint) == 1 and "coldvault repair index" in hint[0]
    assert run(["check", "--json"], env, check=False).json()["repair_index"] is True
    before = files_in(repo)
    r = run(["prune"], env, check=False)
    assert r.code == DAMAGED and "repair index" in r.err
    assert files_in(repo) == before

    # A dry run says what it would do and changes nothing.
    r = run(["repair", "index", "--dry-run"], env)
    assert "would read 2 pack header(s)" in r.out and f"index/{bad_iid}" in r.out
    assert files_in(repo) == before
    j = run(["repair", "index", "--dry-run", "--json"], env).json()
    assert j["dry_run"] and j["packs_read"] == 2 and j["damaged_indexes"] == [f"index/{bad_iid}"]
    assert files_in(repo) == before

    # The repair: only the two packs in no readable index are read; the damaged index goes.
    r = run(["repair", "index"], env)
    (line,) = r.out.splitlines()
    assert line.startswith("repaired the index: read 2 pack header(s)") and "removed 1 damaged index object" in line
    assert bad_iid not in index_ids(repo) and len(index_ids(repo)) == 2

    # Every snapshot is back, byte for byte, without a warning; check is clean.
    for name, (src, sid, _) in srcs.items():
        target = tmp_path / f"after-{name}"
        r = run(["restore", "dir", sid[:8], "--target", str(target)], env)
        assert warnings(r.err) == []
        assert diff_signatures(signature(src), signature(target)) == []
    r = run(["check", "--read-data"], env)
    assert "no damage found" in r.out and "leftover" not in r.out
    assert run(["check", "--json"], env).json()["repair_index"] is False
    # Nothing left to do: a second repair says so and writes nothing.
    before = files_in(repo)
    assert "nothing to repair" in run(["repair", "index"], env).out
    assert files_in(repo) == before


def test_the_only_index_damaged(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 7)
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    (iid,) = index_ids(repo)
    flip(os.path.join(repo, "index", iid), 60)

    r = run(["ls", "latest"], env, check=False)
    assert r.code == DAMAGED and "coldvault repair index" in r.err and len(warnings(r.err)) == 1
    r = run(["check"], env, check=False)
    assert r.code == DAMAGED and "coldvault repair index" in r.err
    # The packs are listed as possibly needed, not as leftovers for prune.
    assert "leftover" not in r.out and "not 'coldvault prune'" in r.out

    j = run(["repair", "index", "--json"], env).json()
    assert j["packs_read"] == 2 and j["removed_indexes"] == [f"index/{iid}"] and len(j["new_indexes"]) == 1
    assert j["cold_packs"] == [] and j["bad_headers"] == []
    assert index_ids(repo) == {j["new_indexes"][0][len("index/"):]}
    assert_restores(env, "latest", src, tmp_path / "out")
    assert "no damage found" in run(["check", "--read-data"], env).out


def test_damaged_pack_header_is_reported_and_the_rest_indexed(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 3)
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    (iid,) = index_ids(repo)
    flip(os.path.join(repo, "index", iid), 10)
    (tree_pack,) = [os.path.join(dp, n) for dp, _, ns in os.walk(os.path.join(repo, "trees")) for n in ns]
    flip(tree_pack, os.path.getsize(tree_pack) - 12 - 5)  # inside the header, before the trailer
    name = os.path.relpath(tree_pack, repo)

    r = run(["repair", "index"], env, check=False)
    assert r.code == DAMAGED and "Traceback" not in r.err
    assert f"damaged: {name}: its header cannot be read" in r.out
    assert "read 1 pack header(s)" in r.out and "removed 1 damaged index object" in r.out
    assert name in r.err  # the error line names it too
    # The data pack is indexed again: check no longer finds a damaged index, only the lost trees.
    j = run(["check", "--json"], env, check=False).json()
    assert not any(d["object"].startswith("index/") for d in j["damage"])
    assert [p["name"] for p in j["leftovers"]["unindexed_packs"]] == [name]


def test_cold_packs_are_named_skipped_and_read_once_thawed(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 5)
    repo = str(tmp_path / "vault")
    env = vault_env(repo)  # COLDVAULT_LOCAL_RESTORE_DELAY=0: a requested restore is ready at once
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    (iid,) = index_ids(repo)
    (data_pack,) = [os.path.relpath(os.path.join(dp, n), repo) for dp, _, ns in os.walk(os.path.join(repo, "data"))
                    for n in ns if not n.endswith(".cold")]
    flip(os.path.join(repo, "index", iid), 50)

    # The cold data pack cannot be read: named and skipped; the hot tree pack is indexed.
    r = run(["repair", "index"], env, check=False)
    assert r.code == COLD
    assert "skipped 1 cold pack(s)" in r.out and data_pack in r.out and "read 1 pack header(s)" in r.out
    assert "coldvault repair index --thaw" in r.err and data_pack in r.err
    assert iid not in index_ids(repo)
    r = run(["ls", "latest", "sub"], env)  # the trees are back
    assert "notes.txt" in r.out
    r = run(["restore", "dir", "latest", "--target", str(tmp_path / "early")], env, check=False)
    assert r.code == DAMAGED and "coldvault repair index" in r.err

    # --thaw asks for the restore of what it skipped; the next repair reads it.
    j = run(["repair", "index", "--thaw", "--json"], env, check=False).json()
    assert j["thaw_requested"] == [data_pack] and [c["name"] for c in j["cold_packs"]] == [data_pack]
    assert j["cold_packs"][0]["storage_class"] == "DEEP_ARCHIVE"
    r = run(["repair", "index"], env)
    assert "read 1 pack header(s)" in r.out and "skipped 0 cold pack(s)" in r.out
    assert_restores(env, "latest", src, tmp_path / "out")
    assert "no damage found" in run(["check"], env).out


def test_pending_checkpoints_still_count(two_sources, tmp_path):
    """A backup killed after storing a pack leaves a pending checkpoint: its pack is indexed
    by that checkpoint, so the repair neither reads it nor removes the checkpoint, and the
    next backup still reuses it."""
    repo, env, srcs = two_sources
    _, _, bad_iid = srcs["b"]
    flip(os.path.join(repo, "index", bad_iid), 40)
    c = tmp_path / "c"
    make_tree(c, 11)
    before = index_ids(repo)
    r = run(["backup", "dir", str(c), "--name", "c"], {**env, "COLDVAULT_CRASH_AT": "pack-stored"}, check=False)
    assert r.code != 0
    checkpoints = index_ids(repo) - before
    assert checkpoints

    j = run(["repair", "index", "--json"], env).json()
    assert j["packs_read"] == 2  # the damaged index's two packs; not the checkpoint's
    assert checkpoints <= index_ids(repo) and bad_iid not in index_ids(repo)
    run(["backup", "dir", str(c), "--name", "c"], env)
    for name, (src, sid, _) in {**srcs, "c": (c, "latest", None)}.items():
        target = tmp_path / f"out-{name}"
        if name == "c":
            run(["restore", "dir", "latest", "--source", "c", "--target", str(target)], env)
            assert diff_signatures(signature(c), signature(target)) == []
        else:
            assert_restores(env, sid[:8], src, target)
    assert "no damage found" in run(["check"], env).out


def test_s3(tmp_path, moto_endpoint):
    from coldvault.store.s3 import S3Store

    bucket = f"cv-{uuid.uuid4().hex[:12]}"
    env = vault_env(f"s3://{bucket}/v", COLDVAULT_S3_ENDPOINT=moto_endpoint)
    run(["init"], env)
    store = S3Store(bucket, "v", endpoint_url=moto_endpoint)
    srcs = {}
    for seed, name in enumerate(("a", "b")):
        src = tmp_path / name
        make_tree(src, seed)
        before = {o.name for o in store.list("index/")}
        run(["backup", "dir", str(src), "--name", name], env)
        (iname,) = {o.name for o in store.list("index/")} - before
        srcs[name] = (src, iname)
    data = bytearray(store.get(srcs["a"][1]))
    data[40] ^= 1
    store.put(srcs["a"][1], bytes(data))

    r = run(["restore", "dir", "latest", "--source", "b", "--target", str(tmp_path / "b-early")], env)
    assert len(warnings(r.err)) == 1 and srcs["a"][1] in r.err
    r = run(["restore", "dir", "latest", "--source", "a", "--target", str(tmp_path / "a-early")], env, check=False)
    assert r.code == DAMAGED and "coldvault repair index" in r.err
    r = run(["repair", "index"], env)
    assert "read 2 pack header(s)" in r.out and "removed 1 damaged index object" in r.out
    for name, (src, _) in srcs.items():
        target = tmp_path / f"out-{name}"
        run(["restore", "dir", "latest", "--source", name, "--target", str(target)], env)
        assert diff_signatures(signature(src), signature(target)) == []
    assert "no damage found" in run(["check", "--read-data"], env).out


GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "golden")


@pytest.mark.parametrize("kind,password", [("encrypted", "golden"), ("unencrypted", None)])
def test_rebuilt_index_equals_the_written_one_on_the_golden_vaults(tmp_path, kind, password):
    """Both index objects of a vault written by coldvault 0.1.0 damaged: the index rebuilt from its
    (many, small) packs' headers holds exactly the entries the writer put in the index."""
    import shutil

    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    repo = str(tmp_path / kind)
    shutil.copytree(os.path.join(GOLDEN, kind), repo)
    env = vault_env(repo, password)

    def entries():
        vault = Vault.open(LocalStore(repo), lambda: password.encode())
        vault.load_index()
        assert not vault.damaged_indexes
        index = vault.index
        return sorted(index.packs()), {pid: sorted(es, key=lambda e: e.id) for pid, es in index.blobs_by_pack().items()}

    written = entries()
    old = index_ids(repo)
    assert len(old) == 2
    for iid in old:
        flip(os.path.join(repo, "index", iid), 30)
    assert run(["ls", "latest"], env, check=False).code == DAMAGED
    j = run(["repair", "index", "--json"], env).json()
    assert j["packs_read"] == j["packs_listed"] == len(written[0])
    assert j["blobs_indexed"] >= sum(map(len, written[1].values())) and sorted(j["removed_indexes"]) == sorted(f"index/{i}" for i in old)
    assert entries() == written
    assert "no damage found" in run(["check", "--read-data"], env).out


def test_a_header_longer_than_the_first_read(tmp_path):
    """A pack of thousands of small files has a header longer than the 64 KiB the repair reads
    first; the trailer says how long, and a second ranged GET fetches the rest."""
    import struct

    from coldvault.vault.repair import TAIL_GUESS

    src = tmp_path / "src"
    for d in range(8):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(600):
            (src / f"d{d}" / f"f{i}").write_bytes(os.urandom(24))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    (pack,) = [os.path.join(dp, n) for dp, _, ns in os.walk(os.path.join(repo, "data")) for n in ns]
    with open(pack, "rb") as f:
        f.seek(-12, os.SEEK_END)
        (hlen,) = struct.unpack("<I", f.read(4))
    assert hlen + 12 > TAIL_GUESS
    (iid,) = index_ids(repo)
    flip(os.path.join(repo, "index", iid), 100)
    j = run(["repair", "index", "--json"], env).json()
    assert j["packs_read"] == 2 and j["blobs_indexed"] >= 4800 and j["bad_headers"] == []
    assert_restores(env, "latest", src, tmp_path / "out")
