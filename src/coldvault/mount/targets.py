"""What a thaw TARGET names: a snapshot, a path in one, a ZFS chain or a path in a mount.

    SNAPSHOT                 a snapshot selector (vault/selector.py): an id prefix, `latest`,
                             a UTC day or a time; a ZFS stream's: it and the chain to its base
    SNAPSHOT:PATH            a file or directory inside a snapshot (a directory: all below it)
    DATASET@SNAP             a ZFS snapshot: every stream of the shortest chain to it
    /path/in/a/mount         a path inside a coldvault mount (files/... or zfs/...); a
                             stream file there: it and the chain to its base

A path in a mount is parsed by the mount's own layout (layout.py), so it names
what the mount shows there. Resolving reads only hot objects (snapshot records,
tree nodes); which chunks and packs a target needs is the caller's next step.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from coldvault.errors import DamagedError, UserError
from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.mount import layout
from coldvault.mount.views import merge_changes
from coldvault.vault import selector
from coldvault.vault.paths import resolve
from coldvault.vault.streams import find_stream
from coldvault.vault.vault import Vault
from coldvault.zfs.chain import Stream, shortest_chain, streams_by_dataset
from coldvault.zfs.commands import split_snapshot

MOUNT_FSTYPE = "fuse.coldvault"  # the runner mounts with subtype=coldvault

TREE, STREAMS, CHANGES = "tree", "streams", "changes"


@dataclass
class Target:
    """A resolved TARGET. `kind` says which fields name what it needs:
    TREE: `entry` in snapshot `rec` (entry None: the whole snapshot);
    STREAMS: every stream in `streams`;
    CHANGES: `entry` in a day's changes/, or all of it, with its tree `pairs`."""

    text: str  # as given
    what: str  # what it was resolved to, for people
    kind: str
    rec: SnapshotRecord | None = None
    entry: tree.Entry | None = None
    streams: list[Stream] = field(default_factory=list)
    pairs: list = field(default_factory=list)
    chunks: set = field(default_factory=set)
    packs: set = field(default_factory=set)


def snapshot_label(rec) -> str:
    return f"snapshot {rec.short_id} ({rec.kind}, {rec.source}, {rec.time_str})"


def changes_chunks(vault: Vault, target: Target) -> set:
    """The chunks of a CHANGES target: its file, or every file below it that the mount shows."""
    out: set = set()
    if target.entry is not None and target.entry.type == tree.FILE:
        out.update(target.entry.chunks)
    elif target.entry is None or target.entry.type == tree.DIR:
        _changes_chunks(vault, target.pairs, out)
    return out


def _changes_chunks(vault: Vault, pairs, out: set) -> None:
    for e, sub in merge_changes(pairs, vault.load_tree):
        if e.type == tree.FILE:
            out.update(e.chunks)
        elif e.type == tree.DIR:
            _changes_chunks(vault, sub, out)


class Resolver:
    """Turns TARGETs into what they name, reading only hot objects."""

    def __init__(self, vault: Vault, source: str | None, where=None):
        """`source` and `where` (a selector.Filter: --tag, --host, --path) narrow the snapshots
        a SNAPSHOT selector picks among."""
        self.vault = vault
        self.source = source
        self.where = where
        self._records = None
        self._layout = None

    @property
    def records(self):
        if self._records is None:
            self._records = self.vault.snapshots()
        return self._records

    @property
    def layout(self) -> layout.Layout:
        if self._layout is None:
            self._layout = layout.Layout(self.records)
        return self._layout

    def resolve(self, text: str) -> Target:
        parts = mount_parts(text)
        if parts is not None:
            return self._mount_path(text, parts)
        if text.startswith("/"):
            raise UserError(f"{text} is not inside a coldvault mount",
                            hint="give a path inside a mounted vault, or SNAPSHOT:PATH")
        m = selector.WITH_PATH.fullmatch(text)  # SELECTOR:PATH
        if m:
            return self._snapshot_path(text, m.group("sel"), m.group("path"))
        if "@" in text:
            return self._zfs_snapshot(text)
        if selector.is_selector(text):
            return self._snapshot_path(text, text, None)
        raise UserError(
            f"cannot tell what {text!r} is",
            hint="a TARGET is a snapshot (id, latest, day or time), SNAPSHOT:PATH, DATASET@SNAP or a path inside a coldvault mount",
        )

    # -- snapshots and paths in them --

    def _snapshot_path(self, text: str, spec: str, path: str | None) -> Target:
        rec = self.vault.find_snapshot(spec, self.source, records=self.records, where=self.where)
        if rec.kind == "zfs":
            if path:
                raise UserError(f"snapshot {rec.short_id} is a ZFS stream: it has no paths",
                                hint="thaw it by its id, or DATASET@SNAP, for its whole chain")
            return self._stream_chain(text, Stream(rec))
        entry = resolve(self.vault, rec, path) if path else None
        label = snapshot_label(rec)
        if path:
            kind = "directory" if entry is not None and entry.type == tree.DIR else "file"
            label = f"{kind} {path.strip('/')} in {label}"
        return Target(text, label, TREE, rec=rec, entry=entry)

    def _zfs_snapshot(self, text: str) -> Target:
        dataset, snap = split_snapshot(text)
        streams = streams_by_dataset(self.records).get(dataset)
        if not streams:
            raise UserError(f"there are no ZFS streams of {dataset} in the vault",
                            hint="list them with 'coldvault snapshots'")
        want = find_stream(streams, snap, dataset)
        chain = shortest_chain(streams, want.guid, None)
        if chain is None:
            raise DamagedError(f"no chain of streams in the vault leads to {dataset}@{snap}",
                               hint="a stream it needs was removed")
        return _chain_target(text, dataset, snap, chain)

    def _stream_chain(self, text: str, s: Stream) -> Target:
        """One stored stream, named by its record's id or its file in a mount: it is received
        after the chain to its base, so that chain is thawed with it."""
        streams = streams_by_dataset(self.records).get(s.dataset, [])
        before = shortest_chain(streams, s.base_guid, None) if s.base_guid is not None else []
        if before is None:
            raise DamagedError(f"no chain of streams in the vault leads to {s.dataset}@{s.base}, "
                               f"the base of {s.file_name}", hint="a stream it needs was removed")
        return _chain_target(text, s.dataset, s.snapshot, before + [s])

    # -- paths inside a mount --

    def _mount_path(self, text: str, parts: list[str]) -> Target:
        try:
            place = self.layout.parse(parts)
        except layout.NotInLayoutError as exc:
            raise UserError(f"{text}: {exc}") from None
        if isinstance(place, layout.Latest):
            place = layout.InSnapshot(place.view, place.view.snapshots[-1])
        if isinstance(place, layout.InSnapshot):
            rec, path = place.rec, "/".join(place.path)
            entry = resolve(self.vault, rec, path) if path else None
            label = snapshot_label(rec) if not path else f"{path} in {snapshot_label(rec)}"
            return Target(text, label, TREE, rec=rec, entry=entry)
        if isinstance(place, layout.InChanges):
            return self._mount_changes(text, place)
        if isinstance(place, layout.StreamFile):
            return self._stream_chain(text, place.stream)
        if isinstance(place, layout.ChainDir):
            return _chain_target(text, place.dataset, place.snapshot, list(place.chain))
        if place == layout.Top(""):
            raise UserError(f"{text} is the whole mount", hint="name a snapshot, a file or a stream inside it")
        if place == layout.Top(layout.FILES) or isinstance(place, layout.SourceDir):
            raise UserError(f"{text} holds whole sources", hint="name a snapshot, a date or a path inside one")
        if isinstance(place, layout.SourceListing):
            raise UserError(f"{text} holds every {place.name[:-1]} of {place.view.name}", hint="name one of them")
        raise UserError(f"{text} is a dataset directory", hint="name a stream (@S.zfs) or a chain (@S.restore)")

    def _mount_changes(self, text: str, place: layout.InChanges) -> Target:
        """changes/<day>/...: what the mount shows there, merged from the day's snapshots."""
        pairs, entry, rest = place.pairs(), None, place.path
        for i, name in enumerate(rest):
            if entry is not None and entry.type != tree.DIR:
                raise UserError(f"{text}: {'/'.join(rest[:i])} is not a directory")
            found = [(e, sub) for e, sub in merge_changes(pairs, self.vault.load_tree) if e.name == os.fsencode(name)]
            if not found:
                raise UserError(f"{text}: no {'/'.join(rest[:i + 1])} in changes/{place.day}")
            entry, pairs = found[0]
        what = "/".join(rest) or "everything"
        return Target(text, f"{what} in changes/{place.day} of {place.view.name}", CHANGES, entry=entry, pairs=pairs)


def _chain_target(text: str, dataset: str, snap: str, chain: list[Stream]) -> Target:
    names = ", ".join(s.file_name for s in chain)
    return Target(text, f"ZFS chain of {len(chain)} stream(s) to {dataset}@{snap}: {names}", STREAMS,
                  streams=list(chain))


def mounts() -> list[str]:
    """Mount points of coldvault mounts, from /proc/self/mounts."""
    try:
        with open("/proc/self/mounts", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) >= 3 and fields[2] == MOUNT_FSTYPE.encode():
            # Space, tab, newline and backslash in the mount point are written as octal escapes.
            mp = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[1])
            out.append(os.fsdecode(mp))
    return out


def mount_parts(text: str) -> list[str] | None:
    """The path components below the mount point when `text` names a path in a coldvault mount."""
    if not (text.startswith(("/", "./", "../")) or os.path.lexists(text)):
        return None
    points = sorted(mounts(), key=len, reverse=True)
    for candidate in (os.path.abspath(text), os.path.realpath(text)) if points else ():
        for mp in points:
            if candidate == mp or candidate.startswith(mp.rstrip("/") + "/"):
                rel = candidate[len(mp):]
                return [p for p in rel.split("/") if p and p != "."]
    return None
