"""Bad input gets one clear line, a documented exit code, and loses nothing."""

from __future__ import annotations

import os
import socket

import msgpack
import pytest

from cvtools import run, sample_vault, vault_env

# Exit codes, as documented in the README.
PARTIAL, NO_VAULT, BAD_PASSWORD, UNSUPPORTED, DAMAGED, COLD, UNREACHABLE, USAGE = 3, 10, 11, 12, 13, 14, 15, 2


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("coldvault: error:")]
    assert len(lines) == 1, err
    return lines[0]


def files_under(root) -> dict:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


@pytest.fixture
def vault(tmp_path):
    """A vault with one snapshot of a small tree; returns (repo path, env, source dir)."""
    return sample_vault(tmp_path)


def test_wrong_password_changes_nothing(vault, tmp_path):
    repo, env, src = vault
    before = files_under(repo)
    for args in (["snapshots"], ["backup", "dir", str(src)], ["restore", "dir", "latest", "--target", str(tmp_path / "t")]):
        r = run(args, {**env, "COLDVAULT_PASSWORD": "wrong"}, check=False)
        assert r.code == BAD_PASSWORD
        assert "wrong password" in one_error_line(r.err)
    assert files_under(repo) == before
    assert not (tmp_path / "t").exists()


def test_password_file_and_command(vault, tmp_path):
    repo, env, _ = vault
    pw = tmp_path / "pw"
    pw.write_text("test-password\n")
    plain = {"COLDVAULT_REPO": repo}
    assert run(["snapshots"], {**plain, "COLDVAULT_PASSWORD_FILE": str(pw)}, check=False).code == 0
    assert run(["snapshots"], {**plain, "COLDVAULT_PASSWORD_COMMAND": f"cat {pw}"}, check=False).code == 0
    r = run(["snapshots"], {**plain, "COLDVAULT_PASSWORD_COMMAND": "exit 3"}, check=False)
    assert r.code == BAD_PASSWORD and "password command" in one_error_line(r.err)
    r = run(["snapshots"], plain, check=False)  # no password, no terminal
    assert r.code == BAD_PASSWORD and "no terminal" in one_error_line(r.err)


def test_missing_vault(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    for repo in (str(tmp_path / "nothing-here"), str(tmp_path / "src")):
        before = files_under(tmp_path)
        for args in (["snapshots"], ["backup", "dir", str(src)]):
            r = run(args, vault_env(repo), check=False)
            assert r.code == NO_VAULT
            assert "no vault" in one_error_line(r.err)
        assert files_under(tmp_path) == before  # not even the directory was made
        assert not os.path.exists(tmp_path / "nothing-here")
    r = run(["snapshots"], {"COLDVAULT_REPO": ""}, check=False)
    assert r.code == USAGE and "no vault given" in one_error_line(r.err)


def test_init_twice_refused(vault):
    repo, env, _ = vault
    before = files_under(repo)
    r = run(["init"], env, check=False)
    assert r.code == USAGE and "already exists" in one_error_line(r.err)
    assert files_under(repo) == before


def test_vault_of_newer_version(vault):
    repo, env, src = vault
    path = os.path.join(repo, "config")
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"CV\x01\x00"  # envelope, unencrypted, uncompressed
    doc = msgpack.unpackb(data[4:])
    doc["version"] = 2
    with open(path, "wb") as f:
        f.write(data[:4] + msgpack.packb(doc, use_bin_type=True))
    before = files_under(repo)
    for args in (["snapshots"], ["backup", "dir", str(src)]):
        r = run(args, env, check=False)
        assert r.code == UNSUPPORTED
        assert "version 2" in one_error_line(r.err)
    assert files_under(repo) == before


def test_unreachable_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    env = vault_env("s3://some-bucket/x", COLDVAULT_S3_ENDPOINT=f"http://127.0.0.1:{port}", COLDVAULT_RETRY_ATTEMPTS="2",
                    AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    r = run(["snapshots"], env, check=False, timeout=120)
    assert r.code == UNREACHABLE
    assert f"127.0.0.1:{port}" in one_error_line(r.err)


def _objects(repo, prefix):
    return sorted(os.path.join(dp, n) for dp, _, ns in os.walk(os.path.join(repo, prefix)) for n in ns)


def test_corrupt_data_pack_names_pack_and_file(vault, tmp_path):
    repo, env, src = vault
    (pack,) = _objects(repo, "data")
    with open(pack, "r+b") as f:
        f.seek(100)  # inside the first blob
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0x01]))
    target = tmp_path / "t"
    r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False)
    assert r.code == DAMAGED
    line = one_error_line(r.err)
    name = os.path.basename(pack)
    assert name in line
    assert "report.txt" in line or "photo.jpg" in line
    # The file that could be restored was; the damaged one was not left half-written.
    restored = files_under(target)
    assert len(restored) == 1
    assert not any(".coldvault-restore-" in k for k in restored)


def test_truncated_snapshot_and_index(vault, tmp_path):
    repo, env, src = vault
    (snap,) = _objects(repo, "snapshots")
    with open(snap, "r+b") as f:
        f.truncate(20)
    r = run(["snapshots"], env, check=False)
    assert r.code == DAMAGED
    assert os.path.basename(snap) in r.err and "Traceback" not in r.err
    # A damaged snapshot record does not stop the next backup.
    run(["backup", "dir", str(src), "--name", "src"], env)

    idx = _objects(repo, "index")[0]
    with open(idx, "r+b") as f:
        f.truncate(30)
    r = run(["restore", "dir", "latest", "--target", str(tmp_path / "t")], env, check=False)
    assert r.code == DAMAGED
    assert os.path.basename(idx) in one_error_line(r.err)


def test_cold_data_says_what_to_restore(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a" * 10_000)
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init", "--data-storage-class", "DEEP_ARCHIVE"], env)
    run(["backup", "dir", str(src)], env)
    # Listing works from hot objects alone.
    assert "a.txt" in run(["ls", "latest"], env).out
    target = tmp_path / "t"
    r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False)
    assert r.code == COLD
    line = one_error_line(r.err)
    (pack,) = [p for p in _objects(repo, "data") if not p.endswith(".cold")]
    assert "cold tier" in line and os.path.basename(pack) in line
    assert "thaw" in r.err
    assert not target.exists()


def test_unreadable_source_files_are_listed_and_backup_continues(tmp_path):
    src = tmp_path / "src"
    (src / "locked-dir").mkdir(parents=True)
    (src / "ok.txt").write_text("readable")
    secret = src / "secret.txt"
    secret.write_text("nobody may read this")
    (src / "locked-dir" / "inside.txt").write_text("x")
    for p in (secret, src / "locked-dir"):
        os.chown(p, 1234, 1234)
        os.chmod(p, 0)
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    # Without the capabilities that let root read anything, like an ordinary user.
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    r = run(["backup", "dir", str(src), "--json"], env, check=False, prefix=drop)
    assert r.code == PARTIAL, r.err
    assert "secret.txt" in r.err and "locked-dir" in r.err and "Traceback" not in r.err
    assert r.json()["incomplete"] is True
    snaps = run(["snapshots", "--json"], env).json()
    assert len(snaps) == 1 and snaps[0]["incomplete"] is True
    out = run(["ls", "latest"], env).out
    assert "ok.txt" in out and "secret.txt" not in out


def test_usage_errors_are_one_line(vault, tmp_path):
    repo, env, src = vault
    cases = [
        (["backup", "dir", str(tmp_path / "nope")], "nope does not exist"),
        (["backup", "dir", str(src), "--time", "yesterday"], "ISO 8601"),
        (["backup", "dir", str(src), "--name", "a/b"], "source name"),
        (["ls", "ffffffffff"], "no snapshot"),
        (["ls", "latest", "docs/missing.txt"], "no docs/missing.txt"),
        (["restore", "dir", "latest", "--target", str(src)], "not empty"),
        (["init", "--data-storage-class", "COLDEST"], "unknown storage class"),
    ]
    for args, text in cases:
        r = run(args, env, check=False)
        assert r.code == USAGE, (args, r.err)
        assert text in one_error_line(r.err), (args, r.err)


def test_one_file_from_a_snapshot(vault, tmp_path):
    repo, env, src = vault
    target = tmp_path / "one"
    run(["restore", "dir", "latest", "docs/report.txt", "--target", str(target)], env)
    assert os.listdir(target) == ["report.txt"]
    assert (target / "report.txt").read_text() == (src / "docs" / "report.txt").read_text()


def test_stdin_stream(vault, tmp_path):
    repo, env, _ = vault
    dump = b"".join(b"INSERT INTO t VALUES (%d);\n" % i for i in range(100_000))
    r = run(["backup", "stdin", "--name", "seafile-db.sql", "--json"], env, input=dump).json()
    assert r["bytes_total"] == len(dump)
    snaps = run(["snapshots", "--json", "--source", "seafile-db.sql"], env).json()
    assert len(snaps) == 1 and snaps[0]["kind"] == "stream"
    run(["restore", "dir", snaps[0]["id"][:8], "--target", str(tmp_path / "r")], env)
    assert (tmp_path / "r" / "seafile-db.sql").read_bytes() == dump


def test_unencrypted_config_swapped_in_is_refused(vault, tmp_path):
    """Someone replaced an encrypted vault's config with an unencrypted one: no plaintext is written."""
    repo, env, src = vault
    other = str(tmp_path / "plain")
    run(["init", "--no-encryption"], vault_env(other, password=None))
    with open(os.path.join(other, "config"), "rb") as f:
        plain_config = f.read()
    with open(os.path.join(repo, "config"), "wb") as f:
        f.write(plain_config)
    before = files_under(repo)
    r = run(["backup", "dir", str(src)], env, check=False)
    assert r.code == BAD_PASSWORD and "not encrypted" in one_error_line(r.err)
    assert files_under(repo) == before


def test_non_utf8_source_path(tmp_path):
    src = os.path.join(os.fsencode(tmp_path), b"caf\xe9-dir")
    os.makedirs(os.path.join(src, b"sub"))
    with open(os.path.join(src, b"sub", b"f\xff"), "wb") as f:
        f.write(b"latin-1 names")
    env = vault_env(str(tmp_path / "vault"))
    run(["init"], env)
    run(["backup", "dir", os.fsdecode(src), "--name", "cafe"], env)
    snaps = run(["snapshots", "--json"], env).json()
    assert snaps[0]["paths"][0].endswith("caf\\xe9-dir")
    run(["restore", "dir", "latest", "--target", str(tmp_path / "r")], env)
    with open(os.path.join(os.fsencode(tmp_path), b"r", b"sub", b"f\xff"), "rb") as f:
        assert f.read() == b"latin-1 names"


def test_a_record_forgotten_while_listing_is_no_damage(tmp_path):
    """A snapshot record listed and then deleted (a `forget` between the listing and the
    GET) is left out of Vault.snapshots without a warning; it is not damage."""
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    repo, env, _ = sample_vault(tmp_path)
    run(["backup", "stdin", "--name", "x.sql"], env, input=b"second")

    class ForgetsOnRead(LocalStore):
        def get(self, name, start=0, length=None):
            if name.startswith("snapshots/") and not getattr(self, "forgot", False):
                self.forgot = True
                self.delete(name)  # forgotten just after the listing
            return super().get(name, start, length)

    vault = Vault.open(ForgetsOnRead(repo), lambda: b"test-password")
    vault._parallel = lambda fn, items: [fn(i) for i in items]  # one at a time: exactly one is forgotten
    assert len(vault.snapshots()) == 1 and vault.damaged_snapshots == {}
