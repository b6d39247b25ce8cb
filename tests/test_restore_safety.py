"""`restore dir`: nothing escapes the target (symlinks are never followed), nothing is lost
for want of one pack (a missing pack costs only the files that need it)."""

from __future__ import annotations

import os
import stat

from cvtools import diff_signatures, run, signature, vault_env

DAMAGED, COLD = 13, 14
PASSWORD = "test-password"


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("coldvault: error:")]
    assert len(lines) == 1, err
    return lines[0]


def new_vault(tmp_path, *init_args) -> dict:
    env = vault_env(str(tmp_path / "vault"))
    run(["init", *init_args], env)
    return env


def snapshot_ids(env) -> list[str]:
    snaps = run(["snapshots", "--json"], env).json()
    return [s["id"] for s in sorted(snaps, key=lambda s: s["time_ns"])]


def outside_dir(tmp_path):
    """A directory outside every target, with a file in it; returns it and its signature."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not yours\n")
    os.chmod(outside / "secret", 0o600)
    os.chmod(outside, 0o755)
    os.utime(outside, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return outside, signature(outside, mtimes_of_root=True), os.lstat(outside)


def assert_untouched(outside, sig, st) -> None:
    assert diff_signatures(sig, signature(outside, mtimes_of_root=True)) == []
    now = os.lstat(outside)
    assert (now.st_mode, now.st_uid, now.st_gid, now.st_mtime_ns) == (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)


def assert_real_dir(path) -> None:
    assert stat.S_ISDIR(os.lstat(path).st_mode), f"{path} is not a real directory"


# ---- nothing escapes ------------------------------------------------------------------


def test_overwrite_does_not_follow_a_symlink_an_earlier_restore_made(tmp_path):
    outside, sig, st = outside_dir(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.txt").write_text("kept\n")
    os.symlink(str(outside), src / "evil")
    env = new_vault(tmp_path)
    run(["backup", "dir", str(src), "--name", "src"], env)
    os.unlink(src / "evil")
    (src / "evil").mkdir()
    (src / "evil" / "pwned").write_text("written inside the target\n")
    os.chown(src / "evil", 4242, 4343)  # tests run as root: restore sets owners
    os.chmod(src / "evil", 0o700)
    os.utime(src / "evil", ns=(5_000_000_000, 5_000_000_000))
    run(["backup", "dir", str(src), "--name", "src"], env)
    first, second = snapshot_ids(env)

    target = tmp_path / "target"
    run(["restore", "dir", first, "--target", str(target)], env)
    assert os.readlink(target / "evil") == str(outside)
    run(["restore", "dir", second, "--target", str(target), "--overwrite"], env)

    assert not (outside / "pwned").exists()
    assert_untouched(outside, sig, st)  # no chmod, chown or utime through the old symlink either
    assert_real_dir(target / "evil")
    assert stat.S_ISREG(os.lstat(target / "evil" / "pwned").st_mode)
    assert diff_signatures(signature(src), signature(target)) == []


def test_hand_placed_symlink_deeper_in_the_target(tmp_path):
    outside, sig, st = outside_dir(tmp_path)
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "c").write_text("deep\n")
    os.chmod(src / "a", 0o711)
    env = new_vault(tmp_path)
    run(["backup", "dir", str(src), "--name", "src"], env)

    target = tmp_path / "target"
    target.mkdir()
    os.symlink(str(outside), target / "a")  # someone placed it there
    run(["restore", "dir", "latest", "--target", str(target), "--overwrite"], env)

    assert_untouched(outside, sig, st)
    assert not (outside / "b").exists()
    assert_real_dir(target / "a")
    assert_real_dir(target / "a" / "b")
    assert diff_signatures(signature(src), signature(target)) == []


def test_symlinks_in_place_of_files_and_others(tmp_path):
    outside, sig, st = outside_dir(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("new content\n")  # a file where a symlink to a file is
    (src / "g").write_text("another\n")  # a file where a symlink to a directory is
    os.mkfifo(src / "p", 0o640)  # a fifo where a symlink is
    os.symlink("somewhere", src / "l")  # a symlink where a symlink is
    (src / "d").mkdir()  # a directory where a symlink to a file is
    (src / "d" / "x").write_text("x\n")
    os.chmod(src / "d", 0o750)
    for name in ("f", "g", "p", "d"):
        os.chown(src / name, 4242, 4343)
        os.utime(src / name, ns=(7_000_000_000, 7_000_000_000))
    env = new_vault(tmp_path)
    run(["backup", "dir", str(src), "--name", "src"], env)

    target = tmp_path / "target"
    target.mkdir()
    os.symlink(str(outside / "secret"), target / "f")
    os.symlink(str(outside), target / "g")
    os.symlink(str(outside / "secret"), target / "p")
    os.symlink(str(outside / "secret"), target / "l")
    os.symlink(str(outside / "secret"), target / "d")
    run(["restore", "dir", "latest", "--target", str(target), "--overwrite"], env)

    assert_untouched(outside, sig, st)
    assert diff_signatures(signature(src), signature(target)) == []


def test_a_planted_temporary_name_is_not_followed(tmp_path):
    outside, sig, st = outside_dir(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("new content\n")
    env = new_vault(tmp_path)
    run(["backup", "dir", str(src), "--name", "src"], env)

    target = tmp_path / "target"
    target.mkdir()
    os.symlink(str(outside / "secret"), target / ".coldvault-restore-f")
    run(["restore", "dir", "latest", "--target", str(target), "--overwrite"], env)

    assert_untouched(outside, sig, st)
    assert (target / "f").read_text() == "new content\n"
    assert os.path.islink(target / ".coldvault-restore-f")  # not ours: left alone


def test_the_target_itself_may_be_a_symlink(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_text("f\n")
    env = new_vault(tmp_path)
    run(["backup", "dir", str(src), "--name", "src"], env)
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(str(real), tmp_path / "via")
    run(["restore", "dir", "latest", "--target", str(tmp_path / "via")], env)
    assert diff_signatures(signature(src), signature(real)) == []


# ---- nothing lost ---------------------------------------------------------------------


def file_packs(repo: str) -> dict[str, set[str]]:
    """Relative path of each file in the newest snapshot -> the data packs its chunks are in."""
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    vault = Vault.open(LocalStore(repo), lambda: PASSWORD.encode())
    vault.load_index()
    out = {}

    def walk(node_id, rel):
        for e in vault.load_tree(node_id).entries:
            p = f"{rel}/{os.fsdecode(e.name)}" if rel else os.fsdecode(e.name)
            if e.type == "dir":
                walk(e.tree, p)
            elif e.type == "file":
                out[p] = {vault.locate(c).object_name for c in e.chunks}

    walk(vault.find_snapshot("latest").tree, "")
    return out


def first_chunk(repo: str, rel: str):
    from coldvault.store.local import LocalStore
    from coldvault.vault import Vault

    vault = Vault.open(LocalStore(repo), lambda: PASSWORD.encode())
    vault.load_index()
    node = vault.load_tree(vault.find_snapshot("latest").tree)
    *dirs, name = rel.split("/")
    for d in dirs:
        node = vault.load_tree(node.find(os.fsencode(d)).tree)
    return vault.locate(node.find(os.fsencode(name)).chunks[0])


def many_packs_vault(tmp_path):
    """Twelve 400 kB random files (two levels) in 1 MiB data packs; returns (repo, env, src, {file: packs})."""
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    os.symlink("sub/f00", src / "link")
    for i in range(12):
        where = src if i < 4 else src / "sub" if i < 8 else src / "sub" / "deeper"
        (where / f"f{i:02}").write_bytes(os.urandom(400_000))
    env = new_vault(tmp_path, "--pack-size", "1")
    run(["backup", "dir", str(src), "--name", "src"], env)
    repo = str(tmp_path / "vault")
    packs = file_packs(repo)
    assert len(set().union(*packs.values())) >= 3, packs
    return repo, env, src, packs


def assert_restored_except(src, target, lost: set[str]) -> None:
    want = {k: v for k, v in signature(src).items() if os.fsdecode(k) not in lost}
    got = signature(target)
    assert diff_signatures(want, got) == []
    assert not any(b".coldvault-restore-" in k for k in got)


def test_a_missing_pack_costs_only_its_files(tmp_path):
    repo, env, src, packs = many_packs_vault(tmp_path)
    gone = sorted(packs["sub/f05"])[0]
    lost = {f for f, ps in packs.items() if gone in ps}
    assert len(lost) < len(packs)
    os.remove(os.path.join(repo, gone))

    target = tmp_path / "target"
    r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False)
    assert r.code == DAMAGED, r.err
    line = one_error_line(r.err)
    assert gone in line and f"{len(lost)} file(s)" in line
    for f in lost:
        assert any(f in x and gone in x for x in r.err.splitlines()), (f, r.err)
    assert_restored_except(src, target, lost)


def test_a_missing_pack_and_a_flipped_byte_together(tmp_path):
    repo, env, src, packs = many_packs_vault(tmp_path)
    gone = sorted(packs["sub/f05"])[0]
    lost = {f for f, ps in packs.items() if gone in ps}
    flipped = next(f for f in sorted(packs) if not packs[f] & {gone})
    loc = first_chunk(repo, flipped)
    with open(os.path.join(repo, loc.object_name), "r+b") as f:
        f.seek(loc.offset + loc.length // 2)
        b = f.read(1)
        f.seek(loc.offset + loc.length // 2)
        f.write(bytes([b[0] ^ 0x01]))
    os.remove(os.path.join(repo, gone))

    target = tmp_path / "target"
    r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False)
    assert r.code == DAMAGED, r.err
    line = one_error_line(r.err)
    assert gone in line and f"{len(lost) + 1} file(s)" in line
    for f in lost:
        assert any(f in x and gone in x for x in r.err.splitlines()), (f, r.err)
    assert any(flipped in x and loc.object_name in x for x in r.err.splitlines()), r.err
    assert_restored_except(src, target, lost | {flipped})


def test_cold_packs_still_stop_before_anything_is_written(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a" * 10_000)
    env = new_vault(tmp_path, "--data-storage-class", "DEEP_ARCHIVE")
    run(["backup", "dir", str(src)], env)
    target = tmp_path / "t"
    r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False)
    assert r.code == COLD
    assert "cold tier" in one_error_line(r.err)
    assert not target.exists()


def test_cold_packs_stop_the_restore_even_when_another_is_missing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(400_000))
    env = new_vault(tmp_path, "--data-storage-class", "DEEP_ARCHIVE", "--pack-size", "1")
    run(["backup", "dir", str(src)], env)
    repo = str(tmp_path / "vault")
    packs = sorted(set().union(*file_packs(repo).values()))
    assert len(packs) >= 2
    os.remove(os.path.join(repo, packs[0]))
    target = tmp_path / "t"
    r = run(["restore", "dir", "latest", "--target", str(target)], env, check=False)
    assert r.code == COLD, r.err
    line = one_error_line(r.err)
    assert "cold tier" in line and packs[1] in line and packs[0] not in line
    assert packs[0] in r.err and "missing" in r.err  # said, too
    assert not target.exists()
