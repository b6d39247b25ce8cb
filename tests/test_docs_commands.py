"""Every command line of README.md, docs/ and contrib/ runs as printed.

tests/doctools.py finds them (every fenced block, and a unit's ExecStart= and comment
lines); each block is either run by one of the tests below (RUN) or left out for a
reason given here (SKIP). A new block in the docs fails
test_every_documented_block_is_run_or_skipped_for_a_reason until it is one or the other.
The commands run in /bin/sh as printed; only the docs' example places are replaced by
the test's own (a vault directory for s3://my-bucket/..., a pool made for the test for
tank/ and pool/, a temporary directory for /srv/photos, /mnt/vault, ...).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

import hashlib
import json

from cvtools import run
from doctools import REPO_ROOT, DocShell, bin_dir, block, blocks, commands, replace_all
from mounttools import unmount
from test_stdin_command import MYSQLDUMP
from zfstools import put, sh, tree_contents, zpool  # noqa: F401  (zpool is a fixture)

PASSWORD = "test-password"
KEYS_BLOCK = "coldvault key list                                     # * marks the key your password opened"
COPY_FIRST = ("COLDVAULT_PASSWORD_FILE=/root/.offsite-password coldvault init --repo s3://offsite/photos "
              "--data-storage-class DEEP_ARCHIVE")

RUN = {
    ("README.md", "make demo   # installs what is missing, backs up a sample tree to a local vault twice, restores it"):
        "test_set_up_from_a_fresh_copy_and_the_crontab_as_cron_runs_it",
    ("README.md", "export COLDVAULT_REPO=/backup/vault            # or s3://bucket/prefix (+ COLDVAULT_S3_ENDPOINT)"):
        "test_readme_use_block_and_the_restore_guide",
    ("docs/restore.md", "coldvault snapshots --source photos             # pick one: its id, or `latest`"):
        "test_readme_use_block_and_the_restore_guide",
    ("docs/restore.md", "coldvault snapshots --source photos"): "test_readme_use_block_and_the_restore_guide",
    ("docs/restore.md", "coldvault: error: no snapshot '2024-05-13' of source 'photos' in the vault: none that UTC day"):
        "test_readme_use_block_and_the_restore_guide",
    ("docs/restore.md", "coldvault mount /mnt/vault"): "test_readme_use_block_and_the_restore_guide",
    ("docs/restore.md", "coldvault: error: cannot write /srv/photos-restored/2024/summer/IMG_0412.jpg: "
                        "No space left on device"):
        "test_restore_target_errors.py::test_restore_onto_a_full_disk_stops_with_one_line_and_a_rerun_finishes",
    ("docs/restore.md", "coldvault snapshots --source zfs:tank/photos     # each stream and its base"):
        "test_readme_use_block_and_the_restore_guide",
    ("docs/restore.md", "coldvault mount /mnt/vault --cold wait"): "test_readme_use_block_and_the_restore_guide",
    ("docs/restore.md", "coldvault check                      # names the damaged index object, suggests the repair"):
        "test_readme_use_block_and_the_restore_guide",
    ("docs/cron.md", "# m h dom mon dow  command"): "test_set_up_from_a_fresh_copy_and_the_crontab_as_cron_runs_it",
    ("docs/cron.md", "# m h dom mon dow  command    (nightly ZFS: chains of at most 7 streams)"):
        "test_zfs_nightly.py::test_documented_nightly_schedule_stays_bounded",
    ("docs/restore.md", "coldvault restore zfs tank@coldvault-20240514T030000Z --recursive --into pool/back"):
        "test_zfs_nightly.py::test_recursive_backup_and_restore_of_a_parent_and_its_children",
    ("contrib/systemd/coldvault-backup.service", "/usr/local/bin/coldvault backup dir /srv/photos --name photos"):
        "test_set_up_from_a_fresh_copy_and_the_crontab_as_cron_runs_it",
    ("contrib/systemd/coldvault-backup.service",
     "/usr/local/bin/coldvault forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --keep-yearly 10"):
        "test_set_up_from_a_fresh_copy_and_the_crontab_as_cron_runs_it",
    ("docs/cold-storage.md", "coldvault init --repo s3://bucket/photos --data-storage-class DEEP_ARCHIVE   # 64 MiB packs"):
        "test_cold_storage_guide",
    ("docs/cold-storage.md", "{"): "test_cold_storage_guide",
    **{("docs/commands.md", first): "test_commands_guide" for first in (
        "coldvault dump latest 2024/summer/IMG_0001.jpg --source photos > /tmp/IMG_0001.jpg",
        "coldvault diff latest latest --source photos",
        "coldvault find 'IMG_*.jpg' --source photos",
        "coldvault stats",
        "coldvault unlock",
        "coldvault completion bash > /etc/bash_completion.d/coldvault",
        COPY_FIRST)},
    ("docs/commands.md", KEYS_BLOCK): "test_commands_guide_keys",
    ("docs/mount.md", "coldvault mount /mnt/vault --refresh 10         # looks for new and forgotten snapshots every 10 s"):
        "test_mount_live.py::test_mount_md_as_printed",
    ("docs/excludes.md",
     "coldvault backup dir /home /etc --name host-files --exclude '*.tmp' --exclude-caches --tag nightly"):
        "test_backup_options.py::test_excludes_md_commands_as_printed",
    ("docs/cold-storage.md", "coldvault thaw TARGET... [--tier Bulk|Standard|Expedited] [--days N] [--dry-run] [--source S] [--json] [--prices FILE]"):
        "test_cold_storage_guide",
    ("docs/cold-storage.md", "$ coldvault thaw latest:2024/05 --source photos"): "test_cold_storage_guide",
    ("docs/cold-storage.md",
     "coldvault restore zfs tank/photos@2026-11-01 --into tank/photos-back --thaw --wait --tier Bulk --days 3"):
        "test_cold_storage_guide",
    **{(doc, first): "test_profiles.py::test_config_md_and_the_profile_crontab_as_printed" for doc, first in (
        ("docs/config.md", "# /etc/coldvault/config.toml"),
        ("docs/config.md", "coldvault backup --profile photos               # the profile [profiles.photos] of the config file"),
        ("docs/config.md", "coldvault: error: /etc/coldvault/config.toml: profiles.photos.exclude: expected a list of strings"),
        ("docs/config.md", "coldvault backup dir /srv/photos --name photos --limit-upload 1024   # at most 1 MiB/s up"),
        ("docs/commands.md",
         "coldvault backup --profile photos                                    # [profiles.photos] of the config file"),
        ("docs/cron.md", "# m h dom mon dow  command    (profiles from /etc/coldvault/config.toml)"))},
    ("docs/watch.md", "coldvault backup dir /srv/photos --name photos --watch --settle 30 --exclude '*.tmp'"):
        "test_watch.py::test_documented_watch_command_and_unit",
    ("contrib/systemd/coldvault-watch@.service",
     "/usr/local/bin/coldvault backup dir $WATCH_PATHS --name %i --watch $WATCH_OPTIONS"):
        "test_watch.py::test_documented_watch_command_and_unit",
}

SKIP = {
    ("docs/mount.md", "files/<source>/snapshots/<YYYY-MM-DDTHH:MM:SSZ>/...   every snapshot, whole"):
        "the mount's layout, not a command",
    ("README.md", "src/coldvault/   each layer imports only those above it in this list (tests/test_layers.py)"):
        "the source layout, not a command",
    ("docs/cron.md", "#!/bin/sh"):
        "the Seafile script: run as printed by tests/test_stdin_command.py::test_seafile_recipe_from_cron_md",
    ("contrib/systemd/coldvault-backup.service", "cp coldvault-backup.service coldvault-backup.timer /etc/systemd/system/"):
        "installs into the machine's systemd, which does not run here (no systemd as PID 1); "
        "the unit's ExecStart= lines are run by the crontab test",
    ("contrib/systemd/coldvault-backup.service", "systemctl daemon-reload && systemctl enable --now coldvault-backup.timer"):
        "needs systemd as PID 1, which a test machine does not run",
    ("docs/watch.md", "echo fs.inotify.max_user_watches=1048576 > /etc/sysctl.d/90-coldvault-watch.conf"):
        "raises a kernel limit for the whole machine, which a test must not do; "
        "test_watch.py::test_too_many_directories_for_inotify_is_one_clear_line lowers it in a user namespace instead",
    ("contrib/systemd/coldvault-watch@.service", "cp coldvault-watch@.service /etc/systemd/system/"):
        "installs into the machine's systemd, which does not run here (no systemd as PID 1); "
        "the unit's ExecStart= line is run by test_watch.py::test_documented_watch_command_and_unit",
    ("contrib/systemd/coldvault-watch@.service",
     "systemctl daemon-reload && systemctl enable --now coldvault-watch@photos.service"):
        "needs systemd as PID 1, which a test machine does not run",
    ("docs/cold-storage.md", "pack                                     class        tier      requested            state"):
        "output of 'thaw --status' with restores requested on other days (an example, not a command)",
    ("docs/cold-storage.md", "coldvault: error: 3 pack(s) needed are in a cold tier: data/59/597a..., data/63/6343..., data/e4/e4fc..."):
        "error output with example pack names, not a command (tests/test_thaw.py checks the message)",
}
# Lines of blocks in RUN that their test does not run.
SKIP_LINES = {
    ("README.md", "make test   # installs what is missing and runs the whole test suite"):
        "runs this very suite: it cannot run inside itself (its install step is the one `make demo` runs)",
}
# docs/format.md holds the format's grammar and record shapes, not command lines; its one
# program (section 12) is run by tests/test_golden.py::test_hand_reader_in_format_md.
NOT_COMMANDS = {"docs/format.md"}


def test_every_documented_block_is_run_or_skipped_for_a_reason():
    found = {b.key for b in blocks() if b.path not in NOT_COMMANDS}
    unclassified = found - RUN.keys() - SKIP.keys()
    assert not unclassified, f"documented command lines that no test runs (add them to RUN or SKIP): {unclassified}"
    stale = (RUN.keys() | SKIP.keys()) - found
    assert not stale, f"RUN/SKIP name blocks the docs no longer have: {stale}"
    assert not RUN.keys() & SKIP.keys()
    for path, line in SKIP_LINES:
        assert any(b.path == path and b.key in RUN and line in commands(b.text) for b in blocks()), line
    for name in set(RUN.values()):
        if "::" in name:  # a test of another file
            path, func = name.split("::")
            with open(os.path.join(REPO_ROOT, "tests", path)) as f:
                assert f"def {func}(" in f.read(), name
        else:
            assert callable(globals().get(name)), name
    assert len(found) >= 20


# ---- shared set-up ----------------------------------------------------------------------------------


def photos_tree(root) -> None:
    put(os.path.join(root, "2024/summer/IMG_0001.jpg"), os.urandom(50_000))
    put(os.path.join(root, "2024/summer/IMG_0002.jpg"), os.urandom(20_000))
    put(os.path.join(root, "2024/05/IMG_0501.jpg"), os.urandom(30_000))
    put(os.path.join(root, "notes.txt"), b"family photos\n" * 100)


def base_env(tmp_path) -> dict:
    """The user's environment: HOME of the test, coldvault (this checkout) and mysqldump on PATH."""
    home = tmp_path / "home"
    home.mkdir()
    bindir = bin_dir(str(tmp_path / "bin"), MYSQLDUMP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDVAULT_")}
    env.update(HOME=str(home), PATH=f"{bindir}:{env['PATH']}", COLDVAULT_LOCAL_RESTORE_DELAY="0",
               COLDVAULT_RESTORE_POLL="0.2")
    return env


def wait_for_no_locks(repo: str) -> None:
    """Until a mount's daemon, unmounted, has let go of its read lock (prune and forget need none)."""
    d = os.path.join(repo, "locks")
    deadline = time.monotonic() + 60
    while os.path.isdir(d) and [n for n in os.listdir(d) if not n.startswith(".tmp-")]:
        assert time.monotonic() < deadline, f"locks left: {os.listdir(d)}"
        time.sleep(0.1)


def zfs_snapshots(dataset: str) -> list[str]:
    p = subprocess.run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset],
                       capture_output=True, text=True)
    return [n.split("@", 1)[1] for n in p.stdout.split() if n.split("@", 1)[0] == dataset]


# ---- README's Use block and docs/restore.md -------------------------------------------------------


def test_readme_use_block_and_the_restore_guide(zpool, tmp_path):
    pool, root = zpool
    sh("zfs", "create", f"{pool}/photos")
    put(os.path.join(root, "photos", "a.bin"), os.urandom(40_000))
    photos = tmp_path / "srv" / "photos"
    photos_tree(photos)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    repo = str(tmp_path / "vault")
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    (tmp_path / "cp").mkdir()
    subs = {
        "/backup/vault": repo, "/root/.coldvault-password": str(password), "/srv/photos": str(photos),
        "/srv/photos-restored": str(tmp_path / "photos-restored"), "/tmp/one-file": str(tmp_path / "one-file"),
        "/mnt/vault": str(mnt), "tank/photos": f"{pool}/photos", "pool/photos": f"{pool}/restored",
        "pool/copy": f"{pool}/copy", "/tmp/IMG_0001.jpg": str(tmp_path / "IMG_0001.jpg"),
        "/tmp/summer.tar": str(tmp_path / "summer.tar"),
        "/etc/bash_completion.d/coldvault": str(tmp_path / "coldvault.bash"),
    }
    shell = DocShell(base_env(tmp_path), subs, str(tmp_path))
    try:
        use = commands(block("README.md", RUN_KEYS["readme"]).text)
        for cmd in use:
            if cmd.startswith("coldvault restore dir 2024-05-14"):
                # The README's `--time` comment: a backup dated that day, as a user's earlier night.
                shell.run("coldvault backup dir /srv/photos --name photos --time 2024-05-14T03:00:00Z")
            if cmd.startswith("(for f in"):
                snap = zfs_snapshots(f"{pool}/photos")[-1]  # the newest: the README backs it up twice
                shell.subs["coldvault-20240514T030000Z"] = snap  # the name `backup zfs` gave it
            p = shell.run(cmd)
            if cmd.startswith("fusermount3"):
                wait_for_no_locks(repo)
            if cmd.startswith("coldvault ls latest"):
                assert p.stdout.split()[-1] == "2024/summer/IMG_0002.jpg", p.stdout
            if cmd.startswith("ls /mnt/vault/files/photos/"):
                assert sorted(p.stdout.split()) == ["changes", "dates", "latest", "snapshots"]
                # The guides' inline `getfattr` line (the set-up installs attr for it), on a file there.
                with open(os.path.join(REPO_ROOT, "docs", "restore.md")) as f:
                    assert "`getfattr -n user.coldvault.state FILE`" in f.read()
                q = shell.run("getfattr -n user.coldvault.state FILE",
                              FILE=str(mnt / "files/photos/latest/2024/summer/IMG_0001.jpg"))
                assert 'user.coldvault.state="hot"' in q.stdout, q.stdout
        assert (tmp_path / "one-file" / "IMG_0001.jpg").read_bytes() == \
            (photos / "2024/summer/IMG_0001.jpg").read_bytes()
        assert tree_contents(str(tmp_path / "photos-restored")) == tree_contents(str(photos))
        source = tree_contents(os.path.join(root, "photos"))
        assert tree_contents(os.path.join(root, "restored")) == source
        assert tree_contents(os.path.join(root, "copy")) == source

        # docs/restore.md, block by block, on the same vault.
        shell.subs.update({"/srv/photos-restored": str(tmp_path / "guide-restored"), "/tmp/one": str(tmp_path / "one"),
                           "/tmp/one-tuesday": str(tmp_path / "one-tuesday"), "/tmp/": str(tmp_path / "cp") + "/",
                           "pool/photos": f"{pool}/guide"})
        shell.env.update(COLDVAULT_REPO=repo, COLDVAULT_PASSWORD_FILE=str(password))
        day = [s for s in run(["snapshots", "--json", "--source", "photos"], shell_env(shell)).json()
               if s["time"].startswith("2024-05-14")]
        shell.subs["1a2b3c4d"] = day[0]["short_id"]
        for first in ("coldvault snapshots --source photos             # pick one: its id, or `latest`",
                      "coldvault snapshots --source photos"):
            shell.run_block(block("docs/restore.md", first))
        assert tree_contents(str(tmp_path / "guide-restored")) == tree_contents(str(photos))
        for d in ("one", "one-tuesday"):
            assert (tmp_path / d / "IMG_0001.jpg").read_bytes() == (photos / "2024/summer/IMG_0001.jpg").read_bytes()
        # The error the guide prints is the one coldvault prints.
        (shown,) = block("docs/restore.md", RUN_KEYS["restore-error"]).text.splitlines()
        p = shell.run("coldvault ls 2024-05-13 --source photos", ok=(2,))
        assert p.stderr.splitlines()[0] == shown
        # The mount: the day's folder, a copy out of it, that day's changes.
        outs = shell.run_block(block("docs/restore.md", "coldvault mount /mnt/vault"))
        wait_for_no_locks(repo)
        assert "2024-05-14" in outs[1].stdout.split()
        assert (tmp_path / "cp" / "IMG_0001.jpg").exists()
        assert "2024" in outs[3].stdout.split()
        # ZFS: a stream of the night of 2024-05-14, as `--snapshot-prefix nightly` names it.
        put(os.path.join(root, "photos", "b.bin"), os.urandom(10_000))
        sh("zfs", "snapshot", f"{pool}/photos@nightly-20240514T030000Z")
        shell.run(f"coldvault backup zfs {pool}/photos@nightly-20240514T030000Z")
        shell.run_block(block("docs/restore.md", RUN_KEYS["restore-zfs"]))
        assert "nightly-20240514T030000Z" in zfs_snapshots(f"{pool}/guide")
        shell.subs["pool/photos"] = f"{pool}/guide-loop"
        shell.run_block(block("docs/restore.md", "coldvault mount /mnt/vault --cold wait"))
        shell.run(f"fusermount3 -u {mnt}")
        wait_for_no_locks(repo)
        assert "nightly-20240514T030000Z" in zfs_snapshots(f"{pool}/guide-loop")
        assert tree_contents(os.path.join(root, "guide-loop")) == tree_contents(os.path.join(root, "photos"))
        shell.run_block(block("docs/restore.md", RUN_KEYS["repair"]))
    finally:
        unmount(str(mnt))
        wait_for_no_locks(repo)


def shell_env(shell: DocShell) -> dict:
    return {k: v for k, v in shell.env.items() if k.startswith("COLDVAULT_")}


RUN_KEYS = {
    "setup": "make demo   # installs what is missing, backs up a sample tree to a local vault twice, restores it",
    "readme": "export COLDVAULT_REPO=/backup/vault            # or s3://bucket/prefix (+ COLDVAULT_S3_ENDPOINT)",
    "restore-error": "coldvault: error: no snapshot '2024-05-13' of source 'photos' in the vault: none that UTC day",
    "restore-zfs": "coldvault snapshots --source zfs:tank/photos     # each stream and its base",
    "repair": "coldvault check                      # names the damaged index object, suggests the repair",
}


# ---- docs/cold-storage.md ------------------------------------------------------------------------------


def test_cold_storage_guide(zpool, tmp_path):
    pool, root = zpool
    sh("zfs", "create", f"{pool}/photos")
    put(os.path.join(root, "photos", "a.bin"), os.urandom(40_000))
    sh("zfs", "snapshot", f"{pool}/photos@2026-11-01")
    photos = tmp_path / "photos"
    photos_tree(photos)
    repo = str(tmp_path / "cold")
    env = base_env(tmp_path)
    env["COLDVAULT_PASSWORD"] = PASSWORD
    # s3://bucket/photos: a local vault, which simulates the cold tier (README, "The local store").
    shell = DocShell(env, {"s3://bucket/photos": repo, "tank/photos": f"{pool}/photos",
                           "tank/photos-back": f"{pool}/photos-back"}, str(tmp_path))
    shell.run_block(block("docs/cold-storage.md", COLD["init"]))
    shell.env["COLDVAULT_REPO"] = repo
    shell.run(f"coldvault backup dir {photos} --name photos")
    shell.run(f"coldvault backup zfs {pool}/photos@2026-11-01")
    # The price file of the guide is accepted as it is.
    prices = tmp_path / "prices.json"
    prices.write_text(block("docs/cold-storage.md", "{").text)
    p = shell.run(f"coldvault thaw latest --source photos --dry-run --prices {prices}")
    assert "eu-central-1 list prices, 2026-11" in p.stdout
    # The synopsis names only options `thaw` has.
    synopsis = block("docs/cold-storage.md", COLD["synopsis"]).text
    helptext = shell.run("coldvault thaw --help").stdout
    for opt in {w.strip("[]") for w in synopsis.split() if w.strip("[]").startswith("--")}:
        assert opt in helptext, opt
    # The transcript's command, and the first line it shows.
    transcript = block("docs/cold-storage.md", "$ coldvault thaw latest:2024/05 --source photos").text.splitlines()
    p = shell.run(transcript[0][2:])
    first = p.stdout.splitlines()[0]
    assert first.startswith("latest:2024/05: directory 2024/05 in snapshot ") and first.endswith("data pack(s)")
    assert transcript[1].startswith("latest:2024/05: directory 2024/05 in snapshot ")
    # restore zfs --thaw --wait: requests, waits (the local store: at once), receives.
    shell.run_block(block("docs/cold-storage.md", COLD["restore-zfs"]))
    assert zfs_snapshots(f"{pool}/photos-back") == ["2026-11-01"]
    assert tree_contents(os.path.join(root, "photos-back")) == tree_contents(os.path.join(root, "photos"))


def test_commands_guide(tmp_path):
    """docs/commands.md, every block as printed, on a vault with two backups of photos."""
    photos = tmp_path / "srv-photos"
    photos_tree(photos)
    repo = str(tmp_path / "vault")
    env = base_env(tmp_path)
    env.update(COLDVAULT_PASSWORD=PASSWORD, COLDVAULT_REPO=repo)
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "offsite-password").write_text("another password\n")  # copy: the destination's own
    shell = DocShell(env, {"/tmp/IMG_0001.jpg": str(out / "IMG_0001.jpg"), "/tmp/summer.tar": str(out / "summer.tar"),
                           "/etc/bash_completion.d/coldvault": str(out / "coldvault.bash"),
                           "s3://offsite/photos": str(tmp_path / "offsite"),
                           "/root/.offsite-password": str(tmp_path / "offsite-password")}, str(tmp_path))
    shell.run("coldvault init")
    shell.run(f"coldvault backup dir {photos} --name photos")
    put(os.path.join(photos, "2024/summer/IMG_0003.jpg"), os.urandom(10_000))
    shell.run(f"coldvault backup dir {photos} --name photos")
    for first in COMMANDS:
        shell.run_block(block("docs/commands.md", first))
    assert (out / "IMG_0001.jpg").read_bytes() == (photos / "2024/summer/IMG_0001.jpg").read_bytes()
    assert "IMG_0003.jpg" in subprocess.run(["tar", "tf", str(out / "summer.tar")], capture_output=True,
                                            text=True, check=True).stdout
    assert "complete" in (out / "coldvault.bash").read_text()
    assert os.path.getsize(os.path.join(env["HOME"], ".config/fish/completions/coldvault.fish")) > 0
    copies = run(["snapshots", "--json"], {**env, "COLDVAULT_REPO": str(tmp_path / "offsite"),
                                           "COLDVAULT_PASSWORD": "another password"}).json()
    assert len(copies) == 2 and {c["source"] for c in copies} == {"photos"}


COMMANDS = [
    "coldvault dump latest 2024/summer/IMG_0001.jpg --source photos > /tmp/IMG_0001.jpg",
    "coldvault diff latest latest --source photos",
    "coldvault find 'IMG_*.jpg' --source photos",
    "coldvault stats",
    "coldvault unlock",
    "coldvault completion bash > /etc/bash_completion.d/coldvault",
    COPY_FIRST,
]


COLD = {
    "init": "coldvault init --repo s3://bucket/photos --data-storage-class DEEP_ARCHIVE   # 64 MiB packs",
    "synopsis": "coldvault thaw TARGET... [--tier Bulk|Standard|Expedited] [--days N] [--dry-run] [--source S] "
                "[--json] [--prices FILE]",
    "restore-zfs": "coldvault restore zfs tank/photos@2026-11-01 --into tank/photos-back --thaw --wait --tier Bulk --days 3",
}


# ---- the set-up, the crontab and the systemd unit --------------------------------------------------------


def fresh_copy(dest: str) -> str:
    """The checkout's files as a fresh clone has them (tracked and new files, nothing ignored), with
    .venv the virtualenv running these tests (installing one needs the network and minutes)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = os.path.join(REPO_ROOT, name)
        if os.path.isfile(src) and not os.path.islink(src):
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, name))
    os.symlink(sys.prefix, os.path.join(dest, ".venv"))
    return dest


def cron_env(home: str, extra: dict) -> dict:
    """What cron gives a job (cron(8): SHELL, PATH=/usr/bin:/bin, HOME, LOGNAME), then the crontab's
    variables. PYTHONPATH: the shared .venv was installed from another checkout; this one's code runs."""
    return {"SHELL": "/bin/sh", "PATH": "/usr/bin:/bin", "HOME": home, "LOGNAME": "root",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **extra}


def test_set_up_from_a_fresh_copy_and_the_crontab_as_cron_runs_it(zpool, tmp_path):
    pool, root = zpool
    copy = fresh_copy(str(tmp_path / "clone"))
    stamp = os.path.join(sys.prefix, ".coldvault-installed")
    with open(os.path.join(copy, "pyproject.toml"), "rb") as f, open(stamp) as g:
        assert hashlib.sha256(f.read()).hexdigest() == g.read().strip(), \
            "the virtualenv was installed from another pyproject.toml: `make demo` would reinstall it"
    bindir = str(tmp_path / "usr-local-bin")  # /usr/local/bin of this test
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDVAULT_")}
    env.update(COLDVAULT_BINDIR=bindir, PYTHONPATH=os.path.join(copy, "src"), HOME=str(tmp_path))
    # README's set-up, as printed: `make demo` (installs what is missing, then the demo).
    (setup,) = [c for c in commands(block("README.md", RUN_KEYS["setup"]).text) if c.startswith("make demo")]
    p = subprocess.run(["/bin/sh", "-c", setup], cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    if os.getuid() != 0:  # install-deps.sh puts the command on PATH only as root
        subprocess.run([os.path.join(copy, "scripts", "install-command.sh")], env=env, check=True)
    wrapper = os.path.join(bindir, "coldvault")
    with open(wrapper) as f:
        assert f.read() == f'#!/bin/sh\nexec {copy}/.venv/bin/coldvault "$@"\n'
    # What the README lists is what install-deps.sh installs.
    with open(os.path.join(copy, "scripts", "install-deps.sh")) as f:
        want = next(ln for ln in f if ln.startswith("want=("))[len("want=("):].strip().rstrip(")").split()
    with open(os.path.join(copy, "README.md")) as f:
        setup_text = f.read().split("## Set up", 1)[1].split("## Use", 1)[0]
    for pkg in want:
        assert f"`{pkg}`" in setup_text, pkg
    assert "getfattr" in open(os.path.join(copy, "docs", "restore.md")).read() and "attr" in want

    # The crontab of docs/cron.md, each job as cron runs it: /bin/sh -c, cron's PATH, the crontab's variables.
    sh("zfs", "create", f"{pool}/photos")
    put(os.path.join(root, "photos", "a.bin"), os.urandom(40_000))
    photos = tmp_path / "srv-photos"
    photos_tree(photos)
    repo = str(tmp_path / "vault")
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    subs = {"/usr/local/bin": bindir, "s3://my-bucket/vault": repo, "/root/.coldvault-password": str(password),
            "/srv/photos": str(photos), "tank/photos": f"{pool}/photos"}
    crontab = block("docs/cron.md", "# m h dom mon dow  command").text
    variables, jobs = {}, []
    for line in crontab.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(None, 5)
        if "=" in fields[0] and not fields[0][0].isdigit():
            name, value = line.split("=", 1)
            variables[name.strip()] = replace_all(value.strip(), subs)
        else:
            jobs.append(replace_all(fields[5], subs))
    assert bindir in variables["PATH"].split(":") and len(jobs) == 3
    home = str(tmp_path / "home")
    os.makedirs(home)
    run(["init"], {"COLDVAULT_REPO": repo, "COLDVAULT_PASSWORD_FILE": str(password)})
    # Without the crontab's PATH line, cron would not find coldvault (the bug this page once had).
    p = subprocess.run(["/bin/sh", "-c", jobs[0]], env=cron_env(home, {k: v for k, v in variables.items() if k != "PATH"}),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "coldvault: not found" in p.stderr, p.stderr
    for job in jobs:
        p = subprocess.run(["/bin/sh", "-c", job], env=cron_env(home, variables), capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, (job, p.stderr)
        assert p.stderr == "", (job, p.stderr)
    snaps = run(["snapshots", "--json"], {"COLDVAULT_REPO": repo, "COLDVAULT_PASSWORD": PASSWORD}).json()
    assert sorted(s["source"] for s in snaps) == sorted(["photos", f"zfs:{pool}/photos"])
    assert [z for z in zfs_snapshots(f"{pool}/photos") if z.startswith("nightly-")]

    # The systemd unit's ExecStart= lines: no shell, its EnvironmentFile= (the example in its comments).
    unit_path = os.path.join(copy, "contrib", "systemd", "coldvault-backup.service")
    with open(unit_path) as f:
        unit = f.read()
    unit_env = {}
    for line in unit.splitlines():
        if line.startswith("#   COLDVAULT_"):
            name, value = line[1:].strip().split("=", 1)
            unit_env[name] = replace_all(value, {**subs, "/etc/coldvault/password": str(password)})
    # (its AWS_* lines are placeholders for the s3:// vault, which is a local one here)
    assert "SuccessExitStatus=3" in unit
    for b in blocks():
        if b.path == "contrib/systemd/coldvault-backup.service" and b.lang == "unit":
            argv = [replace_all(a, {**subs, "/usr/local/bin/coldvault": wrapper}) for a in shlex.split(b.text)]
            p = subprocess.run(argv, env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                          "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "HOME": home, **unit_env},
                               capture_output=True, text=True, timeout=600)
            assert p.returncode in (0, 3), (b.text, p.stderr)
    assert sorted(unit_env) == ["COLDVAULT_PASSWORD_FILE", "COLDVAULT_REPO"]


# ---- command lines inside the prose --------------------------------------------------------------------


def test_inline_command_lines_parse(tmp_path, monkeypatch):
    """Every `coldvault ...` written inline in the prose of the docs is a command line coldvault
    accepts (its real argument parser; what they do is shown by the blocks run above), or, when
    it is only a command's name (`coldvault restore dir`), a command that exists. The config
    file is docs/config.md's example (`coldvault backup --profile photos`)."""
    import contextlib
    import io
    import re

    from coldvault.cli.main import build_parser, parse
    from doctools import FENCE, doc_files

    (tmp_path / "coldvault").mkdir()
    (tmp_path / "coldvault" / "config.toml").write_text(block("docs/config.md", "# /etc/coldvault/config.toml").text)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))

    n = 0
    for rel in doc_files():
        with open(os.path.join(REPO_ROOT, rel)) as f:
            prose = FENCE.sub("", f.read())
        for m in re.finditer(r"`(coldvault [^`]+)`", prose):
            argv = shlex.split(m.group(1))[1:]
            n += 1
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    parse(build_parser(), argv)
                    code = 0
                except SystemExit as exc:
                    code = exc.code
                if code and len(argv) <= 2 and "the following arguments are required" in err.getvalue():
                    try:
                        parse(build_parser(), [*argv, "--help"])  # only the command's name
                    except SystemExit as exc:
                        code = exc.code
            assert code == 0, f"{rel}: `{m.group(1)}`: {err.getvalue().strip()}"
    assert n >= 30


def test_commands_guide_keys(tmp_path):
    """docs/commands.md, the `key` block as printed: list, add, list --json, passwd, and the
    remove (with the new password) of the key `add` made; its id stands for the printed one."""
    repo = str(tmp_path / "vault")
    env = base_env(tmp_path)
    env.update(COLDVAULT_PASSWORD=PASSWORD, COLDVAULT_REPO=repo)
    files = {"/root/laptop.pw": tmp_path / "laptop.pw", "/root/new.pw": tmp_path / "new.pw"}
    files["/root/laptop.pw"].write_text("laptop password\n")
    files["/root/new.pw"].write_text("new password\n")
    shell = DocShell(env, {k: str(v) for k, v in files.items()}, str(tmp_path))
    shell.run("coldvault init")
    lines = commands(block("docs/commands.md", KEYS_BLOCK).text)
    assert len(lines) == 5
    for cmd in lines[:2]:
        shell.run(cmd)
    listed = json.loads(shell.run(lines[2]).stdout)
    [laptop] = [k for k in listed if k["stored"] != "config"]
    assert [k["current"] for k in listed] == [True, False]
    shell.run(lines[3])
    shell.run(lines[4], **{"3a012872": laptop["short_id"]})
    left = run(["key", "list", "--json"], {**env, "COLDVAULT_PASSWORD": "new password"}).json()
    assert [k["current"] for k in left] == [True] and left[0]["id"] != laptop["id"]
    for old in (PASSWORD, "laptop password"):
        assert run(["key", "list"], {**env, "COLDVAULT_PASSWORD": old}, check=False).code == 11
