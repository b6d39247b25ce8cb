"""Key objects: one password of a vault each (docs/format.md 6.3).

    keys/<content id> := envelope(kind "key", never encrypted) of
      {"version": 1, "features": [], "created": int ns, "hostname": str, "user": str,
       "key": key map (the `key` map of the config: scrypt parameters, salt, wrapped)}

Every key object of a vault wraps the same master keys, each with its own
password and salt. The config's own `key` map (vaults made before key objects,
and every vault until its first password is removed) is a key too; its id is
the content id of the msgpack of that map. A key object is read before any
password is known, so its name (its content id) is what tells damage from a
wrong password; its metadata (created, hostname, user) is not authenticated.
"""

from __future__ import annotations

from dataclasses import dataclass

from coldvault.index import envelope, limits
from coldvault.index.crypto import Sealer, check_key_map
from coldvault.index.ids import content_id

VERSION = 1
KIND = "key"
MAX_TEXT = 255  # bytes of hostname and user a reader accepts


@dataclass
class KeyRecord:
    key: dict  # the key map (docs/format.md 6.3)
    created: int  # unix ns
    hostname: str
    user: str


def encode(rec: KeyRecord) -> bytes:
    doc = {"version": VERSION, "features": [], "created": rec.created, "hostname": rec.hostname,
           "user": rec.user, "key": rec.key}
    return envelope.seal(doc, KIND, Sealer(None), compress=False)


def decode(data: bytes, what: str) -> KeyRecord:
    """A key object's record; the key map is checked (kdf, scrypt cost, fields) before any
    password is tried, as `crypto.unwrap_keys` would."""
    d = envelope.open_(data, KIND, Sealer(None), what)
    limits.check_version(d, what, VERSION)
    created, hostname, user, key = d.get("created"), d.get("hostname"), d.get("user"), d.get("key")
    limits.expect(type(created) is int and created >= 0, what, "bad creation time")
    for text in (hostname, user):
        limits.expect(isinstance(text, str) and len(text.encode()) <= MAX_TEXT, what, "bad hostname or user")
    check_key_map(key, what)
    return KeyRecord(key, created, hostname, user)


def config_key_id(key: dict) -> str:
    """The id of the config's own key: the content id of the msgpack of its key map."""
    return content_id(limits.pack(key))

