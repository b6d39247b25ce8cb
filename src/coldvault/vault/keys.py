"""The passwords of a vault: find the key a password opens, list, add and remove keys.

A vault's keys are the config's own `key` map (if it still has one) and the key
objects `keys/<id>` (index/keys.py, docs/format.md 6.3). Each wraps the same
master keys with its own password. Opening tries the config's key first, then
the key objects in name order: one scrypt each (about 0.1 s), so a wrong
password costs that per key.

Changing keys keeps the vault openable at every step (docs/format.md 8): a new
key is written and read back and unlocked before anything is removed, and
removing the config's key rewrites the one `config` object (a store writes an
object whole or not at all).
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
from dataclasses import dataclass

from coldvault.errors import BadPasswordError, DamagedError, UnsupportedFormatError, UserError
from coldvault.faults import crash_point
from coldvault.index import config as configfmt
from coldvault.index import crypto
from coldvault.index import keys as keyfmt
from coldvault.index.crypto import MasterKeys
from coldvault.index.errors import FormatError, UnknownVersionError
from coldvault.index.ids import content_id, is_hex_id
from coldvault.store.base import NotFoundError, Store

log = logging.getLogger(__name__)

PREFIX = "keys/"
CONFIG = "config"


@dataclass
class KeyEntry:
    id: str  # 32 hex digits
    stored: str  # "config" or "keys/<id>"
    created: int | None  # unix ns; the vault's creation for the config's key
    hostname: str | None  # None for the config's key (it records none)
    user: str | None
    problem: str | None = None  # why the key object cannot be used (damaged, newer format)
    current: bool = False  # the key that opened the vault


def key_ids(store: Store) -> list[str]:
    """Ids of the key objects, in name order; other names under keys/ are ignored."""
    ids = []
    for o in store.list(PREFIX):
        kid = o.name[len(PREFIX):]
        if is_hex_id(kid):
            ids.append(kid)
        else:
            log.debug("ignoring stray object %s", o.name)
    return sorted(ids)


def read_key(store: Store, kid: str) -> keyfmt.KeyRecord:
    """A key object, checked against its name; DamagedError or UnsupportedFormatError naming it."""
    name = PREFIX + kid
    data = store.get(name)
    if content_id(data) != kid:
        why = f"its content does not match its name ({len(data)} bytes)"
        raise DamagedError(f"key object {name} is damaged: {why}", reason=why)
    try:
        return keyfmt.decode(data, name)
    except UnknownVersionError as exc:
        raise UnsupportedFormatError(exc.message, hint=exc.hint) from None
    except FormatError as exc:
        why = str(exc).removeprefix(name + ": ")
        raise DamagedError(f"key object {name} is damaged: {why}", reason=why) from None


def unlock(store: Store, cfg: configfmt.VaultConfig, password: bytes) -> tuple[MasterKeys, str]:
    """The master keys and the id of the key `password` opens. The config's key is tried
    first (a FormatError there is the config's damage: the caller names it), then each
    key object. A damaged key object is skipped with a warning when another key opens;
    when none does, the error names it (it may be this password's)."""
    if cfg.key is not None:
        keys = configfmt.unlock(cfg, password)
        if keys is not None:
            return keys, keyfmt.config_key_id(cfg.key)
    unusable: list[DamagedError | UnsupportedFormatError] = []
    for kid in key_ids(store):
        try:
            rec = read_key(store, kid)
            keys = crypto.unwrap_keys(rec.key, password, cfg.vault_id, PREFIX + kid)
        except NotFoundError:  # removed by a `key remove` after the listing
            continue
        except FormatError as exc:  # the unwrapped map: written with the master keys, so damage
            unusable.append(DamagedError(f"key object {PREFIX + kid} is damaged: {exc}", reason=str(exc)))
            continue
        except (DamagedError, UnsupportedFormatError) as exc:
            unusable.append(exc)
            continue
        if keys is not None:
            for exc in unusable:
                log.warning("%s; not tried ('coldvault key remove' removes it)", exc.message)
            return keys, kid
    if not unusable:
        raise BadPasswordError(f"wrong password for the vault at {store.url}")
    names = ", ".join(e.message.split(": ", 1)[0].removeprefix("key object ") for e in unusable[:3])
    if all(isinstance(e, UnsupportedFormatError) for e in unusable):
        raise UnsupportedFormatError(
            f"no key of the vault at {store.url} opens with this password; {_few(unusable)} of a newer "
            f"format could not be tried: {names}", hint="upgrade coldvault, or use another password")
    raise DamagedError(f"no key of the vault at {store.url} opens with this password, and {_few(unusable)} "
                       f"could not be tried: {unusable[0].message}",
                       hint="if the password is of a damaged key, open the vault with another one; "
                            "'coldvault key list' shows them all")


def _few(errors: list) -> str:
    return "1 key object" if len(errors) == 1 else f"{len(errors)} key objects"


def list_keys(vault) -> list[KeyEntry]:
    """Every key of the vault: the config's first, then the key objects in name order
    (each is read: a damaged one is listed with its problem)."""
    cfg = vault.config
    entries = []
    if cfg.key is not None:
        kid = keyfmt.config_key_id(cfg.key)
        entries.append(KeyEntry(kid, CONFIG, cfg.created or None, None, None))
    for kid in key_ids(vault.store):
        try:
            rec = read_key(vault.store, kid)
        except NotFoundError:
            continue
        except (DamagedError, UnsupportedFormatError) as exc:
            entries.append(KeyEntry(kid, PREFIX + kid, None, None, None,
                                    problem=getattr(exc, "reason", None) or exc.message))
            continue
        entries.append(KeyEntry(kid, PREFIX + kid, rec.created, rec.hostname, rec.user))
    for e in entries:
        e.current = e.id == vault.key_id
    return entries


def find_key(entries: list[KeyEntry], spec: str) -> KeyEntry:
    """The key an id or a unique prefix of it names."""
    spec = spec.strip().lower()
    matches = [e for e in entries if e.id.startswith(spec)] if spec else []
    if not matches:
        raise UserError(f"no key {spec!r} in the vault", hint="'coldvault key list' shows the ids")
    if len(matches) > 1:
        raise UserError(f"key id {spec!r} is ambiguous: {', '.join(e.id[:8] for e in matches)}",
                        hint="give more digits of the id")
    return matches[0]


def add_key(vault, password: bytes, hostname: str | None = None, user: str | None = None) -> str:
    """Write a key object for `password` (same master keys), read it back and unlock it;
    returns its id. Nothing is removed: a crash leaves one more working key at most."""
    rec = keyfmt.KeyRecord(crypto.wrap_keys(vault.keys, password, vault.config.vault_id), time.time_ns(),
                           hostname or socket.gethostname(), user or getpass.getuser())
    data = keyfmt.encode(rec)
    kid = content_id(data)
    vault.store.put(PREFIX + kid, data)
    crash_point("key-stored")
    try:
        back = read_key(vault.store, kid)
        keys = crypto.unwrap_keys(back.key, password, vault.config.vault_id, PREFIX + kid)
    except (NotFoundError, DamagedError, FormatError) as exc:
        keys, why = None, getattr(exc, "message", str(exc))
    else:
        why = "it does not open with the new password"
    if keys != vault.keys:
        raise DamagedError(f"the new key object {PREFIX + kid} does not read back as written ({why}); "
                           f"nothing was removed", hint="'coldvault key remove' removes it; try again")
    return kid


def remove_key(vault, entry: KeyEntry, allow_current: bool = False) -> None:
    """Remove a key: delete its key object, or rewrite the config without its key.
    Refuses the key that opened the vault (unless `allow_current`, for `passwd` once the
    new key is verified) and the vault's last working key."""
    entries = list_keys(vault)
    others = [e for e in entries if e.id != entry.id and e.problem is None]
    if not others:
        raise UserError(f"key {entry.id[:8]} is the vault's only key: removing it would leave no password",
                        hint="add another with 'coldvault key add' first")
    if entry.id == vault.key_id and not allow_current:
        raise UserError(f"key {entry.id[:8]} is the one in use (it opened the vault); refusing to remove it",
                        hint="open the vault with another key's password, or change this one with "
                             "'coldvault key passwd'")
    if entry.stored == CONFIG:
        _remove_config_key(vault)
    else:
        vault.store.delete(entry.stored)


def _remove_config_key(vault) -> None:
    """Rewrite the config without its key (and with the feature "keys"): one put, read back."""
    cfg = configfmt.without_key(vault.config)
    vault.store.put(CONFIG, configfmt.encode(cfg))
    crash_point("config-stored")
    try:
        back = configfmt.decode(vault.store.get(CONFIG))
    except (NotFoundError, FormatError) as exc:
        back, why = None, str(exc)
    else:
        why = "it still holds a key, or another vault's id"
    if back is None or back.key is not None or back.vault_id != cfg.vault_id:
        raise DamagedError(f"the config of the vault at {vault.store.url} did not read back as written ({why})",
                           hint="run 'coldvault key list' and 'coldvault check'")
    vault.config = back


def change_password(vault, password: bytes, hostname: str | None = None, user: str | None = None) -> tuple[str, str]:
    """`key passwd`: add a key for `password`, verified, then remove the key in use.
    Returns (new id, old id)."""
    old = next((e for e in list_keys(vault) if e.current), None)
    if old is None:
        raise UserError("the key in use is no longer in the vault (removed meanwhile); nothing was changed",
                        hint="'coldvault key list' shows the keys left")
    new_id = add_key(vault, password, hostname, user)
    crash_point("key-verified")
    vault.key_id = new_id
    remove_key(vault, old, allow_current=True)
    return new_id, old.id
