"""`coldvault ls SNAPSHOT [PATH]`: list a directory of a snapshot (from hot objects only)."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap

from coldvault.cli.common import SNAPSHOT_HELP, add_filters, iso, open_vault, snapshot_filter
from coldvault.index import tree
from coldvault.vault.lock import read_lock
from coldvault.vault.paths import resolve
from coldvault.vault.walker import walk

TYPE_CHAR = {tree.FILE: "-", tree.DIR: "d", tree.SYMLINK: "l", tree.FIFO: "p", tree.CHARDEV: "c", tree.BLOCKDEV: "b"}


def register(sub, common) -> None:
    p = sub.add_parser("ls", parents=[common], help="list files in a snapshot")
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument("path", nargs="?", default="", metavar="PATH", help="a directory or file in it (before or after options)")
    p.add_argument("--source", help="pick SNAPSHOT among this source's snapshots")
    add_filters(p)
    p.add_argument("--recursive", "-R", action="store_true", help="list subdirectories too")
    p.add_argument("--json", action="store_true", help="machine-readable output, one object per entry")
    p.set_defaults(func=run, late_positional="path")


def _line(e: tree.Entry, path: bytes) -> str:
    mode = TYPE_CHAR[e.type] + stat.filemode(e.mode)[1:]
    name = os.fsdecode(path)
    if e.type == tree.SYMLINK:
        name += " -> " + os.fsdecode(e.target)
    return f"{mode} {e.uid:>5} {e.gid:>5} {e.size:>12} {iso(e.mtime)} {name}"


def _json(e: tree.Entry, path: bytes) -> dict:
    d = {"path": os.fsdecode(path), "type": e.type, "mode": e.mode, "uid": e.uid, "gid": e.gid,
         "size": e.size, "mtime": iso(e.mtime), "mtime_ns": e.mtime}
    if e.type == tree.SYMLINK:
        d["target"] = os.fsdecode(e.target)
    return d


def run(args) -> int:
    vault = open_vault(args)
    with read_lock(vault, f"ls {args.snapshot}"):  # prune deletes no tree node meanwhile
        return _list(args, vault)


def _list(args, vault) -> int:
    rec = vault.find_snapshot(args.snapshot, args.source, where=snapshot_filter(args))
    entry = resolve(vault, rec, args.path)
    prefix = os.fsencode(args.path.strip("/"))
    if entry is not None and entry.type != tree.DIR:
        listed = iter([(prefix, entry)])
    else:
        node_id, top = (entry.tree, prefix) if entry else (rec.tree, b"")
        if args.recursive:
            listed = walk(vault, node_id, top)
        else:
            listed = ((top + b"/" + e.name if top else e.name, e) for e in vault.load_tree(node_id).entries)
    if args.json:
        _print_json_array(_json(e, p) for p, e in listed)
    else:
        write = sys.stdout.write
        for p, e in listed:
            write(_line(e, p) + "\n")
    return 0


def _print_json_array(items) -> None:
    """What print_json prints for the list of `items`, written as they come (no list is built)."""
    write = sys.stdout.write
    first = True
    for item in items:
        write("[\n" if first else ",\n")
        write(textwrap.indent(json.dumps(item, indent=2, sort_keys=True), "  "))
        first = False
    write("[]\n" if first else "\n]\n")
