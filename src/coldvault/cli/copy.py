"""`coldvault copy --to URL [SNAPSHOT...]`: copy snapshots into another vault.

As restic's `copy`, with the other side being the destination: the vault of
--repo is the source, --to names the destination, which must exist (made by
`coldvault init`, with its own password and storage classes, e.g. DEEP_ARCHIVE
data) and has its own password (--to-password-file, --to-password-command, or
COLDVAULT_TO_PASSWORD_FILE / _COMMAND / COLDVAULT_TO_PASSWORD, else a prompt).
What is copied and how: coldvault.uploader.copy.
"""

from __future__ import annotations

import contextlib
import os
import sys

import trio

from coldvault.cli import progress
from coldvault.cli.common import (SNAPSHOT_HELP, add_filters, open_vault, password_from_command, password_from_file,
                                  print_json, repo_url, size, snapshot_filter)
from coldvault.errors import BadPasswordError, ColdDataError, NoVaultError, UserError
from coldvault.store.url import open_store
from coldvault.uploader import copy
from coldvault.vault import Vault
from coldvault.vault.lock import read_lock, source_lock

TO_PASSWORD_ENV = ("COLDVAULT_TO_PASSWORD_FILE", "COLDVAULT_TO_PASSWORD_COMMAND", "COLDVAULT_TO_PASSWORD")


def register(sub, common) -> None:
    p = sub.add_parser(
        "copy", parents=[common], help="copy snapshots into another vault (e.g. local to S3 Deep Archive)",
        description="Copy snapshots of the vault (--repo) into another vault (--to), storing only what it lacks. "
                    "Without SNAPSHOT: every snapshot (that --source, --tag, --host and --path select). A snapshot "
                    "the destination holds already (a copy of it) is skipped, so a second run copies nothing. The "
                    "destination must exist ('coldvault init --repo URL'); its own password, storage classes and "
                    "pack sizes apply. Source data in a cold tier must be thawed first: the copy says which.")
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help=SNAPSHOT_HELP + " (default: all)")
    p.add_argument("--to", metavar="URL", help="the destination vault: a path, file:///path or s3://bucket/prefix "
                                               "(env COLDVAULT_TO_REPO)")
    p.add_argument("--to-endpoint-url", metavar="URL",
                   help="S3 endpoint of the destination (default: --endpoint-url's, else COLDVAULT_S3_ENDPOINT)")
    p.add_argument("--to-password-file", metavar="FILE",
                   help="file holding the destination's password (env COLDVAULT_TO_PASSWORD_FILE)")
    p.add_argument("--to-password-command", metavar="CMD",
                   help="shell command printing the destination's password (env COLDVAULT_TO_PASSWORD_COMMAND)")
    p.add_argument("--source", help="only snapshots of this source (and SNAPSHOT picked among them)")
    add_filters(p)
    p.add_argument("--dry-run", "-n", action="store_true",
                   help="say what would be copied and whether the source data is readable; write nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


# ---- the destination's password ---------------------------------------------------------


def password_configured(args) -> bool:
    return bool(args.to_password_file or args.to_password_command or any(os.environ.get(v) for v in TO_PASSWORD_ENV))


def destination_password(args) -> bytes:
    """The same sources as the vault's own password (cli.common.read_password), under TO names."""
    path = args.to_password_file or os.environ.get("COLDVAULT_TO_PASSWORD_FILE")
    if path:
        return password_from_file(path, "the destination's ")
    cmd = args.to_password_command or os.environ.get("COLDVAULT_TO_PASSWORD_COMMAND")
    if cmd:
        return password_from_command(cmd, "the destination's ")
    if os.environ.get("COLDVAULT_TO_PASSWORD"):
        return os.environ["COLDVAULT_TO_PASSWORD"].encode()
    if not sys.stdin.isatty():
        raise BadPasswordError(
            f"the destination vault {args.to} needs a password and there is no terminal to ask for it",
            hint="give --to-password-file FILE or --to-password-command CMD (or COLDVAULT_TO_PASSWORD_FILE)")
    import getpass

    pw = getpass.getpass(f"password of the destination vault {args.to}: ").encode()
    if not pw:
        raise BadPasswordError("empty password")
    return pw


def open_destination(args, src: Vault) -> Vault:
    store = open_store(args.to, endpoint_url=args.to_endpoint_url or getattr(args, "endpoint_url", None))
    try:
        dst = Vault.open(store, lambda: destination_password(args))
    except NoVaultError:
        raise NoVaultError(f"no vault at {args.to} to copy into (no config object)",
                           hint=f"create it first with 'coldvault init --repo {args.to}' (its own password; "
                                "--data-storage-class DEEP_ARCHIVE for Glacier Deep Archive)") from None
    except BadPasswordError as exc:
        if not exc.message.startswith("wrong password"):
            raise
        raise BadPasswordError(f"wrong password for the destination vault at {args.to}",
                               hint="its password comes from --to-password-file, --to-password-command or "
                                    "COLDVAULT_TO_PASSWORD_FILE / _COMMAND / COLDVAULT_TO_PASSWORD") from None
    if not dst.config.encrypted and password_configured(args):
        raise BadPasswordError(f"the destination vault at {args.to} is not encrypted, but a password is "
                               "configured for it; refusing",
                               hint="if it really is an unencrypted vault, give no destination password")
    if dst.config.vault_id == src.config.vault_id:
        raise UserError(f"--to {args.to} is the vault being copied from ({repo_url(args)})")
    return dst


# ---- the command -------------------------------------------------------------------------


def _select(args, vault: Vault, records):
    where = snapshot_filter(args)
    if args.snapshots:
        picked = {}
        for spec in args.snapshots:
            rec = vault.find_snapshot(spec, args.source, records, where)
            picked[rec.id] = rec
        return list(picked.values())
    recs = [r for r in records if (args.source is None or r.source == args.source) and (not where or where(r))]
    if not recs:
        what = (f" of source {args.source!r}" if args.source else "") + (where.describe() if where else "")
        raise UserError(f"there are no snapshots{what} in the vault at {repo_url(args)}",
                        hint="list them with 'coldvault snapshots'")
    return recs


def _line(rec) -> str:
    return f"{rec.short_id} ({rec.source} {rec.time_str})"


def _cold_error(args, cold: copy.Unreadable) -> ColdDataError:
    names = ", ".join(_line(r) for r in cold.snapshots[:5])
    if len(cold.snapshots) > 5:
        names += f" and {len(cold.snapshots) - 5} more"
    being = ""
    if len(cold.restoring) == len(cold.packs):
        being = ", all of them being restored already"
    elif cold.restoring:
        being = f", {len(cold.restoring)} of them being restored already"
    repo = f" --repo {args.repo}" if getattr(args, "repo", None) else ""
    return ColdDataError(
        f"the copy needs {len(cold.packs)} data pack(s) ({size(cold.size)}) of the source vault that are in a cold "
        f"tier{being}, for snapshot(s) {names}; nothing was copied", cold.packs,
        hint=f"thaw them first with 'coldvault thaw{repo} {' '.join(r.short_id for r in cold.snapshots)}', "
             "then copy again when they are ready (see 'coldvault thaw --status')")


def run(args) -> int:
    args.to = args.to or os.environ.get("COLDVAULT_TO_REPO")
    if not args.to:
        raise UserError("no destination vault given", hint="pass --to URL or set COLDVAULT_TO_REPO")
    src = open_vault(args)
    dst = open_destination(args, src)
    with read_lock(src, f"copy --to {args.to}"):
        records = src.snapshots()
        selected = _select(args, src, records)
        plan = copy.plan(records, selected, dst.snapshots())
        copy.plan_reads(src, plan)
        cold = copy.unreadable(src, plan)
        if args.dry_run:
            return _report_plan(args, plan, cold)
        if cold is not None:
            raise _cold_error(args, cold)
        done = _copy_all(args, src, dst, plan, records)
    return _report(args, plan, done)


def _copy_all(args, src: Vault, dst: Vault, plan: copy.Plan, records) -> list[copy.Copied]:
    src_by_id = {r.id: r for r in records}
    done: list[copy.Copied] = []
    state = {"now": ""}
    memo = copy.new_memo()
    with contextlib.ExitStack() as locks:
        # A backup's lock per source on the destination: no second writer of the source, no prune meanwhile.
        for source in sorted({r.source for r in plan.todo}):
            locks.enter_context(source_lock(dst, source, f"copy {source}"))
        dst.load_index()  # only now: a prune that held the vault has finished
        # The destination's records again, under the locks: a reference forgotten (and pruned)
        # since the plan must not be used.
        by_key = {copy.copy_key(d): d for d in dst.snapshots()}
        for rec in plan.todo:  # oldest first: a reference is copied before the snapshots that use it
            if copy.copy_key(rec) in by_key:  # copied by another run since the plan
                plan.present.append((rec, by_key[copy.copy_key(rec)]))
                continue
            ref = plan.refs.get(rec.id)
            ref_dst = by_key.get(copy.copy_key(ref)) if ref is not None else None
            parent = src_by_id.get(rec.parent) if rec.parent else None
            parent_dst = by_key.get(copy.copy_key(parent)) if parent is not None else None
            state["now"] = _line(rec)
            result = trio.run(progress.run_with_progress,
                              lambda: copy.copy_snapshot(src, dst, rec, ref if ref_dst else None, ref_dst,
                                                         parent_dst.id if parent_dst else None, memo),
                              lambda: f"copying {state['now']}")
            by_key[copy.copy_key(rec)] = result.copy
            done.append(result)
            if not args.json and not args.quiet:
                s = result.summary
                print(f"snapshot {_line(rec)} copied as {result.copy.short_id}: {size(s['bytes_read'])} read, "
                      f"{size(s['bytes_new'])} new ({size(s['bytes_uploaded'])} stored in {s['packs']} packs)")
    return done


def _report(args, plan: copy.Plan, done: list[copy.Copied]) -> int:
    if args.json:
        print_json({
            "copied": [{"source_snapshot": c.source.id, "snapshot": c.copy.id, "source": c.source.source,
                        "time": c.source.time_str, **c.summary} for c in done],
            "present": [{"source_snapshot": s.id, "snapshot": d.id, "source": s.source, "time": s.time_str}
                        for s, d in plan.present],
        })
    elif not args.quiet:
        for s, d in plan.present:
            print(f"snapshot {_line(s)} is in {args.to} already (as {d.short_id})")
        print(f"{len(done)} snapshot(s) copied to {args.to}, {len(plan.present)} there already")
    return 0


def _report_plan(args, plan: copy.Plan, cold: copy.Unreadable | None) -> int:
    cold_ids = {r.id for r in cold.snapshots} if cold else set()
    if args.json:
        print_json({
            "would_copy": [{"source_snapshot": r.id, "source": r.source, "time": r.time_str,
                            "packs_to_read": len(plan.needed[r.id]), "cold": r.id in cold_ids} for r in plan.todo],
            "present": [{"source_snapshot": s.id, "snapshot": d.id} for s, d in plan.present],
            "cold_packs": cold.packs if cold else [], "cold_bytes": cold.size if cold else 0,
        })
        return 0
    if not args.quiet:
        for r in plan.todo:
            tail = " (needs cold data: thaw it first)" if r.id in cold_ids else ""
            print(f"would copy snapshot {_line(r)}, reading {len(plan.needed[r.id])} data pack(s){tail}")
        for s, d in plan.present:
            print(f"snapshot {_line(s)} is in {args.to} already (as {d.short_id})")
        if cold:
            print(f"{len(cold.packs)} data pack(s) ({size(cold.size)}) must be thawed first")
    return 0
