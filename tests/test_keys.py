"""`coldvault key list|add|remove|passwd`: several passwords per vault, run as a user would.

Each password is a key: the config's own key map, or a key object `keys/<id>`
(docs/format.md 6.3). Tests add, use, change and remove them end to end, on a
local vault and on moto S3, kill `key passwd` between its writes, and damage a
key object.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
import uuid

import pytest

from coldvault.index import config as configfmt
from coldvault.store.local import LocalStore
from coldvault.vault.lock import read_lock
from coldvault.vault.vault import Vault
from cvtools import COLDVAULT, diff_signatures, run, sample_vault, signature, vault_env

OK, USAGE, BAD_PASSWORD, UNSUPPORTED, DAMAGED, LOCKED = 0, 2, 11, 12, 13, 16
OLD = "test-password"  # sample_vault's


def keys(env, password: str = OLD) -> list[dict]:
    return run(["key", "list", "--json"], {**env, "COLDVAULT_PASSWORD": password}).json()


def current(env, password: str = OLD) -> str:
    [key] = [k for k in keys(env, password) if k["current"]]
    return key["id"]


def new_password_file(tmp_path, password: str) -> str:
    path = tmp_path / f"new-{uuid.uuid4().hex[:8]}"
    path.write_text(password + "\n")  # a trailing newline is not part of it, as for COLDVAULT_PASSWORD_FILE
    return str(path)


def opens(env, password: str) -> bool:
    r = run(["snapshots", "--json"], {**env, "COLDVAULT_PASSWORD": password}, check=False)
    assert r.code in (OK, BAD_PASSWORD), r.err
    return r.code == OK


def restores_intact(env, password: str, src, target) -> None:
    run(["restore", "dir", "latest", "--target", str(target)], {**env, "COLDVAULT_PASSWORD": password})
    assert not diff_signatures(signature(str(src)), signature(str(target)))


def one_error_line(r, code: int, words: str) -> None:
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err
    lines = r.err.splitlines()
    assert lines[0].startswith("coldvault: error: ") and words in lines[0], r.err
    assert all(line.startswith("coldvault: hint: ") for line in lines[1:]), r.err


def test_add_a_second_password_open_with_either_list_marks_the_one_in_use(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    [first] = keys(env)
    assert first["current"] and first["stored"] == "config" and first["hostname"] is None
    r = run(["key", "add", "--new-password-file", new_password_file(tmp_path, "second one"),
             "--host", "laptop", "--user", "alice"], env)
    assert r.out.startswith("added key ")

    with_old, with_new = keys(env), keys(env, "second one")
    assert [k["id"] for k in with_old] == [k["id"] for k in with_new] and len(with_old) == 2
    assert [k["current"] for k in with_old] == [True, False]
    assert [k["current"] for k in with_new] == [False, True]
    second = with_new[1]
    assert second["stored"] == "keys/" + second["id"] and (second["hostname"], second["user"]) == ("laptop", "alice")
    assert r.out.split()[2] == second["short_id"]
    assert os.path.exists(os.path.join(repo, "keys", second["id"]))

    table = run(["key", "list"], {**env, "COLDVAULT_PASSWORD": "second one"}).out.splitlines()
    assert table[0].split() == ["ID", "CREATED", "HOST", "USER", "STORED"]
    assert table[1].split()[0] == first["short_id"] and table[1].split()[-1] == "config"
    assert table[2].split()[:2] == ["*", second["short_id"]] and table[2].split()[3:] == ["laptop", "alice", "keys/"]

    restores_intact(env, "second one", src, tmp_path / "by-second")
    restores_intact(env, OLD, src, tmp_path / "by-first")
    # a backup made with the second password is read with the first: the same master keys
    (src / "new.txt").write_text("written with the second password\n")
    run(["backup", "dir", str(src), "--name", "src"], {**env, "COLDVAULT_PASSWORD": "second one"})
    restores_intact(env, OLD, src, tmp_path / "after")


def test_passwd_changes_the_password(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    old_id = current(env)
    r = run(["key", "passwd", "--new-password-file", new_password_file(tmp_path, "brand new")], env)
    new_id = current(env, "brand new")
    assert r.out.strip() == f"changed the password: added key {new_id[:8]}, removed key {old_id[:8]}"
    [only] = keys(env, "brand new")
    assert only["id"] == new_id and only["stored"] == "keys/" + new_id

    one_error_line(run(["snapshots"], env, check=False), BAD_PASSWORD, "wrong password for the vault at")
    restores_intact(env, "brand new", src, tmp_path / "restored")
    # The config lost its key: it says so, which an older coldvault refuses (docs/format.md 6.1)
    with open(os.path.join(repo, "config"), "rb") as f:
        cfg = configfmt.decode(f.read())
    assert cfg.key is None and cfg.features == ["keys"]

    # again: now the key in use is a key object
    run(["key", "passwd", "--new-password-file", new_password_file(tmp_path, "third")],
        {**env, "COLDVAULT_PASSWORD": "brand new"})
    assert not opens(env, "brand new") and opens(env, "third")
    assert os.listdir(os.path.join(repo, "keys")) == [current(env, "third")]


def test_remove_refuses_the_key_in_use_and_the_last_key(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    [only] = keys(env)
    r = run(["key", "remove", only["id"]], env, check=False)
    one_error_line(r, USAGE, f"key {only['short_id']} is the vault's only key")

    run(["key", "add", "--new-password-file", new_password_file(tmp_path, "other")], env)
    r = run(["key", "remove", only["short_id"]], env, check=False)
    one_error_line(r, USAGE, f"key {only['short_id']} is the one in use")
    assert len(keys(env)) == 2 and opens(env, OLD)

    # removed with the other password: the config's key goes, the other stays
    other = {**env, "COLDVAULT_PASSWORD": "other"}
    assert run(["key", "remove", only["id"][:6]], other).out.strip() == f"removed key {only['short_id']}"
    assert not opens(env, OLD) and opens(env, "other")
    [left] = keys(env, "other")
    one_error_line(run(["key", "remove", left["id"]], other, check=False), USAGE, "the vault's only key")
    one_error_line(run(["key", "remove", "ffffffff"], other, check=False), USAGE, "no key 'ffffffff'")
    restores_intact(env, "other", src, tmp_path / "restored")


def test_wrong_password_is_one_line_after_trying_every_key(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    for pw in ("two", "three"):
        run(["key", "add", "--new-password-file", new_password_file(tmp_path, pw)], env)
    for command in (["key", "list"], ["snapshots"], ["key", "add", "--new-password-file", "/nonexistent"]):
        r = run(command, {**env, "COLDVAULT_PASSWORD": "four"}, check=False)
        assert r.code == BAD_PASSWORD and r.out == ""
        assert r.err == f"coldvault: error: wrong password for the vault at {repo}\n"
    assert opens(env, "three") and opens(env, "two") and opens(env, OLD)


def test_unencrypted_vault_has_no_keys(tmp_path):
    env = vault_env(str(tmp_path / "plain"), password=None)
    run(["init", "--no-encryption"], env)
    for command in (["key", "list"], ["key", "list", "--json"], ["key", "remove", "abc"],
                    ["key", "add", "--new-password-file", new_password_file(tmp_path, "x")]):
        r = run(command, env, check=False)
        assert r.out == ""
        assert r.code == USAGE and r.err == (f"coldvault: error: the vault at {tmp_path / 'plain'} is not encrypted: "
                                             f"it has no keys (passwords)\n"), r.err
    assert not os.path.exists(tmp_path / "plain" / "keys")


def test_new_password_from_the_environment_and_bad_new_password_input(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    path = new_password_file(tmp_path, "from env")
    run(["key", "add"], {**env, "COLDVAULT_NEW_PASSWORD_FILE": path})
    assert opens(env, "from env")
    # no new password and no terminal: one line, nothing written
    r = run(["key", "add"], env, check=False, input=b"")
    one_error_line(r, USAGE, "no new password: there is no terminal to ask for it")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    one_error_line(run(["key", "passwd", "--new-password-file", str(empty)], env, check=False),
                   USAGE, f"new password file {empty} is empty")
    one_error_line(run(["key", "passwd", "--new-password-file", str(tmp_path / "nope")], env, check=False),
                   USAGE, f"cannot read new password file {tmp_path / 'nope'}")
    assert len(keys(env)) == 2 and opens(env, OLD)


def _prompted(env, args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run coldvault with a terminal as stdin (and no controlling terminal, so getpass reads
    that one), answer each prompt as it appears; returns (exit code, stderr)."""
    leader, follower = pty.openpty()
    p = subprocess.Popen([*COLDVAULT, *args], env={**os.environ, **env}, stdin=follower, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    os.close(follower)
    err = b""
    try:
        for prompt, answer in zip(("new password: ", "again: "), answers):
            deadline = time.monotonic() + 60
            while not err.endswith(prompt.encode()):
                assert time.monotonic() < deadline and p.poll() is None, err
                if select.select([p.stderr], [], [], 1)[0]:
                    err += os.read(p.stderr.fileno(), 4096)
            os.write(leader, answer.encode() + b"\n")
        out, rest = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(leader)
    return p.returncode, (err + rest).decode()


def test_new_password_asked_twice_on_a_terminal(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    code, err = _prompted(env, ["key", "add"], ["typed twice", "typed otherwise"])
    assert code == BAD_PASSWORD and err.endswith("coldvault: error: the passwords do not match\n"), err
    assert len(keys(env)) == 1
    code, err = _prompted(env, ["key", "passwd"], ["typed twice", "typed twice"])
    assert code == OK, err
    assert opens(env, "typed twice") and not opens(env, OLD)


def test_key_changes_wait_for_readers_exclusive_lock(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    vault = Vault.open(LocalStore(repo), lambda: OLD.encode())
    with read_lock(vault, "a reader in this test"):
        for command in (["key", "add", "--new-password-file", new_password_file(tmp_path, "x")],
                        ["key", "passwd", "--new-password-file", new_password_file(tmp_path, "y")],
                        ["key", "remove", "ffff"]):
            r = run(command, env, check=False)
            assert r.code == LOCKED and "a reader in this test" in r.err, r.err
        assert len(keys(env)) == 1  # listing takes no lock
    assert not os.path.exists(os.path.join(repo, "keys"))


def test_damaged_key_object_is_named_by_open_list_check_and_can_be_removed(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    run(["key", "add", "--new-password-file", new_password_file(tmp_path, "second")], env)
    run(["key", "add", "--new-password-file", new_password_file(tmp_path, "third")], env)
    second = current(env, "second")
    name = f"keys/{second}"
    with open(os.path.join(repo, name), "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 1]))

    # its own password: the open names the damaged object (exit 13), not "wrong password"
    r = run(["snapshots"], {**env, "COLDVAULT_PASSWORD": "second"}, check=False)
    assert r.code == DAMAGED and f"key object {name} is damaged: its content does not match its name" in r.err, r.err
    assert "Traceback" not in r.err
    # another password opens the vault; a key tried before it that is damaged is warned about
    third = {**env, "COLDVAULT_PASSWORD": "third"}
    listed = {k["id"]: k for k in run(["key", "list", "--json"], third).json()}
    assert listed[second]["problem"] == "its content does not match its name (251 bytes)" or \
        listed[second]["problem"].startswith("its content does not match its name")
    r = run(["check"], env, check=False)
    assert r.code == DAMAGED and f"damaged: {name}: its content does not match its name" in r.out, r.out
    assert opens(env, OLD)
    run(["key", "remove", second[:8]], env)
    assert run(["check"], env).code == OK
    assert not opens(env, "second") and opens(env, "third")


def test_s3_vault_keys(tmp_path, moto_endpoint):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("on s3\n" * 100)
    repo = f"s3://cv-keys-{uuid.uuid4().hex[:12]}/vault"
    env = vault_env(repo, COLDVAULT_S3_ENDPOINT=moto_endpoint)
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    run(["key", "add", "--new-password-file", new_password_file(tmp_path, "s3 second")], env)
    assert [k["current"] for k in keys(env, "s3 second")] == [False, True]
    run(["key", "passwd", "--new-password-file", new_password_file(tmp_path, "s3 third")], env)
    assert not opens(env, OLD) and opens(env, "s3 second") and opens(env, "s3 third")
    assert len(keys(env, "s3 third")) == 2
    restores_intact(env, "s3 third", src, tmp_path / "restored")
    one_error_line(run(["key", "list"], {**env, "COLDVAULT_PASSWORD": "nope"}, check=False),
                   BAD_PASSWORD, "wrong password for the vault at s3://")


# The writes of `key passwd` (vault/keys.py, docs/format.md 8) and where a kill -9 may fall.
# A local store writes a temporary file, then renames it (store-rename): the first put is
# the lock's, the second the new key object's, the third the config's.
CONFIG_KEY_CRASHES = [
    ("store-rename:2", {"old"}, "keys"),  # the key object written, not in place
    ("key-stored", {"old", "new"}, None),
    ("key-verified", {"old", "new"}, None),  # read back and unlocked
    ("store-rename:3", {"old", "new"}, ""),  # the config without its key written, not in place
    ("config-stored", {"new"}, None),
]


@pytest.mark.parametrize("point,working,temp_in", CONFIG_KEY_CRASHES, ids=[c[0] for c in CONFIG_KEY_CRASHES])
def test_passwd_killed_between_writes_leaves_a_working_password(tmp_path, point, working, temp_in):
    repo, env, src = sample_vault(tmp_path)
    r = run(["key", "passwd", "--new-password-file", new_password_file(tmp_path, "new")],
            {**env, "COLDVAULT_CRASH_AT": point}, check=False)
    assert r.code == -9, (r.code, r.err)
    if temp_in is not None:  # the kill fell inside the put we meant
        assert any(n.startswith(".tmp") for n in os.listdir(os.path.join(repo, temp_in))), os.listdir(repo)
    got = {name for name, pw in (("old", OLD), ("new", "new")) if opens(env, pw)}
    assert got == working
    pw = OLD if "old" in working else "new"
    restores_intact(env, pw, src, tmp_path / "restored")
    run(["unlock", "--remove-all"], {**env, "COLDVAULT_PASSWORD": pw})  # the killed run's lock
    # the user finishes the change: passwd again (or remove the old key) with what works
    run(["key", "passwd", "--new-password-file", new_password_file(tmp_path, "final")],
        {**env, "COLDVAULT_PASSWORD": pw})
    assert opens(env, "final") and not opens(env, pw)


def test_passwd_of_a_key_object_killed_before_the_old_one_is_deleted(tmp_path):
    repo, env, src = sample_vault(tmp_path)
    run(["key", "passwd", "--new-password-file", new_password_file(tmp_path, "second")], env)
    second = {**env, "COLDVAULT_PASSWORD": "second"}
    for point in ("key-stored", "key-verified"):
        r = run(["key", "passwd", "--new-password-file", new_password_file(tmp_path, "third")],
                {**second, "COLDVAULT_CRASH_AT": point}, check=False)
        assert r.code == -9, r.err
        assert opens(env, "second") and opens(env, "third")
        run(["unlock", "--remove-all"], second)
    assert len(keys(env, "third")) == 3  # the old key and two new ones: `key remove` tidies up


def test_a_vault_made_before_key_objects_takes_new_passwords(tmp_path):
    """A golden vault of format version 2 (its only password in the config) gets a second
    password and a changed one, and reads as before."""
    golden = os.path.join(os.path.dirname(__file__), "fixtures", "golden", "v2", "encrypted")
    repo = str(tmp_path / "vault")
    shutil.copytree(golden, repo)
    env = vault_env(repo, password="golden")
    before = run(["ls", "latest"], env).out
    run(["key", "add", "--new-password-file", new_password_file(tmp_path, "added")], env)
    run(["key", "passwd", "--new-password-file", new_password_file(tmp_path, "changed")], env)
    assert not opens(env, "golden") and opens(env, "added") and opens(env, "changed")
    assert run(["ls", "latest"], {**env, "COLDVAULT_PASSWORD": "changed"}).out == before
    assert run(["check", "--read-data"], {**env, "COLDVAULT_PASSWORD": "added"}).code == OK


# ---- the format of key objects and of a config without a key (docs/format.md 6.1, 6.3) ----------

def test_key_object_round_trip_and_hostile_fields():
    from coldvault.index import crypto, envelope
    from coldvault.index import keys as keyfmt
    from coldvault.index.crypto import MasterKeys, Sealer
    from coldvault.index.errors import FormatError, UnknownVersionError

    master, vid = MasterKeys.generate(), os.urandom(16)
    key = crypto.wrap_keys(master, b"pw", vid)
    rec = keyfmt.KeyRecord(key, 123, "host", "user")
    data = keyfmt.encode(rec)
    assert data[:4] == b"CV\x01\x00" and keyfmt.decode(data, "keys/x") == rec
    assert crypto.unwrap_keys(keyfmt.decode(data, "keys/x").key, b"pw", vid, "keys/x") == master

    def doc(**change):
        d = {"version": 1, "features": [], "created": 1, "hostname": "h", "user": "u", "key": key, **change}
        return envelope.seal(d, "key", Sealer(None), compress=False)

    with pytest.raises(UnknownVersionError):
        keyfmt.decode(doc(version=2), "keys/x")
    with pytest.raises(UnknownVersionError):
        keyfmt.decode(doc(features=["future"]), "keys/x")
    for bad in ({"created": -1}, {"created": True}, {"hostname": 5}, {"user": "u" * 256}, {"key": None},
                {"key": {**key, "n": 2**30}}, {"key": {**key, "kdf": "argon2"}}, {"key": {**key, "salt": "s"}}):
        with pytest.raises(FormatError, match="^keys/x: "):
            keyfmt.decode(doc(**bad), "keys/x")


def test_config_without_a_key_needs_the_feature():
    from coldvault.index.errors import FormatError

    cfg = configfmt.VaultConfig(os.urandom(16), 1, True, None, b"settings")
    with pytest.raises(FormatError, match="encrypted vault without a key"):
        configfmt.decode(configfmt.encode(cfg))
    cfg.features = ["keys"]
    back = configfmt.decode(configfmt.encode(cfg))
    assert back.key is None and back.features == ["keys"] and configfmt.unlock(back, b"pw") is None
