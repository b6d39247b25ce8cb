"""Pass 0: the key objects (`keys/<id>`, docs/format.md 6.3).

Each is read, checked against its name and decoded, as `Vault.open` would
before trying a password on it; a damaged one (or one of a newer format) is a
problem naming it. The key that opened the vault was unlocked already; the
others cannot be unlocked without their passwords.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coldvault.errors import DamagedError, UnsupportedFormatError
from coldvault.store.base import NotFoundError
from coldvault.vault import keys

if TYPE_CHECKING:
    from coldvault.check.checker import Checker


def check_keys(ck: Checker) -> None:
    if not ck.vault.config.encrypted:
        return
    for kid in keys.key_ids(ck.store):
        name = keys.PREFIX + kid
        try:
            keys.read_key(ck.store, kid)
        except NotFoundError:  # removed by a `key remove` after the listing
            continue
        except UnsupportedFormatError as exc:
            ck.report.problem(name, exc.message, "unsupported")
        except DamagedError as exc:
            ck.report.problem(name, exc.reason)
