#!/usr/bin/env python3
"""Ingest benchmark: coldvault against restic on the same data, in one run.

For each data set of gen_data.py (one big random file, one big text file,
many small files), on the same bytes, --repeat times (the tool that goes
first alternates):

    coldvault init (untimed), coldvault backup (first), coldvault backup (second, nothing changed)
    restic init (untimed),    restic backup (first),    restic backup (second, nothing changed)

Both write to a local directory under the work directory (the commands' output
goes to WORKDIR/logs/). restic runs with the defaults of the installed version;
its cache directory is put under the work directory so that it is cleaned up too. The page cache cannot be dropped
reliably here, so each data set is read once, untimed, before the first timed
run: every run starts with the source data warm in the page cache. `sync` runs
(untimed) between runs so that one tool's write-back does not land on the next,
and the script waits (up to --settle seconds) for a quiet second on the machine.

Per run: wall time (time.monotonic around the child), throughput over the data
set's logical size, peak RSS and CPU time of the child (os.wait4). At the end
it prints a table and, per data set and run, coldvault's throughput divided by
restic's. Timings are figures to read, not assertions (STYLE.md item 12).

    python bench/bench_backup.py --scale 0.05          # quick check, ~1 minute
    python bench/bench_backup.py --repeat 3            # full size: 1 GiB, 1 GiB, 50,000 files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_data  # noqa: E402
from benchlib import (  # noqa: E402
    HERE,
    PASSWORD,
    REPO_ROOT,
    ChildFailedError,
    MiB,
    before_timed_step,
    clean_env,
    coldvault_facts,
    command_line,
    du,
    host_line,
    meminfo,
    mib_s,
    read_all,
    restic_facts,
    run_main,
    timed,
    truncated,
    untimed,
)

TARGET_RATIO = 1.5


@dataclass
class Run:
    dataset: str
    tool: str
    run: str  # "first" | "second"
    seconds: float
    logical_bytes: int
    peak_rss_kib: int
    cpu_seconds: float
    repo_bytes: int
    note: str
    other_cpu_seconds: float  # CPU time the rest of the machine used during the run (contention)


@dataclass
class Summary:
    """One (data set, tool, run) over all repetitions."""

    dataset: str
    tool: str
    run: str
    n: int
    seconds: float  # median
    fastest: float
    slowest: float
    logical_bytes: int
    peak_rss_kib: int  # highest
    cpu_seconds: float  # median
    other_cpu_seconds: float  # highest
    repo_bytes: int
    note: str

    @property
    def mib_s(self) -> float:
        return mib_s(self.logical_bytes, self.seconds)


def summarize(runs: list[Run]) -> list[Summary]:
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.dataset, r.tool, r.run), []).append(r)
    out = []
    for (ds, tool, run), rs in groups.items():
        secs = [r.seconds for r in rs]
        out.append(Summary(
            ds, tool, run, len(rs), statistics.median(secs), min(secs), max(secs), rs[0].logical_bytes,
            max(r.peak_rss_kib for r in rs), statistics.median(r.cpu_seconds for r in rs),
            max(r.other_cpu_seconds for r in rs), rs[-1].repo_bytes, rs[-1].note,
        ))
    return out


# ---- the tools -------------------------------------------------------------------------------------


def coldvault_runs(args, man: dict, work: str) -> list[Run]:
    vault = os.path.join(work, f"coldvault-{man['name']}")
    cache = os.path.join(work, "xdg-cache")  # the vault's index cache, not in ~/.cache
    shutil.rmtree(vault, ignore_errors=True)
    env = clean_env() | {"COLDVAULT_REPO": vault, "COLDVAULT_PASSWORD": PASSWORD, "XDG_CACHE_HOME": cache}
    untimed([args.coldvault, "init", "--quiet"], env)
    runs = []
    for which in ("first", "second"):
        before_timed_step(args.settle, args.prefault)
        cmd = [args.coldvault, "backup", "dir", man["path"], "--name", f"bench-{man['name']}", "--json"]
        secs, rss, cpu, other, out = timed(cmd, env, os.path.join(work, "logs", f"coldvault-{man['name']}-{which}"))
        s = json.loads(out)
        if s.get("bytes_total", man["bytes"]) != man["bytes"] or s.get("files") != man["files"]:
            raise ChildFailedError(f"coldvault saw {s.get('files')} files / {s.get('bytes_total')} bytes, "
                                   f"expected {man['files']} / {man['bytes']}")
        note = f"read {s['bytes_read'] / MiB:.0f} MiB, new {s['bytes_new'] / MiB:.0f} MiB"
        if which == "second":
            note += f", {s.get('unchanged_files', 0)}/{s['files']} files unchanged"
        runs.append(Run(man["name"], "coldvault", which, secs, man["bytes"], rss, cpu, du(vault), note, other))
    if not args.keep:
        shutil.rmtree(vault, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return runs


def restic_summary(stdout: str) -> str:
    """The 'Added to the repository' line of restic's plain output, shortened."""
    for line in stdout.splitlines():
        if line.startswith("Added to the repository"):
            return line.replace("Added to the repository: ", "added ")
    return ""


def restic_runs(args, man: dict, work: str) -> list[Run]:
    repo = os.path.join(work, f"restic-{man['name']}")
    cache = os.path.join(work, "restic-cache")
    shutil.rmtree(repo, ignore_errors=True)
    env = clean_env() | {"RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": cache}
    untimed([args.restic, "--repo", repo, "init"], env)
    runs = []
    for which in ("first", "second"):
        before_timed_step(args.settle, args.prefault)
        cmd = [args.restic, "--repo", repo, "backup", man["path"]]
        secs, rss, cpu, other, out = timed(cmd, env, os.path.join(work, "logs", f"restic-{man['name']}-{which}"))
        runs.append(Run(man["name"], "restic", which, secs, man["bytes"], rss, cpu, du(repo), restic_summary(out), other))
    if not args.keep:
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return runs


# ---- what is printed -------------------------------------------------------------------------------


def table(sums: list[Summary]) -> str:
    head = ("| data set | tool | run | seconds (median) | fastest-slowest s | MiB/s (median) | peak RSS MiB | CPU s"
            " | other CPU s | repo MiB | notes |")
    rows = [head, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in sums:
        rows.append(
            f"| {r.dataset} | {r.tool} | {r.run} | {r.seconds:.2f} | {r.fastest:.2f}-{r.slowest:.2f} | {r.mib_s:.1f}"
            f" | {r.peak_rss_kib / 1024:.0f} | {r.cpu_seconds:.1f} | {r.other_cpu_seconds:.1f}"
            f" | {r.repo_bytes / MiB:.1f} | {r.note} |"
        )
    return "\n".join(rows)


def ratios(sums: list[Summary]) -> tuple[str, list[tuple[str, str, float]]]:
    by = {(r.dataset, r.tool, r.run): r for r in sums}
    rows = ["| data set | run | coldvault MiB/s | restic MiB/s | coldvault / restic (medians) | worst case for coldvault"
            " | >= 1.5x? |",
            "|---|---|--:|--:|--:|--:|---|"]
    out = []
    for ds in dict.fromkeys(r.dataset for r in sums):
        for run in ("first", "second"):
            c, r = by.get((ds, "coldvault", run)), by.get((ds, "restic", run))
            if not c or not r:
                continue
            ratio = c.mib_s / r.mib_s
            worst = r.fastest / c.slowest  # coldvault's slowest repetition against restic's fastest
            out.append((ds, run, ratio))
            rows.append(f"| {ds} | {run} | {c.mib_s:.1f} | {r.mib_s:.1f} | {truncated(ratio)} | {truncated(worst)} |"
                        f" {'yes' if ratio >= TARGET_RATIO else 'no'} |")
    return "\n".join(rows), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="data size factor (default 1.0; 0.05 for a quick check)")
    ap.add_argument("--workdir", default=os.path.join(HERE, "work"), help="data, vaults and logs (default bench/work)")
    ap.add_argument("--keep", action="store_true", help="keep vaults, repositories and generated data")
    ap.add_argument("--seed", type=int, default=1, help="data generator seed (default 1)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="repetitions of the whole sequence per data set; the table shows medians (default 1)")
    ap.add_argument("--settle", type=float, default=30.0,
                    help="before each timed run, wait up to this many seconds for the machine to be idle (default 30)")
    ap.add_argument("--prefault", type=int, default=2048, metavar="MIB",
                    help="after the idle wait, touch and free this many MiB so that the run gets warm memory "
                         "from the VM (default 2048; 0 turns it off); see prefault()")
    ap.add_argument("--only", default=",".join(gen_data.DATASETS),
                    help=f"comma-separated data sets (default {','.join(gen_data.DATASETS)})")
    ap.add_argument("--coldvault", default=os.path.join(REPO_ROOT, ".venv", "bin", "coldvault"),
                    help="coldvault command (default .venv/bin/coldvault)")
    ap.add_argument("--restic", default=shutil.which("restic") or "restic", help="restic command")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in gen_data.DATASETS:
            ap.error(f"unknown data set {n!r}")
    if args.scale <= 0:
        ap.error("--scale must be positive")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    work = os.path.abspath(args.workdir)
    data_dir = os.path.join(work, "data")
    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)

    rv, rcomp = restic_facts(args.restic, work)
    print("# coldvault ingest benchmark")
    print(f"command:   {command_line()}")
    print(f"idle wait: before each timed run, sync and wait up to {args.settle:.0f} s for a 1 s window with < 0.1 CPU s "
          "used machine-wide")
    print(f"memory:    then {args.prefault} MiB are touched and freed (in a child), so the run's page cache and heap come "
          "from warm memory" if args.prefault > 0 else "memory:    no prefault (--prefault 0)")
    print(f"host:      {host_line()}")
    print(f"kernel:    {platform.release()}, Python {platform.python_version()}")
    print(f"coldvault: {coldvault_facts(args.coldvault)} (default init: zstd level 3, ChaCha20-Poly1305, 16 MiB packs)")
    print(f"restic:    {rv}; {rcomp}")
    print(f"workdir:   {work} (vaults and source data on the same file system)")
    print("cache:     the page cache is not dropped; each data set is read once, untimed, before the first "
          "timed run, so every run reads warm source data")
    print(f"repeats:   {args.repeat} per data set (fresh vault and repository each time; the tool that goes first "
          "alternates); the tables show medians")
    print(meminfo())
    print(flush=True)

    runs: list[Run] = []
    for name in names:
        man, made = gen_data.ensure(data_dir, name, args.scale, args.seed)
        how = f"generated in {man['generate_seconds']} s" if made else "reused"
        t0 = time.monotonic()
        nbytes = read_all(man["path"])  # untimed for the tools: the source is in the page cache
        wsecs = time.monotonic() - t0
        print(f"{name}: {man['files']} files, {man['bytes'] / MiB:.1f} MiB ({how}); warm-up read {nbytes / MiB:.1f} MiB"
              f" in {wsecs:.1f} s", flush=True)
        for i in range(args.repeat):
            tools = [coldvault_runs, restic_runs] if i % 2 == 0 else [restic_runs, coldvault_runs]
            for tool in tools:
                for r in tool(args, man, work):
                    runs.append(r)
                    print(f"  #{i + 1} {r.tool:9} {r.run:6} {r.seconds:8.2f} s {mib_s(r.logical_bytes, r.seconds):8.1f} MiB/s"
                          f"  peak RSS {r.peak_rss_kib / 1024:5.0f} MiB  CPU {r.cpu_seconds:5.1f} s"
                          f"  other CPU {r.other_cpu_seconds:5.1f} s  {r.note}", flush=True)
        if not args.keep:
            gen_data.remove(data_dir, name)

    print()
    print("## Runs")
    print()
    sums = summarize(runs)
    print(table(sums))
    print()
    print("MiB/s is the data set's logical size over the median wall time of the whole command (start-up and commit")
    print("included). Peak RSS and other CPU s are the highest of the repetitions, CPU s the median.")
    print("CPU s is user+sys of the child; the machine has", len(os.sched_getaffinity(0)), "CPUs.")
    print("repo MiB is the vault/repository size on disk after the run.")
    print("other CPU s is the CPU time the rest of the machine used during the run (from /proc/stat);")
    print("well above 0 means other work shared the CPUs and the run's figures are pessimistic.")
    print()
    print(f"## coldvault throughput / restic throughput (target >= {TARGET_RATIO}x)")
    print()
    rtable, rs = ratios(sums)
    print(rtable)
    print()
    print("Ratios are cut (not rounded) to two decimals. 'Worst case' is coldvault's slowest repetition against")
    print("restic's fastest. The verdict uses the medians.")
    print()
    met = [f"{d}/{r}" for d, r, x in rs if x >= TARGET_RATIO]
    missed = [f"{d}/{r}" for d, r, x in rs if x < TARGET_RATIO]
    print(f"meet the target: {', '.join(met) or 'none'}")
    print(f"miss the target: {', '.join(missed) or 'none'}")
    return 0


if __name__ == "__main__":
    run_main(main, "bench_backup")
