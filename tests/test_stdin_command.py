"""`coldvault backup stdin --command -- CMD ARGS...`: a failed dump is never stored as a good backup.

coldvault runs the command itself (no shell), stores its standard output, and if the
command exits non-zero or is killed, stores no snapshot and exits 4. The docs' own
recipes (docs/cron.md's Seafile script, README's Use line) run here as printed, with a
stand-in `mysqldump` on PATH.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys

import pytest

from cvtools import COLDVAULT, run, vault_env

COMMAND_FAILED, USAGE = 4, 2  # exit codes, as documented in the README
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Writes `size` deterministic random bytes to stdout, then says something on stderr and exits `status`.
WRITER = """
import random, sys
size, status = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(8)
while size > 0:
    n = min(size, 1 << 20)
    sys.stdout.buffer.write(r.randbytes(n))
    size -= n
sys.stdout.flush()
if status:
    print("writer: Got error: 2013: Lost connection to MySQL server during query", file=sys.stderr)
sys.exit(status)
"""


def written(size: int) -> bytes:
    r, parts = random.Random(8), []
    while size > 0:
        n = min(size, 1 << 20)
        parts.append(r.randbytes(n))
        size -= n
    return b"".join(parts)


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("coldvault: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def vault(tmp_path):
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    return repo, env


def snapshots(env, source=None) -> list[dict]:
    return run(["snapshots", "--json"] + (["--source", source] if source else []), env).json()


def restored(env, snapshot: str, name: str, target) -> bytes:
    run(["restore", "dir", snapshot, "--target", str(target)], env)
    assert os.listdir(target) == [name]
    return (target / name).read_bytes()


def test_output_of_a_command_is_stored(vault, tmp_path):
    _, env = vault
    r = run(["backup", "stdin", "--name", "small.sql", "--json", "--command", "--",
             "sh", "-c", "echo 'CREATE TABLE t (x int);'; echo 'INSERT INTO t VALUES (1);'"], env).json()
    assert r["bytes_total"] == 50
    assert restored(env, r["snapshot"][:8], "small.sql", tmp_path / "r1") == \
        b"CREATE TABLE t (x int);\nINSERT INTO t VALUES (1);\n"

    # several MiB: streamed through the chunker; stdin (which holds other bytes) is not read
    size = 6 * (1 << 20) + 12345
    r = run(["backup", "stdin", "--name", "big.bin", "--json", "--command", "--",
             sys.executable, "-c", WRITER, str(size), "0"], env, input=b"not this").json()
    assert r["bytes_total"] == size and r["source"] == "big.bin"
    assert restored(env, r["snapshot"][:8], "big.bin", tmp_path / "r2") == written(size)
    assert [s["source"] for s in snapshots(env)] == ["small.sql", "big.bin"]


def test_a_failing_command_stores_no_snapshot(vault, tmp_path):
    repo, env = vault
    run(["backup", "stdin", "--name", "db.sql", "--command", "--", "echo", "good dump"], env)
    before = snapshots(env)
    r = run(["backup", "stdin", "--name", "db.sql", "--command", "--",
             "sh", "-c", 'echo partial-dump; echo "mysqldump: Got error: 1045" >&2; exit 3'], env, check=False)
    assert r.code == COMMAND_FAILED, r.err
    assert "mysqldump: Got error: 1045" in r.err  # the command's own stderr, passed through
    assert one_error_line(r.err) == \
        "coldvault: error: sh exited with status 3 after 13 bytes of output; no snapshot of db.sql was saved"
    assert r.out == ""
    assert snapshots(env) == before

    # Several MiB then a failure: packs may be stored already; they are harmless leftovers
    size = 5 * (1 << 20)
    r = run(["backup", "stdin", "--name", "db.sql", "--command", "--",
             sys.executable, "-c", WRITER, str(size), "2"], env, check=False)
    assert r.code == COMMAND_FAILED, r.err
    assert "Lost connection to MySQL server" in r.err
    assert "exited with status 2 after 5242880 bytes of output" in one_error_line(r.err)
    assert snapshots(env) == before
    assert run(["check", "--read-data"], env).code == 0
    # ... and the next good run stores the whole output (reusing what was stored, if anything)
    good = run(["backup", "stdin", "--name", "db.sql", "--json", "--command", "--",
                sys.executable, "-c", WRITER, str(size), "0"], env).json()
    assert restored(env, good["snapshot"][:8], "db.sql", tmp_path / "r") == written(size)
    assert len(snapshots(env)) == 2


def test_a_killed_command_stores_no_snapshot(vault):
    _, env = vault
    r = run(["backup", "stdin", "--name", "db.sql", "--command", "--", "sh", "-c", "echo partial; kill -KILL $$"],
            env, check=False)
    assert r.code == COMMAND_FAILED, r.err
    assert one_error_line(r.err) == \
        "coldvault: error: sh was killed by SIGKILL after 8 bytes of output; no snapshot of db.sql was saved"
    assert snapshots(env) == []


def test_a_command_that_cannot_start(vault, tmp_path):
    _, env = vault
    not_executable = tmp_path / "dump.sh"
    not_executable.write_text("echo hi\n")
    cases = [
        ("no-such-dump-command", "coldvault: error: cannot run no-such-dump-command: command not found"),
        (str(not_executable), f"coldvault: error: cannot run {not_executable}: permission denied"),
    ]
    for program, message in cases:
        r = run(["backup", "stdin", "--name", "db.sql", "--command", "--", program, "--opt"], env, check=False)
        assert r.code == USAGE, r.err
        assert one_error_line(r.err).startswith(message)
        assert r.err.count("\n") == 1, r.err  # one line
    r = run(["backup", "stdin", "--name", "db.sql", "--command"], env, check=False)
    assert r.code == USAGE and "--command needs the command to run after --" in one_error_line(r.err)
    r = run(["backup", "stdin", "--name", "db.sql", "mysqldump"], env, input=b"", check=False)
    assert r.code == USAGE and "unexpected argument 'mysqldump'" in one_error_line(r.err)
    assert snapshots(env) == []


def test_options_after_the_dashes_belong_to_the_command(vault, tmp_path):
    _, env = vault
    # coldvault's own options (--name, --json, -q, --) after `--` are the command's arguments
    r = run(["backup", "stdin", "--name", "db.sql", "--command", "--",
             "printf", r"%s\n", "--single-transaction", "--name", "other.sql", "--json", "-q", "--", "-x"], env)
    assert r.out.startswith("snapshot ") and "of db.sql saved" in r.out  # no --json, no -q: they were printf's
    (snap,) = snapshots(env)
    assert snap["source"] == "db.sql"
    assert restored(env, snap["id"][:8], "db.sql", tmp_path / "r") == \
        b"--single-transaction\n--name\nother.sql\n--json\n-q\n--\n-x\n"

    out = run(["backup", "stdin", "--help"], env).out
    assert "--command -- CMD ARGS..." in out
    assert "coldvault backup stdin --name db.sql --command -- mysqldump --single-transaction db" in out


def test_post_hook_sees_the_failure(vault, tmp_path):
    _, env = vault
    seen = tmp_path / "seen"
    hook = f'echo "$COLDVAULT_STATUS $COLDVAULT_SOURCE [$COLDVAULT_SNAPSHOT]" >> {seen}'
    r = run(["backup", "stdin", "--name", "db.sql", "--post-hook", hook, "--command", "--", "sh", "-c", "exit 5"],
            env, check=False)
    assert r.code == COMMAND_FAILED and "status 5" in one_error_line(r.err)
    r = run(["backup", "stdin", "--name", "db.sql", "--post-hook", hook, "--json", "--command", "--", "echo", "ok"],
            env).json()
    assert seen.read_text() == f"error db.sql []\nok db.sql [{r['snapshot']}]\n"


def test_terminal_on_stdin_is_fine_with_a_command(vault, tmp_path):
    """With --command stdin is not read, so a terminal there is no mistake; without, it is."""
    _, env = vault
    primary, secondary = os.openpty()
    try:
        def backup(*extra):
            p = subprocess.run([*COLDVAULT, "backup", "stdin", "--name", "db.sql", *extra], stdin=secondary,
                               capture_output=True, env={**os.environ, **env}, timeout=300)
            return p.returncode, p.stderr.decode()

        code, err = backup()
        assert code == USAGE and "standard input is a terminal" in one_error_line(err)
        code, err = backup("--command", "--", "echo", "from a command")
        assert code == 0, err
    finally:
        os.close(primary)
        os.close(secondary)
    (snap,) = snapshots(env)
    assert restored(env, snap["id"][:8], "db.sql", tmp_path / "r") == b"from a command\n"


# ---- the docs' recipes, run as printed -------------------------------------------------------

MYSQLDUMP = """#!/bin/sh
# A stand-in for mysqldump: dumps the database named last, or fails for those in $FAIL_DBS.
for db; do :; done
echo "-- MySQL dump of $db"
case " $FAIL_DBS " in *" $db "*)
    echo "mysqldump: Got error: 2013: Lost connection to MySQL server during query" >&2
    exit 2;;
esac
echo "-- options: $*"
echo "CREATE TABLE t (x int);"
echo "INSERT INTO t VALUES (1);"
"""


def dump_of(db: str, *options: str) -> bytes:
    return (f"-- MySQL dump of {db}\n-- options: {' '.join([*options, db])}\n"
            "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1);\n").encode()


@pytest.fixture
def bin_dir(tmp_path):
    """A directory for PATH with `coldvault` (this checkout) and the stand-in `mysqldump`."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "coldvault").write_text(f'#!/bin/sh\nexec {sys.executable} -m coldvault "$@"\n')
    (d / "mysqldump").write_text(MYSQLDUMP)
    for f in d.iterdir():
        f.chmod(0o755)
    return d


def shell_block(markdown: str, after: str) -> str:
    """The first ```sh block after the heading `after`."""
    rest = markdown[markdown.index(after):]
    return re.search(r"```sh\n(.*?)```", rest, re.S).group(1)


def test_seafile_recipe_from_cron_md(vault, tmp_path, bin_dir):
    repo, env = vault
    with open(os.path.join(ROOT, "docs", "cron.md")) as f:
        script = shell_block(f.read(), "## Recipe: a Seafile server")
    password_file = tmp_path / "password"
    password_file.write_text(env["COLDVAULT_PASSWORD"] + "\n")
    data = tmp_path / "seafile"
    (data / "seafile-data").mkdir(parents=True)
    (data / "seafile-data" / "block").write_bytes(os.urandom(10_000))
    for doc, here in [("s3://my-bucket/seafile", repo), ("/root/.coldvault-password", str(password_file)),
                      ("/opt/seafile", str(data))]:
        assert doc in script
        script = script.replace(doc, here)
    path = tmp_path / "seafile-backup"
    path.write_text(script)
    script_env = {k: v for k, v in os.environ.items() if not k.startswith("COLDVAULT_")}
    script_env["PATH"] = f"{bin_dir}:{script_env['PATH']}"
    dbs = ["ccnet-db", "seafile-db", "seahub-db"]

    def night(fail: str = ""):
        return subprocess.run(["/bin/sh", str(path)], env={**script_env, "FAIL_DBS": fail}, capture_output=True,
                              timeout=600)

    p = night()
    assert p.returncode == 0, p.stderr.decode()
    first = {s["source"]: s["id"] for s in snapshots(env)}
    assert sorted(first) == sorted(dbs + ["seafile-data"])
    for db in dbs:
        assert restored(env, first[db][:8], f"{db}.sql", tmp_path / f"r-{db}") == \
            dump_of(db, "--single-transaction", "--opt")

    # The next night seafile-db's dump fails half way: the script fails, no snapshot of seafile-db is
    # stored (its good one from the night before is kept), and the other databases and the data go on.
    p = night(fail="seafile-db")
    err = p.stderr.decode()
    assert p.returncode == COMMAND_FAILED, err
    assert "Lost connection to MySQL server" in err
    assert ("coldvault: error: mysqldump exited with status 2 after 28 bytes of output;"
            " no snapshot of seafile-db was saved") in err
    second = {s["source"]: s["id"] for s in snapshots(env)}  # forget keeps each source's newest of the day
    assert second["seafile-db"] == first["seafile-db"]
    assert all(second[s] != first[s] for s in ["ccnet-db", "seahub-db", "seafile-data"])
    assert restored(env, second["seafile-db"][:8], "seafile-db.sql", tmp_path / "again") == \
        dump_of("seafile-db", "--single-transaction", "--opt")


def test_readme_stdin_line(vault, tmp_path, bin_dir):
    _, env = vault
    with open(os.path.join(ROOT, "README.md")) as f:
        use = shell_block(f.read(), "## Use")
    (line,) = [line for line in use.splitlines() if "backup stdin" in line]
    assert "--command -- mysqldump" in line
    p = subprocess.run(["/bin/sh", "-c", line], env={**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    (snap,) = snapshots(env)
    assert restored(env, snap["id"][:8], "all-databases.sql", tmp_path / "r") == dump_of("--all-databases")
