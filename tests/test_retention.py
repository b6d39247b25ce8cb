"""Retention, prune and crash safety: years of cron runs must leave a consistent vault."""

from __future__ import annotations

import os
import random

import pytest

from cvtools import diff_signatures, run, signature, vault_env

USAGE, LOCKED = 2, 16


def dated_backups(env, src, times):
    ids = []
    for i, t in enumerate(times):
        (src / f"day{i}.txt").write_text(f"written for {t}\n" * 50)
        ids.append(run(["backup", "dir", str(src), "--name", "docs", "--time", t, "--json"], env).json()["snapshot"])
    return ids


def test_keep_policy_per_source(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    times = ["2024-01-01T10:00:00Z", "2024-01-01T22:00:00Z", "2024-01-02T10:00:00Z", "2024-01-03T10:00:00Z",
             "2024-01-10T10:00:00Z", "2024-02-15T10:00:00Z", "2024-03-20T10:00:00Z"]
    ids = dated_backups(env, src, times)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("x")
    run(["backup", "dir", str(other), "--time", "2020-01-01T00:00:00Z"], env)

    out = run(["forget", "--keep-daily", "3", "--keep-monthly", "3", "--source", "docs", "--dry-run", "--json"], env).json()
    kept = {k["id"] for k in out["kept"]}
    removed = {r["id"] for r in out["removed"]}
    # daily: 03-20, 02-15, 01-10; monthly: 2024-03, 2024-02, 2024-01 (newest of January: the 10th)
    assert kept == {ids[6], ids[5], ids[4]}
    assert removed == set(ids[:4])
    assert len(run(["snapshots", "--json"], env).json()) == 8  # dry run: nothing removed

    run(["forget", "--keep-last", "2", "--keep-yearly", "5"], env)  # every source
    left = run(["snapshots", "--json"], env).json()
    assert sorted((s["source"], s["time"]) for s in left) == [
        ("docs", "2024-02-15T10:00:00Z"), ("docs", "2024-03-20T10:00:00Z"), ("other", "2020-01-01T00:00:00Z")]
    r = run(["forget"], env, check=False)
    assert r.code == USAGE and "policy" in r.err


def test_prune_deletes_only_unused_data(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--pack-size", "1"], env)
    (src / "kept.bin").write_bytes(os.urandom(3_000_000))
    (src / "dropped.bin").write_bytes(os.urandom(3_000_000))
    first = run(["backup", "dir", str(src), "--json"], env).json()["snapshot"]
    os.unlink(src / "dropped.bin")
    run(["backup", "dir", str(src)], env)
    before = run(["prune", "--dry-run", "--json"], env).json()
    assert before["packs_deleted"] == 0  # the first snapshot still uses everything
    run(["forget", first], env)
    dry = run(["prune", "--dry-run", "--json"], env).json()
    # The dropped file's 3 MB are either in packs deleted whole, or reported as unused
    # space in packs the kept file shares (not repacked: data packs may be cold).
    assert dry["packs_deleted"] >= 1
    assert dry["bytes_freed"] + dry["bytes_unused_in_kept_packs"] >= 2_900_000
    size_before = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(repo) for f in fs)
    done = run(["prune", "--json"], env).json()
    assert done["packs_deleted"] == dry["packs_deleted"]
    size_after = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(repo) for f in fs)
    assert size_before - size_after >= dry["bytes_freed"] - 100_000
    assert len(os.listdir(os.path.join(repo, "index"))) == 1  # merged into one
    run(["restore", "dir", "latest", "--target", str(tmp_path / "r")], env)
    assert not diff_signatures(signature(src), signature(tmp_path / "r"))
    assert run(["prune", "--json"], env).json()["packs_deleted"] == 0


def test_prune_warns_about_early_deletion_of_cold_packs(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(2_000_000))
    env = vault_env(str(tmp_path / "vault"))
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    snap = run(["backup", "dir", str(src), "--json"], env).json()["snapshot"]
    run(["forget", snap], env)
    dry = run(["prune", "--dry-run", "--json"], env).json()
    # By hand: the 180 days of Deep Archive are still ahead (the packs are seconds old),
    # 6 months at $0.00099 per GB-month (GB = 2**30 bytes, as AWS bills).
    assert dry["early_deletion_fee_usd"] == pytest.approx(180 / 30 * dry["bytes_freed"] / 2**30 * 0.00099, rel=1e-3)
    # The same table as thaw's, overridable the same way.
    prices = tmp_path / "prices.json"
    prices.write_text('{"storage_per_gb_month": {"DEEP_ARCHIVE": 0.5}}')
    dearer = run(["prune", "--dry-run", "--json", "--prices", str(prices)], env).json()
    assert dearer["early_deletion_fee_usd"] == pytest.approx(180 / 30 * dry["bytes_freed"] / 2**30 * 0.5, rel=1e-3)
    r = run(["prune"], env)
    assert "early-deletion fee" in r.out + r.err


def loaded_index(repo: str):
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    vault = Vault.open(LocalStore(repo), lambda: b"test-password")
    return vault.load_index()


def indexed_data_bytes(repo: str) -> int:
    """Plaintext bytes of data blobs that the vault's indexes name (stored packs only)."""
    by_pack = loaded_index(repo).blobs_by_pack()
    return sum(e.raw_length for entries in by_pack.values() for e in entries if e.type == 0)


def data_pack_bytes(repo: str) -> int:
    """Bytes of every data pack in the store, indexed or not (not partial writes)."""
    total = 0
    for dirpath, _, files in os.walk(os.path.join(repo, "data")):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files
                     if not f.endswith(".cold") and not f.startswith(".tmp-"))
    return total


def partial_writes(repo: str) -> list[str]:
    return [f for _, _, files in os.walk(repo) for f in files if f.startswith(".tmp-")]


# Per pack the write order is: checkpoint (pending index), pack; then the run's index,
# the snapshot record. "pack-upload:2" dies before the second pack's checkpoint,
# "checkpoint-stored:3" between the third checkpoint and its pack, "pack-stored:2" right
# after the second pack is stored (the moment that used to leave a pack no index named),
# "store-rename:5" inside a put (the object written to its temporary file, not renamed).
# "index-part-stored:2" right after the second part of the run's index (written every 2
# blobs here, COLDVAULT_MAX_INDEX_ENTRIES), before the checkpoints it supersedes are deleted.
CRASH_POINTS = ["pack-upload:2", "checkpoint-stored:3", "pack-stored:2", "store-rename:5", "index-part-stored:2",
                "index-stored", "snapshot-stored"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_killed_backup_leaves_a_consistent_vault_and_resumes(tmp_path, point):
    src = tmp_path / "src"
    rng = random.Random(5)
    for i in range(8):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}.bin").write_bytes(rng.randbytes(700_000))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--pack-size", "1"], env)
    first = str(tmp_path / "first")
    os.rename(src, first)
    os.makedirs(src)
    run(["backup", "dir", first, "--name", "src"], env)  # a completed snapshot that must survive
    new_data = 8 * 700_000  # random: stored at about this size
    for i in range(8, 16):
        (src / f"f{i}.bin").write_bytes(rng.randbytes(700_000))

    packs_before, indexed_before = data_pack_bytes(repo), indexed_data_bytes(repo)
    crash_env = {**env, "COLDVAULT_CRASH_AT": point}
    if point.startswith("index-part-stored"):
        crash_env["COLDVAULT_MAX_INDEX_ENTRIES"] = "2"
    r = run(["backup", "dir", str(src), "--name", "src", "--json"], crash_env, check=False)
    assert r.code == -9, r.err  # killed where we asked
    stored_by_crash = data_pack_bytes(repo) - packs_before
    kept_by_crash = indexed_data_bytes(repo) - indexed_before  # what the next run can reuse
    snaps = run(["snapshots", "--json"], env).json()
    committed = point == "snapshot-stored"
    assert len(snaps) == (2 if committed else 1)
    run(["restore", "dir", snaps[0]["id"], "--target", str(tmp_path / "r1")], env)
    assert not diff_signatures(signature(first), signature(tmp_path / "r1"))

    # check: no damage, whatever the crash left is a leftover.
    report = run(["check", "--read-data", "--json"], env).json()
    assert report["damage"] == [], report["damage"]
    # Every pack the crash left in the store is named by an index (its checkpoint went first).
    assert report["leftovers"]["unindexed_packs"] == []
    if point.startswith("checkpoint-stored"):
        assert report["leftovers"]["unstored_packs"], "the third checkpoint names a pack never stored"
    if point.startswith(("pack-stored", "index-part-stored")):
        assert stored_by_crash > 0 and kept_by_crash > 0
    if point.startswith("index-part-stored"):  # the checkpoints the part repeats are leftovers
        assert report["leftovers"]["superseded_indexes"]
    # Every stored pack is reusable: nothing the crashed run stored is lost to the next one.
    assert kept_by_crash >= stored_by_crash - 64 * 1024 * (stored_by_crash // 900_000 + 1)

    adoptable = loaded_index(repo).adoptable  # the crash's checkpoints whose packs are all stored
    if point.startswith("pack-stored"):
        assert adoptable
    again = run(["backup", "dir", str(src), "--name", "src", "--json"], env).json()
    if committed:
        assert again["bytes_new"] == 0
    else:
        # The resumed run stores only what the crashed run had not stored: no data twice.
        stored_in_all = data_pack_bytes(repo) - packs_before
        assert stored_in_all <= new_data * 1.01 + 64 * 1024, (stored_by_crash, stored_in_all)
        assert again["bytes_new"] <= new_data - kept_by_crash + 4096
        # The run's index repeats the packs it adopted: readers no longer ask whether they
        # exist, and check calls those checkpoints leftovers that prune may delete.
        assert loaded_index(repo).adopted == []
        superseded = set(run(["check", "--json"], env).json()["leftovers"]["superseded_indexes"])
        assert {f"index/{i}" for i in adoptable} <= superseded
    run(["restore", "dir", "latest", "--target", str(tmp_path / "r2")], env)
    assert not diff_signatures(signature(src), signature(tmp_path / "r2"))
    if point.startswith("store-rename"):
        assert partial_writes(repo)  # the kill left a temporary file for prune
    run(["prune"], env)  # leftovers go; what snapshots use stays
    assert partial_writes(repo) == []
    after = run(["check", "--json"], env).json()
    assert after["damage"] == []
    assert not any(after["leftovers"][k] for k in ("unindexed_packs", "unstored_packs", "superseded_indexes"))
    assert loaded_index(repo).pending_ids == set()
    snaps = run(["snapshots", "--json"], env).json()  # oldest first
    assert len(snaps) == (3 if committed else 2)
    for s, source in zip(snaps, [first] + [src] * (len(snaps) - 1)):
        target = tmp_path / f"r-{s['id'][:8]}"
        run(["restore", "dir", s["id"], "--target", str(target)], env)
        assert not diff_signatures(signature(source), signature(target)), s["id"]
