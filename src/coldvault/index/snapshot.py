"""Snapshot records: one small object per snapshot, written last (the commit point).

    snapshots/<content id> := envelope(kind "snapshot") of
      {"version": 1, "features": [], "kind": "tree"|"stream"|"zfs",
       "source": str, "time": int (unix ns, UTC), "hostname": str, "paths": [str],
       "tree": bin16 | nil, "parent": hex | nil, "summary": {str: int|float},
       "incomplete": bool, "errors": [str], "tags": [str], "zfs": map | nil,
       "program": str, "original": hex}          ("original" only in a copy: docs/format.md 6.6)

    zfs := {"dataset": str, "snapshot": str, "guid": uint64, "createtxg": uint, "creation": int,
            "base": nil | {"snapshot": str, "guid": uint64, "createtxg": uint},
            "flags": [str], "length": uint, "xxh3": bin16, "chunks": bin16}
    (a map exactly when kind is "zfs"; docs/format.md 6.6)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from coldvault.index import envelope, limits
from coldvault.index.crypto import Sealer
from coldvault.index.errors import FormatError
from coldvault.index.ids import ID_LEN, BlobId, is_hex_id

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
    original: str | None = None  # a copy (`coldvault copy`): id of the snapshot it was first copied from
    id: str = ""  # the object's content id; set when stored or loaded

    @property
    def order(self) -> tuple:
        """Oldest first: by time, then (ZFS snapshots taken within one second share a time)
        by createtxg, then by id."""
        return self.time, self.zfs["createtxg"] if self.zfs else 0, self.id

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
    doc = {
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
    }
    if rec.original is not None:  # written only by copy: every other record keeps its bytes
        doc["original"] = rec.original
    return envelope.seal(doc, "snapshot", sealer)


_BAD_IN_NAMES = ("/", "@", "#", "\0")


def _snapshot_name_ok(v) -> bool:
    return (isinstance(v, str) and v not in ("", ".", "..") and len(v.encode("utf-8", "surrogatepass")) <= 255
            and not any(c in v for c in _BAD_IN_NAMES))


def _dataset_name_ok(v) -> bool:
    """`pool/child/...`: components that are neither empty nor `.`/`..`, without `@`, `#`
    or NUL (the mount makes a directory of each, and `@` starts a snapshot)."""
    if not isinstance(v, str) or len(v.encode("utf-8", "surrogatepass")) > 255:
        return False
    return all(_snapshot_name_ok(part) for part in v.split("/"))


def _uint(v, bits: int = 63) -> bool:
    return type(v) is int and 0 <= v < 2**bits


def zfs_problem(z) -> str | None:
    """What is wrong with a record's `zfs` map, or None if it is a valid one."""
    if not isinstance(z, dict):
        return "not a map"
    base = z.get("base")
    checks = [
        ("dataset", _dataset_name_ok(z.get("dataset")), "a dataset name"),
        ("snapshot", _snapshot_name_ok(z.get("snapshot")), "a snapshot name"),
        ("guid", _uint(z.get("guid"), 64), "an unsigned 64-bit int"),
        ("createtxg", _uint(z.get("createtxg")), "an int >= 0"),
        ("creation", type(z.get("creation")) is int, "an int"),
        ("base", base is None or isinstance(base, dict), "nil or a map"),
        ("flags", isinstance(z.get("flags"), list) and all(isinstance(f, str) for f in z["flags"]), "a list of str"),
        ("length", _uint(z.get("length")), "an int >= 0"),
        ("xxh3", isinstance(z.get("xxh3"), bytes) and len(z["xxh3"]) == 16, "16 bytes"),
        ("chunks", isinstance(z.get("chunks"), bytes) and len(z["chunks"]) == ID_LEN, f"{ID_LEN} bytes"),
    ]
    if isinstance(base, dict):
        checks += [
            ("base.snapshot", _snapshot_name_ok(base.get("snapshot")), "a snapshot name"),
            ("base.guid", _uint(base.get("guid"), 64), "an unsigned 64-bit int"),
            ("base.createtxg", _uint(base.get("createtxg")), "an int >= 0"),
        ]
    for key, ok, want in checks:
        if not ok:
            return f"{key} is not {want}"
    return None


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
        and strings("paths") and strings("errors") and strings("tags")
        and (d.get("original") is None or (isinstance(d["original"], str) and is_hex_id(d["original"])))
    )
    if not ok:
        raise FormatError(f"{what}: bad snapshot record")
    if d["kind"] == "zfs" or d.get("zfs") is not None:
        problem = zfs_problem(d.get("zfs")) if d["kind"] == "zfs" else f"a {d['kind']} snapshot with a zfs map"
        if problem:
            raise FormatError(f"{what}: bad snapshot record: zfs map: {problem}")
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
        original=d.get("original"),
    )
