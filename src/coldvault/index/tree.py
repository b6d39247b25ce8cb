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
from operator import attrgetter

from coldvault.index import limits
from coldvault.index.errors import FormatError
from coldvault.index.ids import ID_LEN, BlobId

VERSION = 1
FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV = "file", "dir", "symlink", "fifo", "chardev", "blockdev"
TYPES = frozenset({FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV})
NAME_MAX = 255
_by_name = attrgetter("name")


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


_INT_FIELDS = ("mode", "uid", "gid", "mtime", "ctime", "size", "ino", "nlink", "rdev")


def _bad_int(m: dict, what: str) -> FormatError:
    for key in _INT_FIELDS:
        if type(m.get(key, 0)) is not int:
            return FormatError(f"{what}: tree entry: {key} is not an integer")
    return FormatError(f"{what}: tree entry: bad integer field")


# Values that most entries share (the type name, modes, owners) are kept once: msgpack
# makes new objects for each entry, and a mount holds the entries of every directory
# it listed (about 25 MiB less for 200,000 files).
_TYPE_NAMES = {t: t for t in TYPES}
_SHARED_MAX = 4096
_shared_ints: dict[int, int] = {}


def _shared(v: int) -> int:
    got = _shared_ints.get(v)
    if got is not None:
        return got
    if len(_shared_ints) < _SHARED_MAX:  # hostile data with a new uid per file stays bounded
        _shared_ints[v] = v
    return v


def _entry(m, what: str) -> Entry:
    """One entry of a tree node, every field type-checked. Written out field by field:
    this runs once per file of every directory listed (a mount's `ls -R`)."""
    get, t = _typed(m, what)
    mode, uid, gid, mtime, ctime = get("mode", 0), get("uid", 0), get("gid", 0), get("mtime", 0), get("ctime", 0)
    size, ino, nlink, rdev = get("size", 0), get("ino", 0), get("nlink", 1), get("rdev", 0)
    if not (type(mode) is int and type(uid) is int and type(gid) is int and type(mtime) is int
            and type(ctime) is int and type(size) is int and type(ino) is int and type(nlink) is int
            and type(rdev) is int):
        raise _bad_int(m, what)
    if size < 0:
        raise FormatError(f"{what}: negative size")
    e = Entry(get("name"), _TYPE_NAMES[t], _shared(mode & 0o7777), _shared(uid), _shared(gid),
              mtime, ctime, size, ino, nlink)
    e.rdev = rdev
    ref = _ref(get, t, what)
    if t == FILE:
        e.chunks = ref
    elif t == DIR:
        e.tree = BlobId(ref)
    elif t == SYMLINK:
        e.target = ref
    return e


def _typed(m, what: str):
    """An entry map's `get` and its type, checked."""
    if type(m) is not dict:
        raise FormatError(f"{what}: entry is not a map")
    get = m.get
    t = get("type")
    if type(t) is not str or t not in TYPES:
        raise FormatError(f"{what}: unknown entry type {t!r}")
    return get, t


def _ref(get, t: str, what: str):
    """What an entry map of type `t` points to, checked: a file's chunk ids, a directory's
    tree id, a symlink's target; None for other types."""
    if t == FILE:
        chunks = get("chunks", [])
        if type(chunks) is not list:
            raise FormatError(f"{what}: bad chunk list")
        for c in chunks:
            if type(c) is not bytes or len(c) != ID_LEN:
                raise FormatError(f"{what}: bad chunk list")
        return chunks
    if t == DIR:
        tree = get("tree")
        if not (type(tree) is bytes and len(tree) == ID_LEN):
            raise FormatError(f"{what}: directory without a tree id")
        return tree
    if t == SYMLINK:
        target = get("target")
        if type(target) is not bytes or b"\0" in target:
            raise FormatError(f"{what}: bad symlink target")
        return target
    return None


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
    entries.sort(key=_by_name)
    return TreeNode(entries, rejected)


def outline(data: bytes, what: str = "tree node") -> list[tuple[bytes, str, object]]:
    """(name, type, chunk ids of a file | tree id of a directory | None) of each entry of a
    tree node, in name order: `decode` without its `Entry` objects, for a walk that needs
    only which blobs a subtree uses (a restore's check). Every check `decode` makes is made
    here, so the same bytes raise the same error, and the same entries are dropped."""
    doc = limits.unpack(data, what)
    limits.check_version(doc, what, VERSION)
    raw = doc.get("entries")
    if not isinstance(raw, list):
        raise FormatError(f"{what}: no entry list")
    out: list[tuple[bytes, str, object]] = []
    seen: set[bytes] = set()
    for m in raw:
        get, t = _typed(m, what)
        size = get("size", 0)
        if not (type(get("mode", 0)) is int and type(get("uid", 0)) is int and type(get("gid", 0)) is int
                and type(get("mtime", 0)) is int and type(get("ctime", 0)) is int and type(size) is int
                and type(get("ino", 0)) is int and type(get("nlink", 1)) is int and type(get("rdev", 0)) is int):
            raise _bad_int(m, what)
        if size < 0:
            raise FormatError(f"{what}: negative size")
        ref = _ref(get, t, what)
        if t == SYMLINK:
            ref = None  # a target names no blob
        name = get("name")
        if name_problem(name) is not None or name in seen:
            continue
        seen.add(name)
        out.append((name, t, ref))
    out.sort()
    return out

