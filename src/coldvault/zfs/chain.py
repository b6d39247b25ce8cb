"""Chains of send streams: which streams rebuild a snapshot, and which depend on which.

Pure logic over snapshot records of kind `zfs`. A stream is an edge from its
base snapshot (by GUID; none for a full stream) to its snapshot; a snapshot can
be received when a path of streams leads to it from a full stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from coldvault.index.snapshot import SnapshotRecord

SOURCE_PREFIX = "zfs:"


def source_name(dataset: str) -> str:
    return SOURCE_PREFIX + dataset


@dataclass(frozen=True)
class Stream:
    rec: SnapshotRecord

    @property
    def z(self) -> dict:
        return self.rec.zfs

    @property
    def dataset(self) -> str:
        return self.z["dataset"]

    @property
    def snapshot(self) -> str:
        return self.z["snapshot"]

    @property
    def guid(self) -> int:
        return self.z["guid"]

    @property
    def createtxg(self) -> int:
        return self.z["createtxg"]

    @property
    def base(self) -> str | None:
        b = self.z.get("base")
        return b["snapshot"] if b else None

    @property
    def base_guid(self) -> int | None:
        b = self.z.get("base")
        return b["guid"] if b else None

    @property
    def length(self) -> int:
        return self.z["length"]

    @property
    def file_name(self) -> str:
        """`@S.zfs` for a full stream, `@B..@S.zfs` for an increment."""
        return f"@{self.snapshot}.zfs" if self.base is None else f"@{self.base}..@{self.snapshot}.zfs"


def streams_by_dataset(records: list[SnapshotRecord]) -> dict[str, list[Stream]]:
    out: dict[str, list[Stream]] = {}
    for r in records:
        if r.kind == "zfs" and r.zfs:
            s = Stream(r)
            out.setdefault(s.dataset, []).append(s)
    for streams in out.values():
        streams.sort(key=lambda s: (s.createtxg, s.base is not None, s.rec.time))
    return out


def shortest_chain(streams: list[Stream], target_guid: int, start_guid: int | None = None) -> list[Stream] | None:
    """Fewest streams that take a dataset from `start_guid` (None: from nothing) to `target_guid`.

    Breadth first; among equally short chains, the one using older streams first.
    """
    if target_guid == start_guid:
        return []
    by_base: dict[int | None, list[Stream]] = {}
    for s in streams:
        by_base.setdefault(s.base_guid, []).append(s)
    queue = deque([start_guid])
    came: dict[int | None, Stream | None] = {start_guid: None}
    while queue and target_guid not in came:
        g = queue.popleft()
        for s in by_base.get(g, []):
            if s.guid not in came:
                came[s.guid] = s
                queue.append(s.guid)
    if target_guid not in came:
        return None
    chain = []
    g = target_guid
    while g != start_guid:
        s = came[g]
        chain.append(s)
        g = s.base_guid
    return list(reversed(chain))


def step_names(chain: list[Stream]) -> list[str]:
    """The names of a chain's streams in the mount's `@S.restore/`: `0001-@A.zfs`,
    `0002-@A..@B.zfs`, ... Numbers of one fixed width (four digits, more only for a chain
    longer than 9999), so that plain text order, a shell glob's, is chain order."""
    width = max(4, len(str(len(chain))))
    return [f"{i:0{width}d}-{s.file_name}" for i, s in enumerate(chain, 1)]


def reachable(streams: list[Stream]) -> set[int]:
    """GUIDs of the snapshots some chain from a full stream reaches."""
    return {s.guid for s in streams if shortest_chain(streams, s.guid) is not None}


def orphaned_by_removal(streams: list[Stream], remove: set[str]) -> list[Stream]:
    """Kept streams that can no longer be received once the records `remove` (ids) are gone."""
    kept = [s for s in streams if s.rec.id not in remove]
    before = reachable(streams)
    after = reachable(kept)
    return [s for s in kept if s.guid in before and s.guid not in after]
