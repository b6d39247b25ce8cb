"""Pass 1: the index objects and the listing of the packs.

The index is read by `Vault.load_index` (the one loader: the pending-checkpoint
rule lives there); check only watches each document go by to note what it
supersedes and which pack records contradict an earlier index, and reports the
index objects that do not decode. Then every indexed pack is compared with the
listing: missing, truncated, too long; packs in no index are leftovers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from coldvault.errors import DamagedError, UnsupportedFormatError
from coldvault.index import packindex
from coldvault.index.ids import is_hex_id
from coldvault.index.pack import PACK_KINDS, PREFIX, object_name
from coldvault.store.base import NotFoundError
from coldvault.vault.vault import INDEX_PREFIX

if TYPE_CHECKING:
    from coldvault.check.checker import Checker

log = logging.getLogger(__name__)


def list_packs(ck: Checker) -> None:
    """Fill `ck.listed` with every object under data/ and trees/ named like a pack."""
    stray = 0
    for kind in PACK_KINDS:
        for info in ck.store.list(PREFIX[kind]):
            pid = info.name.rsplit("/", 1)[-1]
            if is_hex_id(pid) and info.name == object_name(kind, pid):
                ck.listed[info.name] = info
            else:
                stray += 1
                log.debug("ignoring stray object %s", info.name)
    if stray:
        log.info("%d objects under data/ and trees/ are not named like packs; ignored", stray)


def load_index(ck: Checker) -> None:
    """Every index object, each on its own: one damaged index does not hide the others."""
    r = ck.report
    index = ck.vault.index
    supersedes: set[str] = set()
    pending: list[packindex.IndexDoc] = []
    seen: dict[str, tuple[str, int]] = {}  # pack id -> (kind, size) of the first index naming it

    def on_doc(iid: str, doc) -> None:
        name = INDEX_PREFIX + iid
        if isinstance(doc, UnsupportedFormatError):
            r.problem(name, doc.message, "unsupported")
            return
        if isinstance(doc, DamagedError):
            r.problem(name, doc.reason)
            r.unreadable_indexes.append(name)
            return
        r.index_objects += 1
        supersedes.update(doc.supersedes)
        if doc.pending:
            pending.append(doc)
            return
        # The loader merges every object's table at the end: compare pack records here.
        conflicts = []
        for pid, kind, size in doc.table.pack_items():
            known = seen.setdefault(pid, (kind, size))
            if known != (kind, size):
                conflicts.append((pid, kind, size, known))
        for pid, kind, size, known in conflicts:
            r.problem(name, f"says pack {pid} is a {kind} pack of {size} bytes; "
                            f"another index says a {known[0]} pack of {known[1]} bytes")
        if conflicts:  # the first index's word stands
            bad = {c[0] for c in conflicts}
            doc.keep_packs([p for p in doc.packs if p.id not in bad])

    ck.vault.load_index(on_doc=on_doc, listed=ck.listed)
    r.superseded_indexes = sorted(INDEX_PREFIX + i for i in supersedes & index.index_ids)
    unstored = {object_name(p.kind, p.id) for doc in pending for p in doc.packs if not index.has_pack(p.id)}
    r.unstored_packs = sorted(n for n in unstored if n not in ck.listed)


def check_packs(ck: Checker) -> None:
    """Each indexed pack against the listing (a pack not listed is asked for: it may have
    been stored after the listing); every pack in no index is a leftover."""
    r = ck.report
    index = ck.vault.index
    r.blobs_indexed = len(index)
    indexed = set()
    for pid, kind, size in index.packs():
        name = object_name(kind, pid)
        indexed.add(name)
        r.packs += 1
        r.pack_bytes += size
        info = ck.listed.get(name)
        if info is None:
            try:
                info = ck.listed[name] = ck.store.head(name)
            except NotFoundError:
                ck.bad_packs[pid] = r.problem(name, "missing from the store")
                continue
        if info.size != size:
            what = "truncated" if info.size < size else "too long"
            ck.bad_packs[pid] = r.problem(name, f"{what}: {info.size} bytes, the index says {size}")
    r.unindexed_packs = sorted((i for n, i in ck.listed.items() if n not in indexed), key=lambda i: i.name)
