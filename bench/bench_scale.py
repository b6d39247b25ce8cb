#!/usr/bin/env python3
"""Scale benchmark (issue 10): vaults of millions of blobs and trees of many small files, coldvault
against restic on the same work, in one run.

Index scale (--blobs, default 1M,3M,10M): one vault, made with `coldvault init` and one real backup of
a small tree (source `base`, 100 files), then grown to each size in turn with synthetic index objects:
random blob ids in data packs of the vault's own pack size (16 blobs of about 1 MiB), --blobs-per-index
to an index object, written by coldvault's own `Vault.save_index` in a child process, so the objects are
whatever format the code under test writes. The packs they name do not exist: only commands that read
the index, not the data, are timed. At each size, in this order:

    ls            coldvault ls latest --source base       (the first command after the index grew)
    ls again      the same command again                  (what a warm local cache, if any, gives)
    snapshots     coldvault snapshots                     (does not read the index: the start-up cost)
    restore       coldvault restore dir latest --source base --target DIR   (the 100 real files)
    mount + cat   coldvault mount, then cat one file of latest; until the cat ends
    backup 10     coldvault backup dir of 10 new files, source `new`

and the resident index memory: (peak RSS of `ls again` - peak RSS of the same `ls` before any synthetic
blob was added) / synthetic blobs. restic cannot be given a synthetic index, so its row quotes the
published figure for its in-memory index (about 70-80 bytes per blob) and is not measured.

Trees (--files, default 100k,1M): gen_data.ensure_small_tree(): files of 0-4 KiB (--max-file-size), a
third random bytes and two thirds text, 100 to a directory. On the same tree, each step for coldvault
then restic:

    first backup      after `sync; echo 3 > /proc/sys/vm/drop_caches` (unless --no-drop-caches)
    unchanged rerun   the same backup again
    restore           the whole latest snapshot into an empty directory (counted, then deleted), on a
                      fresh ext4 (mkfs defaults, with a journal) on a loop file in the workdir, made
                      for the tree and removed after it (--restore-on workdir: in the workdir itself)
    mount + find      mount, then `find ROOT | wc -l` of the latest snapshot; from starting the mount
                      command until find ends; then unmounted

Why a file system of its own for restores: this VM's root file system is an ext4 without a journal, whose
inode allocator skips (and looks up) every recently deleted inode when it creates a file; after the
millions of deletions of earlier runs, creating 100,000 files there cost 4-14 s of system time, growing
run after run, where a fresh ext4 costs 0.8 s. That measured the disk's history, not the tools.

For every step: wall time, user+sys CPU of the command (os.wait4; for a mount, of the filesystem
process from /proc), its peak RSS (the larger of ru_maxrss and the sum of PSS over the command's
processes, sampled every 0.1 s: a restore runs writer processes; VmHWM for a mount), and the CPU the
rest of the machine used meanwhile. Then the coldvault/restic ratios and issue 10's targets. Figures to read, never
assertions (STYLE.md item 12). coldvault runs from this checkout's src/ (`python -m coldvault`).

    python bench/bench_scale.py --blobs 100k --files 10k          # quick look, about a minute
    python bench/bench_scale.py --blobs none --files 100k --repeat 3   # restore and mount: medians of 3
    python bench/bench_scale.py                                    # full: 1M,3M,10M blobs; 100k,1M files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_data  # noqa: E402
from benchlib import (  # noqa: E402
    HERE,
    KiB,
    MiB,
    PASSWORD,
    ChildFailedError,
    FuseMount,
    before_timed_step,
    busy_cpu_seconds,
    clean_env,
    coldvault_facts,
    command_line,
    disk_line,
    drop_caches,
    du,
    host_line,
    meminfo,
    proc_cpu,
    proc_mem_kib,
    restic_facts,
    run_main,
    source_tree_coldvault,
    timed,
    truncated,
    untimed,
)

BASE_FILES = 100  # the real snapshot of an index-scale vault
NEW_FILES = 10  # the `backup 10` step
BLOBS_PER_INDEX = 100_000
MAX_FILE_SIZE = 4 * KiB
RESTIC_BYTES_PER_BLOB = "70-80"  # restic's in-memory index, as published (issue 10 quotes it)
INDEX_STEPS = ("ls", "ls again", "snapshots", "restore", "mount + cat", "backup 10")
TREE_STEPS = ("first backup", "unchanged rerun", "restore", "mount + find")
REPEATABLE = ("restore", "mount + find")  # tree steps --repeat runs again (they leave the vault as it was)
STEP_KEYS = {"ls": "ls", "ls again": "ls", "snapshots": "snapshots", "restore": "restore",
             "mount + cat": "mount", "backup 10": "backup10", "first backup": "backup",
             "unchanged rerun": "rerun", "mount + find": "mount"}


# ---- sizes -----------------------------------------------------------------------------------------


def parse_count(text: str) -> int:
    """'10M' -> 10,000,000; '100k' -> 100,000; '2500' -> 2500."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    num = t[:-1] if mult > 1 else t
    try:
        n = int(float(num) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (like 100k, 1M, 2500)") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"a count must be positive: {text!r}")
    return n


def count_list(text: str) -> list[int]:
    """'1M,3M' -> [1000000, 3000000]; '' or 'none' -> []."""
    if text.strip().lower() in ("", "none", "0"):
        return []
    return sorted({parse_count(t) for t in text.split(",") if t.strip()})


def label(n: int) -> str:
    for unit, m in (("M", 1_000_000), ("k", 1_000)):
        if n >= m and n % (m // 10) == 0:
            return f"{n / m:g}{unit}"
    return str(n)


# ---- synthetic index objects (a child process: see make_index_main) ---------------------------------


def make_index_main(argv: list[str]) -> int:
    """`bench_scale.py make-index VAULT FIRST COUNT PER_INDEX SEED`: add COUNT synthetic blobs (numbered
    from FIRST, which seeds their ids) to the vault at VAULT, PER_INDEX to an index object, through
    coldvault's own Vault.save_index. Prints one JSON line: objects written, seconds."""
    vault_url, first, count, per_index, seed = argv[0], *map(int, argv[1:5])
    from coldvault.index.blob import DATA, MAX_OVERHEAD
    from coldvault.index.pack import DATA_KIND, BlobEntry
    from coldvault.index.packindex import PackRecord
    from coldvault.store.url import open_store
    from coldvault.vault import Vault

    t0 = time.monotonic()
    store = open_store(vault_url)
    opened = Vault.open(store, lambda: os.environ["COLDVAULT_PASSWORD"].encode())
    s = opened.settings
    per_pack = max(1, s.data_pack_size // s.chunker_avg)
    lo, hi = s.chunker_min, s.chunker_max
    rng = random.Random(f"coldvault-bench-scale/{seed}/{first}")
    objects, done = 0, 0
    while done < count:
        n = min(per_index, count - done)
        ids = rng.randbytes(16 * n)
        packs, k = [], 0
        while k < n:
            entries, offset = [], 0
            for _ in range(min(per_pack, n - k)):
                raw = min(hi, max(lo, int(rng.expovariate(1 / s.chunker_avg))))
                stored = raw + MAX_OVERHEAD  # photos: incompressible, encrypted
                entries.append(BlobEntry(ids[16 * k:16 * k + 16], DATA, offset, stored, raw))
                offset += stored
                k += 1
            packs.append(PackRecord(rng.randbytes(16).hex(), DATA_KIND, offset + 64 * len(entries), entries))
        # A fresh Vault for each object: one that saved them all would hold every entry in memory.
        Vault(store, opened.config, opened.keys).save_index(packs)
        objects += 1
        done += n
    print(json.dumps({"objects": objects, "blobs": done, "seconds": round(time.monotonic() - t0, 2)}))
    return 0


# ---- steps -----------------------------------------------------------------------------------------


@dataclass
class Step:
    part: str  # "index 1M" or "files 100k"
    step: str  # one of INDEX_STEPS or TREE_STEPS
    tool: str
    seconds: float
    cpu: float  # user+sys of the command (of the filesystem process, for a mount)
    rss_kib: int  # its peak RSS
    other: float  # CPU the rest of the machine used meanwhile
    note: str = ""


class Bench:
    def __init__(self, args, work: str):
        self.args = args
        self.work = work
        self.logs = os.path.join(work, "logs")
        self.cv, env = source_tree_coldvault() if args.coldvault is None else (shlex.split(args.coldvault), clean_env())
        self.cv_env_base = env | {"COLDVAULT_PASSWORD": PASSWORD, "XDG_CACHE_HOME": os.path.join(work, "xdg-cache")}
        self.restic_env = clean_env() | {"RESTIC_PASSWORD": PASSWORD,
                                         "RESTIC_CACHE_DIR": os.path.join(work, "restic-cache")}
        self.steps: list[Step] = []
        self.serial = 0
        self.baseline: Step | None = None  # `ls` of the index vault before any synthetic blob
        self.restore_root = work  # where restore targets go (a ScratchExt4 while a tree part runs)

    def cv_env(self, vault: str) -> dict:
        return self.cv_env_base | {"COLDVAULT_REPO": vault}

    def log(self, name: str) -> str:
        self.serial += 1
        return os.path.join(self.logs, f"{self.serial:03d}-{name.replace(' ', '-')}")

    def record(self, s: Step) -> Step:
        self.steps.append(s)
        if s.step == "index memory":
            print(f"  {s.part:11} {s.step:16} {s.tool:9} {s.note}", flush=True)
            return s
        print(f"  {s.part:11} {s.step:16} {s.tool:9} {s.seconds:8.2f} s  CPU {s.cpu:7.2f} s  peak RSS"
              f" {s.rss_kib / 1024:7.0f} MiB  other CPU {s.other:6.1f} s  {s.note}", flush=True)
        return s

    def skipped(self, step: str) -> bool:
        return STEP_KEYS[step] in self.args.skip

    def run(self, part: str, step: str, tool: str, cmd: list[str], env: dict, drop: bool = False) -> tuple[Step, str]:
        """One timed command: wait for a quiet machine, warm memory, maybe drop the page cache, run it."""
        before_timed_step(self.args.settle, self.args.prefault)
        note = ""
        if drop:
            note = "page cache dropped" if drop_caches() else "page cache NOT dropped (not permitted)"
        secs, rss, cpu, other, out = timed(cmd, env, self.log(f"{part}-{step}-{tool}"))
        return Step(part, step, tool, secs, cpu, rss, other, note), out

    def mounted(self, part: str, step: str, tool: str, store: str, inner: str, reader: list[str]) -> tuple[Step, str]:
        """Mount `store`, run `reader` + [mount point/inner] once `inner` exists; timed from starting the
        mount command until the reader ends. Unmounted afterwards."""
        before_timed_step(self.args.settle, self.args.prefault)
        mnt = os.path.join(self.work, "mnt", tool)
        log = self.log(f"{part}-{step}-{tool}")
        busy0 = busy_cpu_seconds()
        if tool == "coldvault":
            cache = os.path.join(self.work, "coldvault-cache")
            shutil.rmtree(cache, ignore_errors=True)
            m = FuseMount("coldvault mount", self.cv + ["mount", mnt, "--foreground", "--cache-dir", cache],
                          self.cv_env(store), mnt, log, is_mounted=os.path.ismount)
        else:
            m = FuseMount("restic mount", [self.args.restic, "--repo", store, "mount", mnt], self.restic_env, mnt,
                          log, is_mounted=os.path.ismount)
        try:
            path = os.path.join(mnt, inner)
            deadline = time.monotonic() + 600
            while not os.path.exists(path):  # restic fills in snapshots/ just after mounting
                if m.proc.poll() is not None or time.monotonic() > deadline:
                    raise ChildFailedError(f"{path} did not appear in the {tool} mount:\n{m.stderr()[-2000:]}")
                time.sleep(0.01)
            with open(log + ".reader", "wb") as out, open(log + ".reader.err", "wb") as err:
                p = subprocess.Popen(reader + [path], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
                _, status, ru = os.wait4(p.pid, 0)
            seconds = time.monotonic() - m.t_start
            if os.waitstatus_to_exitcode(status) != 0:
                with open(log + ".reader.err", "rb") as f:
                    raise ChildFailedError(f"{' '.join(reader)} {path} failed: {f.read().decode(errors='replace')[-2000:]}")
            cpu = proc_cpu(m.pid)
            rss = proc_mem_kib(m.pid).get("VmHWM", 0)
            other = max(0.0, busy_cpu_seconds() - busy0 - cpu - ru.ru_utime - ru.ru_stime)
        finally:
            m.close()
        with open(log + ".reader", "rb") as f:
            output = f.read().decode(errors="replace")
        return Step(part, step, tool, seconds, cpu, rss, other, f"mounted in {m.seconds:.2f} s"), output

    # ---- index scale ---------------------------------------------------------------------------

    def index_part(self, sizes: list[int], rows: list[dict]) -> list[dict]:
        """Appends a row to `rows` for each size measured (so a failure keeps the sizes before it)."""
        args = self.args
        data = os.path.join(self.work, "data")
        vault = os.path.join(self.work, "index-vault")
        shutil.rmtree(vault, ignore_errors=True)
        shutil.rmtree(os.path.join(self.work, "xdg-cache"), ignore_errors=True)
        env = self.cv_env(vault)
        base, _ = gen_data.ensure_small_tree(data, BASE_FILES, 16 * KiB, args.seed)
        untimed(self.cv + ["init", "--quiet"], env)
        untimed(self.cv + ["backup", "dir", base["path"], "--name", "base", "--quiet"], env)
        one_file = self.a_file(base["path"])
        ls_cmd = self.cv + ["ls", "latest", "--source", "base"]
        s, _ = self.run("index 0", "ls", "coldvault", ls_cmd, env)
        s.note = f"the vault before any synthetic blob: {BASE_FILES} real files"
        baseline = self.baseline = self.record(s)
        have = 0
        try:
            for n in sizes:
                part = f"index {label(n)}"
                t0 = time.monotonic()
                out = untimed([sys.executable, os.path.abspath(__file__), "make-index", vault, str(have), str(n - have),
                               str(args.blobs_per_index), str(args.seed)], env)
                made = json.loads(out.strip().splitlines()[-1])
                have = n
                objects = sum(1 for _ in os.scandir(os.path.join(vault, "index")))
                print(f"{part}: added {made['blobs']:,} synthetic blobs in {made['objects']} index objects in "
                      f"{time.monotonic() - t0:.1f} s; the vault has {objects} index objects, "
                      f"{du(os.path.join(vault, 'index')) / MiB:.1f} MiB", flush=True)
                row = {"blobs": n, "objects": objects, "build_seconds": made["seconds"]}
                rows.append(row)
                for step in INDEX_STEPS:
                    if self.skipped(step):
                        continue
                    if step in ("ls", "ls again"):
                        s, _ = self.run(part, step, "coldvault", ls_cmd, env)
                    elif step == "snapshots":
                        s, _ = self.run(part, step, "coldvault", self.cv + ["snapshots"], env)
                    elif step == "restore":
                        target = os.path.join(self.work, "restore-index")
                        shutil.rmtree(target, ignore_errors=True)
                        s, _ = self.run(part, step, "coldvault", self.cv + ["restore", "dir", "latest", "--source",
                                                                             "base", "--target", target], env)
                        got = count_files(target)
                        shutil.rmtree(target, ignore_errors=True)
                        if got != BASE_FILES:
                            raise ChildFailedError(f"coldvault restored {got} files, expected {BASE_FILES}")
                        s.note = f"{got} files"
                    elif step == "mount + cat":
                        s, _ = self.mounted(part, step, "coldvault", vault, os.path.join("files", "base", "latest",
                                                                                         one_file), ["cat"])
                    else:
                        new = self.new_files(n)
                        s, out = self.run(part, step, "coldvault", self.cv + ["backup", "dir", new, "--name", "new",
                                                                                "--json"], env)
                        shutil.rmtree(new, ignore_errors=True)
                        summary = json.loads(out)
                        s.note = f"{summary.get('files')} files, {summary.get('bytes_new', 0) / KiB:.0f} KiB new"
                    if step == "ls again":
                        per_blob = (s.rss_kib - baseline.rss_kib) * KiB / n
                        s.note = f"resident index memory {per_blob:.0f} bytes per blob (peak RSS over the 0-blob ls)"
                        row["bytes_per_blob"] = per_blob
                    row[step] = self.record(s)
                self.record(Step(part, "index memory", "restic", 0.0, 0.0, 0, 0.0,
                                 f"not measured: about {RESTIC_BYTES_PER_BLOB} bytes per blob, restic's published "
                                 "figure (restic has no way to build a synthetic index)"))
        finally:
            if not args.keep:
                shutil.rmtree(vault, ignore_errors=True)
                shutil.rmtree(os.path.join(self.work, "xdg-cache"), ignore_errors=True)
                gen_data.remove(data, base["name"])
        return rows

    def a_file(self, root: str) -> str:
        for d, _, files in sorted(os.walk(root)):
            for f in sorted(files):
                return os.path.relpath(os.path.join(d, f), root)
        raise ChildFailedError(f"no file under {root}")

    def new_files(self, n: int) -> str:
        """NEW_FILES files of 64 KiB nobody backed up before (their bytes depend on `n`)."""
        d = os.path.join(self.work, "data", "new")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for i in range(NEW_FILES):
            with open(os.path.join(d, f"new{i}.bin"), "wb") as f:
                f.write(random.Random(f"{self.args.seed}/new/{n}/{i}").randbytes(64 * KiB))
        return d

    # ---- trees -----------------------------------------------------------------------------------

    def tree_part(self, nfiles: int) -> None:
        args = self.args
        part = f"files {label(nfiles)}"
        t0 = time.monotonic()
        tree, made = gen_data.ensure_small_tree(os.path.join(self.work, "data"), nfiles, args.max_file_size, args.seed)
        how = f"generated in {time.monotonic() - t0:.1f} s" if made else "reused"
        print(f"{part}: {tree['files']:,} files of 0-{args.max_file_size} bytes, {tree['bytes'] / MiB:.1f} MiB, in "
              f"{tree['dirs']:,} directories ({how})", flush=True)
        src = tree["path"]
        vault = os.path.join(self.work, f"files-{label(nfiles)}-coldvault")
        repo = os.path.join(self.work, f"files-{label(nfiles)}-restic")
        for p in (vault, repo, os.path.join(self.work, "restic-cache")):
            shutil.rmtree(p, ignore_errors=True)
        cv_env = self.cv_env(vault)
        untimed(self.cv + ["init", "--quiet"], cv_env)
        untimed([args.restic, "--repo", repo, "init"], self.restic_env)
        entries = tree["files"] + tree["dirs"] + 1  # what find prints: files, directories and the root
        scratch = ScratchExt4(os.path.join(self.work, "restore-fs"), tree["files"], tree["bytes"]) \
            if args.restore_on == "ext4" and not self.skipped("restore") else None
        self.restore_root = scratch.mnt if scratch else self.work
        try:
            if scratch:
                scratch.make()
            for step in TREE_STEPS:
                if self.skipped(step) and step != "first backup":
                    continue
                runs: dict[str, list[Step]] = {"coldvault": [], "restic": []}
                for _ in range(args.repeat if step in REPEATABLE else 1):
                    for tool in runs:  # alternating, so both meet the same minutes of the machine
                        s = self.tree_step(part, step, tool, tree, src, vault, repo, entries)
                        if s is not None:
                            runs[tool].append(s)
                for tool, done in runs.items():
                    if done:
                        self.record(median_step(done))
        finally:
            if scratch:
                scratch.remove()
            if not args.keep:
                for p in (vault, repo, os.path.join(self.work, "restic-cache")):
                    shutil.rmtree(p, ignore_errors=True)
                gen_data.remove(os.path.join(self.work, "data"), tree["name"])


    def tree_step(self, part: str, step: str, tool: str, tree: dict, src: str, vault: str, repo: str,
                  entries: int) -> Step | None:
        """One timed step of `tool` on the tree; None for a skipped one (a skipped first backup still
        runs, untimed: the later steps need a snapshot)."""
        args = self.args
        cv_env = self.cv_env(vault)
        if step in ("first backup", "unchanged rerun"):
            if tool == "coldvault":
                cmd, env = self.cv + ["backup", "dir", src, "--name", "files", "--json"], cv_env
            else:
                cmd, env = [args.restic, "--repo", repo, "backup", src], self.restic_env
            if self.skipped(step):
                untimed(cmd, env)
                return None
            s, out = self.run(part, step, tool, cmd, env, drop=step == "first backup" and args.drop_caches)
            s.note = "; ".join(x for x in (s.note, backup_note(tool, out, tree)) if x)
            if step == "first backup":
                s.note += f"; {du(vault if tool == 'coldvault' else repo) / MiB:.1f} MiB stored"
            return s
        if step == "restore":
            target = os.path.join(self.restore_root, f"restore-{tool}")
            shutil.rmtree(target, ignore_errors=True)
            if tool == "coldvault":
                cmd, env = self.cv + ["restore", "dir", "latest", "--source", "files", "--target", target], cv_env
            else:
                cmd, env = [args.restic, "--repo", repo, "restore", "latest", "--target", target], self.restic_env
            s, _ = self.run(part, step, tool, cmd, env)
            got = count_files(target)
            shutil.rmtree(target, ignore_errors=True)
            if got != tree["files"]:
                raise ChildFailedError(f"{tool} restored {got} files, expected {tree['files']}")
            s.note = f"{got:,} files"
            return s
        # `latest` is a symlink in both mounts: the trailing slash makes find follow it
        inner = os.path.join("files", "files", "latest", "") if tool == "coldvault" else \
            os.path.join("snapshots", "latest", src.lstrip("/"), "")
        s, out = self.mounted(part, step, tool, vault if tool == "coldvault" else repo, inner,
                              ["sh", "-c", 'find "$0" | wc -l'])
        got = int(out.strip() or 0)
        if got != entries:
            raise ChildFailedError(f"find in the {tool} mount printed {got} lines, expected {entries}")
        s.note += f", find printed {got:,} lines"
        return s


class ScratchExt4:
    """A fresh ext4 on a sparse loop file, mounted at `<path>/mnt`, for restore targets (see the top)."""

    def __init__(self, path: str, files: int, data_bytes: int):
        self.path = path
        self.image = os.path.join(path, "ext4.img")
        self.mnt = os.path.join(path, "mnt")
        # a 4 KiB block per small file, twice over (two targets may exist a moment), and room besides
        self.size = 2 * (files * 4 * KiB + data_bytes) + 1024 * MiB
        self.inodes = 2 * files + 100_000
        self.mounted = False

    def make(self) -> None:
        os.makedirs(self.mnt, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(self.size)
        # Inode tables and journal written now, not by the kernel's lazy init thread during timed steps.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-N", str(self.inodes),
                        "-E", "lazy_itable_init=0,lazy_journal_init=0", self.image], check=True)
        subprocess.run(["mount", "-o", "loop", self.image, self.mnt], check=True)
        self.mounted = True

    def remove(self) -> None:
        if self.mounted:
            subprocess.run(["umount", self.mnt], check=True)  # a loop mount frees its loop device
            self.mounted = False
        shutil.rmtree(self.path, ignore_errors=True)

    @staticmethod
    def possible() -> bool:
        return os.geteuid() == 0 and shutil.which("mkfs.ext4") is not None


def median_step(runs: list[Step]) -> Step:
    """The run of median wall time (the lower of the middle two), its note naming every run's time."""
    if len(runs) == 1:
        return runs[0]
    pick = sorted(runs, key=lambda s: s.seconds)[(len(runs) - 1) // 2]
    pick.note += f"; median of {len(runs)} runs: " + " / ".join(f"{s.seconds:.2f}" for s in runs) + " s"
    return pick


def count_files(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def backup_note(tool: str, out: str, tree: dict) -> str:
    if tool == "coldvault":
        s = json.loads(out)
        if s.get("files") != tree["files"]:
            raise ChildFailedError(f"coldvault backed up {s.get('files')} files, expected {tree['files']}")
        return f"{s.get('unchanged_files', 0):,} files unchanged, {s.get('bytes_new', 0) / MiB:.1f} MiB new"
    for line in out.splitlines():
        if line.startswith("Added to the repository"):
            return line.replace("Added to the repository: ", "added ")
    return ""


# ---- what is printed -------------------------------------------------------------------------------


def steps_table(steps: list[Step]) -> str:
    rows = ["| part | step | tool | seconds | CPU s | peak RSS MiB | other CPU s | notes |",
            "|---|---|---|--:|--:|--:|--:|---|"]
    for s in steps:
        if s.tool == "restic" and s.step == "index memory":
            rows.append(f"| {s.part} | {s.step} | {s.tool} | - | - | - | - | {s.note} |")
            continue
        rows.append(f"| {s.part} | {s.step} | {s.tool} | {s.seconds:.2f} | {s.cpu:.2f} | {s.rss_kib / 1024:.0f}"
                    f" | {s.other:.1f} | {s.note} |")
    return "\n".join(rows)


def tree_targets(step: str, nfiles: int, c: Step, r: Step) -> tuple[int, list[tuple[str, bool]]]:
    """Issue 10's targets for one tree step: (the tree size the issue sets them for, [(what, met)])."""
    speed, mem = r.seconds / c.seconds, c.rss_kib / r.rss_kib
    out = []
    if step == "first backup":
        out += [(f"speed >= 1.5x restic ({truncated(speed)}x)", speed >= 1.5),
                (f"peak RSS <= 1.5x restic ({truncated(mem)}x)", mem <= 1.5)]
    elif step == "unchanged rerun":
        out += [(f"speed >= 2x restic ({truncated(speed)}x)", speed >= 2.0),
                (f"peak RSS <= 1.5x restic ({truncated(mem)}x)", mem <= 1.5)]
    elif step == "restore":
        out += [(f"speed >= 1.5x restic ({truncated(speed)}x)", speed >= 1.5),
                (f"peak RSS <= restic ({truncated(mem)}x)", mem <= 1.0)]
        if nfiles >= 1_000_000:
            out.append((f"peak RSS < 500 MB ({c.rss_kib * KiB / 1e6:.0f} MB)", c.rss_kib * KiB < 500e6))
    elif step == "mount + find":
        out.append((f"faster than restic ({truncated(speed)}x)", speed > 1.0))
        if nfiles >= 1_000_000:
            out += [(f"under 30 s ({c.seconds:.1f} s)", c.seconds < 30),
                    (f"mount peak RSS < 300 MB ({c.rss_kib * KiB / 1e6:.0f} MB)", c.rss_kib * KiB < 300e6)]
    return (100_000 if step == "restore" else 1_000_000), out


def ratio_table(steps: list[Step]) -> tuple[str, list[tuple[str, bool]]]:
    by = {(s.part, s.step, s.tool): s for s in steps}
    rows = ["| part | step | coldvault s | restic s | wall coldvault/restic | CPU coldvault/restic"
            " | peak RSS coldvault/restic | issue 10 targets |",
            "|---|---|--:|--:|--:|--:|--:|---|"]
    verdicts = []
    for part in dict.fromkeys(s.part for s in steps if s.part.startswith("files")):
        nfiles = parse_count(part.split()[1])
        for step in TREE_STEPS:
            c, r = by.get((part, step, "coldvault")), by.get((part, step, "restic"))
            if not c or not r:
                continue
            for_size, ts = tree_targets(step, nfiles, c, r)
            text = "; ".join(f"{t}: {'yes' if ok else 'no'}" for t, ok in ts)
            if nfiles >= for_size:
                verdicts += [(f"{part} {step}: {t}", ok) for t, ok in ts]
            else:
                text = f"(set for {label(for_size)} files) {text}"
            rows.append(f"| {part} | {step} | {c.seconds:.2f} | {r.seconds:.2f} | {truncated(c.seconds / r.seconds)}"
                        f" | {truncated(c.cpu / r.cpu) if r.cpu else '-'} | {truncated(c.rss_kib / r.rss_kib)} | {text} |")
    return "\n".join(rows), verdicts


def index_table(rows: list[dict]) -> tuple[str, list[tuple[str, bool]]]:
    head = ["| blobs | index objects | ls s | ls again s | snapshots s | restore s | mount + cat s | backup 10 s"
            " | peak RSS ls / backup 10 MiB | CPU ls s | index bytes per blob (restic: about "
            f"{RESTIC_BYTES_PER_BLOB}, published) |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    verdicts = []

    def sec(row, step):
        return f"{row[step].seconds:.2f}" if step in row else "-"

    for row in rows:
        n = label(row["blobs"])
        ls, bk = row.get("ls"), row.get("backup 10")
        rss = f"{ls.rss_kib / 1024:.0f}" if ls else "-"
        rss += f" / {bk.rss_kib / 1024:.0f}" if bk else " / -"
        per_blob = row.get("bytes_per_blob")
        head.append(f"| {n} | {row['objects']} | {sec(row, 'ls')} | {sec(row, 'ls again')} | {sec(row, 'snapshots')}"
                    f" | {sec(row, 'restore')} | {sec(row, 'mount + cat')} | {sec(row, 'backup 10')} | {rss}"
                    f" | {f'{ls.cpu:.2f}' if ls else '-'} | {f'{per_blob:.0f}' if per_blob is not None else '-'} |")
        if row["blobs"] < 1_000_000:  # the targets are set for 10M blobs; below 1M the figures are start-up
            continue
        answers = [row[s] for s in ("ls", "ls again", "restore", "mount + cat") if s in row]
        if answers:
            slowest = max(answers, key=lambda s: s.seconds)
            verdicts.append((f"index {n}: every command that needs the index answers within 3 s (slowest: "
                             f"{slowest.step}, {slowest.seconds:.1f} s)", slowest.seconds <= 3.0))
        if bk:
            verdicts.append((f"index {n}: backup of 10 new files within 5 s ({bk.seconds:.1f} s) in under 1 GB "
                             f"({bk.rss_kib * KiB / 1e9:.2f} GB)", bk.seconds <= 5.0 and bk.rss_kib * KiB < 1e9))
        if per_blob is not None:
            verdicts.append((f"index {n}: at most 64 bytes per blob ({per_blob:.0f})", per_blob <= 64))
    return "\n".join(head), verdicts


PROJECT_TO = 10_000_000  # a 10 TB vault at about 1 MiB a blob; a tree of 10 million files
PROJECT_FROM = 100_000  # smaller sizes measure start-up


def fit(points: list[tuple[int, float]], x: int) -> float:
    """The straight line through the first and last of (size, value), at `x`; through (0, 0) and the one
    point if there is only one."""
    (x0, y0), (x1, y1) = (points[0], points[-1]) if len(points) > 1 else ((0, 0.0), points[0])
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def projection(steps: list[Step], baseline: Step | None) -> str:
    """Each step's wall time, CPU and peak RSS at PROJECT_TO blobs or files, on a straight line through
    the smallest and the largest size measured. With one size: for the index, from the `ls` of the vault
    before any synthetic blob (`baseline`, the start-up); for trees, from nothing (times only)."""
    groups: dict[tuple[str, str, str], list[tuple[int, Step]]] = {}
    for s in steps:
        kind, _, size = s.part.partition(" ")
        if s.step == "index memory" or size == "0":
            continue
        if parse_count(size) >= PROJECT_FROM:
            groups.setdefault((kind, s.step, s.tool), []).append((parse_count(size), s))
    if not groups:
        return f"(nothing measured at {label(PROJECT_FROM)} or more: below that the figures are mostly start-up)"
    rows = ["| kind | step | tool | measured at | projected seconds | projected CPU s | projected peak RSS MiB |",
            "|---|---|---|---|--:|--:|--:|"]
    for (kind, step, tool), pts in groups.items():
        pts.sort(key=lambda p: p[0])
        if kind == "index" and len(pts) == 1 and baseline is not None:
            pts = [(0, baseline)] + pts  # the start-up of a command on a vault with no synthetic blob
        at = ", ".join(label(n) for n, _ in pts if n)
        if kind == "files" and len(pts) == 1:  # RSS does not start from 0: only times are projected
            rss = "-"
        else:
            rss = f"{fit([(n, s.rss_kib / 1024) for n, s in pts], PROJECT_TO):.0f}"
        rows.append(f"| {kind} | {step} | {tool} | {at} | {fit([(n, s.seconds) for n, s in pts], PROJECT_TO):.1f}"
                    f" | {fit([(n, s.cpu) for n, s in pts], PROJECT_TO):.1f} | {rss} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["make-index"]:
        return make_index_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blobs", type=count_list, default=count_list("1M,3M,10M"),
                    help="index-scale vault sizes in blobs, comma-separated (default 1M,3M,10M; 'none' skips the part)")
    ap.add_argument("--files", type=count_list, default=count_list("100k,1M"),
                    help="tree sizes in files, comma-separated (default 100k,1M; 'none' skips the part)")
    ap.add_argument("--skip", type=lambda t: {x.strip() for x in t.split(",") if x.strip()}, default=set(),
                    help="steps not to time, comma-separated: " + ", ".join(dict.fromkeys(STEP_KEYS.values())) +
                         " (a skipped first backup still runs, untimed, for the later steps)")
    ap.add_argument("--blobs-per-index", type=parse_count, default=BLOBS_PER_INDEX,
                    help=f"synthetic blobs per index object (default {label(BLOBS_PER_INDEX)}: a backup of about 100 GB)")
    ap.add_argument("--max-file-size", type=int, default=MAX_FILE_SIZE,
                    help=f"trees: largest file in bytes (default {MAX_FILE_SIZE}); sizes are uniform from 0")
    ap.add_argument("--workdir", default=os.path.join(HERE, "work", "scale"), help="default bench/work/scale")
    ap.add_argument("--keep", action="store_true", help="keep vaults, repositories and generated trees")
    ap.add_argument("--no-drop-caches", dest="drop_caches", action="store_false",
                    help="do not drop the page cache before each first backup")
    ap.add_argument("--settle", type=float, default=30.0,
                    help="before each timed step, wait up to this many seconds for an idle machine (default 30)")
    ap.add_argument("--prefault", type=int, default=2048, metavar="MIB",
                    help="then touch and free this many MiB (benchlib.prefault; default 2048, 0 turns it off)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="trees: run restore and mount + find this many times, the tools alternating, and "
                         "report the median run (file creation on this VM's disk varies run to run)")
    ap.add_argument("--restore-on", choices=("ext4", "workdir"), default="ext4" if ScratchExt4.possible() else "workdir",
                    help="trees: restore onto a fresh ext4 on a loop file (default, as root) or into the workdir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--coldvault", help="coldvault command line (default: python -m coldvault from this checkout's src/)")
    ap.add_argument("--restic", default=shutil.which("restic") or "restic", help="restic command")
    args = ap.parse_args(argv)
    unknown = args.skip - set(STEP_KEYS.values())
    if unknown:
        ap.error(f"unknown step(s) for --skip: {', '.join(sorted(unknown))}")
    work = os.path.abspath(args.workdir)
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    bench = Bench(args, work)

    rv, rcomp = restic_facts(args.restic, work)
    print("# coldvault scale benchmark (issue 10)")
    print(f"command:   {command_line()}")
    print(f"started:   {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"host:      {host_line()}")
    print(f"kernel:    {platform.release()}, Python {platform.python_version()}")
    print(f"coldvault: {coldvault_facts(bench.cv, bench.cv_env_base)}")
    print(f"restic:    {rv}; {rcomp}")
    print(f"workdir:   {work} ({disk_line(work)})")
    if args.files and "restore" not in args.skip:
        print("restores:  " + ("onto a fresh ext4 on a loop file in the workdir, made for each tree" if args.restore_on == "ext4"
                              else "into the workdir"))
    print(f"sizes:     index {', '.join(map(label, args.blobs)) or 'none'} blobs ({label(args.blobs_per_index)} to an index "
          f"object); trees {', '.join(map(label, args.files)) or 'none'} files of 0-{args.max_file_size} bytes"
          + (f"; not timed: {', '.join(sorted(args.skip))}" if args.skip else ""))
    print(f"each step: sync, wait up to {args.settle:.0f} s for an idle second, touch and free {args.prefault} MiB; "
          + ("the page cache is dropped before each first backup" if args.drop_caches else "the page cache is not dropped"))
    print(meminfo())
    print(flush=True)

    rows = []
    took = []
    failed = None
    try:
        if args.blobs:
            t0 = time.monotonic()
            rows = bench.index_part(args.blobs, rows)
            took.append(f"index {', '.join(map(label, args.blobs))} blobs {time.monotonic() - t0:.0f} s")
        for n in args.files:
            t0 = time.monotonic()
            bench.tree_part(n)
            took.append(f"files {label(n)} {time.monotonic() - t0:.0f} s")
    except ChildFailedError as exc:  # what was measured so far is still summed up
        failed = exc
        print(f"bench_scale: {exc}", file=sys.stderr, flush=True)
    finally:
        FuseMount.close_all()
        shutil.rmtree(os.path.join(work, "coldvault-cache"), ignore_errors=True)  # the mounts' chunk cache
        if not args.keep:  # the index caches of every vault of the run (XDG_CACHE_HOME of cv_env)
            shutil.rmtree(os.path.join(work, "xdg-cache"), ignore_errors=True)

    verdicts = []
    print(f"whole parts took (set-up and waits included): {'; '.join(took)}")
    print()
    print("## Every step")
    print()
    print(steps_table(bench.steps))
    print()
    print("seconds: wall time of the command (for a mount: from starting it until the cat or find ends). CPU s: user+sys")
    print("of the command (of the filesystem process, for a mount). peak RSS: its ru_maxrss (VmHWM for a mount).")
    print("other CPU s: what the rest of the machine used meanwhile (/proc/stat); well above 0 means shared CPUs.")
    if rows:
        print()
        print("## Index scale (coldvault; restic cannot be given a synthetic index)")
        print()
        t, v = index_table(rows)
        verdicts += v
        print(t)
        print()
        print("index bytes per blob: (peak RSS of 'ls again' - peak RSS of the same ls with no synthetic blob) / blobs.")
    if args.files:
        print()
        print("## Trees: coldvault / restic")
        print()
        t, v = ratio_table(bench.steps)
        verdicts += v
        print(t)
        print()
        print("Ratios are cut (not rounded) to two decimals; below 1 coldvault is faster or smaller. Speed in the")
        print("targets is restic's wall time over coldvault's.")
    if bench.steps:
        print()
        print(f"## Projection to {label(PROJECT_TO)} blobs (a 10 TB vault) and {label(PROJECT_TO)} files")
        print()
        print(projection(bench.steps, bench.baseline))
        print()
        print("A straight line through the smallest and the largest size measured; with one size, from the 0-blob ls")
        print("(index) or from nothing (trees: then only times are projected). A line is only as good as the costs are")
        print("linear: measure the largest sizes rather than trust it.")
    if verdicts:
        print()
        print("## Issue 10's targets")
        print()
        for what, ok in verdicts:
            print(f"- {'met' if ok else 'NOT met'}: {what}")
    if failed is not None:
        print()
        print(f"The run stopped early: {str(failed).splitlines()[0]}")
        return 1
    return 0


if __name__ == "__main__":
    run_main(main, "bench_scale")
