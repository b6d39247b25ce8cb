"""The vault config: the one object read before anything else.

    config := envelope(kind "config", never encrypted) of
      {"version": 1, "features": [], "vault_id": bin16, "created": int ns,
       "encryption": "chacha20-poly1305" | "none",
       "key": {"kdf": "scrypt", "n", "r", "p", "salt": bin32, "wrapped": bin} | nil,
                            -- nil in an encrypted vault only with the feature "keys"
       "settings": bin,     -- an envelope(kind "settings"), sealed with the master keys
       "checksum": bin16}   -- XXH3-128 of the msgpack of every other key (absent in old configs)

    settings := {"version": 1,
                 "chunker": {"algorithm": "fastcdc2020", "min": int, "avg": int, "max": int, "seed": int},
                 "compression": {"algorithm": "zstd", "level": int},
                 "storage_classes": {"data": str, "tree": str, "index": str, "snapshots": str},
                 "pack_size": {"data": int, "tree": int}}

The settings are authenticated by the master keys, so nobody without the
password can change how the vault is written (a weaker chunker, a hot class).
The checksum is read before the password is tried, so a damaged config (a
flipped byte in the salt or the wrapped key) is reported as damage, not as a
wrong password. It detects accidents only: anyone can recompute it.

More passwords are key objects (`keys/<id>`, index/keys.py). The config's own
`key` stays as long as its password does, so a coldvault that knows no key
objects still opens the vault with it; once it is removed the config says
`features: ["keys"]`, which such a coldvault refuses (exit 12) instead of
calling every password wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import xxhash

from coldvault.index import FORMAT_VERSION, crypto, envelope, limits
from coldvault.index.crypto import MasterKeys, Sealer
from coldvault.index.errors import FormatError

ENCRYPTION = "chacha20-poly1305"
FEATURE_KEYS = "keys"  # the config holds no key: every password is a key object (docs/format.md 6.1)
KNOWN_FEATURES = frozenset({FEATURE_KEYS})
COLD = {"GLACIER", "DEEP_ARCHIVE"}
MiB = 1024 * 1024


@dataclass
class Settings:
    chunker_min: int = 256 * 1024
    chunker_avg: int = 1 * MiB
    chunker_max: int = 4 * MiB
    chunker_seed: int = 0
    compression_level: int = 3
    data_class: str = "STANDARD"
    tree_class: str = "STANDARD"
    index_class: str = "STANDARD"
    snapshot_class: str = "STANDARD"
    data_pack_size: int = 16 * MiB
    tree_pack_size: int = 4 * MiB

    def to_map(self) -> dict:
        return {
            "version": 1,
            "chunker": {
                "algorithm": "fastcdc2020",
                "min": self.chunker_min,
                "avg": self.chunker_avg,
                "max": self.chunker_max,
                "seed": self.chunker_seed,
            },
            "compression": {"algorithm": "zstd", "level": self.compression_level},
            "storage_classes": {
                "data": self.data_class,
                "tree": self.tree_class,
                "index": self.index_class,
                "snapshots": self.snapshot_class,
            },
            "pack_size": {"data": self.data_pack_size, "tree": self.tree_pack_size},
        }

    @classmethod
    def from_map(cls, d: dict, what: str) -> "Settings":
        limits.check_version(d, what, 1)
        try:
            ch, co, sc, ps = d["chunker"], d["compression"], d["storage_classes"], d["pack_size"]
            if ch["algorithm"] != "fastcdc2020" or co["algorithm"] != "zstd":
                raise FormatError(f"{what}: unknown chunker or compression")
            s = cls(
                ch["min"], ch["avg"], ch["max"], ch["seed"], co["level"],
                sc["data"], sc["tree"], sc["index"], sc["snapshots"], ps["data"], ps["tree"],
            )
        except (KeyError, TypeError):
            raise FormatError(f"{what}: incomplete settings") from None
        for v in (s.chunker_min, s.chunker_avg, s.chunker_max, s.data_pack_size, s.tree_pack_size, s.chunker_seed):
            limits.expect(type(v) is int and 0 <= v, what, "bad size setting")
        limits.expect(64 <= s.chunker_min <= s.chunker_avg <= s.chunker_max <= 16 * MiB, what, "bad chunker sizes")
        limits.expect(0 < s.data_pack_size <= 8 * 1024 * MiB and 0 < s.tree_pack_size <= 1024 * MiB, what, "bad pack size")
        limits.expect(type(s.compression_level) is int and 1 <= s.compression_level <= 22, what, "bad compression level")
        classes = (s.data_class, s.tree_class, s.index_class, s.snapshot_class)
        limits.expect(all(isinstance(c, str) and c.isupper() for c in classes), what, "bad storage class")
        # Everything needed to browse must stay hot: only data may be cold.
        limits.expect(not {s.tree_class, s.index_class, s.snapshot_class} & COLD, what, "metadata in a cold class")
        return s


@dataclass
class VaultConfig:
    vault_id: bytes
    created: int
    encrypted: bool
    key: dict | None
    settings_blob: bytes
    features: list[str] = field(default_factory=list)


CHECKSUM = "checksum"


def checksum(doc: dict) -> bytes:
    """XXH3-128 of the msgpack of `doc` without its checksum key, keys in the stored order."""
    return xxhash.xxh3_128_digest(limits.pack({k: v for k, v in doc.items() if k != CHECKSUM}))


def encode(cfg: VaultConfig) -> bytes:
    doc = {
        "version": FORMAT_VERSION,
        "features": cfg.features,
        "vault_id": cfg.vault_id,
        "created": cfg.created,
        "encryption": ENCRYPTION if cfg.encrypted else "none",
        "key": cfg.key,
        "settings": cfg.settings_blob,
    }
    doc[CHECKSUM] = checksum(doc)
    return envelope.seal(doc, "config", Sealer(None), compress=False)


def decode(data: bytes) -> VaultConfig:
    d = envelope.open_(data, "config", Sealer(None), "config")
    # A newer version may define its checksum differently: the version is checked first.
    limits.check_version(d, "config", FORMAT_VERSION, KNOWN_FEATURES)
    if CHECKSUM in d:  # configs written before it was added have none: nothing to check
        limits.expect(d[CHECKSUM] == checksum(d), "config",
                      "its checksum does not match its content (a changed byte; no password could open it)")
    enc = d.get("encryption")
    limits.expect(enc in (ENCRYPTION, "none"), "config", f"unknown encryption {enc!r}")
    vid = d.get("vault_id")
    limits.expect(isinstance(vid, bytes) and len(vid) == 16, "config", "bad vault id")
    limits.expect(isinstance(d.get("settings"), bytes), "config", "no settings")
    key = d.get("key")
    features = list(d.get("features", []))
    limits.expect(enc == "none" or isinstance(key, dict) or (key is None and FEATURE_KEYS in features),
                  "config", "encrypted vault without a key")
    limits.expect(type(d.get("created", 0)) is int, "config", "bad creation time")
    return VaultConfig(vid, d.get("created", 0), enc == ENCRYPTION, key, d["settings"], features)


def seal_settings(settings: Settings, keys: MasterKeys | None) -> bytes:
    return envelope.seal(settings.to_map(), "settings", Sealer(keys))


def open_settings(cfg: VaultConfig, keys: MasterKeys | None) -> Settings:
    doc = envelope.open_(cfg.settings_blob, "settings", Sealer(keys), "config settings")
    with limits.hostile("config settings"):
        return Settings.from_map(doc, "config settings")


def unlock(cfg: VaultConfig, password: bytes) -> MasterKeys | None:
    """The master keys from the config's own key, or None: a wrong password, or no key there."""
    if cfg.key is None:
        return None
    return crypto.unwrap_keys(cfg.key, password, cfg.vault_id)


def without_key(cfg: VaultConfig) -> VaultConfig:
    """The config once its own key is removed: every password is then a key object."""
    features = cfg.features + [FEATURE_KEYS] if FEATURE_KEYS not in cfg.features else list(cfg.features)
    return VaultConfig(cfg.vault_id, cfg.created, cfg.encrypted, None, cfg.settings_blob, features)
