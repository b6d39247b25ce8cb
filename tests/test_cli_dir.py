"""Directory backups end to end through the `coldvault` command, on local and S3 vaults.

The tree has everything a real one has: 10,000 files, empty files, symlinks
(relative, absolute, dangling), unicode and non-UTF-8 names, a 1 GiB file,
odd permissions and owners, old and future mtimes.
"""

from __future__ import annotations

import os
import random
import uuid

import pytest

from cvtools import diff_signatures, run, signature, vault_env

GiB = 1024 * 1024 * 1024


def make_tree(root: str, big_file: int = GiB, n_files: int = 10_000) -> dict:
    """Build the test tree; returns facts about it for the tests."""
    rng = random.Random(1234)
    os.makedirs(root)
    small = []
    for i in range(n_files):
        d = os.path.join(root, f"d{i % 100:03d}", f"sub{i % 7}")
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"f{i:05d}.dat")
        size = 0 if i % 50 == 0 else rng.randint(1, 20_000)
        with open(p, "wb") as f:
            f.write(rng.randbytes(size) if i % 3 else (b"text line %d\n" % i) * (size // 12 + 1))
        small.append(p)
    odd = os.path.join(root, "odd")
    os.makedirs(odd)
    for name in ["фото_日本.txt", "with space", "new\nline", "-dash", "x" * 255]:
        with open(os.path.join(odd, name), "w") as f:
            f.write(name)
    with open(os.path.join(os.fsencode(odd), b"latin1-\xe9t\xe9\xff"), "wb") as f:
        f.write(b"not utf-8 name")
    os.symlink("фото_日本.txt", os.path.join(odd, "rel-link"))
    os.symlink("/etc/hostname", os.path.join(odd, "abs-link"))
    os.symlink("does/not/exist", os.path.join(odd, "dangling"))
    os.symlink(b"\xff\xfe-target", os.path.join(os.fsencode(odd), b"link-bytes"))
    perms = os.path.join(root, "perms")
    os.makedirs(perms)
    for mode in (0o000, 0o600, 0o644, 0o4755, 0o2711, 0o1777, 0o777):
        p = os.path.join(perms, f"mode-{mode:04o}")
        with open(p, "w") as f:
            f.write(oct(mode))
        os.chmod(p, mode)
    os.makedirs(os.path.join(perms, "sticky-dir"))
    os.chmod(os.path.join(perms, "sticky-dir"), 0o1777)
    os.makedirs(os.path.join(perms, "closed-dir"))
    with open(os.path.join(perms, "closed-dir", "inside"), "w") as f:
        f.write("inside a 000 directory")
    os.chmod(os.path.join(perms, "closed-dir"), 0o000)
    owned = os.path.join(perms, "owned-1234-5678")
    with open(owned, "w") as f:
        f.write("owner")
    os.chown(owned, 1234, 5678)
    os.lchown(os.path.join(odd, "rel-link"), 4321, 8765)
    os.utime(os.path.join(odd, "with space"), ns=(0, -315_619_200_000_000_000))  # 1960
    os.utime(os.path.join(odd, "-dash"), ns=(0, 4_102_444_800_123_456_789))  # 2100, with nanoseconds
    os.link(os.path.join(odd, "with space"), os.path.join(odd, "hardlink"))
    if big_file:
        with open(os.path.join(root, "big.bin"), "wb") as f:
            left = big_file
            while left:
                n = min(left, 64 * 1024 * 1024)
                f.write(os.urandom(n))
                left -= n
    for d in ("odd", "perms", "d000"):
        os.utime(os.path.join(root, d), ns=(0, 1_600_000_000_000_000_000))
    return {"small": small}


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("src") / "tree")
    facts = make_tree(root)
    return root, facts


def roundtrip(repo: str, tree: str, target: str, env_extra: dict) -> dict:
    env = vault_env(repo, **env_extra)
    run(["init"], env)
    r = run(["backup", "dir", tree, "--name", "tree", "--json"], env).json()
    assert r["incomplete"] is False
    assert r["files"] == 10_000 + 7 + 7 + 1 + 1 + 1  # small + odd + perms + closed-dir/inside + owned + big
    run(["restore", "dir", "latest", "--target", target], env)
    want, got = signature(tree), signature(target)
    assert not diff_signatures(want, got), diff_signatures(want, got)
    return r


@pytest.mark.slow
def test_roundtrip_local(big_tree, tmp_path):
    tree, facts = big_tree
    roundtrip(str(tmp_path / "vault"), tree, str(tmp_path / "restored"), {})


@pytest.mark.slow
def test_roundtrip_s3(big_tree, tmp_path, moto_endpoint):
    tree, _ = big_tree
    repo = f"s3://cv-{uuid.uuid4().hex[:12]}/vaults/one"
    roundtrip(repo, tree, str(tmp_path / "restored"), {"COLDVAULT_S3_ENDPOINT": moto_endpoint})


def test_second_backup_reads_only_changed_files(tmp_path):
    tree = str(tmp_path / "tree")
    facts = make_tree(tree, big_file=64 * 1024 * 1024)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    first = run(["backup", "dir", tree, "--json"], env).json()
    assert first["files_read"] == first["files"]

    rng = random.Random(7)
    chosen = rng.sample(facts["small"], 100)  # 1% of the 10,000 files
    touched, modified = chosen[:50], chosen[50:]
    for p in touched:  # new mtime, same bytes: read again, nothing new stored
        os.utime(p, ns=(0, 1_700_000_000_000_000_000))
    for p in modified:
        with open(p, "ab") as f:
            f.write(b"changed " + p.encode())
    changed_bytes = sum(os.path.getsize(p) for p in chosen)

    second = run(["backup", "dir", tree, "--json"], env).json()
    assert second["files_read"] == 100
    assert second["unchanged_files"] == second["files"] - 100
    assert second["bytes_read"] == changed_bytes
    # Only the modified files' chunks are new (each small file is one chunk).
    assert second["chunks_new"] <= 50
    assert second["bytes_new"] <= sum(os.path.getsize(p) for p in modified)

    third = run(["backup", "dir", tree, "--json"], env).json()
    assert third["files_read"] == 0 and third["bytes_new"] == 0 and third["packs"] == 0

    target = str(tmp_path / "restored")
    run(["restore", "dir", "latest", "--target", target], env)
    assert not diff_signatures(signature(tree), signature(target))
