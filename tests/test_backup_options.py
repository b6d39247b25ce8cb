"""`backup dir PATH...` with excludes, tags and a host; snapshots chosen by --tag, --host,
--path (docs/excludes.md), run as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

import pytest

from cvtools import diff_signatures, run, signature, vault_env
from doctools import DocShell, bin_dir, block, commands
from test_stdin_command import MYSQLDUMP
from zfstools import put as zput
from zfstools import sh, tree_contents, zpool  # noqa: F401 (zpool: a fixture)

USAGE = 2
SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def put(path, data: bytes = b"x") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def listing(env, *args) -> set[str]:
    return {e["path"] for e in run(["ls", *args, "-R", "--json"], env).json()}


def one_error(r) -> str:
    lines = [ln for ln in r.err.splitlines() if ln.startswith("coldvault: error:")]
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    return lines[0]


def test_exclude_patterns_follow_restics_rules(tmp_path):
    src = tmp_path / "photos"
    for rel in ["a.jpg", "a.tmp", "deep/er/b.tmp", "deep/er/B.TMP", "deep/er/keep.txt", "cache/x", "sub/cache",
                "trash/old.jpg", "sub/trash/kept.jpg", "2024/thumbs/t.jpg", "2024/05/thumbs/t.jpg", "2024/05/IMG_0001.jpg",
                "2024/05/IMG_0009.jpg", "2024/05/IMG_0010.jpg", "notes/x.xmp", "photos/y.xmp", "home/dl/f",
                "tagged/CACHEDIR.TAG", "tagged/big", "fake/CACHEDIR.TAG", "fake/big", "private/.nobackup",
                "private/secret", "private/inner/secret2"]:
        put(str(src / rel), SIGNATURE + b"\n" if rel == "tagged/CACHEDIR.TAG" else b"x")
    exclude_file = tmp_path / "photos.exclude"
    exclude_file.write_text("# what never goes to the vault\n\n  photos/*.xmp  \n$DL_DIR\n")
    env = vault_env(str(tmp_path / "vault"), DL_DIR=str(src / "home" / "dl"))
    run(["init"], env)
    run(["backup", "dir", str(src),
         "--exclude", "*.tmp",                   # any depth
         "--iexclude", "*.TMP",                  # case ignored: B.TMP too
         "--exclude", "cache",                   # a directory and a file of that name, anywhere
         "--exclude", f"{src}/trash",            # anchored: only the top-level trash
         "--exclude", f"{src}/**/thumbs/",       # ** across components; a trailing / is ignored
         "--exclude", "IMG_000[0-4].jpg",        # not IMG_0009.jpg nor IMG_0010.jpg
         "--exclude-file", str(exclude_file),    # comments, blanks, spaces, $VAR
         "--exclude-caches", "--exclude-if-present", ".nobackup"], env)
    assert listing(env, "latest") == {
        "a.jpg", "deep", "deep/er", "deep/er/keep.txt", "sub", "sub/trash", "sub/trash/kept.jpg",
        "2024", "2024/05", "2024/05/IMG_0009.jpg", "2024/05/IMG_0010.jpg", "notes", "notes/x.xmp", "photos", "home",
        "tagged",                               # kept, empty: a valid CACHEDIR.TAG
        "fake", "fake/CACHEDIR.TAG", "fake/big",  # not the standard's signature: not a cache
        "private",                              # kept, empty: .nobackup
    }
    # Without excludes, the next backup has everything again; the excluded files are new there.
    run(["backup", "dir", str(src)], env)
    assert "private/inner/secret2" in listing(env, "latest") and "a.tmp" in listing(env, "latest")

    for args, message in [
        (["--exclude", "!*.jpg"], "--exclude: '!*.jpg': re-including with '!' is not supported"),
        (["--exclude", ""], "--exclude: an empty exclude pattern"),
        (["--exclude", "/"], "--exclude: '/' would exclude everything"),
        (["--exclude-file", str(tmp_path / "missing")], f"cannot read exclude file {tmp_path / 'missing'}"),
        (["--exclude-if-present", "a/b"], "--exclude-if-present 'a/b': give a file name, not a path"),
    ]:
        r = run(["backup", "dir", str(src), *args], env, check=False)
        assert r.code == USAGE and message in one_error(r), (args, r.err)
    assert len(run(["snapshots", "--json"], env).json()) == 2  # nothing saved by the refused runs


def test_several_paths_tags_host_and_filters(tmp_path):
    home, etc = tmp_path / "home", tmp_path / "etc"
    put(str(home / "ann" / "todo.txt"), b"todo\n")
    put(str(etc / "fstab"), b"/dev/sda1 / ext4\n")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    r = run(["backup", "dir", str(home), str(etc), "--name", "host-files", "--tag", "nightly,system",
             "--tag", "b", "--host", "box1", "--time", "2026-11-20T03:00:00Z", "--json"], env).json()
    first = r["snapshot"]
    assert listing(env, "latest", "--source", "host-files") == {"home", "home/ann", "home/ann/todo.txt", "etc", "etc/fstab"}
    snap = run(["snapshots", "--json"], env).json()[0]
    assert snap["paths"] == [str(home), str(etc)] and snap["tags"] == ["b", "nightly", "system"]
    assert snap["hostname"] == "box1"
    run(["restore", "dir", "latest", "--source", "host-files", "etc/fstab", "--target", str(tmp_path / "r")], env)
    assert (tmp_path / "r" / "fstab").read_bytes() == b"/dev/sda1 / ext4\n"
    # A second run: unchanged files are not read again, per path.
    put(str(home / "ann" / "new.txt"), b"new\n")
    r = run(["backup", "dir", str(home), "--name", "host-files", "--time", "2026-11-21T03:00:00Z", str(etc),
             "--json"], env).json()  # paths between options, as restic users write them
    assert r["unchanged_files"] == 2 and r["files"] == 3
    second = r["snapshot"]
    run(["backup", "dir", str(etc), "--tag", "nightly", "--time", "2026-11-22T03:00:00Z"], env)  # source etc

    def ids(*args):
        return [s["id"] for s in run(["snapshots", "--json", *args], env).json()]

    assert ids("--tag", "nightly,system") == [first]
    assert len(ids("--tag", "nightly")) == 2 and len(ids("--tag", "b", "--tag", "nightly")) == 2
    assert ids("--host", "box1") == [first]
    assert len(ids("--host", socket.gethostname())) == 2  # --host defaults to this machine's name
    assert ids("--path", str(home)) == [first, second]
    assert ids("--path", str(etc) + "/", "--path", str(home)) == [first, second]
    assert len(ids("--path", str(etc))) == 3
    assert ids("--tag", "none") == []
    # Selectors pick among what the filters let through.
    assert listing(env, "latest", "--tag", "system", "--source", "host-files") == \
        {"home", "home/ann", "home/ann/todo.txt", "etc", "etc/fstab"}
    r = run(["ls", "latest", "--tag", "nope"], env, check=False)
    assert r.code == USAGE and "there are no snapshots tagged nope in the vault" in one_error(r)
    # forget: the policy applies to the filtered snapshots only.
    out = run(["forget", "--keep-last", "1", "--tag", "nightly", "--json"], env).json()
    assert [x["id"] for x in out["removed"]] == []  # one nightly per source: each is its source's last
    out = run(["forget", "--keep-last", "1", "--path", str(home), "--json"], env).json()
    assert [x["id"] for x in out["removed"]] == [first]
    r = run(["forget", second, "--tag", "x"], env, check=False)
    assert r.code == USAGE and "snapshots named by id are forgotten as named" in one_error(r)

    (tmp_path / "x" / "home").mkdir(parents=True)
    for args, message in [
        ([str(home), str(etc)], "2 paths in one snapshot need a source name"),
        ([str(home), str(tmp_path / "missing"), "--name", "n"], f"{tmp_path / 'missing'} does not exist"),
        ([str(home), str(tmp_path / "x" / "home"), "--name", "n"], "would both be home in the snapshot"),
        ([str(etc), "--host", ""], "--host '' is not a usable host name"),
    ]:
        r = run(["backup", "dir", *args], env, check=False)
        assert r.code == USAGE and message in one_error(r), (args, r.err)


def test_excludes_md_commands_as_printed(tmp_path):
    """docs/excludes.md's example block, with the test's directories for /home, /etc, /srv/photos."""
    home, etc, photos = tmp_path / "home", tmp_path / "etc", tmp_path / "srv-photos"
    put(str(home / "ann" / "a.txt"))
    put(str(home / "ann" / "a.tmp"))
    put(str(home / "ann" / ".cache" / "CACHEDIR.TAG"), SIGNATURE)
    put(str(home / "ann" / ".cache" / "blob"))
    put(str(etc / "fstab"))
    put(str(photos / "2024" / "IMG_0001.jpg"))
    put(str(photos / "2024" / "IMG_0001.xmp"))
    put(str(photos / "private" / ".nobackup"))
    put(str(photos / "private" / "p.jpg"))
    exclude_file = tmp_path / "photos.exclude"
    exclude_file.write_text("*.xmp\n")
    path_list = tmp_path / "host-files.list"
    path_list.write_text(f"# nightly\n{home}\n{etc}/fst*\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDVAULT_")}
    env.update(vault_env(str(tmp_path / "vault")))
    env["PATH"] = f"{bin_dir(str(tmp_path / 'bin'), MYSQLDUMP)}:{env['PATH']}"
    run(["init"], env)
    shell = DocShell(env, {"/home": str(home), "/etc": str(etc), "/srv/photos": str(photos),
                           "/etc/coldvault/photos.exclude": str(exclude_file),
                           "/etc/coldvault/host-files.list": str(path_list)}, str(tmp_path))
    b = block("docs/excludes.md", "coldvault backup dir /home /etc --name host-files --exclude '*.tmp' --exclude-caches --tag nightly")
    outs = [shell.run(c) for c in commands(b.text)]
    assert listing(env, "latest", "--source", "host-files") == {
        "home", "home/ann", "home/ann/a.txt", "home/ann/.cache", "etc", "etc/fstab"}
    assert listing(env, "latest", "--source", "srv-photos") == {"2024", "2024/IMG_0001.jpg", "private"}
    assert outs[2].stdout.count("host-files") == 1 and "nightly" in outs[2].stdout
    assert "keep" in outs[3].stdout
    assert listing(env, "latest", "--source", "listed") == {
        "home", "home/ann", "home/ann/a.txt", "home/ann/a.tmp", "home/ann/.cache", "home/ann/.cache/CACHEDIR.TAG",
        "home/ann/.cache/blob", "fstab"}


def snapshot_count(env) -> int:
    return len(run(["snapshots", "--json"], env).json())


def restored(env, tmp_path, name: str, *args) -> str:
    target = str(tmp_path / name)
    run(["restore", "dir", *args, "--target", target], env)
    return target


def test_one_file_system_keeps_mount_points_empty(tmp_path):
    """-x with a real second file system (tmpfs) inside the tree, and a file bind-mounted from it."""
    src = tmp_path / "src"
    put(str(src / "a" / "f.txt"), b"on the root file system\n")
    put(str(src / "a" / "deep" / "g"), os.urandom(5000))
    put(str(src / "bound"), b"the file under the bind mount\n")
    (src / "mnt").mkdir()
    mounts = []
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", f"cvt-{uuid.uuid4().hex[:8]}", str(src / "mnt")],
                       check=True)
        mounts.append(src / "mnt")
        put(str(src / "mnt" / "inner.txt"), b"on the tmpfs\n")
        put(str(src / "mnt" / "sub" / "x"), os.urandom(3000))
        put(str(src / "mnt" / "other"), b"a file of the tmpfs\n")
        subprocess.run(["mount", "--bind", str(src / "mnt" / "other"), str(src / "bound")], check=True)
        mounts.append(src / "bound")
        assert os.stat(src / "mnt").st_dev != os.stat(src).st_dev
        env = vault_env(str(tmp_path / "vault"))
        run(["init"], env)

        r = run(["backup", "dir", str(src), "--one-file-system", "--json"], env).json()
        assert r["files"] == 2 and r["incomplete"] is False
        # The mount point is stored with the mounted root's metadata, empty; the bound file is left out.
        expected = {k: v for k, v in signature(str(src)).items() if not k.startswith(b"mnt/") and k != b"bound"}
        got = signature(restored(env, tmp_path, "r1", r["snapshot"]))
        assert got == expected, diff_signatures(got, expected)
        assert b"mnt" in got and listing(env, r["snapshot"], "mnt") == set()
        # Unchanged: nothing new is stored, the mount point's entry included.
        again = run(["backup", "dir", str(src), "-x", "--json"], env).json()
        assert again["unchanged_files"] == 2 and again["packs"] == 0
        # Without -x, coldvault crosses into both.
        r = run(["backup", "dir", str(src), "--json"], env).json()
        got = signature(restored(env, tmp_path, "r2", r["snapshot"]))
        assert got == signature(str(src)), diff_signatures(got, signature(str(src)))
        assert (tmp_path / "r2" / "bound").read_bytes() == b"a file of the tmpfs\n"
        # Below each PATH: a PATH that is a mount point itself is backed up whole.
        r = run(["backup", "dir", str(src / "a"), str(src / "mnt"), "--name", "two", "-x", "--json"], env).json()
        assert listing(env, r["snapshot"]) == {"a", "a/f.txt", "a/deep", "a/deep/g", "mnt", "mnt/inner.txt",
                                               "mnt/sub", "mnt/sub/x", "mnt/other"}
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", str(m)], check=True)


def test_files_from_lists_add_to_the_paths(tmp_path):
    """--files-from (comments, blanks, spaces, globs, '-'), --files-from-verbatim and --files-from-raw,
    with PATH arguments; the paths are recorded; a missing listed path stops the run before any write."""
    data = tmp_path / "data"
    put(str(data / "photos" / "2024" / "p1.jpg"), os.urandom(20_000))
    put(str(data / "docs" / "d.txt"), b"a document\n")
    put(str(data / "dogs" / "rex.txt"), b"woof\n")
    put(str(data / "etc" / "fstab"), b"/dev/sda1 / ext4\n")
    put(str(data / ".hidden" / "x"), b"a pattern's * matches a leading dot, as restic's\n")
    put(str(data / "#hash" / "h"), b"verbatim keeps the #\n")
    put(str(data / " spaced" / "s"), b"and the leading space\n")
    put(str(data / "new\nline" / "n"), b"raw keeps the newline\n")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# what the nightly backup holds\n\n   {data}/photos  \n{data}/do?s\n{data}/docs\n{data}/*hidden\n")
    verbatim = tmp_path / "verbatim.txt"
    verbatim.write_text(f"{data}/#hash\n\n{data}/ spaced\n")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    fstab = str(data / "etc" / "fstab")
    r = run(["backup", "dir", fstab, "--files-from", str(lst), "--files-from-verbatim", str(verbatim),
             "--files-from-raw", "-", "--name", "mixed", "--json"], env,
            input=os.fsencode(f"{data}/new\nline") + b"\0" + os.fsencode(f"{data}/docs") + b"\0").json()
    paths = [fstab] + [str(data / n) for n in ("photos", "docs", "dogs", ".hidden", "#hash", " spaced", "new\nline")]
    snap = run(["snapshots", "--json"], env).json()[0]
    assert snap["paths"] == paths and r["files"] == 8  # docs twice: once
    target = restored(env, tmp_path, "r", "latest")
    assert sorted(os.listdir(target)) == sorted(os.path.basename(p) for p in paths)
    for p in paths[1:]:
        got, want = signature(os.path.join(target, os.path.basename(p))), signature(p)
        assert got == want, diff_signatures(got, want)
    assert (tmp_path / "r" / "fstab").read_bytes() == b"/dev/sda1 / ext4\n"
    # The next run reads nothing unchanged, files given as paths included.
    r = run(["backup", "dir", fstab, "--files-from", str(lst), "--files-from-verbatim", str(verbatim),
             "--files-from-raw", "-", "--name", "mixed", "--json"], env,
            input=os.fsencode(f"{data}/new\nline") + b"\0").json()
    assert r["unchanged_files"] == r["files"] == 8 and r["files_read"] == 0
    # A list alone; and one file alone is a snapshot holding that file.
    run(["backup", "dir", "--files-from", str(lst), "--name", "listed"], env)
    assert listing(env, "latest", "--source", "listed") == {
        "photos", "photos/2024", "photos/2024/p1.jpg", "docs", "docs/d.txt", "dogs", "dogs/rex.txt", ".hidden",
        ".hidden/x"}
    run(["backup", "dir", fstab], env)
    assert listing(env, "latest", "--source", "fstab") == {"fstab"}

    before = snapshot_count(env)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{data}/docs\n# gone since\n{data}/gone\n")
    nomatch = tmp_path / "nomatch.txt"
    nomatch.write_text(f"{data}/*.none\n")
    raw = tmp_path / "raw.txt"
    raw.write_bytes(os.fsencode(data / "docs") + b"\0" + os.fsencode(data / "gone") + b"\n\0")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    for args, message in [
        (["--files-from", str(bad), "--name", "n"], f"{bad}, line 3: {data}/gone does not exist"),
        (["--files-from-raw", str(raw)], f"{raw}, path 2: {str(data / 'gone') + chr(10)!r} does not exist"),
        (["--files-from", str(nomatch)], f"{nomatch}, line 1: '{data}/*.none' matches nothing"),
        (["--files-from", str(tmp_path / "nolist")], f"cannot read the list of paths {tmp_path / 'nolist'}"),
        (["--files-from", str(empty)], "nothing to back up: the --files-from lists name no path"),
        ([], "nothing to back up: give a PATH, or --files-from FILE"),
        (["--files-from", "-", "--files-from-raw", "-"], "standard input ('-') can be read as one list only"),
        ([str(data / "docs"), "--files-from", str(lst)], "4 paths in one snapshot need a source name"),
    ]:
        r = run(["backup", "dir", *args], env, check=False, input=b"")
        assert r.code == USAGE and message in one_error(r), (args, r.err)
    assert snapshot_count(env) == before  # nothing saved by the refused runs


def test_tags_on_stdin_and_filters_of_dump_diff_find_thaw(tmp_path):
    """backup stdin records --tag/--host; dump, diff, find and thaw pick snapshots through the filters."""
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    ids = []
    for day, text, tags in [("20", b"monday\n", ["--tag", "keep", "--host", "db1"]),
                            ("21", b"tuesday\n", ["--tag", "keep,weekly", "--host", "db1"]),
                            ("22", b"wednesday\n", [])]:
        r = run(["backup", "stdin", "--name", "db.sql", "--time", f"2026-11-{day}T03:00:00Z", *tags, "--json"], env,
                input=text).json()
        ids.append(r["snapshot"])
    snaps = run(["snapshots", "--json"], env).json()
    assert [(s["tags"], s["hostname"]) for s in snaps] == [
        (["keep"], "db1"), (["keep", "weekly"], "db1"), ([], socket.gethostname())]
    assert "db.sql [keep,weekly]" in run(["snapshots"], env).out
    assert [s["id"] for s in run(["snapshots", "--json", "--host", "db1", "--tag", "weekly"], env).json()] == [ids[1]]

    def dump(*args):
        return run(["dump", *args, "db.sql"], env).out

    assert dump("latest") == "wednesday\n"
    assert dump("latest", "--tag", "keep") == "tuesday\n"
    assert dump("2026-11-21", "--host", "db1", "--tag", "weekly") == "tuesday\n"
    r = run(["diff", "2026-11-20", "latest", "--tag", "keep", "--json"], env).json()
    assert (r["a"], r["b"]) == (ids[0], ids[1]) and r["changes"] == [{"change": "M", "path": "db.sql", "type": "file"}]
    found = run(["find", "db.sql", "--tag", "keep", "--json"], env).json()
    assert [f["snapshot"] for f in found] == [ids[1], ids[0]]
    plan = run(["thaw", "latest", "--tag", "keep", "--dry-run", "--json"], env).json()
    assert ids[1][:8] in plan["targets"][0]["what"] and ids[2][:8] not in plan["targets"][0]["what"]
    for args, message in [
        (["dump", "latest", "db.sql", "--tag", "none"], "there are no snapshots tagged none in the vault"),
        (["diff", "latest", "latest", "--host", "elsewhere"], "there are no snapshots from host elsewhere"),
        (["find", "db.sql", "--tag", "none"], "there are no snapshots tagged none in the vault"),
        (["thaw", "latest", "--tag", "none", "--dry-run"], "there are no snapshots tagged none in the vault"),
        (["backup", "stdin", "--name", "x", "--host", ""], "--host '' is not a usable host name"),
    ]:
        r = run(args, env, check=False, input=b"data")
        assert r.code == USAGE and message in one_error(r), (args, r.err)
    assert snapshot_count(env) == 3


@pytest.mark.zfs
def test_tags_and_host_on_zfs_streams(zpool, tmp_path):
    """backup zfs --tag/--host (also --recursive) in the records; restore zfs DATASET@latest --tag picks
    among the tagged streams."""
    name, root = zpool
    ds = f"{name}/photos"
    sh("zfs", "create", ds)
    sh("zfs", "create", f"{ds}/raw")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    zput(f"{root}/photos/a.jpg", b"first night\n")
    first = run(["backup", "zfs", ds, "--tag", "weekly", "--host", "nas", "--json"], env).json()
    weekly = {"a.jpg": b"first night\n", "raw": None}
    zput(f"{root}/photos/a.jpg", b"second night\n")
    run(["backup", "zfs", ds], env)
    r = run(["backup", "zfs", ds, "--recursive", "--tag", "tree,weekly", "--json"], env).json()
    assert len(r["datasets"]) == 2
    snaps = run(["snapshots", "--json"], env).json()
    assert sorted((s["zfs"]["dataset"], s["tags"], s["hostname"]) for s in snaps) == [
        (ds, [], socket.gethostname()), (ds, ["tree", "weekly"], socket.gethostname()), (ds, ["weekly"], "nas"),
        (f"{ds}/raw", ["tree", "weekly"], socket.gethostname())]
    assert snaps[0]["id"] == first["snapshot"]
    assert "(full) [weekly]" in run(["snapshots", "--source", f"zfs:{ds}"], env).out
    assert [s["id"] for s in run(["snapshots", "--json", "--host", "nas"], env).json()] == [first["snapshot"]]
    # latest among the streams tagged weekly from host nas: the first one, not the newest.
    run(["restore", "zfs", f"{ds}@latest", "--tag", "weekly", "--host", "nas", "--into", f"{name}/back"], env)
    assert tree_contents(f"{root}/back") == weekly
    received = sh("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", f"{name}/back").decode().split()
    assert received == [f"{name}/back@{first['stream'].split('@')[1].split()[0]}"]
    r = run(["restore", "zfs", f"{ds}@latest", "--tag", "none", "--into", f"{name}/back2"], env, check=False)
    assert r.code == USAGE and "there are no snapshots of source 'zfs:" in one_error(r) and "tagged none" in r.err
