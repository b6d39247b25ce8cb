"""Helpers for tests that run `coldvault` exactly as a user would, and compare trees."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass

import xxhash

COLDVAULT = [sys.executable, "-m", "coldvault"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def run(args: list[str], env: dict | None = None, input: bytes | None = None, check: bool = True,
        prefix: list[str] = (), timeout: float = 900) -> Result:
    """Run coldvault with `args`; `env` adds to a clean copy of os.environ."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run(
        [*prefix, *COLDVAULT, *args], env=full_env, input=input, capture_output=True, timeout=timeout,
    )
    r = Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
    if check and r.code != 0:
        raise AssertionError(f"coldvault {' '.join(args)} exited {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err}")
    return r


def vault_env(repo: str, password: str | None = "test-password", **extra) -> dict:
    env = {"COLDVAULT_REPO": repo, "COLDVAULT_LOCAL_RESTORE_DELAY": "0"}
    if password is not None:
        env["COLDVAULT_PASSWORD"] = password
    env.update(extra)
    return env


def sample_vault(tmp_path) -> tuple[str, dict, object]:
    """A vault (password "test-password") with one snapshot, source "src", of a small tree:
    docs/report.txt (compressible text) and photo.jpg (300 kB random). Returns (repo, env, src)."""
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "report.txt").write_text("quarterly report\n" * 1000)
    (src / "photo.jpg").write_bytes(os.urandom(300_000))
    repo = str(tmp_path / "vault")
    env = vault_env(repo)
    run(["init"], env)
    run(["backup", "dir", str(src), "--name", "src"], env)
    return repo, env, src


def _digest(path: bytes) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def signature(root: str | bytes, mtimes_of_root: bool = False) -> dict:
    """Everything a restore must reproduce, per relative path (bytes): type, mode, owner,
    mtime, size, symlink target or content digest."""
    root = os.fsencode(root)
    sig = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            m = st.st_mode
            if stat.S_ISLNK(m):
                what = ("link", os.readlink(p))
            elif stat.S_ISREG(m):
                what = ("file", st.st_size, _digest(p))
            elif stat.S_ISDIR(m):
                what = ("dir",)
            else:
                what = ("other", stat.S_IFMT(m))
            sig[rel] = (what, stat.S_IMODE(m) if not stat.S_ISLNK(m) else None, st.st_uid, st.st_gid, st.st_mtime_ns)
    if mtimes_of_root:
        sig[b"."] = os.stat(root).st_mtime_ns
    return sig


def diff_signatures(a: dict, b: dict, limit: int = 10) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{k!r}: {a.get(k)} != {b.get(k)}")
            if len(out) >= limit:
                break
    return out
