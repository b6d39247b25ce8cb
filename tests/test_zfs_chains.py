"""ZFS chains end to end (zfs-fuse): long chains received from the mount with the receive
loop the docs print, that loop stopping at a failed step, snapshot records with a malformed
`zfs` map, and `restore zfs` never committing a stream that does not match its record."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess

import pytest

from cvtools import run, vault_env
from mounttools import mounted
from zfstools import put, sh, tree_contents, zpool  # noqa: F401 (zpool: a fixture)

pytestmark = pytest.mark.zfs

REPO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PASSWORD = "test-password"
DAMAGED = 13

# A receive loop as the docs print it: a subshell that stops at the first failed step.
LOOP = re.compile(r"^\(for f in (\S+\.restore)/\*; do.*?done\)$", re.M | re.S)
ANY_LOOP = re.compile(r"for f in \S+\.restore/\*")


def documented_loops() -> dict[str, list[str]]:
    """Every `@S.restore/` receive loop in README.md, docs/ and contrib/, by file."""
    files = [os.path.join(REPO_ROOT, "README.md")]
    for top in ("docs", "contrib"):
        for d, _, names in os.walk(os.path.join(REPO_ROOT, top)):
            files += [os.path.join(d, n) for n in names]
    out = {}
    for path in files:
        with open(path, errors="replace") as f:
            text = f.read()
        loops = [m.group(0) for m in LOOP.finditer(text)]
        # No loop in another form (one that goes on after a failed step) anywhere.
        assert len(ANY_LOOP.findall(text)) == len(loops), f"a receive loop in {path} is not in the stopping form"
        if loops:
            out[os.path.relpath(path, REPO_ROOT)] = loops
    return out


def as_printed(loop: str, restore_dir: str, target: str) -> str:
    """The loop with the docs' example paths replaced by ours, nothing else changed."""
    example_dir = LOOP.match(loop).group(1)
    (example_target,) = set(re.findall(r"zfs receive -F (\S+) <", loop))
    assert re.fullmatch(r"[\w/.:@+-]+", restore_dir), restore_dir  # nothing the shell would reinterpret
    return loop.replace(example_dir, restore_dir).replace(f" {example_target} ", f" {target} ")


def shell(script: str, sh_path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sh_path, "-c", script], capture_output=True, text=True, timeout=600)


def snapshots_of(dataset: str) -> list[str]:
    p = subprocess.run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset],
                       capture_output=True, text=True)
    return [n.split("@", 1)[1] for n in p.stdout.split() if n.split("@", 1)[0] == dataset]



def local_vault(repo: str):
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    return Vault.open(LocalStore(repo), lambda: PASSWORD.encode())



# ---- item: chains of 10 or more streams ----------------------------------------------------


def test_twelve_nightly_runs_received_with_the_documented_loop(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/photos"
    sh("zfs", "create", ds)
    data = os.path.join(root, "photos")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    snaps = []
    for night in range(12):  # twelve nightly runs: a full stream, then eleven increments
        put(f"{data}/night{night:02d}.bin", os.urandom(20_000))
        put(f"{data}/notes.txt", b"night %d\n" % night * 50)
        r = run(["backup", "zfs", ds, "--json"], env).json()
        assert r["new"] is True
        snaps.append(r["stream"].split("@")[1].split()[0])
    last = snaps[-1]
    loops = documented_loops()
    (readme_loop,) = loops["README.md"]
    (guide_loop,) = loops["docs/restore.md"]

    with mounted(env, tmp_path / "mnt") as m:
        restore_dir = m / f"zfs/{name}/photos/@{last}.restore"
        steps = os.listdir(restore_dir)
        files = [f"@{snaps[0]}.zfs"] + [f"@{a}..@{b}.zfs" for a, b in zip(snaps, snaps[1:])]
        assert steps == [f"{i:04d}-{f}" for i, f in enumerate(files, 1)]
        assert sorted(steps) == steps  # plain text order is chain order
        # `coldvault thaw` understands the same names.
        r = run(["thaw", "--dry-run", os.path.join(restore_dir, steps[10])], env)
        assert files[10] in r.out
        # Exactly the loop of the README, under /bin/sh; the guide's, under bash.
        r = shell(as_printed(readme_loop, restore_dir, f"{name}/readme"), "/bin/sh")
        assert r.returncode == 0, r.stderr
        r = shell(as_printed(guide_loop, restore_dir, f"{name}/guide"), "/bin/bash")
        assert r.returncode == 0, r.stderr
    source = tree_contents(data)
    for target in ("readme", "guide"):
        assert snapshots_of(f"{name}/{target}") == snaps
        assert tree_contents(os.path.join(root, target)) == source


def test_documented_loops_stop_at_the_first_failed_step(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    put(os.path.join(root, "d", "a"), b"a" * 5000)
    sh("zfs", "snapshot", f"{ds}@a")
    put(os.path.join(root, "d", "b"), b"b" * 5000)
    sh("zfs", "snapshot", f"{ds}@b")
    # A chain whose second step cannot be received; the third would still go in after it.
    steps = tmp_path / "steps" / "@b.restore"
    steps.mkdir(parents=True)
    (steps / "0001-@a.zfs").write_bytes(sh("zfs", "send", f"{ds}@a"))
    (steps / "0002-@a..@x.zfs").write_bytes(b"not a zfs stream\n" * 100)
    (steps / "0003-@a..@b.zfs").write_bytes(sh("zfs", "send", "-i", f"{ds}@a", f"{ds}@b"))
    loops = documented_loops()
    assert "README.md" in loops and "docs/restore.md" in loops
    n = 0
    for doc, found in loops.items():
        for loop in found:
            for sh_path in ("/bin/sh", "/bin/bash"):
                n += 1
                target = f"{name}/t{n}"
                r = shell(as_printed(loop, str(steps), target), sh_path)
                assert r.returncode != 0, f"the loop of {doc} under {sh_path} went on after a failed step"
                assert snapshots_of(target) == ["a"], (doc, sh_path)  # stopped at step 2: no @b
    assert n >= 4


# ---- item: malformed snapshot records -------------------------------------------------------


def test_malformed_zfs_records_are_skipped_with_a_warning(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    put(os.path.join(root, "d", "one"), os.urandom(50_000))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    first = run(["backup", "zfs", ds, "--json"], env).json()
    snap1 = first["stream"].split("@")[1].split()[0]

    vault = local_vault(repo)
    (good,) = vault.snapshots()
    z = good.zfs
    broken = {
        "no chunks": {k: v for k, v in z.items() if k != "chunks"},
        "guid a str": {**z, "guid": str(z["guid"])},
        "base without guid": {**z, "base": {"snapshot": snap1, "createtxg": 1}},
        "dataset escaping": {**z, "dataset": f"{name}/../../etc"},
        "flags not a list": {**z, "flags": "-c"},
        "length negative": {**z, "length": -5},
    }
    bad_ids = []
    for i, zmap in enumerate(broken.values()):  # through the project's own encoder
        bad = dataclasses.replace(good, zfs=zmap, time=good.time + i + 1, id="")
        bad_ids.append(vault.save_snapshot(bad))
    assert len(set(bad_ids)) == len(broken)

    def warned_of_each(text):
        assert "Traceback" not in text
        for sid in bad_ids:
            assert f"snapshots/{sid}" in text, text

    r = run(["snapshots", "--json"], env, check=False)
    assert r.code == DAMAGED  # listed what could be read, and says the rest is damaged
    assert [s["id"] for s in r.json()] == [good.id]
    warned_of_each(r.err)

    put(os.path.join(root, "d", "two"), os.urandom(50_000))
    r = run(["backup", "zfs", ds, "--json"], env)
    warned_of_each(r.err)
    second = r.json()
    snap2 = second["stream"].split("@")[1].split()[0]
    assert second["stream"] == f"{ds}@{snap2} from @{snap1}"

    with mounted(env, tmp_path / "mnt") as m:
        d = m / f"zfs/{name}/d"
        assert sorted(os.listdir(d)) == sorted([f"@{snap1}.zfs", f"@{snap1}..@{snap2}.zfs",
                                                f"@{snap1}.restore", f"@{snap2}.restore"])
        with open(os.path.join(d, f"@{snap1}..@{snap2}.zfs"), "rb") as f:
            assert f.read() == sh("zfs", "send", "-i", f"{ds}@{snap1}", f"{ds}@{snap2}")
        assert os.listdir(m / f"zfs/{name}") == ["d"]  # nothing of the escaping dataset name
    warned_of_each(m.log())

    r = run(["forget", "--keep-last", "5"], env)
    warned_of_each(r.err)
    r = run(["prune"], env, check=False)  # refuses: it cannot know what the damaged records use
    assert r.code == DAMAGED and "damaged" in r.err
    warned_of_each(r.err)
    r = run(["restore", "zfs", f"{ds}@{snap2}", "--into", f"{name}/back"], env)
    warned_of_each(r.err)
    assert tree_contents(os.path.join(root, "back")) == tree_contents(os.path.join(root, "d"))
    assert len(run(["snapshots", "--json"], env, check=False).json()) == 2

    # As prune's hint says: forget the damaged records (by id or prefix), then prune runs.
    r = run(["forget", bad_ids[0], *(sid[:12] for sid in bad_ids[1:])], env)
    assert r.out.count("damaged record") == len(bad_ids) and "Traceback" not in r.err
    r = run(["snapshots", "--json"], env)  # exit 0, no warning: they are gone
    assert len(r.json()) == 2 and r.err == ""
    run(["prune"], env)
    run(["restore", "zfs", f"{ds}@{snap2}", "--into", f"{name}/again"], env)
    assert tree_contents(os.path.join(root, "again")) == tree_contents(os.path.join(root, "d"))


# ---- item: restore zfs verifies the whole stream before it can be committed ----------------


def test_restore_never_commits_a_stream_that_does_not_match_its_record(zpool, tmp_path):
    name, root = zpool
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    for ds, size in (("a", 300_000), ("b", 700_000)):
        sh("zfs", "create", f"{name}/{ds}")
        put(os.path.join(root, ds, "f.bin"), os.urandom(size))
        sh("zfs", "snapshot", f"{name}/{ds}@s{ds}")
        run(["backup", "zfs", f"{name}/{ds}@s{ds}"], env)
    vault = local_vault(repo)
    recs = {r.zfs["dataset"]: r for r in vault.snapshots()}
    a, b = recs[f"{name}/a"], recs[f"{name}/b"]
    assert a.zfs["length"] != b.zfs["length"] and a.zfs["length"] > 64 * 1024

    def record_of_a(**changes) -> None:
        """Replace a's record by one with `changes` in its zfs map (the project's own encoder)."""
        for r in vault.snapshots():
            if r.zfs["dataset"] == f"{name}/a":
                vault.store.delete(f"snapshots/{r.id}")
        vault.save_snapshot(dataclasses.replace(a, zfs={**a.zfs, **changes}, id=""))

    def restore_a(target):
        return run(["restore", "zfs", f"{name}/a@sa", "--into", f"{name}/{target}"], env, check=False)

    # The chunk list of another stream, whose END record would commit that stream's snapshot,
    # with its length: the checksum says no, and the END record is never written.
    record_of_a(chunks=b.zfs["chunks"], length=b.zfs["length"])
    r = restore_a("t1")
    assert r.code == DAMAGED and "does not match its record" in r.err and "Traceback" not in r.err
    assert snapshots_of(f"{name}/t1") == []
    assert "sb" not in sh("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", name).decode().replace(
        f"{name}/b@sb", "")

    # The right chunks, a record whose checksum was changed: refused before the commit too.
    record_of_a(xxh3=bytes(16))
    r = restore_a("t2")
    assert r.code == DAMAGED and "does not match its record" in r.err
    assert snapshots_of(f"{name}/t2") == []

    # Another stream's chunk list under a's length: caught before anything is received.
    record_of_a(chunks=b.zfs["chunks"])
    r = restore_a("t3")
    assert r.code == DAMAGED and "adds up to" in r.err and "nothing was received" in r.err
    assert subprocess.run(["zfs", "list", f"{name}/t3"], capture_output=True).returncode != 0

    # The true record: the restore works, also into a target a refused attempt left behind.
    record_of_a()
    for target in ("t1", "t4"):
        run(["restore", "zfs", f"{name}/a@sa", "--into", f"{name}/{target}"], env)
        assert snapshots_of(f"{name}/{target}") == ["sa"]
        assert tree_contents(os.path.join(root, target)) == tree_contents(os.path.join(root, "a"))
