"""prune and forget below the CLI: vault/prune.py and vault/forget.py called without argparse.

The vaults are real (a local store written by `coldvault backup`, run as a user would); the
plans are made and applied by calling the library functions. To see the order of prune's
writes, the store is a LocalStore that also notes each put and delete it carries out.
"""

from __future__ import annotations

import os
import time

import pytest

from coldvault.errors import DamagedError, UserError
from coldvault.index.packindex import PackRecord
from coldvault.store.local import LocalStore
from coldvault.vault import Vault, forget, pricing, prune
from cvtools import diff_signatures, run, signature, vault_env


class NotingStore(LocalStore):
    """A real local store that also records, in order, each put and delete: ("put", name)."""

    def __init__(self, root: str):
        super().__init__(root)
        self.writes: list[tuple[str, str]] = []

    def put(self, name, data, storage_class=None):
        super().put(name, data, storage_class)
        self.writes.append(("put", name))

    def delete(self, name):
        super().delete(name)
        self.writes.append(("delete", name))


def open_vault(repo: str, store_class=LocalStore) -> Vault:
    return Vault.open(store_class(repo), lambda: b"test-password")


def files_in(repo: str) -> dict[str, bytes]:
    """Every object of a local vault (locks aside) with its bytes."""
    out = {}
    for dp, _, names in os.walk(repo):
        for n in names:
            rel = os.path.relpath(os.path.join(dp, n), repo)
            if not rel.startswith("locks"):
                with open(os.path.join(dp, n), "rb") as f:
                    out[rel] = f.read()
    return out


def objects(repo: str, prefix: str) -> set[str]:
    return {name for name in files_in(repo) if name.startswith(prefix) and not name.endswith(".cold")}


def refused(repo: str) -> DamagedError:
    """The error plan_prune refuses with; it changed nothing."""
    before = files_in(repo)
    with pytest.raises(DamagedError) as exc:
        prune.plan_prune(open_vault(repo), pricing.load())
    assert files_in(repo) == before
    return exc.value


@pytest.fixture
def two_snapshots(tmp_path):
    """A vault with small packs and two snapshots of one source: the first has a file the
    second does not. Returns (repo, env, src, first id, second id)."""
    src = tmp_path / "docs"
    src.mkdir()
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--pack-size", "1"], env)
    (src / "kept.bin").write_bytes(os.urandom(2_000_000))
    (src / "dropped.bin").write_bytes(os.urandom(3_000_000))
    first = run(["backup", "dir", str(src), "--name", "docs", "--json"], env).json()["snapshot"]
    os.unlink(src / "dropped.bin")
    second = run(["backup", "dir", str(src), "--name", "docs", "--json"], env).json()["snapshot"]
    return repo, env, src, first, second


def test_forget_then_prune_plan_and_apply_in_the_order_of_the_format(two_snapshots, tmp_path):
    repo, env, src, first, second = two_snapshots
    vault = open_vault(repo)
    records = vault.snapshots()
    fplan = forget.plan_by_ids(vault, records, [first[:10]])
    assert [r.id for r in fplan.remove] == [first] and fplan.damaged == [] and fplan.kept == {}
    forget.apply(vault, fplan)
    assert objects(repo, "snapshots/") == {f"snapshots/{second}"}

    old_indexes = objects(repo, "index/")
    assert len(old_indexes) == 2
    vault = open_vault(repo, NotingStore)
    before = files_in(repo)
    plan = prune.plan_prune(vault, pricing.load())
    assert files_in(repo) == before and vault.store.writes == []  # planning writes nothing
    assert plan.snapshots == 1
    assert plan.delete and plan.leftovers == [] and plan.rewrites_index
    assert {f"index/{i}" for i in plan.old_indexes} == old_indexes
    assert set(plan.delete) <= objects(repo, "data/") | objects(repo, "trees/")
    assert plan.bytes_freed == sum(len(before[n]) for n in plan.delete)
    # the dropped file's 3 MB go, whole packs or unused space in kept ones
    assert plan.bytes_freed + plan.bytes_unused_in_kept_packs >= 2_900_000
    assert plan.early_deletion_fee == 0 and plan.young_cold_packs == 0  # hot packs
    kept = {r.id for r in plan.keep}
    assert all(name.rsplit("/", 1)[-1] not in kept for name in plan.delete)

    result = prune.apply(vault, plan)
    writes = vault.store.writes
    # 1. the new index, 2. the old indexes, 3. the packs
    assert writes[0] == ("put", f"index/{result.new_indexes[0]}") and len(result.new_indexes) == 1
    assert writes[1:1 + len(old_indexes)] == [("delete", f"index/{i}") for i in plan.old_indexes]
    assert writes[1 + len(old_indexes):] == [("delete", name) for name in plan.delete]
    assert result.packs_deleted == len(plan.delete)
    assert sorted(result.indexes_deleted) == sorted(plan.old_indexes)
    assert objects(repo, "index/") == {f"index/{result.new_indexes[0]}"}
    assert not any(name in files_in(repo) for name in plan.delete)

    # What is left is whole, and a second plan has nothing to do.
    run(["check", "--read-data"], env)
    run(["restore", "dir", "latest", "--target", str(tmp_path / "r")], env)
    assert diff_signatures(signature(src), signature(tmp_path / "r")) == []
    again = prune.plan_prune(open_vault(repo), pricing.load())
    assert again.delete == [] and not again.rewrites_index and again.old_indexes == result.new_indexes


def test_prune_plan_prices_young_cold_packs(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(1_000_000))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    snap = run(["backup", "dir", str(src), "--json"], env).json()["snapshot"]
    run(["forget", snap], env)
    prices = pricing.load()
    vault = open_vault(repo)
    young = prune.plan_prune(vault, prices)
    data = [n for n in young.delete if n.startswith("data/")]
    assert data and young.young_cold_packs == len(data)
    assert young.early_deletion_fee == pytest.approx(
        sum(prices.early_deletion_fee("DEEP_ARCHIVE", len(files_in(repo)[n]), 0) for n in data), rel=1e-2)
    # 200 days later the minimum storage duration is over: no fee
    old = prune.plan_prune(vault, prices, now=time.time() + 200 * 86400)
    assert old.early_deletion_fee == 0 and old.young_cold_packs == 0 and old.delete == young.delete


def test_prune_plan_refuses_a_damaged_index_object(two_snapshots):
    repo = two_snapshots[0]
    iid = sorted(objects(repo, "index/"))[0]
    with open(os.path.join(repo, iid), "r+b") as f:
        f.seek(40)
        b = f.read(1)
        f.seek(40)
        f.write(bytes([b[0] ^ 1]))
    exc = refused(repo)
    assert "1 index object(s) are damaged" in exc.message and "repair index" in exc.hint


def test_prune_plan_refuses_a_damaged_snapshot_record_until_forget_removes_it(two_snapshots):
    repo, env, src, first, second = two_snapshots
    with open(os.path.join(repo, "snapshots", first), "ab") as f:
        f.write(b"x")
    assert "1 snapshot record(s) are damaged" in refused(repo).message

    # forget by id takes the damaged record (named by a prefix) too
    vault = open_vault(repo)
    records = vault.snapshots()
    assert [r.id for r in records] == [second]
    assert forget.damaged_ids(vault, records, [first[:9], second[:9]]) == {first[:9]: first}
    plan = forget.plan_by_ids(vault, records, [first[:9]])
    assert plan.remove == [] and plan.damaged == [first]
    forget.apply(vault, plan)
    assert objects(repo, "snapshots/") == {f"snapshots/{second}"}
    assert prune.plan_prune(open_vault(repo), pricing.load()).delete


def test_prune_plan_refuses_when_needed_blobs_are_in_no_index_and_packs_are_unindexed(two_snapshots):
    """An index that names the tree packs only: the data packs look like leftovers, but the
    snapshots use the chunks in them."""
    repo = two_snapshots[0]
    vault = open_vault(repo)
    index = vault.load_index()
    by_pack = index.blobs_by_pack()
    trees = {pid: PackRecord(pid, kind, psize, by_pack.get(pid, [])) for pid, kind, psize in index.packs() if kind == "tree"}
    old = sorted(index.index_ids)
    vault.save_index(list(trees.values()), supersedes=old)
    for iid in old:
        vault.delete_index(iid)
    exc = refused(repo)
    assert "are in no index" in exc.message and "repair index" in exc.hint


def test_forget_plan_by_policy(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    ids = []
    for i, t in enumerate(["2024-01-01T10:00:00Z", "2024-01-01T22:00:00Z", "2024-01-02T10:00:00Z"]):
        (src / f"day{i}.txt").write_text(t)
        ids.append(run(["backup", "dir", str(src), "--name", "docs", "--time", t, "--json"], env).json()["snapshot"])
    vault = open_vault(env["COLDVAULT_REPO"])
    records = vault.snapshots()
    plan = forget.plan_by_policy(records, {"daily": 5})
    assert plan.kept == {ids[2]: ["daily 2024-01-02"], ids[1]: ["daily 2024-01-01"]}
    assert [r.id for r in plan.remove] == [ids[0]] and plan.damaged == []
    with pytest.raises(UserError, match="no snapshots of source 'other'"):
        forget.plan_by_policy(records, {"last": 1}, source="other")
    with pytest.raises(UserError, match="must not be negative"):
        forget.plan_by_policy(records, {"last": -1})
    with pytest.raises(UserError, match="no snapshot 'ffff'"):
        forget.plan_by_ids(vault, records, ["ffff"])
    assert len(vault.snapshots()) == 3  # plans remove nothing
    forget.apply(vault, plan)
    assert [r.id for r in open_vault(env["COLDVAULT_REPO"]).snapshots()] == ids[1:]
