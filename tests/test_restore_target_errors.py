"""A restore (or dump) that cannot write its target ends with one line naming the file:
a real full tmpfs (ENOSPC) and a real read-only bind mount (EROFS) as targets. Nothing
half-written is left, no writer process stays, and a rerun finishes the job."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess

import pytest

from cvtools import COLDVAULT, diff_signatures, run, signature, vault_env
from coldvault.restore.target import TMP_PREFIX
from doctools import block
from zfstools import put, sh, zpool  # noqa: F401 (zpool: a fixture)

TARGET_ERROR = 19
MiB = 1024 * 1024
GUIDE_FILE = "/srv/photos-restored/2024/summer/IMG_0412.jpg"
GUIDE = f"coldvault: error: cannot write {GUIDE_FILE}: No space left on device"  # docs/restore.md


@contextlib.contextmanager
def tmpfs(path, size: str):
    """A tmpfs of `size` at `path` (made here), unmounted on the way out."""
    os.makedirs(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@contextlib.contextmanager
def read_only_view(of, path):
    """`of` seen read-only at `path` (a bind mount); yields a function that makes it writable."""
    os.makedirs(path)
    subprocess.run(["mount", "--bind", str(of), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)

        def writable():
            subprocess.run(["mount", "-o", "remount,rw,bind", str(path)], check=True)
        yield writable
    finally:
        subprocess.run(["umount", str(path)], check=True)


def source_tree(root) -> None:
    """Small files (one chunk each: written by writer processes) in a/, then files of several
    chunks (temporary files made by the restoring process, pieces written by writers)."""
    for i in range(24):
        d = os.path.join(root, "a", f"d{i % 3}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"s{i:02d}.bin"), "wb") as f:
            f.write(os.urandom(150_000))
    for i in range(2):
        with open(os.path.join(root, f"z-big{i}.bin"), "wb") as f:
            f.write(os.urandom(6 * MiB))


@pytest.fixture
def backed_up(tmp_path):
    src = tmp_path / "src"
    source_tree(src)
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    return src, env


def writers_on(target) -> list[int]:
    """Writer processes (`python -m coldvault.restore.writer`) holding `target` open."""
    target = os.path.realpath(target)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"coldvault.restore.writer" not in f.read():
                    continue
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                found.append(int(pid))
        except OSError:  # gone meanwhile
            continue
    return found


def assert_stopped_cleanly(r, target, src, reason: str) -> str:
    """Exit 19, one error line naming a file of the snapshot under `target` and `reason`,
    its hint, no traceback; nothing temporary or half-written left; no writer left.
    Returns the path named."""
    assert r.code == TARGET_ERROR, r.err
    assert "Traceback" not in r.err, r.err
    lines = r.err.splitlines()
    assert len(lines) == 2 and lines[1].startswith("coldvault: hint: "), r.err
    m = re.fullmatch(rf"coldvault: error: cannot write ({re.escape(str(target))}/\S+): {re.escape(reason)}", lines[0])
    assert m, lines[0]
    named = m.group(1)
    assert os.path.lexists(os.path.join(src, os.path.relpath(named, target))), named
    leftovers = []
    for dirpath, dirnames, filenames in os.walk(target):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if name.encode().startswith(TMP_PREFIX):
                leftovers.append(p)
                continue
            with open(p, "rb") as f, open(os.path.join(src, os.path.relpath(p, target)), "rb") as g:
                assert f.read() == g.read(), f"{p} is not complete"
    assert leftovers == []
    assert writers_on(target) == []
    return named


def test_restore_onto_a_full_disk_stops_with_one_line_and_a_rerun_finishes(backed_up, tmp_path):
    src, env = backed_up
    with tmpfs(tmp_path / "small", "4m") as target:
        r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False)
        named = assert_stopped_cleanly(r, target, src, "No space left on device")
        # What docs/restore.md shows is what coldvault prints.
        shown_error, shown_hint = block("docs/restore.md", GUIDE).text.splitlines()
        assert r.err.splitlines()[0] == shown_error.replace(GUIDE_FILE, named)
        assert r.err.splitlines()[1].startswith(shown_hint.removesuffix("..."))
        subprocess.run(["mount", "-o", "remount,size=64m", str(target)], check=True)
        run(["restore", "dir", "latest", "--target", str(target), "--overwrite"], env)
        assert diff_signatures(signature(src), signature(target)) == []


def test_restore_onto_a_read_only_file_system_names_the_file_a_writer_met(backed_up, tmp_path):
    src, env = backed_up
    target = tmp_path / "target"
    for d in ("d0", "d1", "d2"):  # the walk finds every directory: the first write is a writer's
        os.makedirs(target / d)
    with read_only_view(target, tmp_path / "ro") as writable:
        ro = tmp_path / "ro"
        r = run(["restore", "dir", "latest", "a", "--target", str(ro), "--overwrite"], env, check=False)
        named = assert_stopped_cleanly(r, ro, src / "a", "Read-only file system")
        assert re.fullmatch(rf"{re.escape(str(ro))}/d[012]/s\d\d\.bin", named), named
        writable()
        run(["restore", "dir", "latest", "a", "--target", str(ro), "--overwrite"], env)
        assert diff_signatures(signature(src / "a"), signature(ro)) == []


def test_restore_into_a_directory_it_cannot_create_names_it(backed_up, tmp_path):
    src, env = backed_up
    os.makedirs(tmp_path / "parent")
    with read_only_view(tmp_path / "parent", tmp_path / "ro"):
        target = tmp_path / "ro" / "new"
        r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False)
        assert r.code == TARGET_ERROR and "Traceback" not in r.err, r.err
        assert r.err.splitlines() == [f"coldvault: error: cannot write {target}: Read-only file system"]


def test_restore_into_a_directory_it_cannot_list_names_it(backed_up, tmp_path):
    src, env = backed_up
    target = tmp_path / "theirs"
    os.makedirs(target)
    os.chown(target, 1234, 1234)
    os.chmod(target, 0o300)  # its owner may enter and write, not list
    # Without the capabilities that let root read anything, like an ordinary user.
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False, prefix=drop)
    assert r.code == TARGET_ERROR and "Traceback" not in r.err, r.err
    assert r.err.splitlines() == [f"coldvault: error: cannot write {target}: Permission denied"]


@pytest.mark.zfs
def test_dump_of_a_zfs_stream_onto_a_full_disk_or_into_a_closed_pipe(zpool, tmp_path):
    name, root = zpool
    ds = f"{name}/data"
    sh("zfs", "create", ds)
    put(os.path.join(root, "data", "a.bin"), os.urandom(6 * MiB))
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "zfs", ds], env)
    rec = run(["snapshots", "--source", f"zfs:{ds}", "--json"], env).json()[0]["id"]

    with tmpfs(tmp_path / "small", "2m") as disk:
        out = disk / "stream.zfs"
        with open(out, "wb") as f:
            p = subprocess.run([*COLDVAULT, "dump", rec], env={**os.environ, **env}, stdout=f,
                               stderr=subprocess.PIPE)
        err = p.stderr.decode()
        assert p.returncode == TARGET_ERROR and "Traceback" not in err, err
        assert err.splitlines()[0] == f"coldvault: error: cannot write standard output ({out}): No space left on device"
        assert len(err.splitlines()) == 2 and err.splitlines()[1].startswith("coldvault: hint: "), err

    # `coldvault dump ... | head -c 10`: stops at once, quietly, exit 0 (as it did before: checked here).
    p = subprocess.Popen([*COLDVAULT, "dump", rec], env={**os.environ, **env}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert len(p.stdout.read(10)) == 10
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 0, err
    assert err == ""
