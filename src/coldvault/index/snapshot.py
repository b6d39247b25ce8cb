"""Snapshot records: one small object per snapshot, written last (the commit point).

    snapshots/<content id> := envelope(kind "snapshot") of
      {"version": 1, "features": [], "kind": "tree"|"stream"|"zfs",
       "source": str, "time": int (unix ns, UTC), "hostname": str, "paths": [str],
       "tree": bin16 | nil, "parent": hex | nil, "summary": {str: int|float},
       "incomplete": bool, "errors": [str], "tags": [str], "zfs": map | nil,
       "program": str}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from coldvault.index import envelope, limits
from coldvault.index.crypto import Sealer
from coldvault.index.errors import FormatError
from coldvault.index.ids import ID_LEN, BlobId

VERSION = 1
KINDS = ("tree", "stream", "zfs")


@dataclass
class SnapshotRecord:
    kind: str
    source: str
    time: int  # unix nanoseconds, UTC
    hostname: str = ""
    paths: list[str] = field(default_factory=list)
    tree: BlobId | None = None
    parent: str | None = None
    summary: dict = field(default_factory=dict)
    incomplete: bool = False
    errors: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    zfs: dict | None = None
    program: str = ""
    id: str = ""  # the object's content id; set when stored or loaded

    @property
    def datetime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time / 1e9, dt.timezone.utc)

    @property
    def time_str(self) -> str:
        """The snapshot's folder name in the mount: YYYY-MM-DDTHH:MM:SSZ."""
        return self.datetime.strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def short_id(self) -> str:
        return self.id[:8]


def encode(rec: SnapshotRecord, sealer: Sealer) -> bytes:
    return envelope.seal(
        {
            "version": VERSION,
            "features": [],
            "kind": rec.kind,
            "source": rec.source,
            "time": rec.time,
            "hostname": rec.hostname,
            "paths": rec.paths,
            "tree": rec.tree,
            "parent": rec.parent,
            "summary": rec.summary,
            "incomplete": rec.incomplete,
            "errors": rec.errors,
            "tags": rec.tags,
            "zfs": rec.zfs,
            "program": rec.program,
        },
        "snapshot",
        sealer,
    )


def decode(data: bytes, sealer: Sealer, what: str) -> SnapshotRecord:
    d = envelope.open_(data, "snapshot", sealer, what)
    limits.check_version(d, what, VERSION)
    def strings(key):
        v = d.get(key, [])
        return isinstance(v, list) and all(isinstance(s, str) for s in v)

    ok = (
        d.get("kind") in KINDS
        and isinstance(d.get("source"), str)
        and type(d.get("time")) is int
        and (d.get("tree") is None or (isinstance(d["tree"], bytes) and len(d["tree"]) == ID_LEN))
        and (d.get("parent") is None or isinstance(d["parent"], str))
        and isinstance(d.get("summary") or {}, dict)
        and (d.get("zfs") is None or isinstance(d["zfs"], dict))
        and strings("paths") and strings("errors") and strings("tags")
    )
    if not ok:
        raise FormatError(f"{what}: bad snapshot record")
    return SnapshotRecord(
        kind=d["kind"],
        source=d["source"],
        time=d["time"],
        hostname=str(d.get("hostname", "")),
        paths=[str(p) for p in d.get("paths", [])],
        tree=d.get("tree"),
        parent=d.get("parent"),
        summary=d.get("summary") or {},
        incomplete=bool(d.get("incomplete", False)),
        errors=[str(e) for e in d.get("errors", [])],
        tags=[str(t) for t in d.get("tags", [])],
        zfs=d.get("zfs"),
        program=str(d.get("program", "")),
    )
