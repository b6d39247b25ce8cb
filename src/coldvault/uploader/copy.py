"""Copy snapshots from one vault into another (`coldvault copy --to URL`).

The two vaults have their own keys: a blob's id is keyed with the vault's `id_key`
(docs/format.md 2), so the same chunk has another id in the destination, and every
tree node and chunk list that names it is another blob there. A copy therefore
reads each chunk it needs from the source, gives it the destination's id, stores
it there unless the destination has it (its index, as a backup deduplicates), and
rewrites tree nodes and chunk lists bottom-up with the destination's ids. Chunks
keep the source's boundaries (a chunk larger than the destination's `chunker.max`
is cut with the destination's chunker): re-chunking is not needed for a correct
copy, only for the best deduplication with the destination's own backups.

What a copy does not read:

- a snapshot the destination already holds: records carry `original`, the id of
  the snapshot the copy was first made from (docs/format.md 6.6), so copying
  twice copies nothing the second time;
- what an earlier copy of the same source already translated (the *reference*):
  the newest older snapshot of the source that the destination holds (or that
  this run copies first; else the oldest newer one). Its source and destination trees have the same shape,
  so a directory whose tree id equals the reference's at the same path is the
  reference's destination tree, and a file with the reference's chunks gets the
  reference's destination chunks, without reading a byte: a nightly copy reads
  what the nightly backup added, as the backup itself did;
- a directory met twice in one run (the same source tree id).

Everything is planned before anything is written: the chunks to read give the
source's data packs, and a pack in a cold class that is not restored stops the
copy at once (the command exits 14) naming the snapshots, the packs' bytes
and the `coldvault thaw` to run.

The writing is a backup's (uploader/session.py): packs behind their checkpoints,
the run's index, then the snapshot record, one run per snapshot, so a killed
copy leaves a destination that `check` passes and the next copy resumes.
Memory follows the depth of the tree (one node per level being rewritten), not
its size: the files of one directory are translated together, their reads a
window of LOOKAHEAD chunks that never spans directories. A ZFS stream's chunk
list is the one structure held whole, as every reader of it does.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import trio

from coldvault.errors import DamagedError
from coldvault.index import blob as blobfmt
from coldvault.index import chunklist, limits, tree
from coldvault.index.errors import FormatError
from coldvault.index.ids import BlobId
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader.session import BackupSession
from coldvault.vault import thaw
from coldvault.vault.streams import read_chunks
from coldvault.vault.vault import LRU, Vault

log = logging.getLogger(__name__)

MEMO_ENTRIES = 200_000  # source tree id -> destination tree id remembered in one run (about 40 MB at most)
LOOKAHEAD = 8  # chunks read ahead of the one being stored


def copy_key(rec: SnapshotRecord) -> str:
    """What identifies a snapshot across copies: the snapshot it was first copied from."""
    return rec.original or rec.id


# ---- what to copy ------------------------------------------------------------------------


@dataclass
class Plan:
    """Which snapshots a copy writes (oldest first), which the destination has already,
    and for each one to write its reference (a source snapshot of the same source and
    kind that the destination holds before it is written), if any."""

    todo: list[SnapshotRecord] = field(default_factory=list)
    present: list[tuple[SnapshotRecord, SnapshotRecord]] = field(default_factory=list)  # (source, destination's)
    refs: dict[str, SnapshotRecord] = field(default_factory=dict)  # source id -> reference source record
    needed: dict[str, set[str]] = field(default_factory=dict)  # source id -> data packs it must read


def plan(src_records: list[SnapshotRecord], selected: list[SnapshotRecord],
         dst_records: list[SnapshotRecord]) -> Plan:
    """`selected`: the source snapshots to copy; `src_records`: all of the source's (oldest first)."""
    in_dst = {copy_key(r): r for r in dst_records}
    p = Plan()
    for rec in sorted(selected, key=lambda r: r.order):
        if copy_key(rec) in in_dst:
            p.present.append((rec, in_dst[copy_key(rec)]))
        else:
            p.todo.append(rec)
    will_have = set(in_dst)  # keys the destination holds by the time each one is written
    for rec in p.todo:
        if rec.kind != "zfs":
            held = [r for r in src_records if r.source == rec.source and r.kind == rec.kind and r.tree is not None
                    and r.id != rec.id and copy_key(r) in will_have]
            older = [r for r in held if r.order < rec.order]
            if held:  # the newest older one, else the oldest newer one: the likeliest to share most
                p.refs[rec.id] = older[-1] if older else held[0]
        will_have.add(copy_key(rec))
    return p


def new_memo() -> LRU:
    return LRU(MEMO_ENTRIES, size=lambda _: 1)


# ---- translating trees -------------------------------------------------------------------


class _Frame:
    """A directory being rewritten: its entries as written so far (files done, directories
    filled in as their subtrees are), and the subdirectories still to visit."""

    __slots__ = ("src_id", "entry", "pos", "out", "dirs")

    def __init__(self, src_id: bytes, entry, pos: int, out: list, dirs: list):
        self.src_id = src_id
        self.entry = entry  # its entry in the parent directory (None: the root)
        self.pos = pos  # the position of that entry in the parent's `out`
        self.out = out  # one item per source entry, in order; a directory's is None until visited
        self.dirs = iter(dirs)  # (position, entry, reference's source tree, reference's destination tree)


class Translator:
    """Rewrites source trees into the destination, or (without a session) only lists the
    data packs such a rewrite reads: the one walk serves the plan and the copy, so the
    plan names exactly the packs the copy will need."""

    def __init__(self, src: Vault, dst: Vault | None = None, session: BackupSession | None = None,
                 pool: ThreadPoolExecutor | None = None, memo: LRU | None = None):
        self.src = src
        self.dst = dst
        self.session = session
        self.pool = pool
        # Source tree id -> destination tree id (planning: True). One memo serves every snapshot
        # of a run (`new_memo`): a tree one of them wrote is committed before the next starts.
        self.memo = memo if memo is not None else new_memo()
        self.packs: set[str] = set()  # planning: the data packs the walk would read

    @property
    def writing(self) -> bool:
        return self.session is not None

    def tree(self, root: bytes, ref_src: bytes | None = None, ref_dst: bytes | None = None) -> bytes | None:
        """The destination id of the source tree `root` (planning: None), depth first with an
        explicit stack; `ref_src`/`ref_dst`: the reference's root trees in both vaults."""
        known = self._known(root, ref_src, ref_dst)
        if known is not None:
            return known if self.writing else None
        stack = [self._open(root, None, 0, ref_src, ref_dst)]
        while True:
            f = stack[-1]
            nxt = next(f.dirs, None)
            if nxt is None:
                stack.pop()
                done = self.session.store_tree(f.out) if self.writing else True
                self.memo.put(f.src_id, done)
                if not stack:
                    return done if self.writing else None
                if self.writing:
                    stack[-1].out[f.pos] = dataclasses.replace(f.entry, tree=done)
                continue
            pos, e, rs_tree, rd_tree = nxt
            known = self._known(e.tree, rs_tree, rd_tree)  # asked now: a sibling may have been the same tree
            if known is None:
                stack.append(self._open(e.tree, e, pos, rs_tree, rd_tree))
            elif self.writing:
                f.out[pos] = dataclasses.replace(e, tree=known)

    def _open(self, src_id: bytes, entry, pos: int, ref_src: bytes | None, ref_dst: bytes | None) -> _Frame:
        """Enter a directory: its files are translated at once (their reads share one window
        of read-ahead), its subdirectories are left to the walk."""
        node = self.src.load_tree(BlobId(src_id))
        rs = {e.name: e for e in self.src.load_tree(BlobId(ref_src)).entries} if ref_src is not None else {}
        rd = {}
        if self.writing and ref_dst is not None:
            rd = {e.name: e for e in self.dst.load_tree(BlobId(ref_dst)).entries}
        out: list = []
        dirs, files = [], []
        for e in node.entries:
            r, d = rs.get(e.name), rd.get(e.name)
            if e.type == tree.DIR:
                dirs.append((len(out), e, r.tree if r is not None and r.type == tree.DIR else None,
                             d.tree if d is not None and d.type == tree.DIR else None))
                out.append(None)
            elif e.type == tree.FILE:
                files.append((len(out), e, self._same(r, d)))
                out.append(None)
            else:
                out.append(e)
        self._files(files, out)
        return _Frame(src_id, entry, pos, out, dirs)

    def _same(self, r: tree.Entry | None, d: tree.Entry | None) -> dict:
        """Source chunk -> destination chunk(s) known from the reference's file at the same path
        (planning: the source chunks only)."""
        if r is None or r.type != tree.FILE:
            return {}
        if not self.writing:
            return dict.fromkeys(r.chunks, True)
        if d is not None and d.type == tree.FILE and len(d.chunks) == len(r.chunks):
            return {c: [dc] for c, dc in zip(r.chunks, d.chunks)}  # one to one (a cut chunk makes d longer)
        return {}

    def _files(self, files: list, out: list) -> None:
        """Translate one directory's file entries into `out`: the reference's chunks where it had
        the same source chunks, the others read (in entry order, a few ahead) and stored."""
        reads = [c for _, e, same in files for c in e.chunks if c not in same]
        out_chunks = self.chunks(reads)
        if not self.writing:
            return
        it = iter(out_chunks)
        for pos, e, same in files:
            chunks: list[bytes] = []
            for c in e.chunks:
                chunks.extend(same[c] if c in same else next(it))
            out[pos] = dataclasses.replace(e, chunks=chunks)

    def _known(self, src_tree: bytes, ref_src: bytes | None, ref_dst: bytes | None):
        """The destination id of a source tree without walking it, if known: met before in
        this run, or the reference's tree at the same path (planning: True)."""
        done = self.memo.get(src_tree)
        if done is not None:
            return done
        if ref_src is not None and ref_src == src_tree and (ref_dst is not None or not self.writing):
            return ref_dst if self.writing else True
        return None

    def chunks(self, src_chunks: list[bytes]) -> list[list[bytes]]:
        """The destination ids of each source chunk (a list: a chunk larger than the
        destination's chunks is cut), read in order a few ahead; planning: [] (packs noted)."""
        if not self.writing:
            for c in src_chunks:
                self.packs.add(self.src.locate(BlobId(c), "chunk").object_name)
            return []
        store = self.session.chunker.store_chunk
        return [store(data) for data in read_chunks(self.src, src_chunks, self.pool, LOOKAHEAD)]

    def stream(self, rec: SnapshotRecord) -> dict | None:
        """A `zfs` record's map with the destination's chunk list (planning: None)."""
        what = f"chunk list of {rec.zfs['dataset']}@{rec.zfs['snapshot']}"
        try:
            with limits.hostile(what):
                src_chunks = chunklist.decode(self.src.read_blob(BlobId(rec.zfs["chunks"])), what)
        except FormatError as exc:
            raise DamagedError(str(exc)) from None
        translated = self.chunks(src_chunks)
        if not self.writing:
            return None
        del src_chunks
        dst_chunks = [c for ids in translated for c in ids]
        del translated
        listed = self.session.store_meta_blob(chunklist.encode(dst_chunks), blobfmt.CHUNK_LIST)
        return {**rec.zfs, "chunks": listed}


# ---- the plan's cold check ---------------------------------------------------------------


def plan_reads(src: Vault, p: Plan) -> None:
    """Fill `p.needed`: the source data packs each snapshot to copy must read."""
    walker = Translator(src)
    for rec in p.todo:
        walker.packs = set()
        if rec.kind == "zfs":
            walker.stream(rec)
        else:
            ref = p.refs.get(rec.id)
            walker.tree(rec.tree, ref.tree if ref is not None else None)
        p.needed[rec.id] = walker.packs


@dataclass
class Unreadable:
    """The packs a copy must read that are cold (or being restored), and whose snapshots."""

    packs: list[str]
    restoring: list[str]
    size: int
    snapshots: list[SnapshotRecord]


def unreadable(src: Vault, p: Plan) -> Unreadable | None:
    """HEAD every pack the plan reads; None when all are readable. A missing pack is
    damage (DamagedError naming it): the copy must not start either."""
    every = set().union(*p.needed.values()) if p.needed else set()
    state = thaw.cold_state(src, every)
    cold = set(state.unreadable)
    if not cold:
        return None
    recs = [r for r in p.todo if p.needed[r.id] & cold]
    return Unreadable(sorted(cold), state.restoring, state.bytes_of(cold), recs)


# ---- copying one snapshot ----------------------------------------------------------------


@dataclass
class Copied:
    source: SnapshotRecord
    copy: SnapshotRecord
    summary: dict


async def copy_snapshot(src: Vault, dst: Vault, rec: SnapshotRecord, ref: SnapshotRecord | None,
                        ref_dst: SnapshotRecord | None, parent: str | None, memo: LRU) -> Copied:
    """Write `rec` into `dst` the way a backup writes (packs, index, record last).

    `ref`/`ref_dst`: the reference in both vaults; `parent`: the destination's id of the
    copy of `rec`'s parent, if it has one; `memo`: the run's (`new_memo`), shared by its
    snapshots as planning shared it, so the copy reads what the plan checked."""
    session = BackupSession(dst)
    pool = ThreadPoolExecutor(max(2, src.store.capabilities().connections), thread_name_prefix="copy-read")

    def translate():
        t = Translator(src, dst, session, pool, memo)
        if rec.kind == "zfs":
            return None, t.stream(rec)
        return t.tree(rec.tree, ref.tree if ref else None, ref_dst.tree if ref_dst else None), None

    async def body():
        return await trio.to_thread.run_sync(translate)

    try:
        root, zfs = await session.run(body)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    new = dataclasses.replace(rec, tree=root, zfs=zfs, parent=parent, original=copy_key(rec), id="")
    await session.commit(new)
    return Copied(rec, new, session.summary())
