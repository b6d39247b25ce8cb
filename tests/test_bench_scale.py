"""bench/bench_scale.py at a tiny size, so that the benchmark cannot rot between the runs that use it.

It runs the real script (coldvault from this checkout, restic, FUSE mounts) on a few thousand
synthetic blobs and a tree of 200 files, and checks that every step ran for each tool and that the
tables carry their rows and ratios. No timing is asserted (STYLE.md item 12).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "bench_scale.py")
NUM = r"\d+(?:\.\d+)?"


def table_rows(out: str, heading: str) -> list[list[str]]:
    """The cells of each data row of the markdown table under `heading`."""
    text = out.split(heading, 1)[1]
    rows = []
    for line in text.split("\n\n", 2)[1].splitlines():
        if line.startswith("|") and not line.startswith("|--") and not line.startswith("| part |") \
                and not line.startswith("| blobs |"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_bench_scale_tiny_run_prints_every_step_and_ratio(tmp_path):
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLDVAULT_", "RESTIC_"))}
    p = subprocess.run(
        [sys.executable, SCRIPT, "--blobs", "3k", "--blobs-per-index", "1k", "--files", "200", "--repeat", "2",
         "--no-drop-caches", "--settle", "0", "--prefault", "0", "--workdir", str(work)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    try:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        out = p.stdout
        assert re.search(r"^restic:\s+restic \d", out, re.M) and re.search(r"^coldvault: coldvault ", out, re.M)
        assert re.search(r"^host:\s+.*CPUs", out, re.M) and re.search(r"^kernel:", out, re.M)
        assert re.search(r"^restores:\s+onto a fresh ext4", out, re.M)  # as root: not the VM's worn root fs

        steps = table_rows(out, "## Every step")
        got = {(r[0], r[1], r[2]) for r in steps}
        index_steps = ("ls", "ls again", "snapshots", "restore", "mount + cat", "backup 10")
        assert ("index 0", "ls", "coldvault") in got
        assert {("index 3k", s, "coldvault") for s in index_steps} <= got
        assert ("index 3k", "index memory", "restic") in got
        tree_steps = ("first backup", "unchanged rerun", "restore", "mount + find")
        assert {("files 200", s, t) for s in tree_steps for t in ("coldvault", "restic")} <= got
        for r in steps:
            if r[1] != "index memory":
                assert all(re.fullmatch(NUM, c) for c in r[3:7]), r  # seconds, CPU, peak RSS, other CPU
                assert float(r[5]) > 0, r
        notes = {(r[0], r[1], r[2]): r[7] for r in steps}
        assert "200 files" in notes[("files 200", "restore", "coldvault")]
        assert "200 files" in notes[("files 200", "restore", "restic")]
        assert "median of 2 runs" in notes[("files 200", "restore", "coldvault")]  # --repeat 2
        assert "median of 2 runs" in notes[("files 200", "mount + find", "restic")]
        assert "median of" not in notes[("files 200", "first backup", "coldvault")]  # run once: it fills the vault
        assert "200 files unchanged" in notes[("files 200", "unchanged rerun", "coldvault")]
        assert "find printed" in notes[("files 200", "mount + find", "restic")]
        assert "10 files" in notes[("index 3k", "backup 10", "coldvault")]

        index = table_rows(out, "## Index scale")
        assert [r[0] for r in index] == ["3k"]
        assert int(index[0][1]) >= 4  # the real backup's index object and three synthetic ones
        assert all(re.fullmatch(NUM, c) for c in index[0][2:8])
        assert re.fullmatch(r"-?\d+", index[0][10])  # bytes per blob

        ratios = table_rows(out, "## Trees: coldvault / restic")
        assert [r[1] for r in ratios] == list(tree_steps)
        for r in ratios:
            assert all(re.fullmatch(NUM, c) for c in r[2:7]), r
            assert "(set for" in r[7] and "restic" in r[7]

        assert "## Projection to 10M blobs" in out  # nothing projected from sizes this small, but the section is there

        with open("/proc/mounts") as f:
            assert str(work) not in f.read()  # the restores' ext4 is unmounted (and its loop device freed)
        leftovers = [d for d in os.listdir(work) if d not in ("logs", "data", "mnt")]
        assert leftovers == [], leftovers  # vaults and repositories are removed without --keep
        assert os.listdir(work / "data") == []
    finally:
        with open("/proc/self/mounts") as f:
            stale = [line.split()[1] for line in f if str(tmp_path) in line]
        for m in stale:
            if subprocess.run(["fusermount3", "-u", "-z", m], capture_output=True).returncode:
                subprocess.run(["umount", "-l", m], capture_output=True)  # the restores' ext4
        assert stale == [], f"mounts left behind: {stale}"
