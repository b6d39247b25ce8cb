"""`backup dir PATH...`: one snapshot of one or several paths, with tags and a host name.

One directory: the snapshot's tree is that directory's contents (as always). Several
paths, or one file: the tree's top holds one entry per path, named by its last
component (`backup dir /etc /srv/photos` -> `etc/`, `photos/`); two paths with the
same last component are refused. The record's `paths` lists them all, `tags` the
--tag values and `hostname` --host (default: this machine's name).

The paths come from the command line and from lists (`read_path_lists`): restic's
--files-from (one path or glob pattern a line, `#` comments), --files-from-verbatim
(lines as they are) and --files-from-raw (NUL-separated). A listed path that does not
exist is an error naming the list and the line, before anything is written.
"""

from __future__ import annotations

import glob
import os
import stat
import sys

from coldvault.errors import UserError
from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader.dirbackup import O_DIR, DirBackup, _entry, printable

GLOB_CHARS = ("*", "?", "[")


class PathArg(str):
    """A path to back up, which remembers where it was given ("list.txt, line 3") for messages."""

    origin: str = ""

    def __new__(cls, text: str, origin: str = ""):
        self = super().__new__(cls, text)
        self.origin = origin
        return self

    def named(self) -> str:
        shown = str(self) if self.isprintable() else repr(str(self))  # one line, even for a name with a newline
        return f"{self.origin}: {shown}" if self.origin else shown


def _read_list(name: str, stdin_used: list[bool]) -> bytes:
    if name == "-":
        if stdin_used[0]:
            raise UserError("standard input ('-') can be read as one list only")
        stdin_used[0] = True
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"cannot read the list of paths {name}: {exc.strerror}") from None


def _list_name(name: str) -> str:
    return "standard input" if name == "-" else name


def read_path_lists(files_from=(), verbatim=(), raw=()) -> list[PathArg]:
    """The paths that --files-from, --files-from-verbatim and --files-from-raw lists name, in
    that order (`-` is standard input).

    --files-from: each line trimmed of spaces; empty lines and lines starting with `#` are
    skipped; a line with `*`, `?` or `[` is a glob pattern (sorted matches, names starting
    with `.` included as restic's Go glob has them; one that matches nothing is an error). --files-from-verbatim: every non-empty line is a path, as it is.
    --files-from-raw: NUL-separated paths (empty ones skipped), for names with newlines."""
    stdin_used = [False]
    out: list[PathArg] = []
    for name in files_from:
        text = os.fsdecode(_read_list(name, stdin_used))
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            origin = f"{_list_name(name)}, line {n}"
            if any(c in line for c in GLOB_CHARS):
                hits = sorted(glob.glob(line, include_hidden=True))  # as Go's filepath.Glob, restic's
                if not hits:
                    raise UserError(f"{origin}: {line!r} matches nothing")
                out += [PathArg(h, origin) for h in hits]
            else:
                out.append(PathArg(line, origin))
    for name in verbatim:
        data = _read_list(name, stdin_used)
        for n, line in enumerate(data.split(b"\n"), 1):
            line = line.removesuffix(b"\r")
            if line:
                out.append(PathArg(os.fsdecode(line), f"{_list_name(name)}, line {n}"))
    for name in raw:
        data = _read_list(name, stdin_used)
        for n, item in enumerate(data.split(b"\0"), 1):
            if item:
                out.append(PathArg(os.fsdecode(item), f"{_list_name(name)}, path {n}"))
    return out


def check_paths(paths: list[str]) -> list[str]:
    """Absolute paths of existing directories and files, without repeats, with distinct last
    components when there are several (or one file); the first problem is a UserError
    naming the path (and the list and line it came from)."""
    out: list[str] = []
    given: list[str] = []
    taken: set[str] = set()
    for p in paths:
        a = os.path.abspath(p)
        named = p.named() if isinstance(p, PathArg) else p
        try:
            st = os.stat(a)
        except FileNotFoundError:
            raise UserError(f"{named} does not exist") from None
        except OSError as exc:
            raise UserError(f"{named}: {exc.strerror}") from None
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise UserError(f"{named} is neither a directory nor a regular file")
        if a not in taken:
            taken.add(a)
            out.append(a)
            given.append(named)
    if len(out) > 1 or not os.path.isdir(out[0]):
        seen: dict[str, str] = {}
        for named, a in zip(given, out):
            base = os.path.basename(a)
            if not base:
                raise UserError(f"{named}: the root directory can only be backed up on its own")
            if base in seen:
                raise UserError(f"{seen[base]} and {named} would both be {base} in the snapshot; back them up "
                                "as separate sources (--name), or one of their parents")
            seen[base] = named
    return out


class MultiDirBackup(DirBackup):
    def __init__(self, vault, roots: list[str], source: str, when_ns: int, parent, *, tags=(), host=None, **kw):
        super().__init__(vault, roots[0], source, when_ns, parent, **kw)
        self.roots = [os.path.abspath(r) for r in roots]
        self.tags = sorted(set(tags))
        self.host = host

    @property
    def _contents_only(self) -> bool:
        """One directory: the snapshot holds its contents, not the directory."""
        return len(self.roots) == 1 and os.path.isdir(self.roots[0])

    def _check_roots(self) -> None:
        for r in self.roots:
            if os.path.isdir(r):
                if not os.access(r, os.R_OK | os.X_OK):
                    raise UserError(f"cannot read directory {r}")
            elif not os.path.isfile(r):
                raise UserError(f"{r} is neither a directory nor a regular file")
            elif not os.access(r, os.R_OK):
                raise UserError(f"cannot read file {r}")

    def _walk(self, root: bytes, parent_tree):
        if self._contents_only:
            return super()._walk(root, parent_tree)
        parent = self.vault.load_tree(parent_tree) if parent_tree is not None else None
        old = {e.name: e for e in parent.entries} if parent is not None else {}
        entries = []
        for r in self.roots:
            path = os.fsencode(r)
            name = os.path.basename(path)
            try:
                st = os.stat(path)
            except OSError as exc:
                self._error(path, exc)
                continue
            prev = old.get(name)
            if stat.S_ISREG(st.st_mode):
                e = self._top_file(path, name, st, prev)
                if e is not None:
                    entries.append(e)
                continue
            sub = super()._walk(path, prev.tree if prev is not None and prev.type == tree.DIR else None)
            if sub is None:
                continue
            e = tree.Entry(name=name, type=tree.DIR, mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid,
                           mtime=st.st_mtime_ns, ctime=st.st_ctime_ns, size=0, ino=st.st_ino, nlink=st.st_nlink,
                           tree=sub)
            entries.append(e)
        if not entries:
            return None
        return self.session.store_tree(entries)

    def _top_file(self, path: bytes, name: bytes, st: os.stat_result, prev: tree.Entry | None) -> tree.Entry | None:
        """A file given as a path: read (unless unchanged since the parent snapshot) from its directory."""
        s = self.stats
        s.files += 1
        s.bytes_total += st.st_size
        e = _entry(name, st)
        if self._unchanged(prev, st):
            s.unchanged_files += 1
            e.chunks = prev.chunks
            return e
        dir_path = os.path.dirname(path)
        try:
            dir_fd = os.open(dir_path, O_DIR)
        except OSError as exc:
            self._error(path, exc)
            return None
        try:
            return e if self._read_file(dir_fd, dir_path, name, st, e) else None
        finally:
            os.close(dir_fd)

    def _record(self, root_tree) -> SnapshotRecord:
        rec = super()._record(root_tree)
        rec.paths = [printable(r) for r in self.roots]
        rec.tags = list(self.tags)
        if self.host:
            rec.hostname = self.host
        return rec
