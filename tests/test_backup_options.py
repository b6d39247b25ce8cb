"""`backup dir PATH...` with excludes, tags and a host; snapshots chosen by --tag, --host,
--path (docs/excludes.md), run as a user would."""

from __future__ import annotations

import os
import socket

from cvtools import run, vault_env
from doctools import DocShell, bin_dir, block, commands
from test_stdin_command import MYSQLDUMP

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
    r = run(["backup", "dir", str(home), str(etc), "--name", "host-files", "--time", "2026-11-21T03:00:00Z",
             "--json"], env).json()
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
        ([str(home), str(etc)], "2 directories in one snapshot need a source name"),
        ([str(home), str(tmp_path / "missing"), "--name", "n"], f"{tmp_path / 'missing'} is not a directory"),
        ([str(home), str(tmp_path / "x" / "home"), "--name", "n"], "would both be home/ in the snapshot"),
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDVAULT_")}
    env.update(vault_env(str(tmp_path / "vault")))
    env["PATH"] = f"{bin_dir(str(tmp_path / 'bin'), MYSQLDUMP)}:{env['PATH']}"
    run(["init"], env)
    shell = DocShell(env, {"/home": str(home), "/etc": str(etc), "/srv/photos": str(photos),
                           "/etc/coldvault/photos.exclude": str(exclude_file)}, str(tmp_path))
    b = block("docs/excludes.md", "coldvault backup dir /home /etc --name host-files --exclude '*.tmp' --exclude-caches --tag nightly")
    outs = [shell.run(c) for c in commands(b.text)]
    assert listing(env, "latest", "--source", "host-files") == {
        "home", "home/ann", "home/ann/a.txt", "home/ann/.cache", "etc", "etc/fstab"}
    assert listing(env, "latest", "--source", "srv-photos") == {"2024", "2024/IMG_0001.jpg", "private"}
    assert outs[2].stdout.count("host-files") == 1 and "nightly" in outs[2].stdout
    assert "keep" in outs[3].stdout
