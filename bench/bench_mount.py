#!/usr/bin/env python3
"""Mount benchmark: reading through `coldvault mount` against `restic mount`, in one run.

Reads (the same 1 GiB file of random bytes, gen_data.py's `random` data set),
--repeat times, the order of the tools alternating:

    coldvault, first read   fresh mount, empty chunk cache directory: every chunk is
                            fetched from the (local) vault and decoded
    coldvault, second read  the same file again in the same mount: the kernel page cache
    restic, first read      fresh `restic mount` of a restic repository holding the file
    trivialfs               bench/trivialfs.py: a pyfuse3 + trio filesystem serving the
                            same bytes from one bytes object, the ceiling for any pyfuse3
                            filesystem on this machine (with the same 1 MiB readahead as
                            coldvault: --raise-readahead)

Each read is a loop of 1 MiB `readinto` calls on an unbuffered file, in this
process. The page cache cannot be dropped here, so the vault's pack files and
restic's repository files are read once, untimed, before each timed run: both
tools read their storage from memory, and the first-read figures measure the
filesystems, not the disk. A read that is not timed checks that the coldvault
mount returns the file's bytes (SHA-256).

Listing: a tree of --files small files (0-64 bytes, 100 per directory, two levels
of directories) is backed up once by each tool; then, --repeat times each, the
time to mount and to run `ls -R` on the snapshot, and the mount process's peak
RSS (VmHWM in /proc/PID/status) after the listing.

For every timed step the CPU time of the filesystem process, of the reader and
of the rest of the machine (from /proc/stat) is recorded: this machine is shared.
Timings are figures to read, not assertions (STYLE.md item 12).

    python bench/bench_mount.py --scale 0.05             # quick check, about a minute
    python bench/bench_mount.py --repeat 3               # full size: 1 GiB, 200,000 files
    python bench/bench_mount.py --repeat 1 --profile     # plus one py-spy profile of each coldvault step
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_data  # noqa: E402
from benchlib import (  # noqa: E402
    HERE,
    MOUNT_TIMEOUT,
    PASSWORD,
    REPO_ROOT,
    ChildFailedError,
    FuseMount,
    MiB,
    before_timed_step,
    busy_cpu_seconds,
    clean_env,
    coldvault_facts,
    command_line,
    host_line,
    least_disturbed,
    meminfo,
    mib_s,
    proc_cpu,
    proc_mem_kib,
    py_spy_samples,
    read_all,
    restic_facts,
    run_main,
    self_cpu,
    start_py_spy,
    stop_py_spy,
    truncated,
    untimed,
)

READ_BLOCK = MiB
TREE_FILES = 200_000
TREE_FILES_PER_DIR = 100
TREE_DIRS_PER_PARENT = 100
TREE_MAX_SIZE = 64
TREE_VERSION = 1  # bump when make_tree writes different bytes for the same (seed, count)
TARGET_VS_RESTIC = 4.0
TARGET_VS_TRIVIAL = 0.8


# ---- data ------------------------------------------------------------------------------------------


def make_tree(out: str, nfiles: int, seed: int) -> dict:
    """`nfiles` files of 0-64 bytes, 100 to a directory, under OUT/many/dNN/sNNN/ (reused if unchanged)."""
    root = os.path.join(out, "many")
    man_path = os.path.join(out, "many.manifest.json")
    want = {"version": TREE_VERSION, "seed": seed, "files": nfiles}
    try:
        with open(man_path) as f:
            man = json.load(f)
        if {k: man.get(k) for k in want} == want and os.path.isdir(root):
            return man | {"generated": False}
    except (OSError, ValueError):
        pass
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.monotonic()
    rng = random.Random(f"{seed}/many")
    dirs, total = set(), 0
    for i in range(nfiles):
        leaf = i // TREE_FILES_PER_DIR
        d = os.path.join(root, f"d{leaf // TREE_DIRS_PER_PARENT:02d}", f"s{leaf % TREE_DIRS_PER_PARENT:03d}")
        if d not in dirs:
            os.makedirs(d)
            dirs.add(d)
            dirs.add(os.path.dirname(d))
        size = rng.randrange(TREE_MAX_SIZE + 1)
        data = (f"file {i:06d} {rng.getrandbits(32):08x} " * 4).encode()[:size]
        with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f:
            f.write(data)
        total += size
    man = want | {"path": root, "dirs": len(dirs), "bytes": total,
                  "generate_seconds": round(time.monotonic() - t0, 1)}
    with open(man_path, "w") as f:
        json.dump(man, f, indent=2)
    return man | {"generated": True}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    buf = bytearray(READ_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            h.update(view[:k])
    return h.hexdigest()


# ---- measurements ----------------------------------------------------------------------------------


@dataclass
class Step:
    """One timed step: a read of the big file, or mounting plus `ls -R`."""

    what: str  # "coldvault first read", ..., "coldvault listing"
    seconds: float
    nbytes: int = 0
    fs_cpu: float = 0.0  # CPU of the filesystem process during the step
    reader_cpu: float = 0.0  # CPU of the reader (this process, or ls)
    other_cpu: float = 0.0  # CPU of everything else on the machine
    peak_rss_kib: int = 0  # VmHWM of the filesystem process after the step
    mount_seconds: float = 0.0  # listing: time until the mount point was mounted
    entries: int = 0  # listing: entries printed by ls -R
    rss_after_mount_kib: int = 0  # listing: VmHWM before ls -R
    note: str = ""

    @property
    def mib_s(self) -> float:
        return mib_s(self.nbytes, self.seconds)


def timed_read(path: str, fs_pid: int) -> Step:
    buf = bytearray(READ_BLOCK)
    n = 0
    fs0, me0, busy0 = proc_cpu(fs_pid), self_cpu(), busy_cpu_seconds()
    t0 = time.monotonic()
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            n += k
    seconds = time.monotonic() - t0
    busy = busy_cpu_seconds() - busy0
    fs, me = proc_cpu(fs_pid) - fs0, self_cpu() - me0
    return Step("", seconds, n, fs, me, max(0.0, busy - fs - me), proc_mem_kib(fs_pid).get("VmHWM", 0))


def timed_ls(path: str, fs_pid: int, out_path: str) -> tuple[float, float, float, float]:
    """`ls -R path > out_path`; returns (seconds, ls CPU, filesystem CPU, other CPU)."""
    fs0, busy0 = proc_cpu(fs_pid), busy_cpu_seconds()
    with open(out_path, "wb") as out, open(out_path + ".err", "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(["ls", "-R", path], env=clean_env() | {"LC_ALL": "C"}, stdin=subprocess.DEVNULL,
                             stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        seconds = time.monotonic() - t0
    busy = busy_cpu_seconds() - busy0
    if os.waitstatus_to_exitcode(status) != 0:
        with open(out_path + ".err", "rb") as f:
            raise ChildFailedError(f"ls -R {path} failed: {f.read().decode(errors='replace')[-2000:]}")
    ls_cpu = ru.ru_utime + ru.ru_stime
    fs = proc_cpu(fs_pid) - fs0
    return seconds, ls_cpu, fs, max(0.0, busy - fs - ls_cpu)


def count_ls_entries(out_path: str, root: str) -> int:
    """Entries in `ls -R` output: every line but blank ones and the 'DIR:' headers."""
    n = 0
    with open(out_path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            if line and not (line.startswith(root.encode()) and line.endswith(b":")):
                n += 1
    return n


class Bench:
    def __init__(self, args, work: str):
        self.args = args
        self.work = work
        self.logs = os.path.join(work, "logs")
        self.mnt = os.path.join(work, "mnt")
        self.cv_env_base = clean_env() | {"COLDVAULT_PASSWORD": PASSWORD,
                                          "XDG_CACHE_HOME": os.path.join(work, "xdg-cache")}
        self.restic_env = clean_env() | {"RESTIC_PASSWORD": PASSWORD,
                                         "RESTIC_CACHE_DIR": os.path.join(work, "restic-cache")}
        self.cache_serial = 0

    def settle(self) -> None:
        """Before a timed step: wait for a quiet machine, then make fresh memory cheap to take (prefault)."""
        before_timed_step(self.args.settle, self.args.prefault)

    def log(self, name: str) -> str:
        return os.path.join(self.logs, name)

    def cv_env(self, vault: str) -> dict:
        return self.cv_env_base | {"COLDVAULT_REPO": vault}

    # -- setup (untimed, but reported) --

    def coldvault_vault(self, name: str, source: str) -> tuple[str, float]:
        vault = os.path.join(self.work, f"coldvault-{name}")
        shutil.rmtree(vault, ignore_errors=True)
        env = self.cv_env(vault)
        untimed([self.args.coldvault, "init", "--quiet"], env)
        t0 = time.monotonic()
        untimed([self.args.coldvault, "backup", "dir", source, "--name", name, "--quiet"], env)
        return vault, time.monotonic() - t0

    def restic_repo(self, name: str, source: str) -> tuple[str, float]:
        repo = os.path.join(self.work, f"restic-{name}")
        shutil.rmtree(repo, ignore_errors=True)
        untimed([self.args.restic, "--repo", repo, "init"], self.restic_env)
        t0 = time.monotonic()
        untimed([self.args.restic, "--repo", repo, "backup", "--quiet", source], self.restic_env)
        return repo, time.monotonic() - t0

    # -- mounts --

    def mount_coldvault(self, vault: str, tag: str) -> FuseMount:
        self.cache_serial += 1
        cache = os.path.join(self.work, "coldvault-cache", str(self.cache_serial))
        shutil.rmtree(cache, ignore_errors=True)  # an empty chunk cache for every mount
        mnt = os.path.join(self.mnt, "coldvault")
        cmd = [self.args.coldvault, "mount", mnt, "--foreground", "--cache-dir", cache]
        return FuseMount("coldvault mount", cmd, self.cv_env(vault), mnt, self.log(f"coldvault-mount-{tag}"),
                         is_mounted=os.path.ismount)

    def mount_restic(self, repo: str, tag: str) -> FuseMount:
        mnt = os.path.join(self.mnt, "restic")
        cmd = [self.args.restic, "--repo", repo, "mount", mnt]
        return FuseMount("restic mount", cmd, self.restic_env, mnt, self.log(f"restic-mount-{tag}"),
                         is_mounted=os.path.ismount)

    def mount_trivial(self, source: str, tag: str) -> FuseMount:
        mnt = os.path.join(self.mnt, "trivialfs")
        cmd = [sys.executable, os.path.join(HERE, "trivialfs.py"), mnt, "--source", source, "--raise-readahead"]
        return FuseMount("trivialfs", cmd, clean_env(), mnt, self.log(f"trivialfs-{tag}"), is_mounted=os.path.ismount)

    # -- reads --

    def read_coldvault(self, vault: str, name: str, tag: str, expect_sha: str, profile: str | None = None) -> list[Step]:
        read_all(vault)
        m = self.mount_coldvault(vault, f"read-{tag}")
        try:
            path = os.path.join(m.mountpoint, "files", name, "latest", "random.bin")
            os.stat(path)  # lookups are not part of the read
            self.settle()
            spy = start_py_spy(self.args.py_spy, m.pid, profile, rate=200) if profile else None
            first = timed_read(path, m.pid)
            if spy:
                stop_py_spy(spy)
            first.what = "coldvault first read"
            second = timed_read(path, m.pid)
            second.what = "coldvault second read"
            got = sha256_file(path)
            if got != expect_sha:
                raise ChildFailedError(f"coldvault mount returned different bytes for {path} (sha256 {got})")
            return [first, second]
        finally:
            m.close()

    def read_restic(self, repo: str, source_file: str, tag: str) -> list[Step]:
        read_all(repo)
        m = self.mount_restic(repo, f"read-{tag}")
        try:
            path = os.path.join(m.mountpoint, "snapshots", "latest", source_file.lstrip("/"))
            deadline = time.monotonic() + MOUNT_TIMEOUT
            while not os.path.exists(path):  # restic fills in snapshots/ just after mounting
                if time.monotonic() > deadline:
                    raise ChildFailedError(f"{path} did not appear in the restic mount")
                time.sleep(0.05)
            self.settle()
            s = timed_read(path, m.pid)
            s.what = "restic first read"
            return [s]
        finally:
            m.close()

    def read_trivial(self, source_file: str, tag: str) -> list[Step]:
        m = self.mount_trivial(source_file, f"read-{tag}")
        try:
            path = os.path.join(m.mountpoint, os.path.basename(source_file))
            os.stat(path)
            self.settle()
            s = timed_read(path, m.pid)
            s.what = "trivialfs read"
        finally:
            m.close()
        # its last line: "trivialfs: N read requests, B bytes, largest request L bytes"
        s.note = m.stderr().strip().rpartition("\n")[2].removeprefix("trivialfs: ")
        return [s]

    # -- listing --

    def list_tool(self, tool: str, store: str, tree: dict, tag: str, profile: str | None = None) -> Step:
        read_all(store)
        self.settle()
        if tool == "coldvault":
            m = self.mount_coldvault(store, f"list-{tag}")
            root = os.path.join(m.mountpoint, "files", "many", "latest") + "/"
        else:
            m = self.mount_restic(store, f"list-{tag}")
            root = os.path.join(m.mountpoint, "snapshots", "latest", tree["path"].lstrip("/")) + "/"
        try:
            mount_seconds = m.seconds
            rss_mounted = proc_mem_kib(m.pid).get("VmHWM", 0)
            mount_cpu = proc_cpu(m.pid)
            spy = start_py_spy(self.args.py_spy, m.pid, profile, rate=200) if profile else None
            out = self.log(f"{tool}-ls-{tag}.txt")
            ls_seconds, ls_cpu, fs_cpu, other = timed_ls(root, m.pid, out)
            if spy:
                stop_py_spy(spy)
            mem = proc_mem_kib(m.pid)
            entries = count_ls_entries(out, root)
            expected = tree["files"] + tree["dirs"]
            if entries != expected:
                raise ChildFailedError(f"ls -R through the {tool} mount showed {entries} entries, expected {expected}")
            return Step(f"{tool} listing", ls_seconds, 0, fs_cpu + mount_cpu, ls_cpu, other,
                        mem.get("VmHWM", 0), mount_seconds, entries, rss_mounted)
        finally:
            m.close()


def attempt(fn, args) -> list[Step]:
    """Run one timed step (`fn` returns its Steps), again while it was disturbed (benchlib.least_disturbed)."""
    return least_disturbed(fn, args.retries, args.max_other, lambda got: (got[0].what, got[0].other_cpu, got[0].seconds))


# ---- profiling -------------------------------------------------------------------------------------


# Frames on top of a stack that mean "waiting", which py-spy does not always see as idle.
IDLE_FRAMES = ("EpollIOManager.get_events (", "WorkerThread._work (trio/_core/_thread_cache.py:211)")


def profile_summary(path: str, top: int = 15) -> str:
    """Busy samples per thread role (trio thread, worker threads), with the functions most often on the
    stack (inclusive) and on top of it (self). Samples waiting in epoll or for a job are counted apart."""
    samples = py_spy_samples(path)
    if samples is None:
        return f"(no profile in {path})"
    busy: Counter = Counter()
    idle: Counter = Counter()
    incl: dict[str, Counter] = {}
    own: dict[str, Counter] = {}
    for (thread, *frames), n in samples:
        kind = "trio thread" if thread.endswith(": MainThread") else "worker threads"
        if not frames or frames[-1].startswith(IDLE_FRAMES):
            idle[kind] += n
            continue
        busy[kind] += n
        for fr in set(frames):
            incl.setdefault(kind, Counter())[fr] += n
        own.setdefault(kind, Counter())[frames[-1]] += n
    total = sum(busy.values()) or 1
    out = [f"{sum(busy.values())} busy samples: " + ", ".join(f"{k} {v / total:.0%}" for k, v in busy.most_common())
           + "; not counted, waiting in epoll or for a job: " + ", ".join(f"{k} {v}" for k, v in idle.most_common())]
    for kind, _ in busy.most_common():
        out.append(f"  {kind}: on the stack (share of all busy samples; frames under every sample left out)")
        out += [f"    {c / total:6.1%}  {fr}" for fr, c in incl[kind].most_common()
                if c < 0.99 * busy[kind]][:top]
        out.append(f"  {kind}: on top of the stack")
        out += [f"    {c / total:6.1%}  {fr}" for fr, c in own[kind].most_common(top)]
    return "\n".join(out)


# ---- what is printed -------------------------------------------------------------------------------


def summarize(steps: list[Step], what: str) -> dict | None:
    rs = [s for s in steps if s.what == what]
    if not rs:
        return None
    secs = [s.seconds for s in rs]
    return {
        "what": what, "n": len(rs), "seconds": statistics.median(secs), "fastest": min(secs), "slowest": max(secs),
        "nbytes": rs[0].nbytes, "fs_cpu": statistics.median(s.fs_cpu for s in rs),
        "reader_cpu": statistics.median(s.reader_cpu for s in rs), "other_cpu": max(s.other_cpu for s in rs),
        "peak_rss_kib": max(s.peak_rss_kib for s in rs),
        "mount_seconds": statistics.median(s.mount_seconds for s in rs),
        "total_seconds": statistics.median(s.mount_seconds + s.seconds for s in rs),
        "entries": rs[0].entries, "rss_after_mount_kib": max(s.rss_after_mount_kib for s in rs),
    }


READS = ("coldvault first read", "restic first read", "coldvault second read", "trivialfs read")


def read_table(steps: list[Step]) -> str:
    rows = ["| read | n | seconds (median) | fastest-slowest s | MiB/s (median) | fs process CPU s | reader CPU s"
            " | other CPU s | fs process peak RSS MiB |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for what in READS:
        s = summarize(steps, what)
        if s:
            rows.append(f"| {what} | {s['n']} | {s['seconds']:.3f} | {s['fastest']:.3f}-{s['slowest']:.3f}"
                        f" | {mib_s(s['nbytes'], s['seconds']):.1f} | {s['fs_cpu']:.2f} | {s['reader_cpu']:.2f}"
                        f" | {s['other_cpu']:.2f} | {s['peak_rss_kib'] / 1024:.0f} |")
    return "\n".join(rows)


def ratio_rows(steps: list[Step]) -> tuple[str, list[tuple[str, float, float | None]]]:
    by = {w: summarize(steps, w) for w in READS}
    rows = ["| ratio | medians | worst case for coldvault | target | met? |", "|---|--:|--:|--:|---|"]
    verdicts = []

    def add(label, num, den, target):
        a, b = by.get(num), by.get(den)
        if not a or not b:
            return
        ratio = b["seconds"] / a["seconds"]  # same bytes: throughput ratio = inverse time ratio
        worst = b["fastest"] / a["slowest"]
        met = "" if target is None else ("yes" if ratio >= target else "no")
        rows.append(f"| {label} | {truncated(ratio)} | {truncated(worst)} | {'' if target is None else f'>= {target}'}"
                    f" | {met} |")
        verdicts.append((label, ratio, target))

    add("coldvault first read / restic first read", "coldvault first read", "restic first read", TARGET_VS_RESTIC)
    add("coldvault first read / trivialfs", "coldvault first read", "trivialfs read", TARGET_VS_TRIVIAL)
    add("coldvault second read / coldvault first read", "coldvault second read", "coldvault first read", None)
    add("coldvault second read / trivialfs", "coldvault second read", "trivialfs read", None)
    return "\n".join(rows), verdicts


def list_table(steps: list[Step]) -> str:
    rows = ["| tool | n | mount s (median) | ls -R s (median) | mount + ls -R s (median) | fastest-slowest ls -R s"
            " | entries | fs process CPU s | ls CPU s | other CPU s | peak RSS after mount MiB"
            " | peak RSS after ls -R MiB |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for tool in ("coldvault", "restic"):
        s = summarize(steps, f"{tool} listing")
        if s:
            rows.append(f"| {tool} | {s['n']} | {s['mount_seconds']:.2f} | {s['seconds']:.2f} | {s['total_seconds']:.2f}"
                        f" | {s['fastest']:.2f}-{s['slowest']:.2f} | {s['entries']} | {s['fs_cpu']:.1f}"
                        f" | {s['reader_cpu']:.1f} | {s['other_cpu']:.1f} | {s['rss_after_mount_kib'] / 1024:.0f}"
                        f" | {s['peak_rss_kib'] / 1024:.0f} |")
    return "\n".join(rows)


def show(step: Step, i: int) -> None:
    if step.what.endswith("listing"):
        print(f"  #{i + 1} {step.what:22} mount {step.mount_seconds:6.2f} s  ls -R {step.seconds:7.2f} s"
              f"  {step.entries} entries  peak RSS {step.rss_after_mount_kib / 1024:5.0f} -> "
              f"{step.peak_rss_kib / 1024:5.0f} MiB  fs CPU {step.fs_cpu:5.1f} s  ls CPU {step.reader_cpu:4.1f} s"
              f"  other CPU {step.other_cpu:4.1f} s", flush=True)
    else:
        print(f"  #{i + 1} {step.what:22} {step.seconds:7.3f} s {step.mib_s:8.1f} MiB/s  fs CPU {step.fs_cpu:5.2f} s"
              f"  reader CPU {step.reader_cpu:4.2f} s  other CPU {step.other_cpu:4.2f} s"
              f"  fs peak RSS {step.peak_rss_kib / 1024:5.0f} MiB" + (f"  ({step.note})" if step.note else ""), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="size factor for the big file and the file count (default 1.0; 0.05 for a quick check)")
    ap.add_argument("--files", type=int, help=f"files in the listing tree (default {TREE_FILES:,} x scale)")
    ap.add_argument("--workdir", default=os.path.join(HERE, "work", "mount"),
                    help="data, vaults, mount points and logs (default bench/work/mount)")
    ap.add_argument("--keep", action="store_true", help="keep vaults, repositories and generated data")
    ap.add_argument("--seed", type=int, default=1, help="data generator seed (default 1)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of each timed step; tables show medians (default 3)")
    ap.add_argument("--settle", type=float, default=60.0,
                    help="before each timed step, wait up to this many seconds for the machine to be idle (default 60)")
    ap.add_argument("--max-other", type=float, default=0.1, metavar="CPU",
                    help="repeat a timed step when the rest of the machine used more than this many CPU-s per second"
                         " of it (default 0.1)")
    ap.add_argument("--retries", type=int, default=3, help="at most this many repeats of a disturbed step (default 3)")
    ap.add_argument("--prefault", type=int, default=2048, metavar="MIB",
                    help="after the idle wait, touch and free this many MiB so that the timed step gets warm memory "
                         "from the VM (default 2048; 0 turns it off); see prefault()")
    ap.add_argument("--only", default="read,list", help="comma-separated: read, list (default both)")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed runs, one more coldvault first read and listing under py-spy (not in the tables)")
    ap.add_argument("--coldvault", default=os.path.join(REPO_ROOT, ".venv", "bin", "coldvault"),
                    help="coldvault command (default .venv/bin/coldvault)")
    ap.add_argument("--restic", default=shutil.which("restic") or "restic", help="restic command")
    ap.add_argument("--py-spy", dest="py_spy", default=os.path.join(REPO_ROOT, ".venv", "bin", "py-spy"),
                    help="py-spy command, for --profile (default .venv/bin/py-spy)")
    args = ap.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    if not parts or any(p not in ("read", "list") for p in parts):
        ap.error("--only takes read, list or both")
    if args.scale <= 0 or args.repeat < 1:
        ap.error("--scale must be positive and --repeat at least 1")
    nfiles = args.files if args.files is not None else max(1, round(TREE_FILES * args.scale))
    work = os.path.abspath(args.workdir)
    data_dir = os.path.join(work, "data")
    for d in (data_dir, os.path.join(work, "logs"), os.path.join(work, "mnt")):
        os.makedirs(d, exist_ok=True)
    bench = Bench(args, work)

    rv, rcomp = restic_facts(args.restic, work)
    print("# coldvault mount benchmark")
    print(f"command:   {command_line()}")
    print(f"host:      {host_line()}")
    print(f"kernel:    {platform.release()}, Python {platform.python_version()}, pyfuse3 {pyfuse3_version()}")
    print(f"coldvault: {coldvault_facts(args.coldvault)} (default init; mounted with --foreground and a new, empty "
          "--cache-dir each time)")
    print(f"restic:    {rv}; {rcomp}; mounted with its defaults")
    print(f"workdir:   {work} (vaults, repositories and data on the same local file system)")
    print("cache:     the page cache cannot be dropped; the vault's and the repository's files are read, untimed, "
          "before each timed step, so both tools read their storage from memory")
    print(f"reads:     a loop of {READ_BLOCK // MiB} MiB readinto() on an unbuffered file; idle wait before each timed "
          f"step: sync, then up to {args.settle:.0f} s for a 1 s window with < 0.1 CPU s used machine-wide")
    print(f"memory:    before each timed step (after the idle wait) {args.prefault} MiB are touched and freed, so the "
          "page cache and heap the step fills come from warm memory" if args.prefault > 0 else
          "memory:    no prefault (--prefault 0): timed steps may pay the VM's first-touch cost for fresh memory")
    print(f"repeats:   {args.repeat} (the order of the tools alternates); the tables show medians; a step during which"
          f" other work used more than {args.max_other} CPU-s per second is run again (up to {args.retries} times,"
          " the least disturbed attempt is kept)")
    print(meminfo())
    print(flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    steps: list[Step] = []
    cleanup: list[str] = []
    try:
        if "read" in parts:
            man, made = gen_data.ensure(data_dir, "random", args.scale, args.seed)
            source_file = os.path.join(man["path"], "random.bin")
            if not args.keep:
                cleanup.append(man["path"])
            read_all(source_file)
            expect_sha = sha256_file(source_file)
            cv, cv_secs = bench.coldvault_vault("random", man["path"])
            rr, rr_secs = bench.restic_repo("random", man["path"])
            cleanup += [cv, rr]
            print(f"random: {man['bytes'] / MiB:.1f} MiB in one file ({'generated' if made else 'reused'}); "
                  f"backup (set-up, not a benchmark figure): coldvault {cv_secs:.1f} s, restic {rr_secs:.1f} s", flush=True)
            for i in range(args.repeat):
                order = ["coldvault", "restic", "trivialfs"]
                for tool in order if i % 2 == 0 else order[::-1]:
                    if tool == "coldvault":
                        got = attempt(lambda: bench.read_coldvault(cv, "random", str(i), expect_sha), args)
                    elif tool == "restic":
                        got = attempt(lambda: bench.read_restic(rr, source_file, str(i)), args)
                    else:
                        got = attempt(lambda: bench.read_trivial(source_file, str(i)), args)
                    for s in got:
                        steps.append(s)
                        show(s, i)
            if args.profile:
                prof = bench.log("profile-coldvault-first-read.txt")
                s = bench.read_coldvault(cv, "random", "profile", expect_sha, profile=prof)[0]
                print(f"  profiled coldvault first read (not in the tables): {s.seconds:.2f} s, {s.mib_s:.1f} MiB/s")
        if "list" in parts:
            tree = make_tree(data_dir, nfiles, args.seed)
            if not args.keep:
                cleanup.append(tree["path"])
            read_all(tree["path"])
            cv, cv_secs = bench.coldvault_vault("many", tree["path"])
            rr, rr_secs = bench.restic_repo("many", tree["path"])
            cleanup += [cv, rr]
            made_how = f"generated in {tree['generate_seconds']:.1f} s" if tree["generated"] else "reused"
            print(f"many: {tree['files']} files of 0-{TREE_MAX_SIZE} bytes ({tree['bytes'] / MiB:.1f} MiB) in "
                  f"{tree['dirs']} directories ({made_how});"
                  f" backed up: coldvault {cv_secs:.1f} s, restic {rr_secs:.1f} s", flush=True)
            for i in range(args.repeat):
                order = ["coldvault", "restic"]
                for tool in order if i % 2 == 0 else order[::-1]:
                    store = cv if tool == "coldvault" else rr
                    s = attempt(lambda: [bench.list_tool(tool, store, tree, str(i))], args)[0]
                    steps.append(s)
                    show(s, i)
            if args.profile:
                prof = bench.log("profile-coldvault-listing.txt")
                s = bench.list_tool("coldvault", cv, tree, "profile", profile=prof)
                print(f"  profiled coldvault listing (not in the tables): mount {s.mount_seconds:.2f} s,"
                      f" ls -R {s.seconds:.2f} s")
    finally:
        FuseMount.close_all()
        for p in cleanup:
            shutil.rmtree(p, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(os.path.join(work, "coldvault-cache"), ignore_errors=True)

    print()
    if "read" in parts:
        print(f"## Reading one {man['bytes'] / MiB:.0f} MiB file of random bytes")
        print()
        print(read_table(steps))
        print()
        print("MiB/s is the file size over the median wall time of open + reads. fs process CPU s is user+sys of the")
        print("filesystem process during the read (median), reader CPU s that of the reading loop, other CPU s the")
        print("highest CPU time the rest of the machine used meanwhile (from /proc/stat); well above 0 means other")
        print("work shared the", len(os.sched_getaffinity(0)), "CPUs. Peak RSS is VmHWM of the filesystem process,")
        print("highest of the runs.")
        notes = {s.note for s in steps if s.what == "trivialfs read" and s.note}
        if notes:
            print("FUSE read requests the kernel sent to trivialfs per read:", "; ".join(sorted(notes)), "(the same kernel")
            print("settings apply to every filesystem here).")
        print()
        rtable, verdicts = ratio_rows(steps)
        print("## Ratios (throughput over throughput)")
        print()
        print(rtable)
        print()
        print("Ratios are cut (not rounded) to two decimals; 'worst case' is the numerator's slowest run against the")
        print("denominator's fastest.")
        print()
        met = [label for label, r, t in verdicts if t is not None and r >= t]
        missed = [label for label, r, t in verdicts if t is not None and r < t]
        print(f"meet the target: {', '.join(met) or 'none'}")
        print(f"miss the target: {', '.join(missed) or 'none'}")
        print()
    if "list" in parts:
        print(f"## Mounting and `ls -R` of a snapshot of {nfiles:,} files")
        print()
        print(list_table(steps))
        print()
        print("mount s: from starting the command until the mount point is mounted. ls -R s: `ls -R` of the")
        print("snapshot's root, output to a file. fs process CPU s covers mounting and listing. Peak RSS is the")
        print("mount process's VmHWM right after mounting and after the listing (highest of the runs). other CPU s is")
        print("what the rest of the machine used during ls -R (highest of the runs).")
        cv_l, r_l = summarize(steps, "coldvault listing"), summarize(steps, "restic listing")
        if cv_l and r_l:
            print()
            print(f"restic time / coldvault time, mount + ls -R: {truncated(r_l['total_seconds'] / cv_l['total_seconds'])};"
                  f" ls -R alone: {truncated(r_l['seconds'] / cv_l['seconds'])};"
                  f" peak RSS coldvault / restic: {truncated(cv_l['peak_rss_kib'] / r_l['peak_rss_kib'])}")
        print()
    if args.profile:
        print("## py-spy profiles of coldvault (separate runs)")
        for name in ("profile-coldvault-first-read.txt", "profile-coldvault-listing.txt"):
            path = bench.log(name)
            if os.path.exists(path):
                print()
                print(f"{name}:")
                print(profile_summary(path))
    return 0


def pyfuse3_version() -> str:
    try:
        from importlib.metadata import version
        return version("pyfuse3")
    except Exception:
        return "unknown"


if __name__ == "__main__":
    run_main(main, "bench_mount")
