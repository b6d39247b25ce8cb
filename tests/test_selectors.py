"""Snapshot selectors (an id prefix, `latest`, a UTC day, a time) in every command that takes
a snapshot, and an optional PATH after the options, run as a user would."""

from __future__ import annotations

from cvtools import run, vault_env
from zfstools import zpool  # noqa: F401  (a fixture)

USAGE = 2


def one_error(r) -> str:
    lines = [ln for ln in r.err.splitlines() if ln.startswith("coldvault: error:")]
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    return lines[0]


def make_vault(tmp_path):
    """photos at 2026-11-23T22:00, 2026-11-24T02:00 and 05:00 (each with a different note),
    other at 2026-11-24T06:00."""
    src = tmp_path / "photos"
    (src / "2024" / "summer").mkdir(parents=True)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    ids = {}
    for when in ("2026-11-23T22:00:00Z", "2026-11-24T02:00:00Z", "2026-11-24T05:00:00Z"):
        (src / "2024" / "summer" / "IMG_0001.jpg").write_text(f"taken before {when}\n")
        ids[when] = run(["backup", "dir", str(src), "--time", when, "--json"], env).json()["snapshot"]
    ids["other"] = run(["backup", "dir", str(src), "--name", "other", "--time", "2026-11-24T06:00:00Z",
                        "--json"], env).json()["snapshot"]
    return env, ids


def note(env, spec, tmp_path, *extra) -> str:
    """The IMG_0001.jpg that `restore dir SPEC --source photos PATH --target` (PATH last) brings back."""
    target = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
    run(["restore", "dir", spec, *extra, "--source", "photos", "--target", str(target),
         "2024/summer/IMG_0001.jpg"], env)
    return (target / "IMG_0001.jpg").read_text()


def test_selectors_pick_the_documented_snapshot(tmp_path):
    env, ids = make_vault(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert note(env, "latest", scratch) == "taken before 2026-11-24T05:00:00Z\n"
    assert note(env, "2026-11-24", scratch) == "taken before 2026-11-24T05:00:00Z\n"  # the day's last
    assert note(env, "2026-11-23", scratch) == "taken before 2026-11-23T22:00:00Z\n"
    assert note(env, "2026-11-24T03:00", scratch) == "taken before 2026-11-24T02:00:00Z\n"  # at or before
    assert note(env, "2026-11-24T02:00", scratch) == "taken before 2026-11-24T02:00:00Z\n"  # at: included
    assert note(env, "2026-11-24T01:59:59Z", scratch) == "taken before 2026-11-23T22:00:00Z\n"
    assert note(env, "2026-11-24T04:00+02:00", scratch) == "taken before 2026-11-24T02:00:00Z\n"  # 02:00 UTC
    assert note(env, ids["2026-11-24T02:00:00Z"][:6], scratch) == "taken before 2026-11-24T02:00:00Z\n"

    # ls: PATH after the options, as the README prints it, with each kind of selector.
    for spec in ("latest", "2026-11-24", "2026-11-24T03:00", ids["2026-11-23T22:00:00Z"][:8]):
        listing = run(["ls", spec, "--source", "photos", "2024/summer", "--json"], env).json()
        assert [e["path"] for e in listing] == ["2024/summer/IMG_0001.jpg"]
    # Without --source a day that only one source has needs none.
    assert run(["ls", "2026-11-23", "2024"], env).out.split()[-1] == "2024/summer"

    # thaw: SNAPSHOT and SNAPSHOT:PATH with a time (which has colons of its own).
    r = run(["thaw", "--dry-run", "--source", "photos", "2026-11-24T03:00:2024/summer"], env)
    assert f"directory 2024/summer in snapshot {ids['2026-11-24T02:00:00Z'][:8]}" in r.out
    r = run(["thaw", "--dry-run", "2026-11-24T06:00", "--source", "other"], env)
    assert f"snapshot {ids['other'][:8]}" in r.out

    # forget by selector, among one source's snapshots.
    r = run(["forget", "2026-11-24T03:00", "--source", "photos", "--json"], env).json()
    assert [x["id"] for x in r["removed"]] == [ids["2026-11-24T02:00:00Z"]]
    assert note(env, "2026-11-24T03:00", scratch) == "taken before 2026-11-23T22:00:00Z\n"


def test_selectors_that_name_nothing_or_several(tmp_path):
    env, ids = make_vault(tmp_path)
    target = str(tmp_path / "r")
    cases = [
        (["ls", "2026-11-24"], "snapshot '2026-11-24' is ambiguous: snapshots of 2 sources match (other, photos)"),
        (["ls", "2026-11-22", "--source", "photos"],
         "no snapshot '2026-11-22' of source 'photos' in the vault: none that UTC day"),
        (["restore", "dir", "2026-11-23T21:00", "--source", "photos", "--target", target],
         "no snapshot '2026-11-23T21:00' of source 'photos' in the vault: none at or before that time"),
        (["ls", "latest", "--source", "nope"], "there are no snapshots of source 'nope' in the vault"),
        (["ls", ids["other"][:8], "--source", "photos"], f"no snapshot '{ids['other'][:8]}' of source 'photos'"),
        (["ls", "2026-13-45"], "snapshot '2026-13-45': not a valid date or time"),
        (["ls", "yesterday"], "'yesterday' is not a snapshot: give an id (a prefix will do), 'latest', a UTC day"),
        (["thaw", "--dry-run", "2026-11-24"], "snapshot '2026-11-24' is ambiguous"),
        (["forget", "2026-11-22", "--source", "photos"], "no snapshot '2026-11-22' of source 'photos'"),
        (["ls", "latest", "--source", "photos", "2024", "extra"], "unrecognized arguments: 2024 extra"),
    ]
    for args, message in cases:
        r = run(args, env, check=False)
        assert r.code == USAGE, (args, r.err)
        assert message in one_error(r), (args, r.err)
    assert len(run(["snapshots", "--json"], env).json()) == 4  # the failed forget removed nothing
    # An id prefix two snapshots share: with 17 snapshots two share their first hex digit.
    for i in range(13):
        run(["backup", "stdin", "--name", "n.txt", "--source", f"s{i}"], env, input=b"%d" % i)
    all_ids = [s["id"] for s in run(["snapshots", "--json"], env).json()]
    shared = next(a[0] for a in all_ids if sum(b[0] == a[0] for b in all_ids) > 1)
    r = run(["ls", shared], env, check=False)
    assert r.code == USAGE and f"snapshot id '{shared}' is ambiguous" in one_error(r)


def test_restore_zfs_takes_a_selector_after_the_at(zpool, tmp_path):
    """DATASET@SNAP: a stored snapshot's own name first, else a selector among the dataset's streams."""
    import os

    from zfstools import put, sh, tree_contents

    pool, root = zpool
    ds = f"{pool}/d"
    sh("zfs", "create", ds)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    put(os.path.join(root, "d", "a"), b"first\n")
    sh("zfs", "snapshot", f"{ds}@latest")  # a snapshot really named like a selector
    run(["backup", "zfs", f"{ds}@latest"], env)
    put(os.path.join(root, "d", "a"), b"second\n")
    run(["backup", "zfs", ds, "--snapshot-prefix", "nightly"], env)
    recs = run(["snapshots", "--json", "--source", f"zfs:{ds}"], env).json()
    assert recs[0]["zfs"]["snapshot"] == "latest" and recs[1]["zfs"]["snapshot"].startswith("nightly-")
    today = recs[1]["time"][:10]  # the UTC day of the nightly snapshot

    run(["restore", "zfs", f"{ds}@latest", "--into", f"{pool}/named"], env)  # the name wins over the selector
    assert tree_contents(os.path.join(root, "named")) == {"a": b"first\n"}
    run(["restore", "zfs", f"{ds}@{today}", "--into", f"{pool}/today"], env)  # the day's last stream
    assert tree_contents(os.path.join(root, "today")) == {"a": b"second\n"}
    r = run(["restore", "zfs", f"{ds}@2001-01-01T00:00", "--into", f"{pool}/old"], env, check=False)
    assert r.code == USAGE
    assert f"no snapshot '2001-01-01T00:00' of source 'zfs:{ds}' in the vault: none at or before" in one_error(r)
