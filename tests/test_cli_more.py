"""The commands a restic or borg user reaches for on day one (issue 12, item 4):
dump, diff, find, stats, unlock, completion; each run as a user runs it."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile

from cvtools import COLDVAULT, run, vault_env

USAGE, COLD = 2, 14


def _tree(root):
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "report.txt").write_text("quarterly report\n" * 1000)
    (root / "photo.jpg").write_bytes(os.urandom(3_000_000))
    os.symlink("docs/report.txt", root / "link")
    os.chmod(root / "docs" / "report.txt", 0o640)
    os.utime(root / "photo.jpg", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def _dump(args, env) -> bytes:
    p = subprocess.run([*COLDVAULT, "dump", *args], env={**os.environ, **env}, capture_output=True)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


def test_dump_file_directory_and_errors(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    assert _dump(["latest", "photo.jpg"], env) == (src / "photo.jpg").read_bytes()
    assert _dump(["latest", "docs/report.txt", "--source", "src"], env) == (src / "docs" / "report.txt").read_bytes()
    # A directory: a tar stream with modes, mtimes and symlinks kept.
    with tarfile.open(fileobj=io.BytesIO(_dump(["latest"], env)), mode="r|") as tar:
        members = {}
        for m in tar:
            members[m.name] = (m, tar.extractfile(m).read() if m.isfile() else None)
    assert set(members) == {"docs", "docs/report.txt", "photo.jpg", "link"}
    m, data = members["docs/report.txt"]
    assert data == (src / "docs" / "report.txt").read_bytes() and m.mode == 0o640
    m, data = members["photo.jpg"]
    assert data == (src / "photo.jpg").read_bytes() and abs(m.mtime - 1_600_000_000.123456789) < 1e-6
    assert members["link"][0].issym() and members["link"][0].linkname == "docs/report.txt"
    with tarfile.open(fileobj=io.BytesIO(_dump(["latest", "docs"], env)), mode="r|") as tar:
        assert [m.name for m in tar] == ["docs", "docs/report.txt"]
    # Bad input: one line, exit 2.
    for args, words in ((["latest", "nope.txt"], "no nope.txt in snapshot"),
                        (["0000ffff", "photo.jpg"], "no snapshot '0000ffff'")):
        r = run(["dump", *args], env, check=False)
        assert r.code == USAGE and r.err.startswith(f"coldvault: error: {words}") and "Traceback" not in r.err
        assert r.out == ""


def test_dump_of_cold_data_says_what_to_thaw(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    env = vault_env(str(tmp_path / "vault"))
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    for path in ("photo.jpg", "docs"):
        r = run(["dump", "latest", path], env, check=False)
        assert r.code == COLD and r.out == "", r.err
        assert "in a cold tier: data/" in r.err and f"coldvault thaw " in r.err and f":{path}'" in r.err
