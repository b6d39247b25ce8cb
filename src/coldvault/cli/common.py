"""What every command shares: the vault URL, the password, sizes and times for people."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import subprocess
import sys
import time

from coldvault.errors import BadPasswordError, UserError
from coldvault.store.url import open_store
from coldvault.vault import Vault

STORAGE_CLASSES = (
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "REDUCED_REDUNDANCY",
    "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE",
)

SNAPSHOT_HELP = ("snapshot id (a prefix will do), 'latest', a UTC day (2026-11-24: its last snapshot) "
                 "or a time (2026-11-24T03:00: the last snapshot at or before it)")


def add_filters(p, what: str = "snapshots") -> None:
    """--tag, --host, --path: which snapshots a command considers (vault/selector.py Filter)."""
    p.add_argument("--tag", action="append", default=[], metavar="TAG[,TAG]",
                   help=f"only {what} with all these tags (repeatable: any of the lists)")
    p.add_argument("--host", action="append", default=[], metavar="HOST", help=f"only {what} made on HOST (repeatable)")
    p.add_argument("--path", action="append", default=[], metavar="PATH", dest="filter_paths",
                   help=f"only {what} of this backed-up directory (repeatable: all of them)")


def snapshot_filter(args):
    from coldvault.vault.selector import Filter

    return Filter(args.tag, args.host, [os.path.abspath(p) for p in args.filter_paths])


def repo_url(args) -> str:
    url = getattr(args, "repo", None) or os.environ.get("COLDVAULT_REPO")
    if not url:
        raise UserError("no vault given", hint="pass --repo URL, set COLDVAULT_REPO or put repo in the config file")
    return url


def open_store_for(args):
    return open_store(repo_url(args), endpoint_url=getattr(args, "endpoint_url", None))


# The config file's password-file and password-command (cli/configfile.py), used when no
# COLDVAULT_PASSWORD* variable is set: (file, command, the config file's path) or None.
_config_password: tuple[str | None, str | None, str] | None = None


def use_config_password(file: str | None, command: str | None, origin: str | None) -> None:
    global _config_password
    _config_password = (os.path.expanduser(file) if file else None, command, origin) if (file or command) else None


def password_from_file(path: str, whose: str = "", empty: type[UserError] = BadPasswordError) -> bytes:
    """The password in file `path`, trailing CR/LF removed; `whose` names it in errors
    ("the destination's ", "new "), `empty` is the error for an empty file."""
    try:
        with open(path, "rb") as f:
            pw = f.read().rstrip(b"\r\n")
    except OSError as exc:
        raise UserError(f"cannot read {whose}password file {path}: {exc.strerror}") from None
    if not pw:
        raise empty(f"{whose}password file {path} is empty")
    return pw


def password_from_command(cmd: str, whose: str = "") -> bytes:
    """What shell command `cmd` prints, trailing CR/LF removed."""
    r = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise BadPasswordError(f"{whose}password command exited with status {r.returncode}")
    pw = r.stdout.rstrip(b"\r\n")
    if not pw:
        raise BadPasswordError(f"{whose}password command printed nothing")
    return pw


def read_password(confirm: bool = False) -> bytes:
    """From COLDVAULT_PASSWORD_FILE, COLDVAULT_PASSWORD_COMMAND, COLDVAULT_PASSWORD, the config
    file's password-file or password-command, or a prompt."""
    path = os.environ.get("COLDVAULT_PASSWORD_FILE")
    if path:
        return password_from_file(path)
    cmd = os.environ.get("COLDVAULT_PASSWORD_COMMAND")
    if cmd:
        return password_from_command(cmd)
    if os.environ.get("COLDVAULT_PASSWORD"):
        return os.environ["COLDVAULT_PASSWORD"].encode()
    if _config_password is not None:
        file, command, _ = _config_password
        return password_from_file(file) if file else password_from_command(command)
    if not sys.stdin.isatty():
        raise BadPasswordError(
            "the vault needs a password and there is no terminal to ask for it",
            hint="set COLDVAULT_PASSWORD_FILE or COLDVAULT_PASSWORD_COMMAND, or password-file in the config file",
        )
    pw = getpass.getpass("vault password: ").encode()
    if confirm and getpass.getpass("again: ").encode() != pw:
        raise BadPasswordError("the passwords do not match")
    if not pw:
        raise BadPasswordError("empty password")
    return pw


PASSWORD_ENV = ("COLDVAULT_PASSWORD_FILE", "COLDVAULT_PASSWORD_COMMAND", "COLDVAULT_PASSWORD")


def open_vault(args, load_index: bool = True) -> Vault:
    vault = Vault.open(open_store_for(args), read_password)
    if not vault.config.encrypted and (any(os.environ.get(v) for v in PASSWORD_ENV) or _config_password):
        # The config is the one object nobody can authenticate: a swapped-in unencrypted
        # config must not make us write plaintext where the owner expects ciphertext.
        raise BadPasswordError(
            f"the vault at {repo_url(args)} is not encrypted, but a password is configured; refusing",
            hint="if it really is an unencrypted vault, unset " + " and ".join(PASSWORD_ENV)
                 + (f" and remove password-file/password-command from {_config_password[2]}" if _config_password else ""),
        )
    if load_index:
        vault.load_index()
    return vault


def parse_time(s: str | None) -> int:
    """ISO 8601 to unix nanoseconds; a time without a zone is UTC; None is now."""
    if s is None:
        return time.time_ns()
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        raise UserError(f"--time {s!r} is not an ISO 8601 time (like 2021-03-01T12:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def money(x: float, currency: str = "USD") -> str:
    sign = "$" if currency == "USD" else currency + " "
    if x == 0:
        return f"{sign}0"
    if x < 0.000001:
        return f"<{sign}0.000001"
    if x < 0.01:
        return f"{sign}{x:.6f}"
    if x < 1:
        return f"{sign}{x:.4f}"
    return f"{sign}{x:,.2f}"


def iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
