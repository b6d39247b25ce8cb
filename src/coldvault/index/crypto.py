"""Keys and sealing: scrypt key wrapping, ChaCha20-Poly1305 blobs and envelopes.

Master keys: `enc_key` (32 bytes, ChaCha20-Poly1305) and `id_key` (32 bytes,
keys blob ids). They are random per vault and wrapped by a key derived from
the password with scrypt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from coldvault.index import limits
from coldvault.index.errors import AuthenticationError, FormatError

NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32

# scrypt cost: about 0.1 s and 32 MiB on a small machine; stored per vault.
DEFAULT_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024


@dataclass(frozen=True)
class MasterKeys:
    enc_key: bytes
    id_key: bytes

    @classmethod
    def generate(cls) -> "MasterKeys":
        return cls(os.urandom(KEY_LEN), os.urandom(KEY_LEN))

    def __repr__(self) -> str:  # never print key material
        return "MasterKeys(<secret>)"


class Sealer:
    """Encrypts and authenticates with one key; None key means plaintext (unencrypted vault)."""

    def __init__(self, keys: MasterKeys | None):
        self.keys = keys
        self._aead = ChaCha20Poly1305(keys.enc_key) if keys else None

    @property
    def encrypted(self) -> bool:
        return self._aead is not None

    @property
    def id_key(self) -> bytes | None:
        return self.keys.id_key if self.keys else None

    def seal(self, plaintext, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, bytes(plaintext) if not isinstance(plaintext, bytes) else plaintext, aad)

    def open(self, sealed, aad: bytes, what: str) -> bytes:
        if len(sealed) < NONCE_LEN + TAG_LEN:
            raise FormatError(f"{what}: truncated ({len(sealed)} bytes)")
        nonce = bytes(sealed[:NONCE_LEN])
        try:
            # A memoryview, not a copy: blobs are up to a few MiB and this is the read path.
            return self._aead.decrypt(nonce, memoryview(sealed)[NONCE_LEN:], aad)
        except InvalidTag:
            raise AuthenticationError(f"{what}: authentication failed (corrupt or tampered)") from None


def derive_kek(password: bytes, salt: bytes, params: dict) -> bytes:
    return Scrypt(salt=salt, length=KEY_LEN, n=params["n"], r=params["r"], p=params["p"]).derive(password)


def wrap_keys(keys: MasterKeys, password: bytes, vault_id: bytes, params: dict | None = None) -> dict:
    """A `key` map: of the vault config, or of a key object (index/keys.py)."""
    params = dict(params or DEFAULT_SCRYPT)
    salt = os.urandom(32)
    kek = derive_kek(password, salt, params)
    nonce = os.urandom(NONCE_LEN)
    payload = limits.pack({"enc_key": keys.enc_key, "id_key": keys.id_key})
    wrapped = nonce + ChaCha20Poly1305(kek).encrypt(nonce, payload, b"coldvault:key:" + vault_id)
    return {"kdf": "scrypt", "n": params["n"], "r": params["r"], "p": params["p"], "salt": salt, "wrapped": wrapped}


def check_key_map(key, what: str = "config") -> None:
    """The reader checks of a key map (docs/format.md 6.3), made before any password is
    tried: the map is not authenticated, so the work it may demand is bounded."""
    limits.expect(isinstance(key, dict) and key.get("kdf") == "scrypt", what, "unknown key derivation")
    n, r, p = key.get("n"), key.get("r"), key.get("p")
    ok = all(type(v) is int for v in (n, r, p)) and n >= 2 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
    limits.expect(ok, what, "bad scrypt parameters")
    limits.expect(128 * r * n <= MAX_SCRYPT_MEMORY and n * r * p <= 2**26, what, "scrypt parameters too costly")
    limits.expect(isinstance(key.get("salt"), bytes) and isinstance(key.get("wrapped"), bytes), what, "bad key")


def unwrap_keys(key: dict, password: bytes, vault_id: bytes, what: str = "config") -> MasterKeys | None:
    """The master keys, or None if the password is wrong; `what` names the key map's object."""
    check_key_map(key, what)
    kek = derive_kek(password, key["salt"], key)
    wrapped = key["wrapped"]
    try:
        payload = ChaCha20Poly1305(kek).decrypt(wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], b"coldvault:key:" + vault_id)
    except (InvalidTag, ValueError):
        return None
    d = limits.unpack(payload, what)
    limits.expect(isinstance(d, dict), what, "unwrapped key is not a map")
    enc, idk = d.get("enc_key"), d.get("id_key")
    limits.expect(isinstance(enc, bytes) and len(enc) == KEY_LEN, what, "bad enc_key")
    limits.expect(isinstance(idk, bytes) and len(idk) == KEY_LEN, what, "bad id_key")
    return MasterKeys(enc, idk)
