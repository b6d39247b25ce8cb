"""Rebuild the index from the packs' own headers (`coldvault repair index`).

Every pack ends with a header listing its blobs: the same entries an index object
holds for it (docs/format.md 5). When an index object is damaged, the blobs only
it named are "not in any index" and the snapshots that need them cannot be read,
although their packs are whole. The repair:

1. loads every readable index object (`Vault.load_index`: damaged ones are left
   out and kept in `vault.damaged_indexes`; pending checkpoints count as usual);
2. lists `data/` and `trees/`, and reads the header of each pack that **no
   readable index names**: a ranged GET of the pack's last bytes (a second one
   only for a header longer than the first guess), parsed by `pack.read_header`;
3. writes new index objects naming those packs (`Vault.save_index` splits them over
   objects of bounded size), `supersedes` = the damaged ones;
4. deletes the damaged index objects.

Only packs that no readable index names are read: a readable index object is
checked against its content id and authenticated, so what it says needs no
second opinion, and reading only the rest keeps the cost with the damage (a
handful of small GETs), not with the vault; reading every pack would also mean
thawing every cold pack of a Deep Archive vault. Packs in no index that are
not damage (a prune interrupted between its index and its deletes) are simply
indexed again; `prune` deletes them later if no snapshot uses them.

Cold packs (GLACIER, DEEP_ARCHIVE) that are not restored cannot be read: they
are named and skipped (`thaw=True` asks the store to restore them, through
vault/thaw.py), and a later repair reads them once readable. A pack whose
header does not decode is reported and skipped; the others are still indexed.

Step 3 comes before step 4, so a crash in between leaves the old damaged
objects next to a complete new index: readable, and the next repair only
deletes them. Deleting a damaged index loses nothing: its bytes fail their
content id (or their authentication), so nobody can read them, and what they
said is in the packs' headers. The caller holds the vault exclusively.
"""

from __future__ import annotations

import logging
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from coldvault.errors import ColdDataError, DamagedError, UnsupportedFormatError
from coldvault.index import limits
from coldvault.index.ids import is_hex_id
from coldvault.index.pack import PACK_KINDS, PREFIX, TRAILER_LEN, TRAILER_MAGIC, object_name, read_header
from coldvault.index.packindex import PackRecord
from coldvault.store.base import NotFoundError, ObjectInfo
from coldvault.vault import thaw
from coldvault.vault.vault import Vault

log = logging.getLogger(__name__)

TAIL_GUESS = 64 * 1024  # bytes of a pack's end read first: the header of ~1500 blobs


@dataclass
class RepairPlan:
    damaged_indexes: list[str] = field(default_factory=list)  # index ids that do not decode: removed
    packs_listed: int = 0  # packs in the store
    records: list[PackRecord] = field(default_factory=list)  # packs in no index, read: to be indexed
    cold: list[ObjectInfo] = field(default_factory=list)  # packs in no index, cold and not readable
    bad_headers: list[tuple[str, str]] = field(default_factory=list)  # (pack name, why), skipped
    new_indexes: list[str] = field(default_factory=list)  # written by `apply`
    removed: list[str] = field(default_factory=list)  # damaged index ids deleted by `apply`
    thawed: list[str] = field(default_factory=list)  # cold packs whose restore `apply` requested

    @property
    def blobs(self) -> int:
        return sum(len(r.blobs) for r in self.records)

    @property
    def needed(self) -> bool:
        """Whether applying the plan changes anything."""
        return bool(self.damaged_indexes or self.records)


def plan(vault: Vault) -> RepairPlan:
    """What a repair would do; reads the index objects, the pack listings and the headers of
    the packs that no readable index names. Writes nothing."""
    vault.load_index(cache=False)  # every object read, not the local index cache
    p = RepairPlan(damaged_indexes=sorted(vault.damaged_indexes))
    index = vault.index
    unindexed: list[tuple[str, ObjectInfo]] = []  # (kind, info)
    for kind in PACK_KINDS:
        for info in vault.store.list(PREFIX[kind]):
            pid = info.name.rsplit("/", 1)[-1]
            if not (is_hex_id(pid) and info.name == object_name(kind, pid)):
                log.debug("ignoring stray object %s", info.name)
                continue
            p.packs_listed += 1
            if not index.has_pack(pid):
                unindexed.append((kind, info))
    unindexed.sort(key=lambda t: t[1].name)
    if not unindexed:
        return p

    def one(item):
        kind, info = item
        try:
            if info.cold and not info.readable:
                info = vault.store.head(info.name)  # a listing need not say whether a restore is done
                if not info.readable:
                    return info
            return _read_pack(vault, kind, info)
        except ColdDataError:  # archived again since the listing
            return info
        except NotFoundError:
            return (info.name, "deleted while the repair ran")
        except (DamagedError, UnsupportedFormatError) as exc:
            return (info.name, exc.message.removeprefix(f"{info.name}: "))

    with ThreadPoolExecutor(min(vault.store.capabilities().connections, len(unindexed))) as pool:
        for result in pool.map(one, unindexed):
            if isinstance(result, PackRecord):
                p.records.append(result)
            elif isinstance(result, ObjectInfo):
                p.cold.append(result)
            else:
                log.info("pack %s: cannot index it: %s", *result)  # the caller names it
                p.bad_headers.append(result)
    return p


def _read_pack(vault: Vault, kind: str, info: ObjectInfo) -> PackRecord:
    """The index record of one pack, from its header (a ranged GET of its tail, rarely two)."""
    name, size = info.name, info.size
    if size < TRAILER_LEN:
        raise DamagedError(f"{name}: {size} bytes is too short for a pack (truncated?)")
    start = max(0, size - TAIL_GUESS)
    tail = vault.get_range(name, start, size - start)
    if len(tail) >= TRAILER_LEN and tail[-len(TRAILER_MAGIC):] == TRAILER_MAGIC:
        (hlen,) = struct.unpack("<I", tail[-TRAILER_LEN:-len(TRAILER_MAGIC)])
        need = hlen + TRAILER_LEN
        if need > size or hlen > limits.MAX_OBJECT:
            raise DamagedError(f"{name}: its trailer gives a header of {hlen} bytes, more than the pack holds")
        if need > len(tail):
            tail = vault.get_range(name, size - need, need)
    with limits.hostile(name):
        entries = read_header(tail, size, vault.sealer, name)
    return PackRecord(name.rsplit("/", 1)[-1], kind, size, entries)


def apply(vault: Vault, p: RepairPlan, request_thaw: tuple[str, int] | None = None) -> None:
    """Write the new index objects, then delete the damaged ones (in this order: a crash in
    between leaves a readable vault). `request_thaw` = (tier, days): also ask the store to
    restore the cold packs skipped, so that a later repair can read them."""
    if p.records:
        p.new_indexes += vault.save_index(p.records, supersedes=list(p.damaged_indexes))
    for iid in p.damaged_indexes:
        vault.delete_index(iid)
        vault.damaged_indexes.pop(iid, None)
        p.removed.append(iid)
    if request_thaw and p.cold:
        tier, days = request_thaw
        state = thaw.cold_state(vault, [i.name for i in p.cold])
        p.thawed = thaw.request(vault, state, tier, days, by="repair index")
