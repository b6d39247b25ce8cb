"""The one tree walker (vault/walker.py) on vaults written by the real `coldvault backup`,
and the commands that list, restore, thaw and prune through it."""

from __future__ import annotations

import json
import os

import pytest

from cvtools import run, signature, vault_env

DAMAGED = 13


def write(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def open_vault(repo: str):
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    vault = Vault.open(LocalStore(repo), lambda: b"test-password")
    vault.load_index()
    return vault


@pytest.fixture
def two_snapshots(tmp_path):
    """Snapshot 1 of a/{x, y/z}, b, c/ (empty); snapshot 2 adds d/w and leaves the rest alone.
    Returns (repo, env, src, [records oldest first])."""
    src = str(tmp_path / "src")
    write(f"{src}/a/x", "x")
    write(f"{src}/a/y/z", "z")
    write(f"{src}/b", "b")
    os.makedirs(f"{src}/c")
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    run(["backup", "dir", src, "--name", "src"], env)
    write(f"{src}/d/w", "w")
    run(["backup", "dir", src, "--name", "src"], env)
    vault = open_vault(repo)
    return repo, env, src, sorted(vault.snapshots(), key=lambda r: r.time)


def test_walk_is_depth_first_in_name_order(two_snapshots):
    from coldvault.vault.walker import walk

    repo, _, _, recs = two_snapshots
    vault = open_vault(repo)
    got = [(p, e.type) for p, e in walk(vault, recs[1].tree)]
    assert got == [(b"a", "dir"), (b"a/x", "file"), (b"a/y", "dir"), (b"a/y/z", "file"), (b"b", "file"),
                   (b"c", "dir"), (b"d", "dir"), (b"d/w", "file")]
    assert [p for p, _ in walk(vault, recs[1].tree, dirs_last=True)] == [
        b"a/x", b"a/y/z", b"a/y", b"a", b"b", b"c", b"d/w", b"d"]
    a = vault.load_tree(recs[1].tree).find(b"a")
    assert [p for p, _ in walk(vault, a.tree, b"top/a")] == [b"top/a/x", b"top/a/y", b"top/a/y/z"]


def test_walk_loads_a_tree_only_when_it_enters_it(two_snapshots):
    """A generator: a caller that stops early has loaded nothing below where it stopped."""
    from coldvault.vault.walker import walk

    repo, _, _, recs = two_snapshots
    vault = open_vault(repo)  # nothing decoded yet
    root = vault.load_tree(recs[1].tree)
    a, d = root.find(b"a"), root.find(b"d")
    y = vault.load_tree(a.tree).find(b"y")
    vault = open_vault(repo)
    it = walk(vault, recs[1].tree)
    assert next(it)[0] == b"a"
    assert vault.cached_tree(recs[1].tree) is not None and vault.cached_tree(a.tree) is None
    assert next(it)[0] == b"a/x"
    assert vault.cached_tree(a.tree) is not None and vault.cached_tree(y.tree) is None
    assert vault.cached_tree(d.tree) is None


def test_walks_sharing_seen_enter_each_tree_once(two_snapshots):
    """What prune needs: snapshot 2 reuses a/ and c/ of snapshot 1, so a walk of it after one
    of snapshot 1 with the same `seen` passes a/ and c/ by and enters only its root and d/."""
    from coldvault.vault.usage import referenced_blobs
    from coldvault.vault.walker import walk

    repo, _, _, recs = two_snapshots
    vault = open_vault(repo)
    seen: set = set()
    first = [p for p, _ in walk(vault, recs[0].tree, seen=seen)]
    assert first == [b"a", b"a/x", b"a/y", b"a/y/z", b"b", b"c"]
    second = [p for p, _ in walk(vault, recs[1].tree, seen=seen)]
    assert second == [b"a", b"b", b"c", b"d", b"d/w"]
    assert list(walk(vault, recs[1].tree, seen=seen)) == []  # a root already walked
    root = vault.load_tree(recs[1].tree)
    trees = {recs[0].tree, recs[1].tree} | {e.tree for e in root.entries if e.type == "dir"}
    trees.add(vault.load_tree(root.find(b"a").tree).find(b"y").tree)
    assert seen == trees
    chunks = {c for r in recs for _, e in walk(vault, r.tree) if e.type == "file" for c in e.chunks}
    assert referenced_blobs(vault, recs) == trees | chunks


def test_ls_recursive_lists_the_walk(two_snapshots):
    repo, env, _, recs = two_snapshots
    listing = run(["ls", "-R", "latest", "--json"], env).json()
    assert [(d["path"], d["type"]) for d in listing] == [
        ("a", "dir"), ("a/x", "file"), ("a/y", "dir"), ("a/y/z", "file"), ("b", "file"),
        ("c", "dir"), ("d", "dir"), ("d/w", "file")]
    assert listing[1]["size"] == 1 and set(listing[1]) == {"path", "type", "mode", "uid", "gid", "size",
                                                           "mtime", "mtime_ns"}
    text = run(["ls", "-R", "latest", "/a/"], env).out.splitlines()
    assert [line.split()[-1] for line in text] == ["a/x", "a/y", "a/y/z"]
    assert text[1].startswith("drwx")
    assert [d["path"] for d in run(["ls", "latest", "a", "--json"], env).json()] == ["a/x", "a/y"]
    assert [d["path"] for d in run(["ls", "latest", "a/y/z", "--json"], env).json()] == ["a/y/z"]
    assert run(["ls", "-R", "latest", "c", "--json"], env).out == "[]\n"
    assert [line.split()[-1] for line in run(["ls", recs[0].id[:8]], env).out.splitlines()] == ["a", "b", "c"]


def test_ls_recursive_prints_as_it_walks(two_snapshots):
    """A listing is not collected first: what is readable is printed before a damaged subtree stops it."""
    repo, env, _, recs = two_snapshots
    vault = open_vault(repo)
    a = vault.load_tree(recs[1].tree).find(b"a")
    old_pack = vault.locate(a.tree).object_name
    assert vault.locate(recs[1].tree).object_name != old_pack  # snapshot 2's root is elsewhere
    os.remove(os.path.join(repo, old_pack))
    r = run(["ls", "-R", "latest"], env, check=False)
    assert r.code == DAMAGED and old_pack in r.err
    assert [line.split()[-1] for line in r.out.splitlines()] == ["a"]
    assert "Traceback" not in r.err


def test_restore_and_thaw_walk_the_whole_subtree(two_snapshots, tmp_path):
    repo, env, src, _ = two_snapshots
    out = str(tmp_path / "out")
    run(["restore", "dir", "latest", "--target", out], env)
    assert signature(out) == signature(src)
    run(["restore", "dir", "latest", "a", "--target", str(tmp_path / "a")], env)
    assert sorted(os.listdir(tmp_path / "a")) == ["x", "y"]
    assert open(tmp_path / "a" / "y" / "z").read() == "z"
    for target, packs in [("latest:a", 1), ("latest:d", 1), ("latest", 2)]:  # d/w is in snapshot 2's pack
        plan = json.loads(run(["thaw", target, "--dry-run", "--json"], env).out)
        assert plan["targets"][0]["packs"] == packs, target
