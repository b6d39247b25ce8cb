"""Tree nodes: one msgpack blob (type TREE) per directory.

    {"version": 1, "entries": [entry, ...]}   entries sorted by name, names unique
    entry := {"name": bin, "type": "file"|"dir"|"symlink"|"fifo"|"chardev"|"blockdev",
              "mode": int (permission bits, st_mode & 0o7777), "uid": int, "gid": int,
              "mtime": int ns, "ctime": int ns, "size": int, "ino": int, "nlink": int,
              "chunks": [bin16, ...]   (file: data blob ids, in order)
              "tree": bin16            (dir: id of the child tree node)
              "target": bin            (symlink)
              "rdev": int              (devices)}

Names are raw bytes (non-UTF-8 names survive). A name that is empty, `.`, `..`,
holds `/` or NUL, or is longer than 255 bytes can never come from a real
directory; the decoder drops such entries (and duplicates) and reports them,
so a hostile node cannot make a restore or a listing escape its directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coldvault.index import limits
from coldvault.index.errors import FormatError
from coldvault.index.ids import ID_LEN, BlobId

VERSION = 1
FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV = "file", "dir", "symlink", "fifo", "chardev", "blockdev"
TYPES = frozenset({FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV})
NAME_MAX = 255


@dataclass(slots=True)
class Entry:
    name: bytes
    type: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    ctime: int = 0
    size: int = 0
    ino: int = 0
    nlink: int = 1
    chunks: list[BlobId] = field(default_factory=list)
    tree: BlobId | None = None
    target: bytes | None = None
    rdev: int = 0

    def to_map(self) -> dict:
        m = {
            "name": self.name,
            "type": self.type,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "mtime": self.mtime,
            "ctime": self.ctime,
            "size": self.size,
            "ino": self.ino,
            "nlink": self.nlink,
        }
        if self.type == FILE:
            m["chunks"] = self.chunks
        elif self.type == DIR:
            m["tree"] = self.tree
        elif self.type == SYMLINK:
            m["target"] = self.target
        elif self.type in (CHARDEV, BLOCKDEV):
            m["rdev"] = self.rdev
        return m


@dataclass
class TreeNode:
    entries: list[Entry]
    rejected: list[str] = field(default_factory=list)  # why entries were dropped on decode

    def find(self, name: bytes) -> Entry | None:
        lo, hi = 0, len(self.entries)
        while lo < hi:
            mid = (lo + hi) // 2
            n = self.entries[mid].name
            if n < name:
                lo = mid + 1
            elif n > name:
                hi = mid
            else:
                return self.entries[mid]
        return None


def name_problem(name) -> str | None:
    """Why `name` cannot be a directory entry, or None if it can."""
    if not isinstance(name, bytes):
        return "name is not bytes"
    if not name:
        return "empty name"
    if name in (b".", b".."):
        return f"name {name!r}"
    if b"/" in name:
        return f"name {name!r} contains '/'"
    if b"\0" in name:
        return f"name {name!r} contains NUL"
    if len(name) > NAME_MAX:
        return f"name of {len(name)} bytes"
    return None


def encode(node: TreeNode) -> bytes:
    entries = sorted(node.entries, key=lambda e: e.name)
    for a, b in zip(entries, entries[1:]):
        if a.name == b.name:
            raise ValueError(f"duplicate name {a.name!r}")
    for e in entries:
        problem = name_problem(e.name)
        if problem:
            raise ValueError(problem)
    return limits.pack({"version": VERSION, "entries": [e.to_map() for e in entries]})


def _int(m: dict, key: str, default: int = 0) -> int:
    v = m.get(key, default)
    if type(v) is not int:
        raise FormatError(f"tree entry: {key} is not an integer")
    return v


def _entry(m, what: str) -> Entry:
    if not isinstance(m, dict):
        raise FormatError(f"{what}: entry is not a map")
    t = m.get("type")
    if not isinstance(t, str) or t not in TYPES:
        raise FormatError(f"{what}: unknown entry type {t!r}")
    e = Entry(
        name=m.get("name"),
        type=t,
        mode=_int(m, "mode") & 0o7777,
        uid=_int(m, "uid"),
        gid=_int(m, "gid"),
        mtime=_int(m, "mtime"),
        ctime=_int(m, "ctime"),
        size=_int(m, "size"),
        ino=_int(m, "ino"),
        nlink=_int(m, "nlink", 1),
        rdev=_int(m, "rdev"),
    )
    if e.size < 0:
        raise FormatError(f"{what}: negative size")
    if t == FILE:
        chunks = m.get("chunks", [])
        if not isinstance(chunks, list) or not all(isinstance(c, bytes) and len(c) == ID_LEN for c in chunks):
            raise FormatError(f"{what}: bad chunk list")
        e.chunks = chunks
    elif t == DIR:
        tree = m.get("tree")
        if not (isinstance(tree, bytes) and len(tree) == ID_LEN):
            raise FormatError(f"{what}: directory without a tree id")
        e.tree = BlobId(tree)
    elif t == SYMLINK:
        target = m.get("target")
        if not isinstance(target, bytes) or b"\0" in target:
            raise FormatError(f"{what}: bad symlink target")
        e.target = target
    return e


def decode(data: bytes, what: str = "tree node") -> TreeNode:
    doc = limits.unpack(data, what)
    limits.check_version(doc, what, VERSION)
    raw = doc.get("entries")
    if not isinstance(raw, list):
        raise FormatError(f"{what}: no entry list")
    entries: list[Entry] = []
    rejected: list[str] = []
    seen: set[bytes] = set()
    for m in raw:
        e = _entry(m, what)
        problem = name_problem(e.name)
        if problem is None and e.name in seen:
            problem = f"duplicate name {e.name!r}"
        if problem:
            rejected.append(problem)
            continue
        seen.add(e.name)
        entries.append(e)
    entries.sort(key=lambda e: e.name)
    return TreeNode(entries, rejected)
