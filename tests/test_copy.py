"""`coldvault copy --to URL`: snapshots into another vault, run as a user would.

Real vaults on disk and in moto over HTTP (Deep Archive), real ZFS streams
(zfs-fuse), a simulated cold tier in the local store for the cold source.
"""

from __future__ import annotations

import os
import random
import uuid

import pytest

from cvtools import COLDVAULT, diff_signatures, run, signature, vault_env
from zfstools import put, sh, tree_contents, zpool  # noqa: F401 (zpool: a fixture)

NO_VAULT, BAD_PASSWORD, COLD, USAGE = 10, 11, 14, 2


def write_tree(root, seed: int = 1) -> None:
    rng = random.Random(seed)
    (root / "docs").mkdir(parents=True)
    (root / "photos" / "2024").mkdir(parents=True)
    (root / "docs" / "report.txt").write_text("quarterly report\n" * 5000)
    (root / "docs" / "empty").write_bytes(b"")
    for i in range(3):
        (root / "photos" / "2024" / f"img{i}.jpg").write_bytes(rng.randbytes(400_000))
    (root / "photos" / "big.raw").write_bytes(rng.randbytes(3_000_000))  # several chunks
    os.symlink("photos/big.raw", root / "latest.raw")
    os.chmod(root / "docs" / "report.txt", 0o640)


def objects(repo) -> set[str]:
    """Every object file of a local vault (locks excluded: they come and go)."""
    out = set()
    for dirpath, _, files in os.walk(repo):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), repo)
            if not rel.startswith("locks"):
                out.add(rel)
    return out


def two_vaults(tmp_path, **dst_extra):
    """A source vault (password "source-pw") and an empty destination ("dest-pw")."""
    src_env = vault_env(str(tmp_path / "src-vault"), password="source-pw", XDG_CACHE_HOME=str(tmp_path / "cache"))
    dst_env = vault_env(str(tmp_path / "dst-vault"), password="dest-pw", XDG_CACHE_HOME=str(tmp_path / "cache"),
                        **dst_extra)
    run(["init"], src_env)
    return src_env, dst_env


def copy_env(src_env: dict, dst_env: dict, **extra) -> dict:
    return {**src_env, "COLDVAULT_TO_PASSWORD": dst_env["COLDVAULT_PASSWORD"], **extra}


def restored(tmp_path, env, snap: str, name: str):
    target = tmp_path / name
    run(["restore", "dir", snap, "--target", str(target)], env)
    return target


def test_copy_between_local_vaults_restores_identically_and_twice_copies_nothing(tmp_path):
    src_env, dst_env = two_vaults(tmp_path)
    run(["init"], dst_env)
    data = tmp_path / "data"
    write_tree(data)
    first = tmp_path / "first"
    run(["backup", "dir", str(data), "--name", "photos", "--tag", "nightly", "--host", "nas"], src_env)
    os.system(f"cp -a {data} {first}")
    # Second snapshot: one file rewritten, one added, the rest unchanged.
    (data / "docs" / "report.txt").write_text("annual report\n" * 3000)
    (data / "photos" / "2024" / "new.jpg").write_bytes(random.Random(9).randbytes(200_000))
    run(["backup", "dir", str(data), "--name", "photos", "--tag", "nightly", "--host", "nas"], src_env)
    run(["backup", "stdin", "--name", "db.sql"], src_env, input=b"CREATE TABLE t (x int);\n" * 20000)
    src_snaps = run(["snapshots", "--json"], src_env).json()
    assert len(src_snaps) == 3

    r = run(["copy", "--to", dst_env["COLDVAULT_REPO"], "--json"], copy_env(src_env, dst_env)).json()
    assert [c["source_snapshot"] for c in r["copied"]] == [s["id"] for s in src_snaps]
    assert r["present"] == []
    # The second photos snapshot reads only what its backup changed: the last copy of the
    # source gave the destination's ids of everything else.
    changed = len("annual report\n" * 3000) + 200_000
    assert r["copied"][1]["bytes_read"] == changed
    assert r["copied"][0]["bytes_read"] == sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(first) for f in fs
        if not os.path.islink(os.path.join(d, f)))

    dst_snaps = run(["snapshots", "--json"], dst_env).json()
    assert [(s["source"], s["time"], s["kind"]) for s in dst_snaps] == [
        (s["source"], s["time"], s["kind"]) for s in src_snaps]
    assert {s["id"] for s in dst_snaps}.isdisjoint({s["id"] for s in src_snaps})
    assert [s["original"] for s in dst_snaps] == [s["id"] for s in src_snaps]
    assert [s["original"] for s in src_snaps] == [None] * 3
    assert dst_snaps[1]["parent"] == dst_snaps[0]["id"]  # the copy of the source's parent
    # Tags and host are kept, so the filters select the copies too.
    tagged = run(["snapshots", "--tag", "nightly", "--host", "nas", "--json"], dst_env).json()
    assert len(tagged) == 2

    # Byte-identical restores from the destination, of both photo snapshots and the stream.
    for snap, want in ((dst_snaps[0]["id"], first), (dst_snaps[1]["id"], data)):
        got = restored(tmp_path, dst_env, snap, f"back-{snap[:8]}")
        assert not diff_signatures(signature(want), signature(got))
    dumped = run(["dump", dst_snaps[2]["id"], "db.sql"], dst_env).out
    assert dumped == "CREATE TABLE t (x int);\n" * 20000
    report = run(["check", "--read-data", "--json"], dst_env).json()
    assert report["damage"] == [] and report["leftovers"]["unindexed_packs"] == []

    # The destination's password is not the source's.
    r = run(["snapshots"], {**dst_env, "COLDVAULT_PASSWORD": "source-pw"}, check=False)
    assert r.code == BAD_PASSWORD

    # A second copy copies nothing and writes nothing.
    before = objects(dst_env["COLDVAULT_REPO"])
    again = run(["copy", "--to", dst_env["COLDVAULT_REPO"]], copy_env(src_env, dst_env))
    assert again.out.splitlines()[-1] == f"0 snapshot(s) copied to {dst_env['COLDVAULT_REPO']}, 3 there already"
    assert objects(dst_env["COLDVAULT_REPO"]) == before


def test_copy_of_selected_snapshots_then_the_rest(tmp_path):
    src_env, dst_env = two_vaults(tmp_path)
    run(["init"], dst_env)
    data = tmp_path / "data"
    data.mkdir()
    for day in (1, 2, 3):
        (data / f"day{day}.txt").write_text(f"day {day}\n" * 1000)
        run(["backup", "dir", str(data), "--name", "notes", "--time", f"2026-11-0{day}T03:00:00Z"]
            + (["--tag", "keep"] if day == 2 else []), src_env)
    (tmp_path / "pw").write_text("dest-pw\n")
    env = {**src_env}
    dst = dst_env["COLDVAULT_REPO"]

    # One chosen by tag, the password from a command: it reads both its files.
    r = run(["copy", "--to", dst, "--to-password-command", f"cat {tmp_path / 'pw'}", "--tag", "keep", "--json"],
            env).json()
    assert [c["time"] for c in r["copied"]] == ["2026-11-02T03:00:00Z"]
    assert r["copied"][0]["bytes_read"] == len("day 1\n" * 1000) + len("day 2\n" * 1000)
    # One named by its UTC day, the password from a file: the newer copy holds its only
    # file unchanged, so nothing is read.
    r = run(["copy", "--to", dst, "--to-password-file", str(tmp_path / "pw"), "2026-11-01", "--json"], env).json()
    assert [c["time"] for c in r["copied"]] == ["2026-11-01T03:00:00Z"]
    assert r["copied"][0]["bytes_read"] == 0
    assert [s["time"] for s in run(["snapshots", "--json"], dst_env).json()] == [
        "2026-11-01T03:00:00Z", "2026-11-02T03:00:00Z"]
    # The rest (the destination and its password from the environment): the two already
    # copied are skipped; the new one reads only day3.txt.
    r = run(["copy", "--json"], {**env, "COLDVAULT_TO_REPO": dst, "COLDVAULT_TO_PASSWORD_FILE": str(tmp_path / "pw")}
            ).json()
    assert [c["time"] for c in r["copied"]] == ["2026-11-03T03:00:00Z"]
    assert r["copied"][0]["bytes_read"] == len("day 3\n" * 1000)
    assert len(r["present"]) == 2
    got = restored(tmp_path, dst_env, "latest", "back")
    assert sorted(os.listdir(got)) == ["day1.txt", "day2.txt", "day3.txt"]
    assert (got / "day2.txt").read_text() == "day 2\n" * 1000
    got = restored(tmp_path, dst_env, "2026-11-01", "back-1")
    assert os.listdir(got) == ["day1.txt"] and (got / "day1.txt").read_text() == "day 1\n" * 1000


def test_copy_to_s3_deep_archive(tmp_path, moto_endpoint):
    import boto3

    bucket = f"cv-{uuid.uuid4().hex[:12]}"
    src_env, _ = two_vaults(tmp_path)
    dst_url = f"s3://{bucket}/offsite"
    dst_env = vault_env(dst_url, password="dest-pw", XDG_CACHE_HOME=str(tmp_path / "cache"),
                        COLDVAULT_S3_ENDPOINT=moto_endpoint)
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], dst_env)
    data = tmp_path / "data"
    write_tree(data)
    run(["backup", "dir", str(data), "--name", "photos"], src_env)

    env = copy_env(src_env, dst_env)  # the source is local: its endpoint is the destination's only
    r = run(["copy", "--to", dst_url, "--to-endpoint-url", moto_endpoint], env)
    assert "1 snapshot(s) copied" in r.out

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="offsite/")["Contents"]
    classes = {}
    for o in listing:
        classes.setdefault(o["Key"].split("/")[1], set()).add(o["StorageClass"])
    assert classes["data"] == {"DEEP_ARCHIVE"}
    assert classes["trees"] == classes["index"] == classes["snapshots"] == {"STANDARD"}

    # Browsing needs nothing thawed; reading does (moto restores at once).
    assert "big.raw" in run(["ls", "latest", "photos"], dst_env).out
    run(["thaw", "latest"], dst_env)
    got = restored(tmp_path, dst_env, "latest", "back")
    assert not diff_signatures(signature(data), signature(got))
    report = run(["check", "--read-data", "--json"], dst_env).json()
    assert report["damage"] == []

    again = run(["copy", "--to", dst_url, "--to-endpoint-url", moto_endpoint, "--json"], env).json()
    assert again["copied"] == [] and len(again["present"]) == 1


def test_cold_source_says_what_to_thaw_and_writes_nothing(tmp_path):
    cache = str(tmp_path / "cache")
    src_env = vault_env(str(tmp_path / "cold-vault"), password="source-pw", XDG_CACHE_HOME=cache,
                        COLDVAULT_LOCAL_RESTORE_DELAY="3600")
    dst_env = vault_env(str(tmp_path / "dst-vault"), password="dest-pw", XDG_CACHE_HOME=cache)
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], src_env)
    run(["init"], dst_env)
    data = tmp_path / "data"
    write_tree(data)
    run(["backup", "dir", str(data), "--name", "photos"], src_env)
    sid = run(["snapshots", "--json"], src_env).json()[0]["id"]
    dst = dst_env["COLDVAULT_REPO"]
    before = objects(dst)

    r = run(["copy", "--to", dst], copy_env(src_env, dst_env), check=False)
    assert r.code == COLD, r.err
    lines = r.err.splitlines()
    assert len(lines) == 2 and "Traceback" not in r.err
    assert lines[0].startswith("coldvault: error: the copy needs ")
    assert f"snapshot(s) {sid[:8]} (photos " in lines[0] and "MiB) of the source vault" in lines[0]
    assert "nothing was copied" in lines[0]
    assert lines[1].startswith(f"coldvault: hint: thaw them first with 'coldvault thaw {sid[:8]}'")
    assert objects(dst) == before

    dry = run(["copy", "--to", dst, "--dry-run", "--json"], copy_env(src_env, dst_env)).json()
    assert [w["cold"] for w in dry["would_copy"]] == [True] and dry["cold_bytes"] > 0

    # Thawed but not ready yet: still cold, and it says so.
    run(["thaw", sid], src_env)
    r = run(["copy", "--to", dst], copy_env(src_env, dst_env), check=False)
    assert r.code == COLD and "all of them being restored already" in r.err
    assert objects(dst) == before

    # Ready (the simulated restore takes no time now): the copy goes through.
    ready = copy_env(src_env, dst_env, COLDVAULT_LOCAL_RESTORE_DELAY="0")
    assert "1 snapshot(s) copied" in run(["copy", "--to", dst], ready).out
    got = restored(tmp_path, dst_env, "latest", "back")
    assert not diff_signatures(signature(data), signature(got))


def test_destination_errors_are_one_line(tmp_path):
    src_env, dst_env = two_vaults(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    run(["backup", "dir", str(data)], src_env)
    dst = dst_env["COLDVAULT_REPO"]

    def err(r, code):
        assert r.code == code, r.err
        assert "Traceback" not in r.err and r.err.startswith("coldvault: error: ")
        return r.err.splitlines()

    lines = err(run(["copy"], copy_env(src_env, dst_env), check=False), USAGE)
    assert lines == ["coldvault: error: no destination vault given",
                     "coldvault: hint: pass --to URL or set COLDVAULT_TO_REPO"]
    lines = err(run(["copy", "--to", dst], copy_env(src_env, dst_env), check=False), NO_VAULT)
    assert lines[0] == f"coldvault: error: no vault at {dst} to copy into (no config object)"
    assert lines[1].startswith(f"coldvault: hint: create it first with 'coldvault init --repo {dst}'")

    run(["init"], dst_env)
    lines = err(run(["copy", "--to", dst], {**src_env, "COLDVAULT_TO_PASSWORD": "wrong"}, check=False), BAD_PASSWORD)
    assert lines[0] == f"coldvault: error: wrong password for the destination vault at {dst}"
    # No destination password and no terminal: not the source's password, silently.
    lines = err(run(["copy", "--to", dst], src_env, check=False), BAD_PASSWORD)
    assert "needs a password and there is no terminal" in lines[0]
    lines = err(run(["copy", "--to", dst, "--to-password-file", str(tmp_path / "nope")], src_env, check=False), USAGE)
    assert lines[0].startswith(f"coldvault: error: cannot read the destination's password file {tmp_path / 'nope'}")
    # Into itself.
    lines = err(run(["copy", "--to", src_env["COLDVAULT_REPO"]], copy_env(src_env, src_env), check=False), USAGE)
    assert "is the vault being copied from" in lines[0]
    # A snapshot that is not there.
    lines = err(run(["copy", "--to", dst, "deadbeef"], copy_env(src_env, dst_env), check=False), USAGE)
    assert lines[0] == "coldvault: error: no snapshot 'deadbeef' in the vault"
    assert run(["snapshots", "--json"], dst_env).json() == []


@pytest.mark.parametrize("point", ["pack-stored", "index-stored", "snapshot-stored"])
def test_killed_copy_leaves_a_checked_destination_and_resumes(tmp_path, point):
    src_env, dst_env = two_vaults(tmp_path)
    run(["init", "--pack-size", "1"], dst_env)
    data = tmp_path / "data"
    write_tree(data)
    run(["backup", "dir", str(data), "--name", "photos"], src_env)
    dst = dst_env["COLDVAULT_REPO"]
    r = run(["copy", "--to", dst], copy_env(src_env, dst_env, COLDVAULT_CRASH_AT=point), check=False)
    assert r.code == -9, r.err
    report = run(["check", "--read-data", "--json"], dst_env).json()
    assert report["damage"] == [] and report["leftovers"]["unindexed_packs"] == []
    committed = point == "snapshot-stored"
    assert len(run(["snapshots", "--json"], dst_env).json()) == (1 if committed else 0)
    r = run(["copy", "--to", dst, "--json"], copy_env(src_env, dst_env)).json()
    assert len(r["copied"]) == (0 if committed else 1)
    if point == "index-stored":
        assert r["copied"][0]["bytes_new"] == 0  # every chunk was stored and indexed by the killed run
    got = restored(tmp_path, dst_env, "latest", "back")
    assert not diff_signatures(signature(data), signature(got))


@pytest.mark.zfs
def test_copy_of_zfs_streams(zpool, tmp_path):
    import subprocess

    name, root = zpool
    ds = f"{name}/photos"
    sh("zfs", "create", ds)
    src_env, dst_env = two_vaults(tmp_path)
    run(["init"], dst_env)
    put(os.path.join(root, "photos", "a.bin"), os.urandom(2_000_000))
    run(["backup", "zfs", ds], src_env)
    put(os.path.join(root, "photos", "b.txt"), b"second night\n" * 1000)
    run(["backup", "zfs", ds], src_env)
    want = tree_contents(os.path.join(root, "photos"))

    r = run(["copy", "--to", dst_env["COLDVAULT_REPO"], "--source", f"zfs:{ds}", "--json"],
            copy_env(src_env, dst_env)).json()
    assert len(r["copied"]) == 2
    src_snaps = run(["snapshots", "--json"], src_env).json()
    dst_snaps = run(["snapshots", "--json"], dst_env).json()
    for s, d in zip(src_snaps, dst_snaps):
        streams = []
        for env, snap in ((src_env, s["id"]), (dst_env, d["id"])):
            p = subprocess.run([*COLDVAULT, "dump", snap], env={**os.environ, **env}, capture_output=True)
            assert p.returncode == 0, p.stderr.decode()
            streams.append(p.stdout)
        assert streams[0] == streams[1] and streams[0]
    # The chain restores from the destination alone.
    snap = f"{ds}@{dst_snaps[-1]['zfs']['snapshot']}"
    run(["restore", "zfs", snap, "--into", f"{name}/back"], dst_env)
    assert tree_contents(os.path.join(root, "back")) == want
    report = run(["check", "--read-data", "--json"], dst_env).json()
    assert report["damage"] == []


def test_original_in_snapshot_records():
    """The format of `original` (docs/format.md 6.6): written only when set, checked on read."""
    from coldvault.index import envelope, snapshot
    from coldvault.index.crypto import Sealer
    from coldvault.index.errors import FormatError

    sealer = Sealer(None)
    plain = snapshot.SnapshotRecord(kind="tree", source="photos", time=1, tree=b"\x01" * 16)
    assert b"original" not in snapshot.encode(plain, sealer)
    copied = snapshot.SnapshotRecord(kind="tree", source="photos", time=1, tree=b"\x01" * 16, original="ab" * 16)
    assert snapshot.decode(snapshot.encode(copied, sealer), sealer, "snapshots/x").original == "ab" * 16
    assert snapshot.decode(snapshot.encode(plain, sealer), sealer, "snapshots/x").original is None
    for bad in ("AB" * 16, "ab", 7, b"\xab" * 16):
        doc = {"version": 1, "features": [], "kind": "tree", "source": "s", "time": 1, "tree": None,
               "original": bad}
        with pytest.raises(FormatError, match="bad snapshot record"):
            snapshot.decode(envelope.seal(doc, "snapshot", sealer), sealer, "snapshots/x")


def test_copies_of_copies_keep_the_original_across_encrypted_and_plain_vaults(tmp_path):
    """unencrypted A -> encrypted B -> unencrypted C: ids keyed and unkeyed both ways; C then
    holds A's snapshot, so copying A to C directly copies nothing."""
    cache = str(tmp_path / "cache")
    a = vault_env(str(tmp_path / "a"), password=None, XDG_CACHE_HOME=cache)
    b = vault_env(str(tmp_path / "b"), password="b-pw", XDG_CACHE_HOME=cache)
    c = vault_env(str(tmp_path / "c"), password=None, XDG_CACHE_HOME=cache)
    run(["init", "--no-encryption"], a)
    run(["init", "--pack-size", "1"], b)
    run(["init", "--no-encryption"], c)
    data = tmp_path / "data"
    write_tree(data)
    run(["backup", "dir", str(data), "--name", "photos"], a)
    run(["copy", "--to", b["COLDVAULT_REPO"]], {**a, "COLDVAULT_TO_PASSWORD": "b-pw"})
    run(["copy", "--to", c["COLDVAULT_REPO"]], b)
    (sid_a,) = [s["id"] for s in run(["snapshots", "--json"], a).json()]
    (snap_c,) = run(["snapshots", "--json"], c).json()
    assert snap_c["original"] == sid_a
    got = restored(tmp_path, c, snap_c["id"], "back")
    assert not diff_signatures(signature(data), signature(got))
    r = run(["copy", "--to", c["COLDVAULT_REPO"], "--json"], a).json()
    assert r["copied"] == [] and r["present"][0]["snapshot"] == snap_c["id"]
    # A password given for an unencrypted destination is refused, as for the vault itself.
    r = run(["copy", "--to", c["COLDVAULT_REPO"]], {**a, "COLDVAULT_TO_PASSWORD": "x"}, check=False)
    assert r.code == BAD_PASSWORD and "is not encrypted, but a password is configured" in r.err
