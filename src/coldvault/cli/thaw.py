"""`coldvault thaw TARGET...`: restore cold packs, saying first what it costs; `coldvault thaw --status`.

A TARGET is one of

    SNAPSHOT                 a snapshot id (a prefix will do), `latest`, a UTC day or a time;
                             a ZFS stream's: it and the chain to its base
    SNAPSHOT:PATH            a file or directory inside a snapshot (a directory: all below it)
    DATASET@SNAP             a ZFS snapshot: every stream of the shortest chain to it
    /path/in/a/mount         a path inside a coldvault mount (files/... or zfs/...); a ZFS
                             stream file or @S.restore/: every stream its receive needs

From the targets come the chunks they need, from the index the data packs
that hold them, and from the store (HEAD, a few at a time) each pack's size,
storage class and restore state. The plan is printed before anything is
asked: packs already readable or already being restored cost nothing more;
the rest make one restore request each, priced per tier from the price table
(coldvault.vault.pricing). `--dry-run` stops there. Looking, asking and the
ready-time estimate are coldvault.vault.thaw's.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time

from coldvault.cli.common import add_filters, money, open_vault, print_json, size, snapshot_filter
from coldvault.errors import UserError
from coldvault.index import tree
from coldvault.mount import targets
from coldvault.store.base import RESTORE_TIERS, ObjectInfo, is_cold_class
from coldvault.vault import pricing, thaw
from coldvault.vault.tiers import effective_tier
from coldvault.vault.lock import read_lock
from coldvault.vault.streams import stream_chunks
from coldvault.vault.vault import Vault
from coldvault.vault.walker import walk

log = logging.getLogger(__name__)


def register(sub, common) -> None:
    p = sub.add_parser(
        "thaw", parents=[common], help="restore cold data packs (Glacier, Deep Archive), with a cost estimate first",
        description="Request readable copies of the cold data packs that TARGETs need. TARGET: a snapshot id "
                    "(a prefix will do), 'latest', a UTC day (2026-11-24) or time (2026-11-24T03:00), SNAPSHOT:PATH, "
                    "DATASET@SNAP (the chain of ZFS streams to it), or a path inside a coldvault mount. A ZFS stream, "
                    "however named, is thawed with every stream its receive needs.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="what to make readable")
    p.add_argument("--tier", choices=RESTORE_TIERS, default="Bulk",
                   help="restore tier (default Bulk; Deep Archive has no Expedited and uses Standard)")
    p.add_argument("--days", type=int, default=7, help="days the restored copies stay readable (default 7)")
    p.add_argument("--dry-run", "-n", action="store_true", help="only print the plan and the estimate")
    p.add_argument("--source", help="pick SNAPSHOT among this source's snapshots")
    add_filters(p)
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


# ---- targets -> chunks (what a target names: coldvault.mount.targets) --------------------


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


def _stream_chunks(vault: Vault, streams) -> set:
    out: set = set()
    for s in streams:
        out.update(stream_chunks(vault, s))
    return out


def _target_chunks(vault: Vault, target: targets.Target) -> set:
    if target.kind == targets.STREAMS:
        return _stream_chunks(vault, target.streams)
    if target.kind == targets.CHANGES:
        return targets.changes_chunks(vault, target)
    return _entry_chunks(vault, target.rec, target.entry)


# ---- the plan ---------------------------------------------------------------------------


def local_delay(vault: Vault) -> float | None:
    """The restore time of a store that simulates its cold tier (a local vault), else None."""
    return vault.store.capabilities().simulated_restore_delay


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
    resolver = targets.Resolver(vault, args.source, where=snapshot_filter(args))
    wanted = [resolver.resolve(t) for t in args.targets]
    packs: set[str] = set()
    for t in wanted:
        t.chunks = _target_chunks(vault, t)
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
    secs = thaw.ready_in(vault.store, by_class, args.tier)
    ready_at = None if secs is None else time.time() + secs
    out = None if args.json or args.quiet else sys.stdout

    if out:
        _print_plan(out, vault, wanted, state, hot, restored, restoring, cold, by_class, ests, chosen, args, prices)

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
            "targets": [{"target": t.text, "what": t.what, "packs": len(t.packs)} for t in wanted],
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


def _status_row(vault: Vault, name: str, info: ObjectInfo | None, logged: thaw.LoggedRestore | None) -> dict:
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
            secs = thaw.ready_in(vault.store, [logged.storage_class], logged.tier)
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
    state, _ = thaw.cold_state_and_missing(vault, names)  # a missing pack has no info: its row says so
    rows = []
    for n in sorted(names):
        row = _status_row(vault, n, state.infos.get(n), logged.get(n))
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
