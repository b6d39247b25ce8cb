"""Index load time and memory at 1M / 3M / 10M blobs (issue 10), without and with the local index cache.

    PYTHONPATH=src python bench/bench_index.py --blobs 1000000 --dir /tmp/bench-index
    PYTHONPATH=src python bench/bench_index.py --blobs 1000000 --dir /tmp/bench-index --load-only warm

Builds an unencrypted local vault whose index objects name `--blobs` synthetic blobs
(random ids, 16 blobs of about 1 MiB per 16 MiB data pack, as a 10 TB vault of photos
would hold), written through `Vault.save_index` exactly as a backup writes them (no packs:
`load_index` reads only index objects). Then, each in a fresh interpreter, opens the vault
and loads the index three times, one JSON line each:

    no cache   COLDVAULT_NO_CACHE=1: every index object read, checked and merged
    cold       no cache file yet: the same, then the local index cache written (vault/indexcache.py)
    warm       the cache file of the run before mapped: no index object read

and prints the wall and CPU seconds of `load_index`, the bytes that tracemalloc saw
allocated per blob after it (and at its peak), the growth of the resident set per blob,
the peak RSS of the process, the objects the cycle GC tracks, and how many collections
ran. The cache lives in DIR/cache-BLOBS (COLDVAULT_CACHE_DIR).

Run it with PYTHONPATH pointing at an older coldvault (one without the cache, or one that
writes version 1 index objects) to measure that one: the script uses only `Vault` and
`LocalStore` (all three lines are then the same uncached load).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """VmHWM of this process (ru_maxrss would carry the parent's peak across fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build(path: str, blobs: int, per_pack: int = 16) -> None:
    from coldvault.index.config import Settings
    from coldvault.index.pack import BlobEntry
    from coldvault.index.packindex import PackRecord
    from coldvault.store.local import LocalStore
    from coldvault.vault.vault import Vault

    vault = Vault.init(LocalStore(path), None, Settings())
    rng = random.Random(10)
    step = 1_000_000  # one backup run's index at a time, like many nights of backups
    done = 0
    while done < blobs:
        n = min(step, blobs - done)
        recs = []
        for p in range(0, n, per_pack):
            k = min(per_pack, n - p)
            entries, off = [], 0
            for _ in range(k):
                raw = rng.randint(512 * 1024, 2 * 1024 * 1024)
                length = raw - rng.randint(0, 4096)
                entries.append(BlobEntry(rng.randbytes(16), 0, off, length, raw))
                off += length
            recs.append(PackRecord(rng.randbytes(16).hex(), "data", off + 4096, entries))
        vault.save_index(recs)
        vault.index = type(vault.index)()  # the builder keeps nothing between runs
        done += n


def load(path: str) -> dict:
    import tracemalloc

    from coldvault.store.local import LocalStore
    from coldvault.vault.vault import Vault

    vault = Vault.open(LocalStore(path), None)
    gc.collect()
    collections = sum(s["collections"] for s in gc.get_stats())
    r0 = rss()
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    index = vault.load_index()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    traced, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(index)
    return {
        "blobs": n,
        "index_objects": len(index.index_ids),
        "load_wall_s": round(wall, 2),
        "load_cpu_s": round(cpu, 2),
        "bytes_per_blob_traced": round(traced / n, 1),
        "peak_bytes_per_blob_traced": round(peak / n, 1),
        "rss_growth_per_blob": round((rss() - r0) / n, 1),
        "peak_rss_mb": peak_rss() // (1024 * 1024),
        "gc_tracked_objects": len(gc.get_objects()),
        "gc_collections_during_load": sum(s["collections"] for s in gc.get_stats()) - collections,
    }


MODES = ("no cache", "cold", "warm")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blobs", type=int, default=1_000_000)
    ap.add_argument("--dir", required=True, help="where the vault is built (reused if it exists)")
    ap.add_argument("--load-only", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = os.path.join(args.dir, f"vault-{args.blobs}")
    if args.load_only:
        print(json.dumps({"mode": args.load_only} | load(path)))
        return 0
    if not os.path.exists(os.path.join(path, "config")):
        t = time.perf_counter()
        build(path, args.blobs)
        print(f"built {path} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    cache = os.path.join(args.dir, f"cache-{args.blobs}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDVAULT_")} | {"COLDVAULT_CACHE_DIR": cache}
    for mode in MODES:
        if mode == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        out = subprocess.run([sys.executable, __file__, "--blobs", str(args.blobs), "--dir", args.dir,
                              "--load-only", mode], check=True, capture_output=True, text=True,
                             env=env | ({"COLDVAULT_NO_CACHE": "1"} if mode == "no cache" else {})).stdout
        print(out.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
