"""The config file and backup profiles (cli/configfile.py, docs/config.md), run as a user would.

A config file in tmp_path (given with --config, or found through XDG_CONFIG_HOME)
holds the vault, the password and named profiles; `coldvault backup --profile NAME`
backs up a real tree with the profile's excludes, tags, host and hooks, then applies
its retention (forget, prune). Command-line flags and the environment beat the file.
A bad file is one line naming the file and the key, exit 2, and nothing is done.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from cvtools import run, signature
from zfstools import put, sh, tree_contents, zpool  # noqa: F401  (zpool is a fixture)

PASSWORD = "profile-password"


def clean_env(**extra) -> dict:
    """No COLDVAULT_* settings from the environment: the file is to supply them."""
    env = {k: "" for k in ("COLDVAULT_REPO", "COLDVAULT_PASSWORD", "COLDVAULT_PASSWORD_FILE",
                           "COLDVAULT_PASSWORD_COMMAND", "COLDVAULT_LIMIT_UPLOAD", "COLDVAULT_LIMIT_DOWNLOAD")}
    env["COLDVAULT_LOCAL_RESTORE_DELAY"] = "0"
    env["XDG_CONFIG_HOME"] = "/nonexistent-xdg"  # no config of the machine's user gets in
    env.update(extra)
    return env


def make_tree(root) -> None:
    (root / "album" / "2024").mkdir(parents=True)
    (root / "album" / "2024" / "IMG_0001.jpg").write_bytes(os.urandom(200_000))
    (root / "album" / "notes.txt").write_text("summer\n")
    (root / "album" / "edit.tmp").write_text("scratch\n")
    (root / "thumbs").mkdir()
    (root / "thumbs" / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (root / "thumbs" / "t1.png").write_bytes(b"thumb")
    (root / "private").mkdir()
    (root / "private" / ".nobackup").write_text("")
    (root / "private" / "secret.txt").write_text("no\n")


def write_config(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def photos_config(tmp_path, tree, repo: str, extra: str = "") -> str:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    log = tmp_path / "hooks.log"
    return f"""\
repo = "{repo}"
password-command = "cat {pw}"

[profiles.photos]
kind = "dir"
paths = ["{tree}"]
name = "photos"
exclude = ["*.tmp"]
exclude-caches = true
exclude-if-present = [".nobackup"]
tag = ["nightly", "photos"]
host = "fileserver"
pre-hook = "echo pre $COLDVAULT_SOURCE >> {log}"
post-hook = "echo post $COLDVAULT_STATUS >> {log}"
{extra}
[profiles.photos.retention]
keep-last = 2
prune = true
"""


def snapshots(args: list[str], env: dict) -> list[dict]:
    return run([*args, "snapshots", "--json"], env).json()


def test_a_profile_backs_up_with_its_excludes_tags_hooks_and_retention(tmp_path):
    tree = tmp_path / "photos"
    make_tree(tree)
    repo = str(tmp_path / "vault")
    config = write_config(tmp_path / "etc" / "coldvault.toml", photos_config(tmp_path, tree, repo))
    env = clean_env()
    run(["--config", config, "init"], env)
    for night in range(3):
        (tree / "album" / "night.txt").write_text(f"night {night}\n")
        r = run(["--config", config, "backup", "--profile", "photos"], env)
        assert "snapshot " in r.out
    assert (tmp_path / "hooks.log").read_text() == "pre photos\npost ok\n" * 3
    assert "removed" in r.out and "deleted" in r.out  # the third night's forget and prune

    recs = snapshots(["--config", config], env)
    assert len(recs) == 2  # keep-last = 2
    assert all(r["source"] == "photos" and r["tags"] == ["nightly", "photos"] and r["hostname"] == "fileserver"
               for r in recs)
    target = tmp_path / "restored"
    run(["--config", config, "restore", "dir", "latest", "--target", str(target)], env)
    want = signature(str(tree))
    for gone in (b"album/edit.tmp", b"thumbs/t1.png", b"thumbs/CACHEDIR.TAG", b"private/secret.txt",
                 b"private/.nobackup"):
        del want[gone]
    assert signature(str(target)) == want  # the excluded directories are kept, empty


def test_the_config_is_found_through_xdg_config_home(tmp_path):
    tree = tmp_path / "photos"
    make_tree(tree)
    repo = str(tmp_path / "vault")
    xdg = tmp_path / "xdg"
    write_config(xdg / "coldvault" / "config.toml", photos_config(tmp_path, tree, repo))
    env = clean_env(XDG_CONFIG_HOME=str(xdg))
    run(["init"], env)
    run(["backup", "--profile", "photos", "-q"], env)
    recs = snapshots([], env)
    assert [r["source"] for r in recs] == ["photos"] and recs[0]["tags"] == ["nightly", "photos"]
    # Without the file's settings there is no vault and no password.
    r = run(["snapshots"], clean_env(), check=False)
    assert r.code == 2 and "no vault given" in r.err


def test_the_command_line_and_the_environment_beat_the_file(tmp_path):
    tree = tmp_path / "photos"
    make_tree(tree)
    file_vault, other_vault = tmp_path / "file-vault", tmp_path / "other-vault"
    config = write_config(tmp_path / "c.toml", photos_config(tmp_path, tree, str(file_vault), "limit-upload = 64"))
    env = clean_env()
    run(["--config", config, "init"], env)
    run(["--config", config, "--repo", str(other_vault), "init"], env)

    # Options given on the command line replace the profile's keys; the rest stay.
    r = run(["--config", config, "backup", "--profile", "photos", "--repo", str(other_vault), "--tag", "manual",
             "--exclude", "*.jpg", "--limit-upload", "4096", "-v"], env)
    assert "upload limited to 4096 KiB/s" in r.err and "64 KiB/s" not in r.err
    assert snapshots(["--config", config], env) == []  # the file's vault got nothing
    [rec] = snapshots(["--config", config, "--repo", str(other_vault)], env)
    assert rec["tags"] == ["manual"] and rec["hostname"] == "fileserver"
    listing = run(["--config", config, "--repo", str(other_vault), "ls", "latest", "album"], env).out
    assert "edit.tmp" in listing and "notes.txt" in listing and "2024" in listing
    jpgs = run(["--config", config, "--repo", str(other_vault), "ls", "latest", "album/2024"], env).out
    assert "IMG_0001.jpg" not in jpgs

    # COLDVAULT_REPO beats the file too; the file's limit applies when nothing else sets one.
    r = run(["--config", config, "backup", "--profile", "photos", "-v"],
            {**env, "COLDVAULT_REPO": str(other_vault)})
    assert "upload limited to 64 KiB/s" in r.err
    assert len(snapshots(["--config", config, "--repo", str(other_vault)], env)) == 2
    assert snapshots(["--config", config], env) == []


def test_a_password_file_in_the_config_and_the_environment_first(tmp_path):
    tree = tmp_path / "docs"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "x.txt").write_text("x\n")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    repo = str(tmp_path / "vault")
    config = write_config(tmp_path / "c.toml", f'repo = "{repo}"\npassword-file = "{pw}"\n'
                                                 f'[profiles.docs]\npaths = ["{tree}"]\n')
    env = clean_env()
    run(["--config", config, "init"], env)
    run(["--config", config, "backup", "--profile", "docs", "-q"], env)
    # A password in the environment comes first: a wrong one is refused.
    r = run(["--config", config, "snapshots"], {**env, "COLDVAULT_PASSWORD": "wrong"}, check=False)
    assert r.code == 11
    assert [s["source"] for s in snapshots(["--config", config], env)] == ["docs"]


def test_a_stdin_profile_runs_its_command(tmp_path):
    repo = str(tmp_path / "vault")
    command = [sys.executable, "-c", "print('dump of the db')"]
    config = write_config(tmp_path / "c.toml", f'repo = "{repo}"\n[profiles.db]\nkind = "stdin"\n'
                                                 f'name = "db.sql"\ncommand = {json.dumps(command)}\n')
    env = clean_env(COLDVAULT_PASSWORD=PASSWORD)
    run(["--config", config, "init"], env)
    run(["--config", config, "backup", "--profile", "db", "-q"], env)
    out = run(["--config", config, "dump", "latest", "db.sql", "--source", "db.sql"], env).out
    assert out == "dump of the db\n"


def test_a_zfs_profile_with_retention(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/photos"
    sh("zfs", "create", ds)
    repo = str(tmp_path / "vault")
    config = write_config(tmp_path / "c.toml", f"""\
repo = "{repo}"

[profiles.pool]
kind = "zfs"
dataset = "{ds}"
snapshot-prefix = "nightly"
full-every = 1
keep-local = 1

[profiles.pool.retention]
keep-last = 1
prune = true
""")
    env = clean_env(COLDVAULT_PASSWORD=PASSWORD)
    run(["--config", config, "init"], env)
    for night in range(2):
        put(os.path.join(root, "photos", "night.bin"), os.urandom(100_000 + night))
        run(["--config", config, "backup", "--profile", "pool"], env)
    [rec] = snapshots(["--config", config], env)  # full-every 1: each stream is full, keep-last 1 keeps one
    assert rec["source"] == f"zfs:{ds}" and rec["zfs"]["snapshot"].startswith("nightly-")
    local = sh("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", ds).decode().split()
    assert local == [f"{ds}@{rec['zfs']['snapshot']}"]  # keep-local 1
    run(["--config", config, "restore", "zfs", f"{ds}@{rec['zfs']['snapshot']}", "--into", f"{name}/back"], env)
    assert tree_contents(os.path.join(root, "back")) == tree_contents(os.path.join(root, "photos"))


BAD_FILES = [
    ("[profiles.photos\npaths = ['/x']\n", "Expected ']' at the end of a table declaration (at line 1, column 17)"),
    ("[profiles.photos]\npaths = ['/x']\nexclude = '*.tmp'\n", "profiles.photos.exclude: expected a list of strings"),
    ("[profiles.photos]\npaths = ['/x']\nexclud = ['*.tmp']\n", "profiles.photos.exclud: unknown key for a dir profile"),
    ("[profiles.photos]\npaths = ['/x']\nexclude-caches = 'yes'\n", "profiles.photos.exclude-caches: expected true or false"),
    ("[profiles.photos]\npaths = '/x'\n", "profiles.photos.paths: expected a list of strings"),
    ("[profiles.photos]\nexclude = ['a']\n", "profiles.photos.paths: missing (what the profile backs up)"),
    ("[profiles.photos]\nkind = 'tape'\npaths = ['/x']\n", "profiles.photos.kind: expected one of dir, zfs, stdin"),
    ("[profiles.photos]\nkind = 'zfs'\ndataset = 'tank/x'\nexclude = ['a']\n",
     "profiles.photos.exclude: unknown key for a zfs profile"),
    ("[profiles.photos]\npaths = ['/x']\n[profiles.photos.retention]\nkeep-daily = 'seven'\n",
     "profiles.photos.retention.keep-daily: expected a whole number of 0 or more"),
    ("limit-upload = 0\n[profiles.photos]\npaths = ['/x']\n", "limit-upload: expected a positive number of KiB/s"),
    ("repo = 5\n[profiles.photos]\npaths = ['/x']\n", "repo: expected a string"),
    ("vault = '/x'\n[profiles.photos]\npaths = ['/x']\n", "vault: unknown key"),
    ("[profiles.other]\npaths = ['/x']\n", "profiles.photos: no such profile (the file has: other)"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_a_bad_file_is_one_line_naming_the_key_and_nothing_is_done(tmp_path, text, message):
    tree = tmp_path / "photos"
    make_tree(tree)
    vault = tmp_path / "vault"
    env = clean_env(COLDVAULT_REPO=str(vault), COLDVAULT_PASSWORD=PASSWORD)
    run(["init"], env)
    before = sorted(p for p in vault.rglob("*"))
    hook = tmp_path / "hook-ran"
    config = write_config(tmp_path / "conf" / "config.toml", text)
    for args in (["--config", config, "backup", "--profile", "photos", "--pre-hook", f"touch {shlex.quote(str(hook))}"],
                 ["backup", "--profile", "photos", "--config", config]):
        r = run(args, env, check=False)
        assert r.code == 2, r
        assert r.err.splitlines() == [f"coldvault: error: {config}: {message}"]
        assert r.out == ""
    assert not hook.exists()
    assert sorted(p for p in vault.rglob("*")) == before


def test_profile_errors_on_the_command_line(tmp_path):
    tree = tmp_path / "photos"
    make_tree(tree)
    config = write_config(tmp_path / "c.toml", photos_config(tmp_path, tree, str(tmp_path / "vault")))
    env = clean_env()
    r = run(["--config", config, "backup", "--profile", "photos", str(tmp_path)], env, check=False)
    assert r.code == 2 and r.err.splitlines() == [
        f"coldvault: error: profile photos names its paths in {config}; give options only, no PATH"]
    r = run(["--config", config, "backup", "zfs", "--profile", "photos"], env, check=False)
    assert r.code == 2 and r.err.splitlines() == ["coldvault: error: profile photos is a dir backup, not zfs"]
    missing = str(tmp_path / "missing.toml")
    r = run(["--config", missing, "snapshots"], env, check=False)
    assert r.code == 2 and r.err.splitlines() == [
        f"coldvault: error: cannot read config file {missing}: No such file or directory"]
    r = run(["backup", "--profile", "photos"], env, check=False)
    assert r.code == 2 and "--profile photos: no config file" in r.err


def test_help_shows_config_and_profile():
    assert "--config FILE" in run(["--help"]).out
    assert "--profile NAME" in run(["backup", "--help"]).out
    assert "--profile NAME" in run(["backup", "dir", "--help"]).out
    assert "--config FILE" in run(["snapshots", "--help"]).out


# ---- docs/config.md, its lines in docs/commands.md, and the profile crontab of docs/cron.md, as printed ----

CONFIG_MD = {  # first line of each block -> what the test does with it
    "example": "# /etc/coldvault/config.toml",
    "use": "coldvault backup --profile photos               # the profile [profiles.photos] of the config file",
    "mistake": "coldvault: error: /etc/coldvault/config.toml: profiles.photos.exclude: expected a list of strings",
    "limits": "coldvault backup dir /srv/photos --name photos --limit-upload 1024   # at most 1 MiB/s up",
}
COMMANDS_MD = "coldvault backup --profile photos                                    # [profiles.photos] of the config file"
CRON_MD = "# m h dom mon dow  command    (profiles from /etc/coldvault/config.toml)"


def test_config_md_and_the_profile_crontab_as_printed(zpool, tmp_path):
    from doctools import DocShell, bin_dir, block, commands, replace_all
    from test_docs_commands import cron_env, photos_tree
    from test_stdin_command import MYSQLDUMP

    pool, root = zpool
    sh("zfs", "create", f"{pool}/photos")
    put(os.path.join(root, "photos", "a.bin"), os.urandom(40_000))
    home = tmp_path / "home"
    config = home / ".config" / "coldvault" / "config.toml"  # where root's file would be, in this test's HOME
    srv = tmp_path / "srv"
    photos_tree(srv / "photos")
    photos_tree(srv / "albums")
    (srv / "photos" / "edit.tmp").write_text("scratch\n")
    (srv / "seafile" / "seafile-data").mkdir(parents=True)
    (srv / "seafile" / "seafile-data" / "block").write_bytes(os.urandom(10_000))
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    repo = str(tmp_path / "vault")
    bindir = bin_dir(str(tmp_path / "bin"), MYSQLDUMP)
    subs = {"s3://my-bucket/vault": repo, "/root/.coldvault-password": str(password), "tank/photos": f"{pool}/photos",
            "/srv/photos": str(srv / "photos"), "/srv/albums": str(srv / "albums"), "/srv/seafile": str(srv / "seafile"),
            "/srv/photos-restored": str(tmp_path / "restored"), "/etc/coldvault/config.toml": str(config),
            "/usr/local/bin": bindir}
    example = block("docs/config.md", CONFIG_MD["example"]).text
    write_config(config, replace_all(example, subs))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDVAULT_") and k != "XDG_CONFIG_HOME"}
    env.update(HOME=str(home), PATH=f"{bindir}:{env['PATH']}", COLDVAULT_LOCAL_RESTORE_DELAY="0")
    shell = DocShell(env, subs, str(tmp_path))
    shell.run("coldvault init")  # the vault and password of the file

    # The example's every profile, and the three lines at the top of config.md.
    p = shell.run("coldvault backup --profile seafile -v")
    assert "upload limited to 512 KiB/s" in p.stderr  # the profile's own limit beats the file's
    shell.run("coldvault backup --profile databases")
    outs = [p.stdout for p in shell.run_block(block("docs/config.md", CONFIG_MD["use"]))]
    assert "keep " in outs[0] and "deleted" in outs[0]  # retention, then prune
    assert "removed" in outs[1]  # keep-daily = 7: one snapshot a day, the newest
    tagged = run(["snapshots", "--json"], {**env, "COLDVAULT_PASSWORD": PASSWORD}).json()
    by_source = {}
    for rec in tagged:
        by_source.setdefault(rec["source"], []).append(rec)
    assert sorted(by_source) == ["all-databases.sql", "photos", "seafile"]
    assert [r["tags"] for r in by_source["photos"]] == [["manual"]]
    assert by_source["photos"][0]["paths"] == [str(srv / "photos"), str(srv / "albums")]
    assert "-- MySQL dump of" in run(["dump", "latest", "all-databases.sql", "--source", "all-databases.sql"],
                                     {**env, "COLDVAULT_PASSWORD": PASSWORD}).out
    listing = run(["ls", "latest", "photos", "--source", "photos"], {**env, "COLDVAULT_PASSWORD": PASSWORD}).out
    assert "notes.txt" in listing and "edit.tmp" not in listing

    # The limits block, and the lines of docs/commands.md.
    for p in shell.run_block(block("docs/config.md", CONFIG_MD["limits"])):
        assert p.returncode == 0
    assert signature(str(tmp_path / "restored")) == signature(str(srv / "photos"))
    shell.run_block(block("docs/commands.md", COMMANDS_MD))

    # The crontab with profiles, each job as cron runs it.
    crontab = block("docs/cron.md", CRON_MD).text
    variables, jobs = {}, []
    for line in crontab.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if "=" in line.split()[0] and not line[0].isdigit():
            name, value = line.split("=", 1)
            variables[name] = replace_all(value, subs)
        else:
            jobs.append(replace_all(line.split(None, 5)[5], subs))
    assert jobs == ["coldvault backup --profile photos || [ $? -eq 16 ]", "coldvault backup --profile tank"]
    for job in jobs:
        p = subprocess.run(["/bin/sh", "-c", job], env=cron_env(str(home), variables), capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0 and p.stderr == "", (job, p.stderr)
    zfs = run(["snapshots", "--json", "--source", f"zfs:{pool}/photos"], {**env, "COLDVAULT_PASSWORD": PASSWORD}).json()
    assert len(zfs) == 1 and zfs[0]["zfs"]["snapshot"].startswith("nightly-")

    # The mistake of docs/config.md, as printed.
    with open(config) as f:
        text = f.read()
    write_config(config, text.replace('exclude = ["*.tmp", ".Trash-*"]', 'exclude = "*.tmp"'))
    p = shell.run("coldvault backup --profile photos", ok=(2,))
    (line,) = commands(block("docs/config.md", CONFIG_MD["mistake"]).text)
    assert p.stderr.splitlines() == [replace_all(line, subs)]
