#!/usr/bin/env python3
"""Deterministic benchmark data: the same seed and scale give the same bytes.

Three data sets, each in its own directory under OUT:

    random/  one file of incompressible bytes        (1 GiB x scale)
    text/    one file of text-like compressible data  (1 GiB x scale)
    small/   many small files, 0-16 KiB each          (50,000 x scale files
             in 500 x scale directories, two levels deep)

Only the standard library is used. Random bytes come from SHAKE-256 over
(seed, data set, block number); everything else from `random.Random(seed)`.
The text is built from a pool of a few MiB of words (a fixed, seeded,
Zipf-weighted vocabulary) that is sliced at random offsets and lengths with a
unique marker line between slices, so it compresses like prose (about 3-4x with
zstd) but no content-defined chunk repeats: nothing is trivially deduplicated.

`ensure_small_tree()` writes a tree of the `small` shape with any file count and
largest file size (bench_scale.py's trees of 100,000 and 1,000,000 files).

Next to each data set, OUT/NAME.manifest.json records the seed, scale, file
count and logical size; `ensure()` regenerates a data set only when its
manifest does not match.

    python bench/gen_data.py --out bench/work/data --scale 0.05
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time

from benchlib import GiB, KiB, MiB

GENERATOR_VERSION = 1  # bump when the bytes produced for a (seed, scale) change
DATASETS = ("random", "text", "small")

BIG_FILE_BYTES = 1 * GiB
SMALL_FILES = 50_000
SMALL_DIRS = 500
SMALL_DIRS_PER_PARENT = 25
SMALL_MAX_SIZE = 16 * KiB
SMALL_RANDOM_SHARE = 1 / 3  # the rest of the small files are text

TEXT_POOL_BYTES = 8 * MiB
VOCABULARY = 6000
WRITE_BLOCK = 4 * MiB

# Rough English letter frequencies, so words look (and compress) like words.
LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
LETTER_WEIGHTS = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0,
                  1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]


def random_stream(seed: int, label: str, nbytes: int, block: int = WRITE_BLOCK):
    """Yield `nbytes` pseudo-random bytes in blocks; block i depends only on (seed, label, i)."""
    i = 0
    while nbytes > 0:
        n = min(block, nbytes)
        yield hashlib.shake_256(f"coldvault-bench/{seed}/{label}/{i}".encode()).digest(n)
        nbytes -= n
        i += 1


def text_pool(seed: int, size: int = TEXT_POOL_BYTES) -> bytes:
    """About `size` bytes of word salad from a seeded Zipf-weighted vocabulary."""
    rng = random.Random(f"{seed}/vocabulary")
    words = set()
    while len(words) < VOCABULARY:
        n = min(2 + int(rng.expovariate(0.35)), 14)
        words.add("".join(rng.choices(LETTERS, LETTER_WEIGHTS, k=n)))
    # Frequent words are short, as in real languages; ties broken by the seeded RNG.
    vocab = sorted(sorted(words), key=lambda w: (len(w), rng.random()))
    cum, total = [], 0.0
    for rank in range(1, len(vocab) + 1):
        total += 1.0 / rank ** 1.07
        cum.append(total)
    rng = random.Random(f"{seed}/pool")
    per_line = 12
    nwords = size // 6 + per_line
    picked = rng.choices(vocab, cum_weights=cum, k=nwords)
    lines = []
    for i in range(0, nwords - per_line + 1, per_line):
        line = " ".join(picked[i:i + per_line])
        lines.append(line[0].upper() + line[1:] + (".\n" if i % 5 else ",\n"))
    return "".join(lines).encode()[:size]


def _write_text(path: str, seed: int, nbytes: int, pool: bytes) -> None:
    rng = random.Random(f"{seed}/text")
    limit = len(pool) - 64 * KiB
    buf, buffered, left, part = [], 0, nbytes, 0
    with open(path, "wb") as f:
        while left > 0:
            off = rng.randrange(limit)
            seg = pool[off:off + rng.randrange(4 * KiB, 64 * KiB)]
            marker = f"\n-- part {part} {rng.getrandbits(64):016x} --\n".encode()
            part += 1
            for piece in (seg, marker):
                piece = piece[:left]
                buf.append(piece)
                buffered += len(piece)
                left -= len(piece)
            if buffered >= WRITE_BLOCK or left <= 0:
                f.write(b"".join(buf))
                buf, buffered = [], 0


def _write_random(path: str, seed: int, nbytes: int) -> None:
    with open(path, "wb") as f:
        for block in random_stream(seed, "random", nbytes):
            f.write(block)


def _write_small(root: str, seed: int, nfiles: int, ndirs: int, pool: bytes, max_size: int = SMALL_MAX_SIZE) -> int:
    rng = random.Random(f"{seed}/small")
    dirs = [os.path.join(root, f"d{i // SMALL_DIRS_PER_PARENT:03d}", f"s{i % SMALL_DIRS_PER_PARENT:02d}")
            for i in range(ndirs)]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    limit = len(pool) - max_size
    total = 0
    for i in range(nfiles):
        size = rng.randrange(max_size + 1)
        d = dirs[rng.randrange(ndirs)]
        if rng.random() < SMALL_RANDOM_SHARE:
            name = f"f{i:06d}.bin"
            data = hashlib.shake_256(f"coldvault-bench/{seed}/small/{i}".encode()).digest(size)
        else:
            name = f"f{i:06d}.txt"
            head = f"file {i} {rng.getrandbits(64):016x}\n".encode()
            off = rng.randrange(limit)
            data = (head + pool[off:off + size])[:size]
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        total += size
    return total


def plan(name: str, scale: float) -> dict:
    if name in ("random", "text"):
        return {"files": 1, "bytes": max(1, int(BIG_FILE_BYTES * scale))}
    if name == "small":
        return {"files": max(1, round(SMALL_FILES * scale)), "dirs": max(1, round(SMALL_DIRS * scale))}
    raise ValueError(f"unknown data set {name!r}; one of {', '.join(DATASETS)}")


def manifest_path(out: str, name: str) -> str:
    return os.path.join(out, f"{name}.manifest.json")


def generate(out: str, name: str, scale: float, seed: int) -> dict:
    """(Re)create data set `name` under OUT/NAME and write its manifest."""
    p = plan(name, scale)
    root = os.path.join(out, name)
    remove(out, name)
    os.makedirs(root)
    t0 = time.monotonic()
    pool = text_pool(seed) if name in ("text", "small") else b""
    if name == "random":
        _write_random(os.path.join(root, "random.bin"), seed, p["bytes"])
        logical = p["bytes"]
    elif name == "text":
        _write_text(os.path.join(root, "text.txt"), seed, p["bytes"], pool)
        logical = p["bytes"]
    else:
        logical = _write_small(root, seed, p["files"], p["dirs"], pool)
    man = {
        "name": name, "generator_version": GENERATOR_VERSION, "seed": seed, "scale": scale,
        "path": root, "files": p["files"], "dirs": p.get("dirs", 0), "bytes": logical,
        "generate_seconds": round(time.monotonic() - t0, 2),
    }
    with open(manifest_path(out, name), "w") as f:
        json.dump(man, f, indent=2)
    return man


def ensure(out: str, name: str, scale: float, seed: int) -> tuple[dict, bool]:
    """The manifest of data set `name`, generating it first unless an identical one exists.

    Returns (manifest, generated_now).
    """
    try:
        with open(manifest_path(out, name)) as f:
            man = json.load(f)
        if (man.get("generator_version"), man.get("seed"), man.get("scale")) == (GENERATOR_VERSION, seed, scale) \
                and os.path.isdir(man.get("path", "")):
            return man, False
    except (OSError, ValueError):
        pass
    return generate(out, name, scale, seed), True


def ensure_small_tree(out: str, nfiles: int, max_size: int, seed: int) -> tuple[dict, bool]:
    """A tree shaped like the `small` data set (a third random bytes, two thirds text, 100 files to a
    directory on average, two levels of directories) of exactly `nfiles` files of 0-`max_size` bytes,
    under OUT/small-NFILES-MAXSIZE/; regenerated only when its manifest does not match.

    Returns (manifest, generated_now)."""
    if not 0 < max_size <= TEXT_POOL_BYTES // 2:
        raise ValueError(f"max_size must be between 1 and {TEXT_POOL_BYTES // 2} bytes")
    name = f"small-{nfiles}-{max_size}"
    want = {"generator_version": GENERATOR_VERSION, "seed": seed, "files": nfiles, "max_size": max_size}
    try:
        with open(manifest_path(out, name)) as f:
            man = json.load(f)
        if {k: man.get(k) for k in want} == want and os.path.isdir(man.get("path", "")):
            return man, False
    except (OSError, ValueError):
        pass
    root = os.path.join(out, name)
    remove(out, name)
    os.makedirs(root)
    t0 = time.monotonic()
    ndirs = max(1, round(nfiles / (SMALL_FILES / SMALL_DIRS)))
    logical = _write_small(root, seed, nfiles, ndirs, text_pool(seed), max_size)
    all_dirs = ndirs + -(-ndirs // SMALL_DIRS_PER_PARENT)  # leaf directories and their parents
    man = want | {"name": name, "path": root, "dirs": all_dirs, "bytes": logical,
                  "generate_seconds": round(time.monotonic() - t0, 2)}
    with open(manifest_path(out, name), "w") as f:
        json.dump(man, f, indent=2)
    return man, True


def remove(out: str, name: str) -> None:
    shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    try:
        os.unlink(manifest_path(out, name))
    except FileNotFoundError:
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "work", "data"),
                    help="output directory (default bench/work/data)")
    ap.add_argument("--scale", type=float, default=1.0, help="size factor: 1.0 is 1 GiB / 1 GiB / 50,000 files")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=",".join(DATASETS), help=f"comma-separated subset of {','.join(DATASETS)}")
    ap.add_argument("--force", action="store_true", help="regenerate even if a matching manifest exists")
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be positive")
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in DATASETS:
            ap.error(f"unknown data set {n!r}")
    os.makedirs(args.out, exist_ok=True)
    for n in names:
        man, made = (generate(args.out, n, args.scale, args.seed), True) if args.force else \
            ensure(args.out, n, args.scale, args.seed)
        how = f"generated in {man['generate_seconds']} s" if made else "already there"
        print(f"{n}: {man['files']} files, {man['bytes'] / MiB:.1f} MiB in {man['path']} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
