"""Check a vault: is everything the snapshots need stored, whole, and where the index says?

Three passes, cheapest first, one module each, over the state a `Checker` holds
(checker.py) and the report it fills (report.py):

1. **Index and listings** (listing.py; hot objects, plus one listing of `data/`
   and `trees/`): every index object decodes (read by `Vault.load_index`, the one
   index loader, with the listing for its pending-checkpoint rule); every pack it
   names is in the store with exactly the indexed size (so no index entry points
   past a pack's end). Packs that no index names, checkpoint indexes that a later
   index repeats, and pending checkpoints whose pack never arrived are leftovers
   of interrupted or finished runs: harmless, `prune` removes them.
2. **Data** (data.py; `read_fraction`, for --read-data and --read-data-subset):
   each chosen pack that is readable (hot, or cold and restored) is downloaded in
   windows; its content id is compared with its name, its header with the index,
   and every blob the index places in it is opened (length, AEAD, blob id). Cold
   packs that are not restored are skipped and listed.
3. **Snapshots** (snapshots.py): every record decodes; every tree node reachable
   from each root, every file's chunks, every ZFS stream's chunk list and its
   chunks are in the index. A tree id is visited once, however many snapshots
   share it: the result of a subtree (which of its paths need damaged objects) is
   remembered by id. So what passes 1 and 2 found damaged is mapped back to
   (snapshot, path) on the same walk, without a table of every blob.

The checker only reads; it blocks, and runs its downloads on as many threads as
the store serves requests at once.
"""

from coldvault.check.checker import Checker
from coldvault.check.report import CheckReport, Problem

__all__ = ["Checker", "CheckReport", "Problem"]
