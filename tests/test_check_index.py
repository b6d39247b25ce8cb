"""check reads the index through Vault.load_index, the one loader: `on_doc` shows it each
document before it is merged, and `listed` lets a listing judge pending checkpoints
instead of one HEAD per pack. The vault sits on the real store stack (open_store)."""

from __future__ import annotations

import os

from coldvault.index import config as configfmt
from coldvault.index.pack import object_name
from coldvault.index.packindex import IndexDoc, PackRecord
from coldvault.store.memory import MemoryStore
from coldvault.store.url import stack
from coldvault.vault.vault import Vault


class HeadCountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.heads = 0

    def head(self, name):
        self.heads += 1
        return super().head(name)


def pack(size: int) -> PackRecord:
    return PackRecord(os.urandom(16).hex(), "data", size, [])


def test_load_index_with_a_listing_and_a_document_hook():
    inner = HeadCountingStore()
    store = stack(inner)
    writer = Vault.init(store, None, configfmt.Settings())
    stored, unstored, final = pack(100), pack(200), pack(300)
    store.put(object_name("data", stored.id), b"s" * 100)
    store.put(object_name("data", final.id), b"f" * 300)
    (checkpoint,) = writer.save_index([stored, unstored], pending=True)
    (first,) = writer.save_index([final])
    rival = PackRecord(final.id, "data", 299, [])
    writer.save_index([rival], supersedes=[checkpoint])

    seen = []

    def on_doc(iid, doc):
        seen.append(iid)
        if isinstance(doc, IndexDoc) and any(p.size == 299 for p in doc.packs):
            doc.keep_packs([p for p in doc.packs if p.size != 299])  # a contradiction left out

    listed = {i.name: i for i in store.list("data/")}
    reader = Vault.open(store, None)
    inner.heads = 0
    index = reader.load_index(on_doc=on_doc, listed=listed)
    assert inner.heads == 0  # the listing judged the checkpoint, not a HEAD per pack
    assert sorted(seen) == sorted(index.index_ids) and first in seen and checkpoint in seen
    assert index.has_pack(stored.id) and not index.has_pack(unstored.id)
    assert index.pack(final.id) == ("data", 300)  # the hook kept the rival record out

    # Without a listing, the same rule by HEADs.
    again = Vault.open(store, None)
    inner.heads = 0
    again.load_index()
    assert inner.heads == 2 and again.index.has_pack(stored.id) and not again.index.has_pack(unstored.id)


def test_read_data_compares_the_pack_header_with_the_index(tmp_path):
    """An index entry that its pack's own header does not list (here: a raw length one byte
    off) is named as a disagreement of header and index, beside the blob that fails."""
    from coldvault.store.local import LocalStore
    from cvtools import run, sample_vault

    repo, env, _ = sample_vault(tmp_path)
    vault = Vault.open(LocalStore(repo), lambda: b"test-password")
    vault.load_index()
    (iid,) = vault.index.index_ids
    by_pack = vault.index.blobs_by_pack()
    records = [PackRecord(pid, kind, size, list(by_pack.get(pid, []))) for pid, kind, size in vault.index.packs()]
    data = next(r for r in records if r.kind == "data")
    e = data.blobs[0]
    data.blobs[0] = type(e)(e.id, e.type, e.offset, e.length, e.raw_length + 1)
    vault.save_index(records)
    vault.delete_index(iid)

    report = run(["check", "--read-data", "--json"], env, check=False)
    assert report.code == 13
    (damage,) = [d for d in report.json()["damage"] if d["object"] == object_name("data", data.id)]
    assert "its header disagrees with the index about 1 blob(s)" in damage["message"]
    assert "1 of" in damage["message"] and "blobs are damaged" in damage["message"]
