"""ZFS backups run nightly for years (zfs-fuse): chains that end (`--full-every`), `forget`
removing whole old chains and bypassed streams, `prune` freeing their packs, holds on the
next base, `--keep-local` housekeeping, and the schedule docs/cron.md prints."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time

import pytest

from cvtools import run, vault_env
from mounttools import mounted
from zfstools import put, receive_files, sh, tree_contents, zpool  # noqa: F401 (zpool: a fixture)

pytestmark = pytest.mark.zfs

USAGE = 2
REPO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def stored(r: dict) -> tuple[str, str | None]:
    """(snapshot, base or None) of a `backup zfs --json` result's stream."""
    m = re.fullmatch(r"\S+@(\S+) (?:from @(\S+)|\(full\))", r["stream"])
    return m.group(1), m.group(2)


def streams(env, ds) -> list[tuple[str, str | None]]:
    out = []
    for s in run(["snapshots", "--source", f"zfs:{ds}", "--json"], env).json():
        base = s["zfs"]["base"]
        out.append((s["zfs"]["snapshot"], base["snapshot"] if base else None))
    return sorted(out)


def vault_bytes(repo: str) -> tuple[int, int]:
    """(number, bytes) of the data packs of a local vault."""
    n = total = 0
    for d, _, files in os.walk(os.path.join(repo, "data")):
        for f in files:
            if not f.endswith(".cold") and not f.startswith(".tmp-"):
                n += 1
                total += os.path.getsize(os.path.join(d, f))
    return n, total


def zget(prop: str, name: str) -> str:
    return sh("zfs", "get", "-H", "-p", "-o", "value", prop, name).decode().strip()


def local_snaps(ds: str) -> list[str]:
    p = subprocess.run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", ds], capture_output=True, text=True)
    return [n.split("@", 1)[1] for n in p.stdout.split() if n.split("@", 1)[0] == ds]


# ---- item 1: chains that end; forget and prune ------------------------------------------------


def test_full_every_ends_chains_and_forget_prune_drop_old_ones(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/photos"
    sh("zfs", "create", ds)
    data = os.path.join(root, "photos")
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--pack-size", "1"], env)

    nights, contents = [], {}
    for night in range(8):
        put(f"{data}/night{night}.bin", os.urandom(400_000))
        put(f"{data}/notes.txt", b"night %d\n" % night * 50)
        if night % 2:  # the option on odd nights, the environment (cron) on even ones
            r = run(["backup", "zfs", ds, "--full-every", "3", "--json"], env).json()
        else:
            r = run(["backup", "zfs", ds, "--json"], {**env, "COLDVAULT_ZFS_FULL_EVERY": "3"}).json()
        snap, base = stored(r)
        nights.append((snap, base))
        contents[snap] = tree_contents(data)
        if base is None and night:
            assert "--full-every 3" in r["full_because"]
    snaps = [s for s, _ in nights]
    # Full streams at runs 1, 4 and 7; each increment from the night before.
    assert [b is None for _, b in nights] == [True, False, False, True, False, False, True, False]
    assert all(b == snaps[i - 1] for i, (_, b) in enumerate(nights) if b is not None)

    # --keep-last 3 keeps nights 6, 7, 8: night 6 needs its chain (4, 5); the first chain goes whole.
    dry = run(["forget", "--keep-last", "3", "--dry-run"], env).out
    lines = {s: next(line for line in dry.splitlines() if re.search(rf"@{re.escape(s)}\.zfs\b", line)) for s in snaps}
    for s in snaps[:3]:
        assert lines[s].startswith("would remove") and "no kept snapshot's chain needs it" in lines[s]
    assert f"kept: needed by the chain of @{snaps[5]} (kept by --keep-last)" in lines[snaps[3]]
    assert f"kept: needed by the chain of @{snaps[5]} (kept by --keep-last)" in lines[snaps[4]]
    assert lines[snaps[5]].startswith("keep") and "kept: --keep-last" in lines[snaps[5]]
    assert f"needed by the chain of @{snaps[7]} (kept by --keep-last)" in lines[snaps[6]]
    assert len(streams(env, ds)) == 8  # a dry run removes nothing

    packs_before, bytes_before = vault_bytes(repo)
    out = run(["forget", "--keep-last", "3"], env).out
    assert "3 snapshot(s) removed" in out
    assert streams(env, ds) == sorted(nights[3:])
    run(["prune"], env)
    packs_after, bytes_after = vault_bytes(repo)
    # The first chain's three nights held 1.2 MB of random data only they used.
    assert packs_after < packs_before and bytes_before - bytes_after > 1_000_000
    run(["check", "--read-data"], env)

    # The kept snapshots restore byte for byte: by `restore zfs`, and from the mount's chain.
    run(["restore", "zfs", f"{ds}@{snaps[5]}", "--into", f"{name}/six"], env)
    assert tree_contents(os.path.join(root, "six")) == contents[snaps[5]]
    run(["restore", "zfs", f"{ds}@{snaps[7]}", "--into", f"{name}/eight"], env)
    assert tree_contents(os.path.join(root, "eight")) == contents[snaps[7]]
    with mounted(env, tmp_path / "mnt") as m:
        chain = os.path.join(m.path, "zfs", name, "photos", f"@{snaps[5]}.restore")
        steps = sorted(os.listdir(chain))
        assert len(steps) == 3
        receive_files([os.path.join(chain, s) for s in steps], f"{name}/frommount")
    assert tree_contents(os.path.join(root, "frommount")) == contents[snaps[5]]
    r = run(["restore", "zfs", f"{ds}@{snaps[1]}", "--into", f"{name}/gone"], env, check=False)
    assert r.code == USAGE and f"no {ds}@{snaps[1]} in the vault" in r.err


def test_a_bypass_increment_lets_the_middle_stream_go(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--pack-size", "1"], env)
    for s in ("a", "b", "c"):
        put(os.path.join(root, "d", s), os.urandom(300_000))
        sh("zfs", "snapshot", f"{ds}@{s}")
        run(["backup", "zfs", f"{ds}@{s}"], env)
    run(["backup", "zfs", f"{ds}@c", "--base", "@a"], env)  # the bypass a -> c
    dry = run(["forget", "--keep-last", "1", "--dry-run"], env).out
    assert re.search(r"would remove .* @a\.\.@b\.zfs", dry) and re.search(r"would remove .* @b\.\.@c\.zfs", dry)
    assert re.search(r"keep .* @a\.zfs  \(kept: needed by the chain of @c \(kept by --keep-last\)\)", dry)
    assert re.search(r"keep .* @a\.\.@c\.zfs  \(kept: --keep-last\)", dry)
    before = vault_bytes(repo)[1]
    run(["forget", "--keep-last", "1"], env)
    assert streams(env, ds) == [("a", None), ("c", "a")]
    run(["prune"], env)
    assert before - vault_bytes(repo)[1] > 250_000  # @b's file went with @a..@b
    run(["restore", "zfs", f"{ds}@c", "--into", f"{name}/r"], env)
    assert tree_contents(os.path.join(root, "r")) == tree_contents(os.path.join(root, "d"))


def test_bad_full_every_and_keep_local(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    for args, extra, said in [
        (["--full-every", "0"], {}, "--full-every must be 1 or more, not 0"),
        (["--full-every", "x"], {}, "--full-every must be a whole number of 1 or more, not 'x'"),
        ([], {"COLDVAULT_ZFS_FULL_EVERY": "-2"}, "COLDVAULT_ZFS_FULL_EVERY must be 1 or more, not -2"),
        ([], {"COLDVAULT_ZFS_FULL_EVERY": "weekly"}, "COLDVAULT_ZFS_FULL_EVERY must be a whole number"),
        (["--keep-local", "0"], {}, "--keep-local must be 1 or more, not 0"),
        (["--keep-local", "2.5"], {}, "--keep-local must be a whole number of 1 or more, not '2.5'"),
    ]:
        r = run(["backup", "zfs", ds, *args], {**env, **extra}, check=False)
        assert r.code == USAGE, (args, extra, r.err)
        assert r.err.splitlines()[0].startswith(f"coldvault: error: {said}"), r.err
        assert "Traceback" not in r.err
    assert local_snaps(ds) == []  # refused before any snapshot was taken
    assert run(["snapshots", "--json"], env).json() == []


# ---- item 2: holds ----------------------------------------------------------------------------


def test_holds_protect_the_next_base(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)

    def night(*extra):
        put(os.path.join(root, "d", "f"), os.urandom(50_000))
        return run(["backup", "zfs", ds, "--json", *extra], env).json()

    r1 = night()
    s1 = stored(r1)[0]
    assert r1["held"] == s1 and zget("userrefs", f"{ds}@{s1}") == "1"
    p = subprocess.run(["zfs", "destroy", f"{ds}@{s1}"], capture_output=True, text=True)
    assert p.returncode != 0 and s1 in local_snaps(ds)
    sh("zfs", "hold", "mine", f"{ds}@{s1}")  # someone else's hold stays

    r2 = night()
    s2, base = stored(r2)
    assert base == s1 and r2["held"] == s2 and r2["released"] == [s1]
    assert zget("userrefs", f"{ds}@{s2}") == "1" and zget("userrefs", f"{ds}@{s1}") == "1"
    sh("zfs", "release", "mine", f"{ds}@{s1}")
    sh("zfs", "destroy", f"{ds}@{s1}")  # no longer needed: released

    r3 = night("--no-hold")
    s3 = stored(r3)[0]
    assert r3["held"] is None and r3["released"] == []
    assert zget("userrefs", f"{ds}@{s2}") == "1" and zget("userrefs", f"{ds}@{s3}") == "0"
    r4 = night()
    s4, base = stored(r4)
    assert base == s3 and r4["released"] == [s2]
    assert [zget("userrefs", f"{ds}@{s}") for s in (s2, s3, s4)] == ["0", "0", "1"]
    assert "hold on @" + s4 in run(["backup", "zfs", f"{ds}@{s4}"], env).out  # nothing to do; still held


def test_a_recreated_base_is_refused_even_after_its_hold_is_released(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    put(os.path.join(root, "d", "a"), b"a" * 1000)
    sh("zfs", "snapshot", f"{ds}@monday")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "zfs", f"{ds}@monday"], env)
    assert subprocess.run(["zfs", "destroy", f"{ds}@monday"], capture_output=True).returncode != 0
    sh("zfs", "release", "coldvault", f"{ds}@monday")
    sh("zfs", "destroy", f"{ds}@monday")
    sh("zfs", "snapshot", f"{ds}@monday")  # same name, new GUID
    sh("zfs", "snapshot", f"{ds}@tuesday")
    r = run(["backup", "zfs", f"{ds}@tuesday", "--base", "@monday"], env, check=False)
    assert r.code == USAGE and "destroyed and created again" in r.err


# ---- item 3: --keep-local ---------------------------------------------------------------------


def test_keep_local_destroys_only_coldvaults_older_snapshots(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    foreign = ["manual", "autosnap_2026-01-01_00:00:00_daily", "coldvault-notatime", "nightly-20260101T000000Z",
               "coldvault-20260101T000000Z-mine"]
    for f in foreign:
        sh("zfs", "snapshot", f"{ds}@{f}")
    ours = []
    for _ in range(4):
        put(os.path.join(root, "d", "f"), os.urandom(50_000))
        ours.append(stored(run(["backup", "zfs", ds, "--json"], env).json())[0])
    sh("zfs", "hold", "mine", f"{ds}@{ours[0]}")  # held by someone else: not destroyed
    put(os.path.join(root, "d", "f"), os.urandom(50_000))
    r = run(["backup", "zfs", ds, "--keep-local", "2", "--json"], env).json()
    ours.append(stored(r)[0])
    assert sorted(r["destroyed"]) == sorted(ours[1:3])
    assert sorted(local_snaps(ds)) == sorted(foreign + [ours[0]] + ours[3:])
    # The hold moves to the new snapshot first, so with N = 1 both the others of ours go.
    text = run(["backup", "zfs", ds, "--keep-local", "1", "--snapshot-prefix", "coldvault"], env)
    assert "destroyed 2 older local snapshot(s)" in text.out and f"not destroying {ds}@{ours[0]}" in text.err
    left = set(local_snaps(ds)) - set(foreign) - {ours[0]}
    assert len(left) == 1 and left.pop() not in ours
    sh("zfs", "release", "mine", f"{ds}@{ours[0]}")


def test_keep_local_never_destroys_the_next_base(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    base = stored(run(["backup", "zfs", ds, "--no-hold", "--json"], env).json())[0]
    # Newer snapshots named as coldvault names its own, not (yet) in the vault.
    later = ["coldvault-20990101T000000Z", "coldvault-20990102T000000Z"]
    for s in later:
        sh("zfs", "snapshot", f"{ds}@{s}")
    r = run(["backup", "zfs", f"{ds}@{base}", "--no-hold", "--keep-local", "1", "--json"], env).json()
    assert r["new"] is False and r["destroyed"] == [later[0]]
    assert local_snaps(ds) == [base, later[1]]  # the base stays, unheld, though not the newest
    put(os.path.join(root, "d", "f"), b"x")
    r = run(["backup", "zfs", ds, "--json"], env).json()  # resumes the pending one, from the base
    assert stored(r) == (later[1], base)


# ---- docs/cron.md: the nightly schedule keeps the vault bounded ---------------------------------


def documented_nightly() -> list[str]:
    """The crontab lines of docs/cron.md's ZFS schedule, as commands."""
    with open(os.path.join(REPO_ROOT, "docs", "cron.md")) as f:
        text = f.read()
    block = text.split("## A nightly ZFS schedule", 1)[1].split("```", 2)[1]
    cmds = []
    for line in block.splitlines():
        if line.startswith(("#", "COLDVAULT_", "PATH=")) or not line.strip():
            continue
        cmds.append(" ".join(line.split()[5:]))  # the command after the five time fields
    return cmds


def test_documented_nightly_schedule_stays_bounded(zpool, tmp_path):
    name, root = zpool
    cmds = documented_nightly()
    assert len(cmds) == 2 and cmds[0].startswith("coldvault backup zfs tank/photos")
    full_every = int(re.search(r"--full-every (\d+)", cmds[0]).group(1))
    keep_local = int(re.search(r"--keep-local (\d+)", cmds[0]).group(1))
    ds = f"{name}/photos"
    sh("zfs", "create", ds)
    sh("zfs", "snapshot", f"{ds}@by-hand")
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--pack-size", "1"], env)
    from cvtools import COLDVAULT

    script = "\n".join(c.replace("tank/photos", ds) for c in cmds).replace("coldvault ", shlex.join(COLDVAULT) + " ")
    counts, sizes = [], []
    for night in range(9):
        put(os.path.join(root, "photos", "current.bin"), os.urandom(200_000))  # the same size, new data
        p = subprocess.run(["sh", "-ec", script], env={**os.environ, **env}, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        counts.append(len(streams(env, ds)))
        sizes.append(vault_bytes(repo)[1])
        ours = [s for s in local_snaps(ds) if s.startswith("coldvault-")]
        assert len(ours) <= keep_local and "by-hand" in local_snaps(ds)
    # In one day --keep-daily keeps one snapshot, with its chain: never more than --full-every
    # streams, and after the full stream of night full_every+1 the old chain is gone.
    assert max(counts) <= full_every
    assert counts[full_every] == 1 and counts[-1] == 9 - full_every
    # The packs of the old chain are gone: what is left is about one night's data per stream.
    assert sizes[full_every] < sizes[full_every - 1] - 1_000_000
    assert sizes[-1] < 2 * 200_000 * 1.2
    out = run(["restore", "zfs", f"{ds}@{local_snaps(ds)[-1]}", "--into", f"{name}/back"], env).out
    assert f"{9 - full_every} stream(s)" in out
    assert tree_contents(os.path.join(root, "back")) == tree_contents(os.path.join(root, "photos"))


# ---- item 5: --intermediate -----------------------------------------------------------------


def test_intermediate_stores_one_increment_per_snapshot(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/d"
    sh("zfs", "create", ds)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    data = os.path.join(root, "d")
    contents = {}
    put(os.path.join(data, "f0"), os.urandom(100_000))
    first = stored(run(["backup", "zfs", ds, "--json"], env).json())[0]
    contents[first] = tree_contents(data)
    for i in (1, 2):  # a snapshot tool's snapshots between two nightly runs
        put(os.path.join(data, f"f{i}"), os.urandom(100_000))
        sh("zfs", "snapshot", f"{ds}@autosnap_{i}")
        contents[f"autosnap_{i}"] = tree_contents(data)
    put(os.path.join(data, "f3"), os.urandom(100_000))
    r = run(["backup", "zfs", ds, "--intermediate", "--full-every", "3", "--json"], env).json()
    last = stored(r)[0]
    contents[last] = tree_contents(data)
    # One stream per snapshot; the fourth of the chain is full (--full-every 3).
    got = [re.fullmatch(r"\S+@(\S+) (?:from @(\S+)|\(full\))", s["stream"]).groups() for s in r["streams"]]
    assert got == [("autosnap_1", first), ("autosnap_2", "autosnap_1"), (last, None)]
    assert streams(env, ds) == sorted([(first, None), ("autosnap_1", first), ("autosnap_2", "autosnap_1"), (last, None)])
    assert "already in the vault" in run(["backup", "zfs", f"{ds}@{last}", "--intermediate"], env).out
    for i, (snap, want) in enumerate(contents.items()):
        run(["restore", "zfs", f"{ds}@{snap}", "--into", f"{name}/r{i}"], env)
        assert tree_contents(os.path.join(root, f"r{i}")) == want, snap
    # Without --intermediate a snapshot in between is skipped, as before.
    sh("zfs", "snapshot", f"{ds}@autosnap_3")
    put(os.path.join(data, "f4"), b"x")
    r = run(["backup", "zfs", ds, "--json"], env).json()
    assert stored(r)[1] == last and len(r["streams"]) == 1


# ---- item 4: --recursive ----------------------------------------------------------------------


def test_recursive_backup_and_restore_of_a_parent_and_its_children(zpool, tmp_path):
    name, root = zpool
    top = f"{name}/tank"
    for ds in (top, f"{top}/photos", f"{top}/docs"):
        sh("zfs", "create", ds)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    base = os.path.join(root, "tank")

    def change(night):
        for sub in ("", "photos", "docs"):
            put(os.path.join(base, sub, f"n{night}.bin"), os.urandom(50_000))

    change(1)
    r = run(["backup", "zfs", top, "--recursive", "--json"], env).json()
    assert [d["dataset"] for d in r["datasets"]] == [top, f"{top}/docs", f"{top}/photos"]
    assert all(d["stream"].endswith("(full)") and d["new"] for d in r["datasets"])
    snap1 = stored(r["datasets"][0])[0]
    assert {stored(d)[0] for d in r["datasets"]} == {snap1}  # one recursive snapshot
    change(2)
    sh("zfs", "create", f"{top}/docs/new")  # a new child: a full stream
    put(os.path.join(base, "docs", "new", "x"), b"new child\n")
    text = run(["backup", "zfs", top, "--recursive"], env).out
    assert "(recursive): 4 dataset(s), 4 new stream(s)" in text
    r = run(["snapshots", "--json"], env).json()
    snap2 = max(s["zfs"]["snapshot"] for s in r)
    kinds = {(s["zfs"]["dataset"], s["zfs"]["snapshot"]): s["zfs"]["base"] for s in r}
    assert kinds[(f"{top}/photos", snap2)]["snapshot"] == snap1 and kinds[(f"{top}/docs/new", snap2)] is None
    want = tree_contents(base)

    run(["restore", "zfs", f"{top}@{snap2}", "--recursive", "--into", f"{name}/back"], env)
    assert tree_contents(os.path.join(root, "back")) == want
    assert sh("zfs", "list", "-H", "-o", "name", "-r", f"{name}/back").decode().split() == [
        f"{name}/back", f"{name}/back/docs", f"{name}/back/docs/new", f"{name}/back/photos"]
    with mounted(env, tmp_path / "mnt") as m:
        d = os.path.join(m.path, "zfs", name, "tank")
        assert {"photos", "docs", f"@{snap2}.restore"} <= set(os.listdir(d))
        assert f"@{snap2}.zfs" in os.listdir(os.path.join(d, "docs", "new"))
    # A destroyed child stops; the others go on.
    sh("zfs", "release", "coldvault", f"{top}/photos@{snap2}")  # its base is held, as every dataset's
    for attempt in range(20):  # zfs-fuse can call a dataset busy for a moment after heavy use
        try:
            sh("zfs", "destroy", "-r", f"{top}/photos")
            break
        except AssertionError:
            if attempt == 19:
                raise
            time.sleep(1)
    r = run(["backup", "zfs", top, "--recursive", "--json"], env).json()
    assert [d["dataset"] for d in r["datasets"]] == [top, f"{top}/docs", f"{top}/docs/new"]
    r = run(["backup", "zfs", top, "--recursive", "--base", "@x"], env, check=False)
    assert r.code == USAGE and "--base" in r.err and "Traceback" not in r.err


def test_a_recursive_run_killed_half_way_is_resumed_with_the_same_snapshot(zpool, tmp_path):
    name, root = zpool
    top = f"{name}/tank"
    for ds in (top, f"{top}/a", f"{top}/b"):
        sh("zfs", "create", ds)
        put(os.path.join(root, ds.split("/", 1)[1], "f"), os.urandom(30_000))
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    # Killed just after the second dataset's stream was committed.
    r = run(["backup", "zfs", top, "--recursive"], {**env, "COLDVAULT_CRASH_AT": "snapshot-stored:2"}, check=False)
    assert r.code == -9
    assert len(run(["snapshots", "--json"], env).json()) == 2
    (snap,) = local_snaps(top)
    r = run(["backup", "zfs", top, "--recursive", "--json"], env)
    assert "resuming the upload" in r.err
    got = {d["dataset"]: (stored(d), d["new"]) for d in r.json()["datasets"]}
    assert got == {top: ((snap, None), False), f"{top}/a": ((snap, None), False), f"{top}/b": ((snap, None), True)}
    assert local_snaps(top) == local_snaps(f"{top}/b") == [snap]  # no second recursive snapshot
