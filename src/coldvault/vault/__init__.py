"""The vault: a store plus the format. Opens, unlocks, indexes and reads."""

from coldvault.vault.vault import Vault

__all__ = ["Vault"]
