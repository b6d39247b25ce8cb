"""`coldvault thaw TARGET...`: restore cold packs, saying first what it costs; `coldvault thaw --status`.

A TARGET is one of

    SNAPSHOT                 a snapshot id (a prefix will do), or `latest` (with --source)
    SNAPSHOT:PATH            a file or directory inside a snapshot (a directory: all below it)
    DATASET@SNAP             a ZFS snapshot: every stream of the shortest chain to it
    /path/in/a/mount         a path inside a coldvault mount (files/... or zfs/...)

From the targets come the chunks they need, from the index the data packs
that hold them, and from the store (HEAD, a few at a time) each pack's size,
storage class and restore state. The plan is printed before anything is
asked: packs already readable or already being restored cost nothing more;
the rest make one restore request each, priced per tier from the price table
(coldvault.store.pricing). `--dry-run` stops there.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field

from coldvault.cli.common import money, open_vault, print_json, size
from coldvault.errors import DamagedError, UserError
from coldvault.index import tree
from coldvault.store import pricing
from coldvault.store.base import RESTORE_TIERS, ObjectInfo, is_cold_class
from coldvault.store.tiers import effective_tier, restore_time
from coldvault.vault import thaw
from coldvault.vault.lock import read_lock
from coldvault.vault.streams import stream_chunks
from coldvault.vault.vault import Vault
from coldvault.vault.walker import walk

log = logging.getLogger(__name__)

MOUNT_FSTYPE = "fuse.coldvault"
HEX = set("0123456789abcdefABCDEF")


def register(sub, common) -> None:
    p = sub.add_parser(
        "thaw", parents=[common], help="restore cold data packs (Glacier, Deep Archive), with a cost estimate first",
        description="Request readable copies of the cold data packs that TARGETs need. TARGET: a snapshot id "
                    "(or 'latest' with --source), SNAPSHOT:PATH, DATASET@SNAP (the chain of ZFS streams to it), "
                    "or a path inside a coldvault mount.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="what to make readable")
    p.add_argument("--tier", choices=RESTORE_TIERS, default="Bulk",
                   help="restore tier (default Bulk; Deep Archive has no Expedited and uses Standard)")
    p.add_argument("--days", type=int, default=7, help="days the restored copies stay readable (default 7)")
    p.add_argument("--dry-run", "-n", action="store_true", help="only print the plan and the estimate")
    p.add_argument("--source", help="with 'latest': the newest snapshot of this source")
    p.add_argument("--prices", metavar="FILE", help="JSON price table overriding the built-in one (env COLDVAULT_PRICES)")
    p.add_argument("--status", action="store_true", help="list pending and ready restores instead")
    p.add_argument("--all", action="store_true", help="with --status: look at every cold pack in the store, "
                                                      "not only those this machine asked for")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


# ---- small formatting helpers --------------------------------------------------------


def when(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def when_text(t: float | None) -> str:
    return "?" if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


# ---- targets -> chunks ---------------------------------------------------------------


@dataclass
class Target:
    text: str  # as given
    what: str  # what it was resolved to, for people
    chunks: set = field(default_factory=set)
    packs: set = field(default_factory=set)


def _tree_chunks(vault: Vault, node_id, out: set) -> None:
    for _, e in walk(vault, node_id, seen=set()):  # a subtree in two places adds nothing new
        if e.type == tree.FILE:
            out.update(e.chunks)


def _entry_chunks(vault: Vault, rec, entry) -> set:
    out: set = set()
    if entry is None:
        _tree_chunks(vault, rec.tree, out)
    elif entry.type == tree.FILE:
        out.update(entry.chunks)
    elif entry.type == tree.DIR:
        _tree_chunks(vault, entry.tree, out)
    return out


def _snapshot_label(rec) -> str:
    return f"snapshot {rec.short_id} ({rec.kind}, {rec.source}, {rec.time_str})"


def _stream_chunks(vault: Vault, streams) -> set:
    out: set = set()
    for s in streams:
        out.update(stream_chunks(vault, s))
    return out


class Resolver:
    """Turns TARGETs into the chunks they need, reading only hot objects."""

    def __init__(self, vault: Vault, source: str | None):
        self.vault = vault
        self.source = source
        self._records = None

    @property
    def records(self):
        if self._records is None:
            self._records = self.vault.snapshots()
        return self._records

    def resolve(self, text: str) -> Target:
        mount = self._mount_of(text)
        if mount is not None:
            return self._mount_path(text, *mount)
        if text.startswith("/"):
            raise UserError(f"{text} is not inside a coldvault mount",
                            hint="give a path inside a mounted vault, or SNAPSHOT:PATH")
        spec, colon, path = text.partition(":")
        if colon and (spec == "latest" or (spec and set(spec) <= HEX)):
            return self._snapshot_path(text, spec, path)
        if "@" in text:
            return self._zfs_snapshot(text)
        if text == "latest" or (text and set(text) <= HEX):
            return self._snapshot_path(text, text, None)
        raise UserError(
            f"cannot tell what {text!r} is",
            hint="a TARGET is a snapshot id, SNAPSHOT:PATH, DATASET@SNAP or a path inside a coldvault mount",
        )

    # -- snapshots and paths in them --

    def _snapshot_path(self, text: str, spec: str, path: str | None) -> Target:
        from coldvault.restore.dirrestore import resolve

        rec = self.vault.find_snapshot(spec, self.source, records=self.records)
        if rec.kind == "zfs":
            if path:
                raise UserError(f"snapshot {rec.short_id} is a ZFS stream: it has no paths",
                                hint="thaw the stream by its id, or DATASET@SNAP for its whole chain")
            from coldvault.zfs.chain import Stream

            s = Stream(rec)
            return Target(text, f"ZFS stream {s.dataset}/{s.file_name}", _stream_chunks(self.vault, [s]))
        entry = resolve(self.vault, rec, path) if path else None
        label = _snapshot_label(rec)
        if path:
            kind = "directory" if entry is not None and entry.type == tree.DIR else "file"
            label = f"{kind} {path.strip('/')} in {label}"
        return Target(text, label, _entry_chunks(self.vault, rec, entry))

    def _zfs_snapshot(self, text: str) -> Target:
        from coldvault.restore.zfsrestore import find_stream
        from coldvault.zfs.chain import shortest_chain, streams_by_dataset
        from coldvault.zfs.commands import split_snapshot

        dataset, snap = split_snapshot(text)
        streams = streams_by_dataset(self.records).get(dataset)
        if not streams:
            raise UserError(f"there are no ZFS streams of {dataset} in the vault",
                            hint="list them with 'coldvault snapshots'")
        want = find_stream(streams, snap, dataset)
        chain = shortest_chain(streams, want.guid, None)
        if chain is None:
            raise DamagedError(f"no chain of streams in the vault leads to {dataset}@{snap}",
                               hint="a stream it needs was removed")
        names = ", ".join(s.file_name for s in chain)
        return Target(text, f"ZFS chain of {len(chain)} stream(s) to {dataset}@{snap}: {names}",
                      _stream_chunks(self.vault, chain))

    # -- paths inside a mount --

    @staticmethod
    def _mounts() -> list[str]:
        """Mount points of coldvault mounts, from /proc/self/mounts."""
        try:
            with open("/proc/self/mounts", "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            fields = line.split(b" ")
            if len(fields) >= 3 and fields[2] == MOUNT_FSTYPE.encode():
                # Space, tab, newline and backslash in the mount point are written as octal escapes.
                mp = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[1])
                out.append(os.fsdecode(mp))
        return out

    def _mount_of(self, text: str) -> tuple[str, list[str]] | None:
        """(mount point, path components below it) when `text` names a path in a coldvault mount."""
        if not (text.startswith(("/", "./", "../")) or os.path.lexists(text)):
            return None
        mounts = sorted(self._mounts(), key=len, reverse=True)
        for candidate in (os.path.abspath(text), os.path.realpath(text)) if mounts else ():
            for mp in mounts:
                if candidate == mp or candidate.startswith(mp.rstrip("/") + "/"):
                    rel = candidate[len(mp):]
                    return mp, [p for p in rel.split("/") if p and p != "."]
        return None

    def _mount_path(self, text: str, mountpoint: str, parts: list[str]) -> Target:
        if not parts:
            raise UserError(f"{text} is the whole mount", hint="name a snapshot, a file or a stream inside it")
        if parts[0] == "files":
            return self._mount_files(text, parts[1:])
        if parts[0] == "zfs":
            return self._mount_zfs(text, parts[1:])
        raise UserError(f"{text}: there is no {parts[0]} in a coldvault mount (only files/ and zfs/)")

    def _mount_files(self, text: str, parts: list[str]) -> Target:
        from coldvault.mount.views import group_sources
        from coldvault.restore.dirrestore import resolve

        if len(parts) < 2:
            raise UserError(f"{text} holds whole sources", hint="name a snapshot, a date or a path inside one")
        view = group_sources(self.records).get(parts[0])
        if view is None or not view.snapshots:
            raise UserError(f"{text}: this vault has no source {parts[0]!r}",
                            hint="is the mount of another vault? pass the same --repo as the mount")
        kind, rest = parts[1], parts[2:]
        if kind == "latest":
            rec = view.snapshots[-1]
        elif kind in ("snapshots", "dates", "changes"):
            if not rest:
                raise UserError(f"{text} holds every {kind[:-1]} of {parts[0]}", hint="name one of them")
            if kind == "snapshots":
                rec = dict(view.named()).get(rest[0])
            else:
                days = view.days()
                if kind == "changes" and rest[0] in days:
                    return self._mount_changes(text, view, rest[0], rest[1:])
                rec = days[rest[0]][-1] if rest[0] in days else None
            if rec is None:
                raise UserError(f"{text}: no {rest[0]} in {kind}/ of {parts[0]}")
            rest = rest[1:]
        else:
            raise UserError(f"{text}: no {kind} in files/{parts[0]}/ (latest, snapshots, dates, changes)")
        path = "/".join(rest)
        entry = resolve(self.vault, rec, path) if path else None
        label = _snapshot_label(rec) if not path else f"{path} in {_snapshot_label(rec)}"
        return Target(text, label, _entry_chunks(self.vault, rec, entry))

    def _mount_changes(self, text: str, view, day: str, rest: list[str]) -> Target:
        """changes/<day>/...: what the mount shows there, merged from the day's snapshots."""
        from coldvault.mount.views import merge_changes

        pairs = [(r.tree, p.tree if p is not None else None) for r, p in view.day_pairs(day)]
        entry = None
        for i, name in enumerate(rest):
            if entry is not None and entry.type != tree.DIR:
                raise UserError(f"{text}: {'/'.join(rest[:i])} is not a directory")
            found = [(e, sub) for e, sub in merge_changes(pairs, self.vault.load_tree) if e.name == os.fsencode(name)]
            if not found:
                raise UserError(f"{text}: no {'/'.join(rest[:i + 1])} in changes/{day}")
            entry, pairs = found[0]
        chunks: set = set()
        if entry is not None and entry.type == tree.FILE:
            chunks.update(entry.chunks)
        elif entry is None or entry.type == tree.DIR:
            self._changes_chunks(pairs, chunks)
        what = "/".join(rest) or "everything"
        return Target(text, f"{what} in changes/{day} of {view.name}", chunks)

    def _changes_chunks(self, pairs, out: set) -> None:
        from coldvault.mount.views import merge_changes

        for e, sub in merge_changes(pairs, self.vault.load_tree):
            if e.type == tree.FILE:
                out.update(e.chunks)
            elif e.type == tree.DIR:
                self._changes_chunks(sub, out)

    def _mount_zfs(self, text: str, parts: list[str]) -> Target:
        from coldvault.zfs.chain import shortest_chain, step_names, streams_by_dataset

        at = next((i for i, p in enumerate(parts) if p.startswith("@")), None)
        if at is None:
            raise UserError(f"{text} is a dataset directory", hint="name a stream (@S.zfs) or a chain (@S.restore)")
        dataset = "/".join(parts[:at])
        streams = streams_by_dataset(self.records).get(dataset, [])
        name, rest = parts[at], parts[at + 1:]
        if name.endswith(".zfs") and not rest:
            s = next((s for s in streams if s.file_name == name), None)
            if s is None:
                raise UserError(f"{text}: no stream {name} of {dataset} in this vault")
            return Target(text, f"ZFS stream {dataset}/{name}", _stream_chunks(self.vault, [s]))
        if name.endswith(".restore"):
            snap = name[1:-len(".restore")]
            want = next((s for s in streams if s.snapshot == snap and shortest_chain(streams, s.guid) is not None), None)
            if want is None:
                raise UserError(f"{text}: no chain to {dataset}@{snap} in this vault")
            chain = shortest_chain(streams, want.guid)
            if rest:
                steps = dict(zip(step_names(chain), chain))
                if len(rest) > 1 or rest[0] not in steps:
                    raise UserError(f"{text}: no {'/'.join(rest)} in {name}")
                chain = [steps[rest[0]]]
                return Target(text, f"ZFS stream {dataset}/{chain[0].file_name}", _stream_chunks(self.vault, chain))
            names = ", ".join(s.file_name for s in chain)
            return Target(text, f"ZFS chain of {len(chain)} stream(s) to {dataset}@{snap}: {names}",
                          _stream_chunks(self.vault, chain))
        raise UserError(f"{text}: not a stream (@S.zfs, @B..@S.zfs) or a chain (@S.restore/)")


# ---- the plan ---------------------------------------------------------------------------


def local_delay(vault: Vault) -> float | None:
    """The simulated restore time of a local store, if that is what the vault is on."""
    return getattr(getattr(vault.store, "inner", vault.store), "restore_delay", None)


def ready_time(vault: Vault, classes, tier: str, start: float) -> tuple[float | None, float | None]:
    """(typical seconds until readable, the time that makes) for the slowest class."""
    delay = local_delay(vault)
    if delay is not None:
        return delay, start + delay
    secs = [s for s in (restore_time(c, tier) for c in classes) if s is not None]
    if not secs:
        return None, None
    return max(secs), start + max(secs)


def _group(infos: list[ObjectInfo]) -> dict[str, pricing.ClassTotals]:
    out: dict[str, pricing.ClassTotals] = {}
    for i in infos:
        t = out.setdefault(i.storage_class, pricing.ClassTotals())
        t.objects += 1
        t.bytes += i.size
    return out


def _estimate_json(e: pricing.TierEstimate, chosen: str) -> dict:
    return {"tier": e.tier, "chosen": e.tier == chosen, "requests": e.objects, "bytes": e.bytes,
            "request_cost": e.request_cost, "retrieval_cost": e.retrieval_cost, "copy_cost": e.copy_cost,
            "total": e.total, "typical_seconds": e.seconds, "effective_tiers": e.effective}


def run_thaw(args) -> int:
    if not args.targets:
        raise UserError("name what to thaw", hint="coldvault thaw SNAPSHOT[:PATH] | DATASET@SNAP | MOUNTED/PATH, "
                                                  "or coldvault thaw --status")
    if args.all:
        raise UserError("--all goes with --status")
    if not 1 <= args.days <= 3650:
        raise UserError("--days must be between 1 and 3650")
    prices = pricing.load(args.prices)
    vault = open_vault(args)
    with read_lock(vault, "thaw"):  # prune deletes no pack this plans for or asks to restore
        return _plan_and_request(args, vault, prices)


def _plan_and_request(args, vault: Vault, prices) -> int:
    resolver = Resolver(vault, args.source)
    targets = [resolver.resolve(t) for t in args.targets]
    packs: set[str] = set()
    for t in targets:
        t.packs = thaw.packs_for_chunks(vault, t.chunks)
        packs |= t.packs
    state = thaw.cold_state(vault, packs)
    hot = [n for n in state.readable if not state.infos[n].cold]
    restored = [n for n in state.readable if state.infos[n].cold]
    restoring, cold = state.restoring, state.cold
    by_class = _group([state.infos[n] for n in cold])
    ests = pricing.estimates(prices, by_class, args.days) if cold else []
    # The tier shown as chosen: the one asked for, or what the classes really use instead.
    chosen = args.tier if any(e.tier == args.tier for e in ests) else effective_tier("DEEP_ARCHIVE", args.tier)
    now = time.time()
    secs, ready_at = ready_time(vault, by_class, args.tier, now)
    out = None if args.json or args.quiet else sys.stdout

    if out:
        _print_plan(out, vault, targets, state, hot, restored, restoring, cold, by_class, ests, chosen, args, prices)

    asked: list[str] = []
    if cold and not args.dry_run:
        asked = thaw.request(vault, state, args.tier, args.days, by="thaw")
        if out:
            late = len(cold) - len(asked)
            extra = f" ({late} had been asked for meanwhile)" if late else ""
            print(f"requested the restore of {len(asked)} pack(s), {size(state.bytes_of(asked))}, at tier "
                  f"{chosen}, readable for {args.days} days{extra}", file=out)
            if ready_at is not None:
                how = "the local store simulates" if local_delay(vault) is not None else "typically"
                print(f"they should be readable by {when_text(ready_at)} ({how} {duration(secs)}); "
                      "see 'coldvault thaw --status'", file=out)
    elif out and args.dry_run and cold:
        print("dry run: nothing was requested", file=out)

    if args.json:
        print_json({
            "targets": [{"target": t.text, "what": t.what, "packs": len(t.packs)} for t in targets],
            "packs": len(packs),
            "bytes": state.bytes_of(packs),
            "readable": {"packs": len(hot) + len(restored), "bytes": state.bytes_of(hot + restored),
                         "hot": len(hot), "restored": len(restored)},
            "restoring": {"packs": len(restoring), "bytes": state.bytes_of(restoring), "names": restoring},
            "to_restore": {
                "requests": len(cold), "bytes": state.bytes_of(cold), "names": cold,
                "by_class": {c: {"packs": t.objects, "bytes": t.bytes} for c, t in sorted(by_class.items())},
            },
            "tier": args.tier, "chosen_tier": chosen if cold else None, "days": args.days,
            "estimates": [_estimate_json(e, chosen) for e in ests],
            "prices": {"currency": prices.currency, "basis": prices.basis, "source": prices.source},
            "dry_run": args.dry_run,
            "requested": asked,
            "ready_by": when(ready_at) if cold and not args.dry_run else None,
            "typical_seconds": secs if cold else None,
        })
    return 0


def _print_plan(out, vault, targets, state, hot, restored, restoring, cold, by_class, ests, chosen, args, prices):
    p = lambda *a: print(*a, file=out)  # noqa: E731
    for t in targets:
        p(f"{t.text}: {t.what}: {len(t.packs)} data pack(s)")
    total = sorted(state.infos)
    p(f"needed: {len(total)} data pack(s), {size(state.bytes_of(total))}")
    if hot:
        p(f"  readable now (hot):            {len(hot):>6} pack(s), {size(state.bytes_of(hot))}")
    if restored:
        until = [state.infos[n].restore.expiry for n in restored if state.infos[n].restore.expiry]
        tail = f" (first expiry {when_text(min(until))})" if until else ""
        p(f"  already restored:              {len(restored):>6} pack(s), {size(state.bytes_of(restored))}{tail}")
    if restoring:
        p(f"  already being restored:        {len(restoring):>6} pack(s), {size(state.bytes_of(restoring))}"
          " (no new request, no cost)")
    if not cold:
        p("nothing to request: every pack needed is readable or already being restored")
        return
    classes = ", ".join(f"{t.objects} in {c}" for c, t in sorted(by_class.items()))
    p(f"  to restore:                    {len(cold):>6} pack(s), {size(state.bytes_of(cold))} ({classes})")
    p(f"  -> {len(cold)} restore request(s)")
    p("")
    p(f"estimated cost in {prices.currency}, keeping the restored copies {args.days} days ({prices.basis}):")
    p(f"    {'tier':<10} {'requests':>10} {'retrieval':>10} {'copy':>10} {'total':>10}  typical time")
    for e in ests:
        mark = "*" if e.tier == chosen else " "
        note = ""
        if e.substituted:
            note = f"  ({', '.join(e.substituted)}: {e.effective[e.substituted[0]]}, no {e.tier})"
        p(f"  {mark} {e.tier:<10} {money(e.request_cost, prices.currency):>10} "
          f"{money(e.retrieval_cost, prices.currency):>10} {money(e.copy_cost, prices.currency):>10} "
          f"{money(e.total, prices.currency):>10}  {duration(e.seconds)}{note}")
    if "Expedited" not in {e.tier for e in ests}:
        p("    (no Expedited tier: Deep Archive offers Bulk and Standard only)")
    if chosen != args.tier:
        p(f"  * {args.tier} is not offered for {', '.join(sorted(by_class))}: {chosen} is used instead")
    delay = local_delay(vault)
    if delay is not None:
        p(f"  (a local vault: its simulated cold tier makes copies readable after {delay:g} s, and costs nothing)")


# ---- --status ---------------------------------------------------------------------------


def _status_row(name: str, info: ObjectInfo | None, logged: thaw.LoggedRestore | None) -> dict:
    row = {"pack": name, "storage_class": None, "tier": None, "requested_at": None, "requested_by": None,
           "size": None, "state": None, "expiry": None, "expected_ready": None}
    if logged is not None:
        row.update(storage_class=logged.storage_class, tier=logged.tier, requested_at=when(logged.requested_at),
                   requested_by=logged.by, size=logged.size)
    if info is None:
        row["state"] = "missing"
        return row
    row.update(storage_class=info.storage_class, size=info.size)
    if info.restore.tier:
        row["tier"] = info.restore.tier
    r = info.restore
    if not info.cold:
        row["state"] = "hot"
    elif r.status == "in-progress":
        row["state"] = "in-progress"
        ready = r.ready_at
        if ready is None and logged is not None:
            secs = restore_time(logged.storage_class, logged.tier)
            ready = logged.requested_at + secs if secs is not None else None
        row["expected_ready"] = when(ready)
    elif r.status == "restored":
        row["state"] = "ready"
        row["expiry"] = when(r.expiry)
    else:
        row["state"] = "expired" if logged is not None else "cold"
    return row


def run_status(args) -> int:
    if args.targets:
        raise UserError("--status takes no TARGET")
    vault = open_vault(args, load_index=False)
    logged = thaw.read_restore_log(vault)
    names = set(logged)
    others = 0
    if args.all:
        for o in vault.store.list("data/"):
            if is_cold_class(o.storage_class):
                names.add(o.name)
    infos: dict[str, ObjectInfo | None] = {}
    if names:
        from concurrent.futures import ThreadPoolExecutor

        from coldvault.store.base import NotFoundError

        def head(n):
            try:
                return n, vault.store.head(n)
            except NotFoundError:
                return n, None

        with ThreadPoolExecutor(min(thaw.PARALLEL_HEADS, len(names))) as pool:
            infos = dict(pool.map(head, sorted(names)))
    rows = []
    for n in sorted(names):
        row = _status_row(n, infos[n], logged.get(n))
        if n not in logged and row["state"] == "cold":
            others += 1  # --all: a cold pack nobody asked for
            continue
        rows.append(row)
    rows.sort(key=lambda r: (r["requested_at"] or "", r["pack"]))
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in ("in-progress", "ready", "expired", "missing", "hot")}
    if args.json:
        print_json({"restores": rows, "counts": counts, "cold_not_requested": others if args.all else None,
                    "log": thaw.restore_log_path(vault)})
        return 0
    if args.quiet:
        return 0
    if not rows:
        where = "in the store" if args.all else f"in {thaw.restore_log_path(vault)}"
        print(f"no restores {where}" + ("" if args.all else " (add --all to look at every cold pack in the store)"))
    else:
        print(f"{'pack':<40} {'class':<12} {'tier':<9} {'requested':<20} state")
        for r in rows:
            pack = r["pack"].rsplit("/", 1)[-1]
            req = r["requested_at"] or "-"
            state = r["state"]
            if state == "ready":
                state = f"ready until {r['expiry']}" if r["expiry"] else "ready"
            elif state == "in-progress" and r["expected_ready"]:
                state = f"in-progress (expected by {r['expected_ready']})"
            elif state == "missing":
                state = "missing from the store"
            print(f"{pack:<40} {r['storage_class'] or '-':<12} {r['tier'] or '-':<9} {req:<20} {state}")
        summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        print(f"{len(rows)} restore(s): {summary}")
    if args.all and others:
        print(f"{others} other cold pack(s) in the store are not restored")
    return 0


def run(args) -> int:
    return run_status(args) if args.status else run_thaw(args)
