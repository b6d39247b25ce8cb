"""The mount's layout, defined here and only here: snapshot records in, names and paths out.

    files/<source>/snapshots/<YYYY-MM-DDTHH:MM:SSZ>/...   every snapshot, whole
    files/<source>/dates/<YYYY-MM-DD>/...                  the day's last snapshot
    files/<source>/changes/<YYYY-MM-DD>/...                created or modified that day
    files/<source>/latest -> snapshots/<newest>
    zfs/<pool>/<dataset...>/@S.zfs                         a full send stream
    zfs/<pool>/<dataset...>/@B..@S.zfs                     an incremental one
    zfs/<pool>/<dataset...>/@S.restore/0001-@S0.zfs ...    the shortest chain of streams to S

The mount builds its tree from `Layout.children`; `Layout.parse` turns a path in a
mount back into what it names (thaw's targets), walking the same children. Below a
snapshot or a day of changes the names are those of the stored trees: a place there
keeps the rest of the path for the caller to resolve. `identity` tells whether a place
at a path still shows the same thing in the layout of a later list of records (the
live mount keeps its inode number then). Pure logic: no I/O, no FUSE.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

from coldvault.errors import ColdvaultError
from coldvault.index.snapshot import SnapshotRecord
from coldvault.zfs.chain import Stream, shortest_chain, step_names, streams_by_dataset

FILES = "files"
ZFS = "zfs"
SNAPSHOTS, DATES, CHANGES, LATEST = "snapshots", "dates", "changes", "latest"


class NotInLayoutError(ColdvaultError):
    """A path names nothing in the mount (the message says what is missing where)."""


# ---- snapshots grouped by source ---------------------------------------------------------


@dataclass
class SourceView:
    name: str
    snapshots: list[SnapshotRecord]  # oldest first

    def named(self) -> list[tuple[str, SnapshotRecord]]:
        """Folder name per snapshot: its UTC time; a second one in the same second gets -2, -3..."""
        out, seen = [], {}
        for r in self.snapshots:
            base = r.time_str
            n = seen.get(base, 0) + 1
            seen[base] = n
            out.append((base if n == 1 else f"{base}-{n}", r))
        return out

    def days(self) -> "OrderedDict[str, list[SnapshotRecord]]":
        days: OrderedDict[str, list[SnapshotRecord]] = OrderedDict()
        for r in self.snapshots:
            days.setdefault(r.time_str[:10], []).append(r)
        return days

    def day_pairs(self, day: str) -> list[tuple[SnapshotRecord, SnapshotRecord | None]]:
        """(snapshot, the one before it) for each snapshot of `day`, in order."""
        pairs, prev = [], None
        for r in self.snapshots:
            d = r.time_str[:10]
            if d == day:
                pairs.append((r, prev))
            elif d > day:
                break
            prev = r
        return pairs

    @property
    def newest_time(self) -> int:
        return self.snapshots[-1].time if self.snapshots else 0


def group_sources(records: list[SnapshotRecord], kinds=("tree", "stream")) -> "OrderedDict[str, SourceView]":
    out: OrderedDict[str, SourceView] = OrderedDict()
    for r in sorted(records, key=lambda r: (r.source, r.time, r.id)):
        if r.kind in kinds:
            out.setdefault(r.source, SourceView(r.source, [])).snapshots.append(r)
    return out


# ---- places: what a path in the mount names -----------------------------------------------


class Place:
    """Something the mount shows at a path."""

    kind = "directory"


@dataclass(frozen=True)
class Top(Place):
    """The mount itself (name ""), files/ or zfs/."""

    name: str


@dataclass(frozen=True)
class SourceDir(Place):
    """files/<source>/"""

    view: SourceView = field(compare=False)
    name: str


@dataclass(frozen=True)
class SourceListing(Place):
    """files/<source>/snapshots/, dates/ or changes/"""

    view: SourceView = field(compare=False)
    name: str  # SNAPSHOTS, DATES or CHANGES


@dataclass(frozen=True)
class Latest(Place):
    """files/<source>/latest: a link to snapshots/<newest>."""

    view: SourceView = field(compare=False)
    target: str  # "snapshots/<name>"
    kind = "symlink"


@dataclass(frozen=True)
class InSnapshot(Place):
    """snapshots/<name>/PATH, dates/<day>/PATH or latest/PATH: PATH in one snapshot's tree."""

    view: SourceView = field(compare=False)
    rec: SnapshotRecord = field(compare=False)
    path: tuple[str, ...] = ()


@dataclass(frozen=True)
class InChanges(Place):
    """changes/<day>/PATH: PATH among what the day's snapshots created or modified."""

    view: SourceView = field(compare=False)
    day: str
    path: tuple[str, ...] = ()
    # Ids of the day's snapshots and of the one before them (what the folder is made of);
    # set by Layout.children, for `identity`.
    snapshot_ids: tuple = field(default=(), compare=False)

    def pairs(self) -> list[tuple[bytes | None, bytes | None]]:
        """Root tree ids (in each snapshot of the day, in the snapshot before it)."""
        return [(r.tree, p.tree if p is not None else None) for r, p in self.view.day_pairs(self.day)]

    @property
    def time(self) -> int:
        return self.view.day_pairs(self.day)[-1][0].time


@dataclass(frozen=True)
class DatasetDir(Place):
    """zfs/<pool>/<dataset...>/"""

    dataset: str


@dataclass(frozen=True)
class StreamFile(Place):
    """@S.zfs or @B..@S.zfs in a dataset's directory, or a step of a chain."""

    stream: Stream = field(compare=False)
    name: str
    kind = "file"


@dataclass(frozen=True)
class ChainDir(Place):
    """@S.restore/: the shortest chain of streams to dataset@S, one file per step."""

    dataset: str
    snapshot: str
    chain: tuple[Stream, ...] = field(compare=False)
    time: int = field(default=0, compare=False)  # the snapshot's


# ---- the layout ------------------------------------------------------------------------------


class Layout:
    """The mount's tree for a list of snapshot records; each directory is listed on demand."""

    def __init__(self, records: list[SnapshotRecord]):
        self.mount_time = max((r.time for r in records), default=0)
        self.sources = group_sources(records)
        self.streams = streams_by_dataset(records)
        self._subdatasets: dict[str, set[str]] = {}
        for ds in self.streams:
            parts = ds.split("/")
            for i in range(len(parts)):
                self._subdatasets.setdefault("/".join(parts[:i]), set()).add("/".join(parts[:i + 1]))

    def children(self, place: Place) -> list[tuple[str, Place]]:
        """(name, place) of each entry of a layout directory, in listing order. Below a
        snapshot or a day of changes the stored trees list the entries, not the layout."""
        if isinstance(place, Top):
            if place.name == "":
                return [(FILES, Top(FILES)), (ZFS, Top(ZFS))]
            if place.name == FILES:
                return [(name, SourceDir(v, name)) for name, v in self.sources.items()]
            return self._dataset_children("")
        if isinstance(place, SourceDir):
            v = place.view
            items: list[tuple[str, Place]] = [(CHANGES, SourceListing(v, CHANGES)), (DATES, SourceListing(v, DATES))]
            named = v.named()
            if named:
                items.append((LATEST, Latest(v, f"{SNAPSHOTS}/{named[-1][0]}")))
            items.append((SNAPSHOTS, SourceListing(v, SNAPSHOTS)))
            return items
        if isinstance(place, SourceListing):
            v = place.view
            if place.name == SNAPSHOTS:
                return [(n, InSnapshot(v, r)) for n, r in v.named()]
            if place.name == DATES:
                return [(d, InSnapshot(v, rs[-1])) for d, rs in v.days().items()]
            out, before = [], None
            for d, rs in v.days().items():
                out.append((d, InChanges(v, d, snapshot_ids=(before, *(r.id for r in rs)))))
                before = rs[-1].id
            return out
        if isinstance(place, DatasetDir):
            return self._dataset_children(place.dataset)
        if isinstance(place, ChainDir):
            return [(n, StreamFile(s, n)) for n, s in zip(step_names(list(place.chain)), place.chain)]
        return []

    def _dataset_children(self, dataset: str) -> list[tuple[str, Place]]:
        """Sub-datasets, then each stream once, then a chain directory per snapshot a chain leads to."""
        items: list[tuple[str, Place]] = []
        for child in sorted(self._subdatasets.get(dataset, ())):
            items.append((child.rsplit("/", 1)[-1], DatasetDir(child)))
        streams = self.streams.get(dataset, [])
        seen_files, seen_snaps = set(), set()
        for s in streams:
            if s.file_name not in seen_files:
                seen_files.add(s.file_name)
                items.append((s.file_name, StreamFile(s, s.file_name)))
        for s in streams:
            if s.snapshot in seen_snaps:
                continue
            chain = shortest_chain(streams, s.guid)
            if chain is None:
                continue
            seen_snaps.add(s.snapshot)
            items.append((f"@{s.snapshot}.restore", ChainDir(dataset, s.snapshot, tuple(chain), s.rec.time)))
        return items

    def dataset_time(self, dataset: str) -> int:
        return max((s.rec.time for s in self.streams.get(dataset, [])), default=self.mount_time)

    def parse(self, parts: Sequence[str]) -> Place:
        """What the path `parts` (components below the mount point) names; raises
        NotInLayoutError saying which component is missing where."""
        place: Place = Top("")
        for i, name in enumerate(parts):
            if isinstance(place, Latest):
                place = InSnapshot(place.view, place.view.snapshots[-1])
            if isinstance(place, (InSnapshot, InChanges)):
                return _with_path(place, tuple(parts[i:]))
            where = "/".join(parts[:i])
            if isinstance(place, StreamFile):
                raise NotInLayoutError(f"{where} is a stream, not a directory")
            found = next((p for n, p in self.children(place) if n == name), None)
            if found is None:
                raise NotInLayoutError(_missing(place, name, where))
            place = found
        return place


def identity(place: Place) -> tuple:
    """What a place shows beyond its path. In the layouts of two lists of records, a path
    whose places have the same identity shows the same thing: the same snapshot, the same
    day's snapshots, the same link target, the same stream or chain. The containers (the
    mount, files/, zfs/, a source, its listings, a dataset) are one thing whatever they hold."""
    if isinstance(place, InSnapshot):
        return ("snapshot", place.rec.id)
    if isinstance(place, InChanges):
        return ("changes", place.snapshot_ids)
    if isinstance(place, Latest):
        return ("latest", place.target)
    if isinstance(place, StreamFile):
        return ("stream", place.stream.rec.id)
    if isinstance(place, ChainDir):
        return ("chain", tuple(s.rec.id for s in place.chain))
    return (type(place).__name__,)


def _with_path(place, path: tuple[str, ...]) -> Place:
    if isinstance(place, InSnapshot):
        return InSnapshot(place.view, place.rec, path)
    return InChanges(place.view, place.day, path, place.snapshot_ids)


def _missing(place: Place, name: str, where: str) -> str:
    if isinstance(place, Top) and place.name == "":
        return f"there is no {name} in a coldvault mount (only {FILES}/ and {ZFS}/)"
    if isinstance(place, Top) and place.name == FILES:
        return f"this vault has no source {name!r}"
    if isinstance(place, SourceDir):
        return f"no {name} in {where}/ ({LATEST}, {SNAPSHOTS}, {DATES}, {CHANGES})"
    if isinstance(place, SourceListing):
        return f"no {name} in {place.name}/ of {place.view.name}"
    if isinstance(place, (Top, DatasetDir)):
        return f"no dataset, stream (@S.zfs, @B..@S.zfs) or chain (@S.restore) {name} in {where}/"
    return f"no {name} in {where}/"
