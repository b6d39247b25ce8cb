"""`coldvault key list|add|remove|passwd`: the vault's passwords, as restic users know them.

Every key wraps the same master keys with its own password (docs/format.md 6.3);
the password given opens the vault (COLDVAULT_PASSWORD_FILE, ...), the new one
comes from --new-password-file, COLDVAULT_NEW_PASSWORD_FILE or a prompt (twice).
add, remove and passwd hold the vault exclusively: two of them at once could
each remove the key the other one keeps.
"""

from __future__ import annotations

import getpass
import os
import sys

from coldvault.cli.common import iso, open_vault, password_from_file, print_json, repo_url
from coldvault.errors import BadPasswordError, UserError
from coldvault.vault import keys
from coldvault.vault.lock import vault_lock

NEW_PASSWORD_ENV = "COLDVAULT_NEW_PASSWORD_FILE"


def register(sub, common) -> None:
    p = sub.add_parser("key", help="list, add, remove or change the vault's passwords",
                       description="A vault may have several passwords (keys); each opens it. The password "
                                   "given as usual (COLDVAULT_PASSWORD_FILE, ...) opens the vault; the new one "
                                   f"comes from --new-password-file, {NEW_PASSWORD_ENV} or a prompt.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", parents=[common], help="list the keys; * marks the one in use")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_list)
    add = actions.add_parser("add", parents=[common], help="add a password")
    _new_password_options(add)
    add.add_argument("--host", help="host name recorded in the key (default: this host)")
    add.add_argument("--user", help="user name recorded in the key (default: this user)")
    add.set_defaults(func=run_add)
    rm = actions.add_parser("remove", parents=[common], help="remove a key (not the one in use, never the last)")
    rm.add_argument("id", metavar="ID", help="key id (a prefix will do), from 'coldvault key list'")
    rm.set_defaults(func=run_remove)
    pw = actions.add_parser("passwd", parents=[common],
                            help="change the password in use: add a key for the new one, then remove the old one")
    _new_password_options(pw)
    pw.set_defaults(func=run_passwd)


def _new_password_options(p) -> None:
    p.add_argument("--new-password-file", metavar="FILE",
                   help=f"read the new password from FILE (env {NEW_PASSWORD_ENV}; default: ask twice)")


def new_password(args) -> bytes:
    """From --new-password-file, COLDVAULT_NEW_PASSWORD_FILE, or a prompt (twice)."""
    path = args.new_password_file or os.environ.get(NEW_PASSWORD_ENV)
    if path:
        return password_from_file(path, "new ", empty=UserError)
    if not sys.stdin.isatty():
        raise UserError("no new password: there is no terminal to ask for it",
                        hint=f"pass --new-password-file FILE or set {NEW_PASSWORD_ENV}")
    pw = getpass.getpass("new password: ").encode()
    if not pw:
        raise BadPasswordError("empty password")
    if getpass.getpass("again: ").encode() != pw:
        raise BadPasswordError("the passwords do not match")
    return pw


def _encrypted_vault(args):
    vault = open_vault(args, load_index=False)
    if not vault.config.encrypted:
        raise UserError(f"the vault at {repo_url(args)} is not encrypted: it has no keys (passwords)")
    return vault


def as_json(e: keys.KeyEntry) -> dict:
    return {"id": e.id, "short_id": e.id[:8], "current": e.current, "stored": e.stored,
            "created": iso(e.created) if e.created else None, "created_ns": e.created,
            "hostname": e.hostname, "user": e.user, "problem": e.problem}


def run_list(args) -> int:
    vault = _encrypted_vault(args)
    entries = keys.list_keys(vault)
    if args.json:
        print_json([as_json(e) for e in entries])
        return 0
    rows = [(" ", "ID", "CREATED", "HOST", "USER", "STORED")]
    for e in entries:
        rows.append(("*" if e.current else " ", e.id[:8], iso(e.created) if e.created else "-",
                     e.hostname or "-", e.user or "-",
                     ("config" if e.stored == keys.CONFIG else keys.PREFIX)
                     + (f" (unusable: {e.problem})" if e.problem else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def run_add(args) -> int:
    vault = _encrypted_vault(args)
    password = new_password(args)
    with vault_lock(vault, "key add"):
        kid = keys.add_key(vault, password, args.host, args.user)
    if not args.quiet:
        print(f"added key {kid[:8]}")
    return 0


def run_remove(args) -> int:
    vault = _encrypted_vault(args)
    with vault_lock(vault, "key remove"):
        entry = keys.find_key(keys.list_keys(vault), args.id)
        keys.remove_key(vault, entry)
    if not args.quiet:
        print(f"removed key {entry.id[:8]}")
    return 0


def run_passwd(args) -> int:
    vault = _encrypted_vault(args)
    password = new_password(args)
    with vault_lock(vault, "key passwd"):
        new_id, old_id = keys.change_password(vault, password)
    if not args.quiet:
        print(f"changed the password: added key {new_id[:8]}, removed key {old_id[:8]}")
    return 0
