"""The command lines of README.md, docs/ and contrib/, and a shell that runs them as printed.

`blocks()` finds every fenced block of the Markdown files, and the command lines of the
files under contrib/ (a systemd unit's ExecStart= lines and the commands in its comments).
`DocShell` runs a block's commands one by one in /bin/sh, in an environment that persists
from one command to the next (as in a terminal), after replacing the docs' example paths,
pools and ids with the test's own: `subs` maps each example to its stand-in, replaced in one
pass (so a stand-in is never replaced again) and only where the example stands alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of its first line
    lang: str
    text: str

    @property
    def key(self) -> tuple[str, str]:
        """(file, first line): how the tests name a block."""
        return self.path, self.text.strip().splitlines()[0]


def doc_files() -> list[str]:
    files = ["README.md"]
    for top in ("docs", "contrib"):
        for d, _, names in os.walk(os.path.join(REPO_ROOT, top)):
            files += [os.path.relpath(os.path.join(d, n), REPO_ROOT) for n in sorted(names)]
    return files


def blocks() -> list[Block]:
    out = []
    for rel in doc_files():
        with open(os.path.join(REPO_ROOT, rel), errors="replace") as f:
            text = f.read()
        if rel.endswith(".md"):
            for m in FENCE.finditer(text):
                out.append(Block(rel, text.count("\n", 0, m.start()) + 2, m.group(1), m.group(2)))
            continue
        # Not Markdown (contrib/): a unit's ExecStart= lines, and command lines in its comments.
        for n, line in enumerate(text.splitlines(), 1):
            m = re.match(r"ExecStart=(.*)|#\s+((?:cp|systemctl|coldvault) .*)", line)
            if m:
                out.append(Block(rel, n, "unit" if m.group(1) else "comment", (m.group(1) or m.group(2)) + "\n"))
    return out


def block(path: str, first_line: str) -> Block:
    (found,) = [b for b in blocks() if b.key == (path, first_line)]
    return found


def commands(text: str) -> list[str]:
    """A block's commands: its non-comment lines, with `\\` continuations and the lines of a
    parenthesized loop joined (as the shell reads them)."""
    out, current, depth = [], "", 0
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        depth += line.count("(") - line.count(")")
        if depth > 0 or line.endswith("\\"):
            continue
        out.append(current.rstrip("\n"))
        current, depth = "", 0
    assert not current, f"unterminated command: {current!r}"
    return out


def replace_all(text: str, subs: dict[str, str]) -> str:
    if not subs:
        return text
    keys = sorted(subs, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w-])")
    return pattern.sub(lambda m: subs[m.group(1)], text)


class DocShell:
    """Runs documented commands in /bin/sh; variables and exports persist between them."""

    def __init__(self, env: dict, subs: dict[str, str], cwd: str):
        self.env = dict(env)
        self.subs = dict(subs)
        self.cwd = cwd
        self._env_file = os.path.join(cwd, ".docshell-env")

    def run(self, cmd: str, ok=(0,), **more_subs) -> subprocess.CompletedProcess:
        script = replace_all(cmd, {**self.subs, **more_subs})
        wrapped = f"{script}\n__rc=$?; env -0 > {self._env_file}; exit $__rc\n"
        p = subprocess.run(["/bin/sh", "-c", wrapped], env=self.env, cwd=self.cwd, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode in ok, (f"documented command {cmd!r}\nran as {script!r}\nexited {p.returncode}\n"
                                    f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        if os.path.exists(self._env_file):
            with open(self._env_file) as f:
                self.env = dict(kv.split("=", 1) for kv in f.read().split("\0") if "=" in kv)
            os.unlink(self._env_file)
        return p

    def run_block(self, b: Block, ok=(0,)) -> list[subprocess.CompletedProcess]:
        return [self.run(c, ok) for c in commands(b.text)]


def bin_dir(path: str, mysqldump: str) -> str:
    """A directory for PATH with `coldvault` (this checkout) and a stand-in `mysqldump`."""
    os.makedirs(path, exist_ok=True)
    for name, text in (("coldvault", f'#!/bin/sh\nexec {sys.executable} -m coldvault "$@"\n'),
                       ("mysqldump", mysqldump)):
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(path, name), 0o755)
    return path
