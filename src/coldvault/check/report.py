"""What a check found: the counts, the damaged objects with the paths they cost, the leftovers."""

from __future__ import annotations

from dataclasses import dataclass, field

from coldvault.index.snapshot import SnapshotRecord
from coldvault.store.base import ObjectInfo

MAX_PATHS = 1000  # affected paths remembered per problem and snapshot (the count is exact)
NOT_INDEXED = "index"  # the problem key of blobs that snapshots use and no index has


@dataclass
class Problem:
    """One damaged object, and what it costs: paths per snapshot id."""

    object: str
    message: str
    kind: str = "damaged"  # or "unsupported"
    affected: dict[str, list] = field(default_factory=dict)  # snapshot id -> [count, [path bytes]]

    def add(self, sid: str, count: int, paths: list[bytes]) -> None:
        add_paths(self.affected, sid, count, paths)


@dataclass
class CheckReport:
    read_mode: str = "none"  # "none", "all" or "subset"
    read_percent: float | None = None
    snapshots: int = 0
    streams: int = 0
    trees: int = 0
    files: int = 0
    chunk_refs: int = 0
    index_objects: int = 0
    blobs_indexed: int = 0
    packs: int = 0
    pack_bytes: int = 0
    packs_selected: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    blobs_read: int = 0
    problems: dict[str, Problem] = field(default_factory=dict)
    records: dict[str, SnapshotRecord] = field(default_factory=dict)
    unindexed_packs: list[ObjectInfo] = field(default_factory=list)
    superseded_indexes: list[str] = field(default_factory=list)
    unstored_packs: list[str] = field(default_factory=list)  # named by pending checkpoints only, never stored
    unused_packs: list[ObjectInfo] | None = None  # None: not known (the walk was incomplete)
    skipped_cold: list[ObjectInfo] = field(default_factory=list)
    skipped_meta: int = 0  # tree nodes or chunk lists in cold data packs (format.md 13), not walked

    unreadable_indexes: list[str] = field(default_factory=list)  # index objects that do not decode

    @property
    def unsupported(self) -> bool:
        return any(p.kind == "unsupported" for p in self.problems.values())

    @property
    def repair_index_helps(self) -> bool:
        """Whether `coldvault repair index` would help: an index object is damaged (it removes
        it, and indexes its packs again from their headers), or snapshots use blobs that no
        index names while some pack is in no index (it may hold them)."""
        return bool(self.unreadable_indexes) or (NOT_INDEXED in self.problems and bool(self.unindexed_packs))

    def problem(self, obj: str, message: str, kind: str = "damaged") -> str:
        """Register a problem with `obj` (its key); an existing one keeps its message."""
        if obj not in self.problems:
            self.problems[obj] = Problem(obj, message, kind)
        return obj

    def extend(self, obj: str, message: str) -> str:
        """Add `message` to the problem with `obj`, or register it."""
        p = self.problems.get(obj)
        if p is None:
            return self.problem(obj, message)
        p.message = f"{p.message}; {message}"
        return obj


def add_paths(result: dict, key: str, count: int, paths: list[bytes]) -> None:
    """Add `count` affected paths under `key`, remembering at most MAX_PATHS of them."""
    slot = result.setdefault(key, [0, []])
    slot[0] += count
    room = MAX_PATHS - len(slot[1])
    if room > 0:
        slot[1].extend(paths[:room])
