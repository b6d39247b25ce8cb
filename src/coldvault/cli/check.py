"""`coldvault check [--read-data | --read-data-subset N%] [--json]`: is the vault whole?

Exit 0 when nothing is damaged (leftovers and skipped cold packs are not
damage), 13 when something is (each problem is one line naming the object and
what it costs), 12 when something is of a newer format than this coldvault.
When `coldvault repair index` would help (a damaged index object, or blobs the
snapshots use in no index while some pack is in no index), the error's hint
says so, and those packs are not offered to `prune` as leftovers.
"""

from __future__ import annotations

import argparse

import trio

from coldvault.check import Checker, CheckReport, Problem
from coldvault.cli import progress
from coldvault.cli.common import open_vault, print_json, size
from coldvault.errors import DamagedError, UnsupportedFormatError
from coldvault.vault.lock import read_lock

SHOW_FILES = 5  # paths, snapshots and pack names shown per line; --json lists them all
SHOW_SNAPSHOTS = 3
SHOW_PACKS = 5
PRUNE_HINT = "harmless; 'coldvault prune' removes them"


def _percent(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage like 10%") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: the subset must be more than 0% and at most 100%")
    return value


def register(sub, common) -> None:
    p = sub.add_parser("check", parents=[common], help="verify the vault: its structure, and with --read-data its data")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--read-data", action="store_true",
                   help="download every readable pack and verify every blob in it (cold packs are skipped)")
    g.add_argument("--read-data-subset", type=_percent, metavar="N%",
                   help="the same for a random N%% of the packs (at least one)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=run)


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _path(p: bytes) -> str:
    return p.decode("utf-8", "backslashreplace")


def _snapshot(report: CheckReport, sid: str) -> dict:
    r = report.records[sid]
    return {"id": r.id, "short_id": r.short_id, "source": r.source, "time": r.time_str}


def _files(problem: Problem) -> tuple[list[str], bool]:
    """Distinct affected paths over all snapshots, and whether some were left out."""
    paths = sorted({_path(p) for _, ps in problem.affected.values() for p in ps})
    truncated = any(count > len(ps) for count, ps in problem.affected.values())
    return paths, truncated


def _few(items: list[str], n: int, total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = ", ".join(items[:n])
    return shown + (f" (+{total - min(n, len(items))} more)" if total > min(n, len(items)) else "")


def damage_line(report: CheckReport, problem: Problem) -> str:
    word = "unsupported" if problem.kind == "unsupported" else "damaged"
    line = f"{word}: {problem.object}: {problem.message}"
    if problem.affected:
        files, _ = _files(problem)
        total = max(len(files), max(count for count, _ in problem.affected.values()))
        snaps = [f"{s['short_id']} ({s['source']}, {s['time']})"
                 for s in sorted((_snapshot(report, sid) for sid in problem.affected), key=lambda s: s["time"])]
        line += (f"; affects {_few(files, SHOW_FILES, total)}"
                 f" in snapshot{'s' if len(snaps) > 1 else ''} {_few(snaps, SHOW_SNAPSHOTS)}")
    elif problem.object.startswith(("data/", "trees/")):
        line += "; no snapshot needs the damaged part"
    return line


def as_json(report: CheckReport) -> dict:
    r = report
    damage = []
    for p in r.problems.values():
        files, truncated = _files(p)
        damage.append({
            "object": p.object,
            "kind": p.kind,
            "message": p.message,
            "files": files,
            "files_truncated": truncated,
            "snapshots": [_snapshot(r, sid) for sid in p.affected],
            "affected": [{"snapshot": sid, "count": count, "paths": [_path(x) for x in ps]}
                         for sid, (count, ps) in p.affected.items()],
        })
    return {
        "ok": not r.problems,
        "counts": {
            "snapshots": r.snapshots, "streams": r.streams, "trees": r.trees, "files": r.files,
            "chunk_references": r.chunk_refs, "index_objects": r.index_objects, "blobs_indexed": r.blobs_indexed,
            "packs": r.packs, "pack_bytes": r.pack_bytes,
        },
        "read_data": {
            "mode": r.read_mode, "percent": r.read_percent, "packs_selected": r.packs_selected,
            "packs_read": r.packs_read, "bytes_read": r.bytes_read, "blobs_read": r.blobs_read,
        },
        "damage": damage,
        "repair_index": r.repair_index_helps,
        "leftovers": {
            "unindexed_packs": [{"name": i.name, "size": i.size} for i in r.unindexed_packs],
            "superseded_indexes": r.superseded_indexes,
            "unstored_packs": r.unstored_packs,
            "unused_packs": None if r.unused_packs is None else [
                {"name": i.name, "size": i.size} for i in r.unused_packs],
        },
        "skipped": {
            "cold_packs": [{"name": i.name, "size": i.size, "storage_class": i.storage_class} for i in r.skipped_cold],
            "cold_bytes": sum(i.size for i in r.skipped_cold),
            "metadata_in_cold_packs": r.skipped_meta,
        },
    }


def _print(report: CheckReport, quiet: bool) -> None:
    r = report
    if not quiet:
        streams = f" ({_n(r.streams, 'zfs stream')})" if r.streams else ""
        print(f"checked {_n(r.snapshots, 'snapshot')}{streams}, {_n(r.trees, 'tree')}, {_n(r.files, 'file')}, "
              f"{_n(r.chunk_refs, 'chunk reference')}; {_n(r.index_objects, 'index object')}, "
              f"{_n(r.blobs_indexed, 'blob')} in {_n(r.packs, 'pack')} ({size(r.pack_bytes)})")
        if r.read_mode != "none":
            subset = f" (a random {r.read_percent:g}%: {r.packs_selected})" if r.read_mode == "subset" else ""
            print(f"read {r.packs_read} of {_n(r.packs, 'pack')}{subset}, {size(r.bytes_read)}, "
                  f"{_n(r.blobs_read, 'blob')} opened")
    for p in r.problems.values():
        print(damage_line(r, p))
    if quiet:
        return
    leftovers = (  # (what, how many, bytes or None, names)
        ("in no index, left by an interrupted backup", _n(len(r.unindexed_packs), "pack"),
         sum(i.size for i in r.unindexed_packs), [i.name for i in r.unindexed_packs]),
        ("repeated by a later index", _n(len(r.superseded_indexes), "checkpoint index", "checkpoint indexes"),
         None, r.superseded_indexes),
        ("named by checkpoints only, never stored by an interrupted backup (ignored)",
         _n(len(r.unstored_packs), "pack"), None, r.unstored_packs),
        ("with no blob that a snapshot uses", _n(len(r.unused_packs or ()), "pack"),
         sum(i.size for i in r.unused_packs or ()), [i.name for i in r.unused_packs or ()]),
    )
    for i, (what, count, nbytes, names) in enumerate(leftovers):
        if names:
            amount = f" ({size(nbytes)})" if nbytes is not None else ""
            if i == 0 and r.repair_index_helps:  # they may hold what the snapshots miss: no prune
                print(f"in no index: {count}{amount}: {_few(names, SHOW_PACKS)}; they may hold blobs that "
                      f"snapshots use: run 'coldvault repair index', not 'coldvault prune'")
                continue
            print(f"leftover: {count}{amount} {what}: {_few(names, SHOW_PACKS)}; {PRUNE_HINT}")
    if r.skipped_cold:
        print(f"skipped: {_n(len(r.skipped_cold), 'cold pack')} ({size(sum(i.size for i in r.skipped_cold))}) "
              f"not restored, so not read: {_few([i.name for i in r.skipped_cold], SHOW_PACKS)}; "
              f"restore them with 'coldvault thaw' to check their data too")
    if r.skipped_meta:
        print(f"skipped: {_n(r.skipped_meta, 'tree node or chunk list', 'tree nodes or chunk lists')} "
              f"stored in cold data packs, not walked")
    if not r.problems:
        print("no damage found")


def repair_hint(report: CheckReport) -> str | None:
    """The hint line when `coldvault repair index` would help, else None."""
    if not report.repair_index_helps:
        return None
    why = []
    if report.unreadable_indexes:
        why.append(_n(len(report.unreadable_indexes), "damaged index object"))
    if report.unindexed_packs:
        why.append(_n(len(report.unindexed_packs), "pack") + " in no index")
    return f"'coldvault repair index' rebuilds the index from the packs' own headers ({'; '.join(why)})"


def run(args) -> int:
    fraction = 1.0 if args.read_data else (args.read_data_subset / 100 if args.read_data_subset else None)
    vault = open_vault(args, load_index=False)  # the checker reads every index object itself
    checker = Checker(vault, fraction)

    async def check():
        return await trio.to_thread.run_sync(checker.run, abandon_on_cancel=True)

    with read_lock(vault, "check"):  # a prune meanwhile would look like damage
        report = trio.run(progress.run_with_progress, check, checker.progress)
    if args.json:
        print_json(as_json(report))
    else:
        _print(report, args.quiet)
    damaged = [p for p in report.problems.values() if p.kind == "damaged"]
    if damaged:
        raise DamagedError(f"the vault is damaged: {len(damaged)} damaged object{'s' if len(damaged) > 1 else ''}"
                           f" (listed {'above' if not args.json else 'in the report'})",
                           hint=repair_hint(report))
    if report.unsupported:
        raise UnsupportedFormatError("some objects are of a newer format than this coldvault reads",
                                     hint="upgrade coldvault")
    return 0
