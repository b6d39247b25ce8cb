#!/usr/bin/env python3
"""ZFS benchmark (issue 4): coldvault against restic on one `zfs send` stream, in one run.

Makes a pool on a sparse file (zfs-fuse; a unique name, destroyed at the end), a
dataset with compression off holding about 1.1 GiB (random files, incompressible,
plus some word-salad text that compresses about 2.5x, both from gen_data.py), and
one snapshot of it. Then, on that snapshot, --repeat times:

    zfs send DS@S > /dev/null                         the ceiling: how fast zfs-fuse makes the stream
    zfs send DS@S | cat > /dev/null                   the same through a pipe, as both tools read it
    coldvault backup zfs DS@S --json                  fresh local vault (init untimed)
    zfs send DS@S | restic backup --stdin ...         fresh local repository (init untimed)
    cat MNT/zfs/POOL/DS/@S.zfs > /dev/null            fresh `coldvault mount` of that vault, empty chunk cache

The two backups alternate which goes first. Once, the mounted stream is compared
byte for byte with a new `zfs send` (cmp). Each timed run waits (--settle) for a
quiet machine first, and is repeated (--retries) when other work used more than
--max-other CPU-s per second of it; the least disturbed attempt is kept.

Per run: wall time, MiB/s of the stream's length, peak RSS of the tool (os.wait4;
for the mount read, VmHWM of the mount process), its CPU time (for coldvault this
includes its `zfs send` child; for restic, restic plus `zfs send`), the CPU time
of the zfs-fuse daemon (which does the work of `zfs send`: the `zfs` command only
passes it the file descriptor) and the CPU that the rest of the machine used
meanwhile. The page cache cannot be dropped: the pool's image file is read once
before the first timed run, and a vault's pack files are read once before it is
mounted, so neither tool waits for the disk. Timings are figures to read, not
assertions (STYLE.md item 12).

    python bench/bench_zfs.py --random-mib 64 --text-mib 16 --repeat 1   # quick check, about a minute
    python bench/bench_zfs.py --repeat 3                                  # full size: a stream of ~1.1 GiB
    python bench/bench_zfs.py --repeat 3 --profile                        # plus py-spy of one backup and one read

--committed runs coldvault from `git archive HEAD src` instead of the work tree,
for when other sessions edit src/ in the same tree while the benchmark runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_data  # noqa: E402
from benchlib import (  # noqa: E402
    HERE,
    PASSWORD,
    REPO_ROOT,
    ChildFailedError,
    FuseMount,
    GiB,
    MiB,
    before_timed_step,
    busy_cpu_seconds,
    clean_env,
    coldvault_facts,
    command_line,
    du,
    host_line,
    in_proc_mounts,
    least_disturbed,
    meminfo,
    mib_s,
    proc_cpu,
    proc_mem_kib,
    py_spy_samples,
    read_all,
    restic_facts,
    run_main,
    start_py_spy,
    stop_py_spy,
    truncated,
    untimed,
)

SNAP = "bench"
STDIN_NAME = "s.zfs"


# ---- processes -------------------------------------------------------------------------------------


def zfs_daemon_pid() -> int:
    out = subprocess.run(["pgrep", "-x", "zfs-fuse"], capture_output=True, text=True).stdout.split()
    if not out:
        raise ChildFailedError("the zfs-fuse daemon is not running")
    return int(out[0])


def ensure_daemon() -> None:
    """Start zfs-fuse unless it runs (scripts/zfs-fuse-up.sh, as the tests do); it is left running."""
    if not shutil.which("zfs-fuse") or not shutil.which("zpool"):
        raise ChildFailedError("zfs-fuse is not installed")
    up = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "zfs-fuse-up.sh")
    p = subprocess.run([up], capture_output=True, text=True)
    if p.returncode != 0:
        raise ChildFailedError(f"zfs-fuse could not be started: {p.stderr.strip()}")


def sh(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise ChildFailedError(f"{' '.join(cmd)} failed: {p.stderr.strip()}")
    return p.stdout


@dataclass
class Run:
    step: str
    rep: int
    seconds: float
    nbytes: int
    peak_rss_kib: int
    cpu: float  # the tool: every process of the command line (incl. zfs send), or for a read, the mount process
    zfsd_cpu: float  # zfs-fuse daemon
    reader_cpu: float  # mount read: cat
    other_cpu: float  # the rest of the machine
    repo_bytes: int = 0
    note: str = ""

    @property
    def mib_s(self) -> float:
        return mib_s(self.nbytes, self.seconds)


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def peak_rss_note() -> str:
    """Why the commands run under GNU time.

    Linux copies a process's peak-RSS mark with its address space at fork and keeps it in the rusage across
    exec, so os.wait4 reports for a child at least the peak RSS of this Python process (which has held the
    whole text pool of gen_data): `zfs` or `cat` would show ~60 MiB. /usr/bin/time is small, and the
    command it forks starts from its mark, so its %M is the command's own peak.
    """
    if GNU_TIME:
        return "peak RSS from /usr/bin/time %M (the command's own; not inherited from this script)"
    return ("peak RSS from os.wait4 (no /usr/bin/time): at least this script's own peak, which a fork passes on; "
            "small figures are not the tool's")


def timed_pipeline(cmds: list[list[str]], env: dict, log_path: str, stdout_path: str | None = None,
                   watch_pids: tuple[int, ...] = ()) -> tuple[float, list, float, list[float], float, str]:
    """Run `cmds` as a shell pipeline (cmd1 | cmd2 ...), the last one's stdout to `stdout_path` (default
    LOG.out). Returns (wall seconds, [(peak RSS KiB, CPU s) per command], zfs-fuse CPU, [CPU of each of
    `watch_pids`], other CPU, the last command's stdout)."""
    zpid = zfs_daemon_pid()
    out_path = stdout_path or log_path + ".out"
    rss_paths = [f"{log_path}.{i}.maxrss" for i in range(len(cmds))]
    if GNU_TIME:  # see peak_rss_note()
        cmds = [[GNU_TIME, "-f", "%M", "-o", rss_paths[i], "--"] + cmd for i, cmd in enumerate(cmds)]
    errs = [open(f"{log_path}.{i}.err", "wb") for i in range(len(cmds))]
    procs: list[subprocess.Popen] = []
    with open(out_path, "wb") as out:
        z0, w0, busy0 = proc_cpu(zpid), [proc_cpu(p) for p in watch_pids], busy_cpu_seconds()
        t0 = time.monotonic()
        prev = subprocess.DEVNULL
        for i, cmd in enumerate(cmds):
            last = i == len(cmds) - 1
            p = subprocess.Popen(cmd, env=env, stdin=prev, stdout=out if last else subprocess.PIPE, stderr=errs[i])
            if prev is not subprocess.DEVNULL:
                prev.close()
            prev = p.stdout
            procs.append(p)
        usage, codes = [], []
        for p in procs:
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            codes.append(p.returncode)
            usage.append((ru.ru_maxrss, ru.ru_utime + ru.ru_stime))
        seconds = time.monotonic() - t0
        busy = busy_cpu_seconds() - busy0
        zcpu = proc_cpu(zpid) - z0
        wcpu = [proc_cpu(p) - c for p, c in zip(watch_pids, w0)]
    for e in errs:
        e.close()
    for i, (cmd, code) in enumerate(zip(cmds, codes)):
        if code != 0:
            with open(f"{log_path}.{i}.err", "rb") as f:
                err = f.read().decode(errors="replace")
            raise ChildFailedError(f"{' '.join(cmd)} exited with {code}:\n{err[-3000:]}")
    if GNU_TIME:
        for i, path in enumerate(rss_paths):
            with open(path) as f:
                usage[i] = (int(f.read().split()[-1]), usage[i][1])
    stdout = ""
    if stdout_path is None:
        with open(out_path, "rb") as f:
            stdout = f.read().decode(errors="replace")
    other = max(0.0, busy - sum(c for _, c in usage) - zcpu - sum(wcpu))
    return seconds, usage, zcpu, wcpu, other, stdout


# ---- the pool and its data -------------------------------------------------------------------------


class Pool:
    """A zfs-fuse pool on a sparse file /tmp/NAME.img, mounted at /tmp/NAME-mnt, with dataset NAME/data."""

    def __init__(self, name: str):
        self.name = name
        self.img = f"/tmp/{name}.img"
        self.mnt = f"/tmp/{name}-mnt"
        self.dataset = f"{name}/data"
        self.snapshot = f"{self.dataset}@{SNAP}"

    def create(self, size_bytes: int) -> None:
        if os.path.exists(self.img):
            raise ChildFailedError(f"{self.img} exists already")
        with open(self.img, "wb") as f:
            f.truncate(size_bytes)
        sh("zpool", "create", "-m", self.mnt, self.name, self.img)
        sh("zfs", "create", "-o", "compression=off", "-o", "atime=off", self.dataset)

    def exists(self) -> bool:
        return subprocess.run(["zfs", "list", "-H", "-o", "name", self.snapshot], capture_output=True).returncode == 0

    def destroy(self) -> str:
        """Destroy the pool, then remove its file; returns what happened. zfs-fuse now and then refuses
        (busy just after a send): the destroy is tried again, and the file is kept while the pool exists."""
        err = ""
        for _ in range(10):
            p = subprocess.run(["zpool", "destroy", "-f", self.name], capture_output=True, text=True)
            err = p.stderr.strip()
            if subprocess.run(["zpool", "list", self.name], capture_output=True).returncode != 0:
                break
            time.sleep(2)
        else:
            return (f"pool {self.name} NOT destroyed ({err}); remove it with: zpool destroy -f {self.name}; "
                    f"rm {self.img}")
        try:
            os.unlink(self.img)
        except FileNotFoundError:
            pass
        try:
            os.rmdir(self.mnt)
        except OSError:
            pass
        return f"pool {self.name} destroyed, {self.img} removed"


def fill(directory: str, seed: int, random_mib: int, random_files: int, text_mib: int, text_files: int) -> dict:
    """Random files (SHAKE-256, incompressible) and text files (gen_data's word salad) under `directory`."""
    t0 = time.monotonic()
    total = 0
    for i in range(random_files):
        n = random_mib * MiB // random_files
        with open(os.path.join(directory, f"random-{i:02d}.bin"), "wb") as f:
            for block in gen_data.random_stream(seed, f"zfs/random/{i}", n):
                f.write(block)
        total += n
    pool = gen_data.text_pool(seed) if text_files else b""
    for i in range(text_files):
        n = text_mib * MiB // text_files
        gen_data._write_text(os.path.join(directory, f"text-{i:02d}.txt"), f"{seed}/zfs/{i}", n, pool)
        total += n
    return {"files": random_files + text_files, "bytes": total, "seconds": time.monotonic() - t0}


def stream_facts(snapshot: str) -> tuple[int, str]:
    """(length, SHA-256) of `zfs send SNAPSHOT`, read through a pipe (untimed)."""
    p = subprocess.Popen(["zfs", "send", snapshot], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    h = hashlib.sha256()
    n = 0
    while block := p.stdout.read(4 * MiB):
        h.update(block)
        n += len(block)
    p.stdout.close()
    if p.wait() != 0:
        raise ChildFailedError(f"zfs send {snapshot} exited with {p.returncode}")
    return n, h.hexdigest()


# ---- profiles --------------------------------------------------------------------------------------


# Frames on top of a stack that mean "waiting" although py-spy may count them as active.
# Frames that every worker thread has under its real work; left out of the summary.
GENERIC_FRAMES = ("<module> (coldvault:", "main (coldvault/cli/main.py")
GENERIC_FILES = ("(threading.py:", "(concurrent/futures/thread.py:", "(trio/_core/_thread_cache.py:",
                 "(outcome/_impl.py:", "(trio/_threads.py:")
IDLE_TOPS = ("_epoll_wait (trio/_core/_io_epoll.py", "get_events (trio/_core/_io_epoll.py",
             "_work (trio/_core/_thread_cache.py", "wait (threading.py", "acquire (",
             "_wait_for_tstate_lock (threading.py", "get (queue.py", "_worker (concurrent/futures")


def profile_summary(path: str, top: int = 12) -> str:
    """Busy samples per thread, and the functions most often on top of the stack and anywhere on it."""
    samples = py_spy_samples(path)
    if samples is None:
        return f"(no profile in {path})"
    busy: Counter = Counter()
    idle = 0
    incl: Counter = Counter()
    own: Counter = Counter()
    for parts, n in samples:
        i = next((k for k, p in enumerate(parts) if p.startswith("thread ")), 0)
        thread = parts[i].split(": ", 1)[-1]  # "thread (TID): NAME"
        if len(parts) <= i + 1 or any(t in parts[-1] for t in IDLE_TOPS):
            idle += n
            continue
        frames = [fr for fr in parts[i + 1:]
                  if not fr.startswith(GENERIC_FRAMES) and not any(g in fr for g in GENERIC_FILES)]
        if not frames:
            continue
        busy[thread] += n
        own[frames[-1]] += n
        for fr in set(frames):
            incl[fr] += n
    total = sum(busy.values()) or 1
    out = [f"{total} busy samples ({idle} more waiting, not counted); per thread: "
           + ", ".join(f"{t} {c / total:.0%}" for t, c in busy.most_common(6))]
    out.append("  on top of the stack (self):")
    out += [f"    {c / total:6.1%}  {fr}" for fr, c in own.most_common(top)]
    out.append("  anywhere on the stack (inclusive; frames in more than 95% of samples left out):")
    out += [f"    {c / total:6.1%}  {fr}" for fr, c in incl.most_common() if c < 0.95 * total][:top]
    return "\n".join(out)


# ---- the benchmark ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, work: str, pool: Pool, length: int, sha: str):
        self.args = args
        self.work = work
        self.pool = pool
        self.length = length
        self.sha = sha
        self.logs = os.path.join(work, "logs")
        self.xdg = os.path.join(work, "zfs-xdg-cache")
        self.mnt = os.path.join(work, "zfs-mnt")
        self.runs: list[Run] = []
        self.cmp_result = "not run"

    def log(self, name: str) -> str:
        return os.path.join(self.logs, f"zfs-{name}")

    def cv_env(self, vault: str) -> dict:
        return clean_env() | self.args.cv_env | {"COLDVAULT_REPO": vault, "COLDVAULT_PASSWORD": PASSWORD,
                                                 "XDG_CACHE_HOME": self.xdg}

    def restic_env(self) -> dict:
        cache = os.path.join(self.work, "zfs-restic-cache")
        return clean_env() | {"RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": cache}

    def before(self) -> str:
        waited = before_timed_step(self.args.settle, self.args.prefault)
        return f"settled {waited:.0f} s"

    def attempt(self, fn) -> Run:
        """Run `fn` (one timed step), again while it was disturbed (benchlib.least_disturbed)."""
        return least_disturbed(fn, self.args.retries, self.args.max_other, lambda r: (r.step, r.other_cpu, r.seconds))

    def record(self, r: Run) -> None:
        self.runs.append(r)
        extra = f"  cat CPU {r.reader_cpu:4.1f} s" if r.step.startswith("mount") else ""
        print(f"  #{r.rep} {r.step:22} {r.seconds:7.2f} s {r.mib_s:7.1f} MiB/s"
              f"  peak RSS {r.peak_rss_kib / 1024:5.0f} MiB  CPU {r.cpu:5.1f} s"
              f"  zfs-fuse CPU {r.zfsd_cpu:5.1f} s{extra}"
              f"  other CPU {r.other_cpu:4.1f} s  {r.note}",
              flush=True)

    # -- steps --

    def raw_send(self, rep: int, through_pipe: bool) -> Run:
        note = self.before()
        cmds = [["zfs", "send", self.pool.snapshot]] + ([["cat"]] if through_pipe else [])
        name = "raw-pipe" if through_pipe else "raw"
        secs, usage, z, _, other, _ = timed_pipeline(cmds, clean_env(), self.log(f"{name}-{rep}"), os.devnull)
        step = "zfs send piped to cat" if through_pipe else "zfs send > /dev/null"
        return Run(step, rep, secs, self.length, max(u[0] for u in usage), sum(u[1] for u in usage), z, 0.0, other,
                   note=note)

    def coldvault_backup(self, rep: int, vault: str, profile: str | None = None) -> Run:
        shutil.rmtree(vault, ignore_errors=True)
        shutil.rmtree(self.xdg, ignore_errors=True)
        env = self.cv_env(vault)
        untimed(self.args.cv + ["init", "--quiet"], env)
        note = self.before()
        cmd = self.args.cv + ["backup", "zfs", self.pool.snapshot, "--json"]
        if profile:
            cmd = [self.args.py_spy, "record", "--rate", "100", "--threads", "--format", "raw", "--output", profile,
                   "--"] + cmd
        secs, usage, z, _, other, out = timed_pipeline([cmd], env, self.log(f"coldvault-{rep}"))
        s, _ = json.JSONDecoder().raw_decode(out[out.index("{"):])  # under py-spy, its messages follow
        if s.get("length") != self.length or not s.get("new"):
            raise ChildFailedError(f"coldvault stored a stream of {s.get('length')} bytes (new: {s.get('new')}), "
                                   f"zfs send gives {self.length}")
        note += (f"; read {s.get('bytes_read', 0) / MiB:.0f} MiB, new {s.get('bytes_new', 0) / MiB:.0f} MiB, "
                 f"stored {s.get('bytes_uploaded', 0) / MiB:.0f} MiB in {s.get('packs', '?')} packs")
        return Run("coldvault backup zfs", rep, secs, self.length, usage[0][0], usage[0][1], z, 0.0, other, du(vault),
                   note)

    def restic_backup(self, rep: int, repo: str) -> Run:
        shutil.rmtree(repo, ignore_errors=True)
        env = self.restic_env()
        untimed([self.args.restic, "--repo", repo, "init"], env)
        note = self.before()
        cmds = [["zfs", "send", self.pool.snapshot],
                [self.args.restic, "--repo", repo, "backup", "--stdin", "--stdin-filename", STDIN_NAME]]
        secs, usage, z, _, other, out = timed_pipeline(cmds, env, self.log(f"restic-{rep}"))
        for line in out.splitlines():
            if line.startswith("Added to the repository"):
                note += "; " + line.replace("Added to the repository: ", "added ")
        return Run("restic backup --stdin", rep, secs, self.length, usage[1][0], usage[0][1] + usage[1][1], z, 0.0,
                   other, du(repo), note)

    def mount_read(self, rep: int, vault: str, compare: bool, profile: str | None = None) -> Run:
        read_all(vault)  # pack files in the page cache: the read measures the filesystem, not the disk
        cache = os.path.join(self.work, "zfs-chunk-cache")
        shutil.rmtree(cache, ignore_errors=True)  # an empty chunk cache for every mount
        cmd = self.args.cv + ["mount", self.mnt, "--foreground", "--cache-dir", cache]
        m = FuseMount("coldvault mount", cmd, self.cv_env(vault), self.mnt, self.log(f"mount-{rep}"))
        try:
            ds = self.pool.dataset
            path = os.path.join(self.mnt, "zfs", *ds.split("/"), f"@{SNAP}.zfs")
            size = m.stat(path).st_size  # the lookups are not part of the read
            if size != self.length:
                raise ChildFailedError(f"{path} has {size} bytes, zfs send gives {self.length}")
            note = self.before()
            spy = start_py_spy(self.args.py_spy, m.pid, profile, rate=100) if profile else None
            secs, usage, z, (fs_cpu,), other, _ = timed_pipeline([["cat", path]], clean_env(), self.log(f"cat-{rep}"),
                                                                 os.devnull, watch_pids=(m.pid,))
            if spy:
                stop_py_spy(spy)
            r = Run("mount: cat @S.zfs", rep, secs, self.length, proc_mem_kib(m.pid).get("VmHWM", 0), fs_cpu, z, usage[0][1], other,
                    note=note + "; fresh mount, empty chunk cache")
            if compare:
                self.cmp_result = self.compare(path)
                r.note += f"; then cmp with zfs send: {self.cmp_result}"
            return r
        finally:
            m.close()

    def compare(self, path: str) -> str:
        """`zfs send DS@S | cmp - PATH` (untimed)."""
        send = subprocess.Popen(["zfs", "send", self.pool.snapshot], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        c = subprocess.run(["cmp", "-", path], stdin=send.stdout, capture_output=True, text=True)
        send.stdout.close()
        send.wait()
        if c.returncode != 0 or send.returncode != 0:
            raise ChildFailedError(f"zfs send {self.pool.snapshot} | cmp - {path}: "
                                   f"exit {send.returncode}/{c.returncode}"
                                   f" {c.stdout.strip()} {c.stderr.strip()}")
        return f"identical ({self.length} bytes)"

    # -- the whole run --

    def run(self) -> None:
        vault = os.path.join(self.work, "zfs-coldvault")
        repo = os.path.join(self.work, "zfs-restic")
        for rep in range(1, self.args.repeat + 1):
            self.record(self.attempt(lambda: self.raw_send(rep, False)))
            self.record(self.attempt(lambda: self.raw_send(rep, True)))
            order = ["coldvault", "restic"] if rep % 2 else ["restic", "coldvault"]
            for tool in order:
                if tool == "coldvault":
                    self.record(self.attempt(lambda: self.coldvault_backup(rep, vault)))
                else:
                    self.record(self.attempt(lambda: self.restic_backup(rep, repo)))
            self.record(self.attempt(lambda: self.mount_read(rep, vault, compare=False)))
            if rep == 1:
                self.mount_read(rep, vault, compare=True)  # untimed: its read is done again by cmp
                print(f"     mounted stream vs zfs send (cmp): {self.cmp_result}", flush=True)
        if self.args.profile:
            b = os.path.join(self.logs, "zfs-profile-backup.txt")
            r = os.path.join(self.logs, "zfs-profile-read.txt")
            print("\nprofiles (one more backup and one more read, under py-spy, not in the tables):", flush=True)
            self.profiles = [("coldvault backup zfs", self.coldvault_backup(0, vault, profile=b), b),
                             ("mount: cat @S.zfs", self.mount_read(0, vault, compare=False, profile=r), r)]
            for what, run, path in self.profiles:
                print(f"  {what}: {run.seconds:.2f} s, {run.mib_s:.1f} MiB/s under py-spy; raw profile {path}",
                      flush=True)
        if not self.args.keep:
            for d in (vault, repo, self.xdg, os.path.join(self.work, "zfs-restic-cache"),
                      os.path.join(self.work, "zfs-chunk-cache"), os.path.join(self.work, "zfs-committed-src")):
                shutil.rmtree(d, ignore_errors=True)


# ---- what is printed -------------------------------------------------------------------------------


STEPS = ("zfs send > /dev/null", "zfs send piped to cat", "coldvault backup zfs", "restic backup --stdin",
         "mount: cat @S.zfs")


@dataclass
class Summary:
    step: str
    n: int
    seconds: float
    fastest: float
    slowest: float
    nbytes: int
    peak_rss_kib: int
    cpu: float
    zfsd_cpu: float
    reader_cpu: float
    other_cpu: float
    repo_bytes: int

    @property
    def mib_s(self) -> float:
        return self.nbytes / MiB / self.seconds


def summarize(runs: list[Run]) -> dict[str, Summary]:
    out = {}
    for step in STEPS:
        rs = [r for r in runs if r.step == step]
        if not rs:
            continue
        secs = [r.seconds for r in rs]
        out[step] = Summary(step, len(rs), statistics.median(secs), min(secs), max(secs), rs[0].nbytes,
                            max(r.peak_rss_kib for r in rs), statistics.median(r.cpu for r in rs),
                            statistics.median(r.zfsd_cpu for r in rs), statistics.median(r.reader_cpu for r in rs),
                            max(r.other_cpu for r in rs), rs[-1].repo_bytes)
    return out


def table(sums: dict[str, Summary]) -> str:
    rows = ["| step | n | seconds (median) | fastest-slowest s | MiB/s (median) | peak RSS MiB | tool CPU s"
            " | zfs-fuse CPU s | other CPU s | repo MiB |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for s in sums.values():
        cpu = f"{s.cpu:.1f}" + (f" (+ cat {s.reader_cpu:.1f})" if s.step.startswith("mount") else "")
        repo = f"{s.repo_bytes / MiB:.0f}" if s.repo_bytes else ""
        rows.append(f"| {s.step} | {s.n} | {s.seconds:.2f} | {s.fastest:.2f}-{s.slowest:.2f} | {s.mib_s:.1f}"
                    f" | {s.peak_rss_kib / 1024:.0f} | {cpu} | {s.zfsd_cpu:.1f} | {s.other_cpu:.1f} | {repo} |")
    return "\n".join(rows)


def ratio_table(sums: dict[str, Summary]) -> str:
    rows = ["| ratio | medians | worst case for the first | what it means |", "|---|--:|--:|---|"]

    def add(a: str, b: str, meaning: str) -> None:
        if a in sums and b in sums:
            x, y = sums[a], sums[b]
            rows.append(f"| {a} over {b} | {truncated(y.seconds / x.seconds)} | {truncated(y.fastest / x.slowest)}"
                        f" | {meaning} |")

    add("coldvault backup zfs", "restic backup --stdin",
        "backup throughput, coldvault over restic (> 1: coldvault faster)")
    add("coldvault backup zfs", "zfs send piped to cat",
        "coldvault backup against the ceiling (1 = as fast as zfs send can go)")
    add("restic backup --stdin", "zfs send piped to cat", "restic backup against the ceiling")
    add("mount: cat @S.zfs", "zfs send > /dev/null",
        "reading the stream back from the mount against making it with zfs send")
    add("mount: cat @S.zfs", "zfs send piped to cat", "the same, against zfs send into a pipe")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--random-mib", type=int, default=960, help="MiB of random (incompressible) data (default 960)")
    ap.add_argument("--random-files", type=int, default=8, help="in this many files (default 8)")
    ap.add_argument("--text-mib", type=int, default=160, help="MiB of compressible text (default 160)")
    ap.add_argument("--text-files", type=int, default=4, help="in this many files (default 4)")
    ap.add_argument("--seed", type=int, default=1, help="data generator seed (default 1)")
    ap.add_argument("--min-stream", type=float, default=0.0,
                    help="refuse to run when the stream is shorter than this many GiB (default 0: any)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions; the tables show medians (default 3)")
    ap.add_argument("--settle", type=float, default=120.0,
                    help="before each timed run, wait up to this many seconds for the machine to be idle (default 120)")
    ap.add_argument("--max-other", type=float, default=0.2,
                    help="repeat a timed run when other work used more CPU-s per second of it than this (default 0.2)")
    ap.add_argument("--retries", type=int, default=2, help="at most this many such repeats per run (default 2)")
    ap.add_argument("--prefault", type=int, default=1536,
                    help="MiB of memory to touch and free before each timed run (default 1536; 0: off)")
    ap.add_argument("--workdir", default=os.path.join(HERE, "work", "zfs"),
                    help="vaults, repositories and logs (default bench/work/zfs)")
    ap.add_argument("--pool", help="use this existing pool (dataset POOL/data, snapshot @bench, from --keep) "
                    "instead of making one; it is left in place")
    ap.add_argument("--keep", action="store_true", help="keep the pool, the vault and the repository")
    ap.add_argument("--profile", action="store_true", help="afterwards, one more backup and read under py-spy")
    ap.add_argument("--coldvault", default=os.path.join(REPO_ROOT, ".venv", "bin", "coldvault"))
    ap.add_argument("--committed", action="store_true",
                    help="run coldvault from `git archive HEAD src` (with .venv's Python), not from the work tree")
    ap.add_argument("--restic", default=shutil.which("restic") or "restic")
    ap.add_argument("--py-spy", default=os.path.join(REPO_ROOT, ".venv", "bin", "py-spy"))
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    work = os.path.realpath(args.workdir)
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)

    args.cv, args.cv_env = [args.coldvault], {}
    if args.committed:
        # Other sessions may be editing src/ in this work tree while the benchmark runs: measure the commit.
        src = os.path.join(work, "zfs-committed-src")
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        subprocess.run(f"git -C {REPO_ROOT} archive HEAD src | tar -x -C {src}", shell=True, check=True)
        args.cv = [os.path.join(REPO_ROOT, ".venv", "bin", "python"), "-m", "coldvault"]
        args.cv_env = {"PYTHONPATH": os.path.join(src, "src")}
        where = untimed(args.cv + ["--version"], clean_env() | args.cv_env).strip()
        probe = "import coldvault, sys; sys.stdout.write(coldvault.__file__)"
        loaded = untimed(args.cv[:1] + ["-c", probe], clean_env() | args.cv_env)
        if not loaded.startswith(src):
            raise ChildFailedError(f"--committed: coldvault was imported from {loaded}, not from {src}")
        commit = untimed(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], clean_env()).strip()
        cv_facts = f"{where}, commit {commit} exactly (--committed: src/ from git archive HEAD, not the work tree)"
    else:
        cv_facts = coldvault_facts(args.coldvault)
    ensure_daemon()
    rv, rcomp = restic_facts(args.restic, work)
    src0 = subprocess.run(["git", "-C", REPO_ROOT, "diff", "HEAD", "--", "src"], capture_output=True).stdout
    print("# coldvault ZFS benchmark")
    print(f"command:   {command_line()}")
    print(f"idle wait: before each timed run, sync and wait up to {args.settle:.0f} s for a 1 s window with "
          "< 0.1 CPU-s "
          f"used machine-wide; a run is repeated (at most {args.retries}x) when other work used more than "
          f"{args.max_other} CPU-s per second of it, and the least disturbed attempt is kept")
    print(f"host:      {host_line()}")
    print(f"kernel:    {platform.release()}, Python {platform.python_version()}")
    print(f"coldvault: {cv_facts} (default init: zstd level 3, ChaCha20-Poly1305, 16 MiB packs)")
    print(f"restic:    {rv}; {rcomp}")
    dpkg = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "zfs-fuse"], capture_output=True, text=True).stdout
    print(f"zfs:       zfs-fuse {dpkg or '(version unknown)'}, daemon pid {zfs_daemon_pid()}")
    print(f"memory:    {peak_rss_note()}")
    print(meminfo())

    if args.pool:
        pool, made = Pool(args.pool), False
        if not pool.exists():
            raise ChildFailedError(f"there is no snapshot {pool.snapshot}")
    else:
        pool, made = Pool(f"cvbench{uuid.uuid4().hex[:8]}"), True
    try:
        if made:
            data = (args.random_mib + args.text_mib) * MiB
            pool.create(int(data * 1.25) + 512 * MiB)
            man = fill(os.path.join(pool.mnt, "data"), args.seed, args.random_mib, args.random_files,
                       args.text_mib, args.text_files)
            os.sync()
            sh("zfs", "snapshot", pool.snapshot)
            print(f"pool:      {pool.name} on sparse file {pool.img}; dataset {pool.dataset} (compression=off, "
                  f"recordsize {sh('zfs', 'get', '-H', '-o', 'value', 'recordsize', pool.dataset).strip()}): "
                  f"{man['files']} files, {man['bytes'] / MiB:.0f} MiB ({args.random_mib} MiB random in "
                  f"{args.random_files} files, {args.text_mib} MiB text in {args.text_files}), written in "
                  f"{man['seconds']:.0f} s")
        else:
            print(f"pool:      {pool.name} (existing, --pool)")
        t0 = time.monotonic()
        read_all(pool.img) if os.path.exists(pool.img) else None
        length, sha = stream_facts(pool.snapshot)
        print(f"stream:    zfs send {pool.snapshot}: {length} bytes ({length / GiB:.3f} GiB), sha256 {sha[:16]}...; "
              f"pool image and stream read once, untimed, in {time.monotonic() - t0:.1f} s")
        if length < args.min_stream * GiB:
            raise ChildFailedError(f"the stream is {length / GiB:.3f} GiB, less than --min-stream {args.min_stream}")
        print(f"repeats:   {args.repeat} (fresh vault and repository each time; the backup that goes first alternates)")
        print(flush=True)

        bench = Bench(args, work, pool, length, sha)
        try:
            bench.run()
        finally:
            if in_proc_mounts(bench.mnt):
                subprocess.run(["fusermount3", "-u", "-z", bench.mnt], capture_output=True)
    finally:
        if made and not args.keep:
            print(f"\n{pool.destroy()}")
        elif made:
            print(f"\npool {pool.name} kept (--keep): reuse with --pool {pool.name}; "
                  f"remove with zpool destroy -f {pool.name}; rm {pool.img}")

    src1 = subprocess.run(["git", "-C", REPO_ROOT, "diff", "HEAD", "--", "src"], capture_output=True).stdout
    print()
    print("## Runs")
    print()
    sums = summarize(bench.runs)
    print(table(sums))
    print()
    print(f"MiB/s is the stream's length ({length / MiB:.1f} MiB) over the median wall time of the whole command")
    print("(start-up and commit included). peak RSS MiB (highest of the repetitions): the tool's process (coldvault,")
    print("restic, the `zfs` command; for the mount read, the mount process's VmHWM). tool CPU s (median): user+sys")
    print("of the command line's processes, `zfs send` included; for the mount read, the mount process, plus cat.")
    print("zfs-fuse CPU s (median): the daemon that makes the stream. other CPU s (highest): everything else on the")
    print(f"machine meanwhile, from /proc/stat; well above 0 means other work shared the {os.cpu_count()} CPUs.")
    print()
    print("## Ratios")
    print()
    print(ratio_table(sums))
    print()
    print("Throughput ratios of medians (same bytes, so the inverse ratio of the times), cut to two decimals.")
    print("'Worst case for the first' is the first step's slowest repetition against the second's fastest.")
    print(f"Mounted stream compared with zfs send: {bench.cmp_result}.")
    if src0 != src1 and not args.committed:
        print("WARNING: the uncommitted changes to src/ changed during the run; figures mix two versions.")
    if args.profile:
        for what, run, path in bench.profiles:
            print()
            print(f"## Profile: {what} ({run.seconds:.2f} s under py-spy, {run.mib_s:.1f} MiB/s)")
            print()
            print(profile_summary(path))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: unmount, destroy the pool
    run_main(main, "bench_zfs")
