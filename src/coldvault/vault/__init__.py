"""The vault: a store plus the format. Everything below the commands that needs both.

- `vault`: open, create, unlock; load the index (`blobindex`: blob id -> pack);
  read blobs and tree nodes; write index objects and snapshot records.
- `walker`: the one tree walker (iterative, depth first, each tree once if asked);
  `paths`: a path in a snapshot; `streams`: a ZFS stream's chunk list.
- `lock`: who writes or reads the vault (backups, readers, prune/forget/repair).
- `keys`: the vault's passwords: which key a password opens, list, add, remove, passwd.
- `thaw`: cold data in one place: HEAD many packs, request restores, estimate when
  they are ready (`tiers`), wait, and the restore log; `pricing`: what it costs.
- `prune`, `forget` (`retention`), `repair`: the planning and the safe order of the
  commands that delete or rewrite; `usage`: what the snapshots reference.
"""

from coldvault.vault.vault import Vault

__all__ = ["Vault"]
