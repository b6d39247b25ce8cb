"""`backup dir PATH...`: one snapshot of one or several directories, with tags and a host name.

One PATH: the snapshot's tree is that directory's contents (as always). Several: the
tree's top holds one directory per PATH, named by its last component
(`backup dir /etc /srv/photos` -> `etc/`, `photos/`); two PATHs with the same last
component are refused. The record's `paths` lists them all, `tags` the --tag values
and `hostname` --host (default: this machine's name).
"""

from __future__ import annotations

import os

from coldvault.errors import UserError
from coldvault.index import tree
from coldvault.index.snapshot import SnapshotRecord
from coldvault.uploader.dirbackup import DirBackup, printable


def check_paths(paths: list[str]) -> list[str]:
    """Absolute, existing directories, with distinct last components when there are several."""
    out = []
    for p in paths:
        a = os.path.abspath(p)
        if not os.path.isdir(a):
            raise UserError(f"{p} is not a directory")
        out.append(a)
    if len(out) > 1:
        seen: dict[str, str] = {}
        for p, a in zip(paths, out):
            base = os.path.basename(a)
            if not base:
                raise UserError(f"{p}: the root directory can only be backed up on its own")
            if base in seen:
                raise UserError(f"{seen[base]} and {p} would both be {base}/ in the snapshot; back them up "
                                "as separate sources (--name), or one of their parents")
            seen[base] = p
    return out


class MultiDirBackup(DirBackup):
    def __init__(self, vault, roots: list[str], source: str, when_ns: int, parent, *, tags=(), host=None, **kw):
        super().__init__(vault, roots[0], source, when_ns, parent, **kw)
        self.roots = [os.path.abspath(r) for r in roots]
        self.tags = sorted(set(tags))
        self.host = host

    async def run(self) -> SnapshotRecord:
        for r in self.roots[1:]:
            if not os.path.isdir(r) or not os.access(r, os.R_OK | os.X_OK):
                raise UserError(f"cannot read directory {r}")
        return await super().run()

    def _walk(self, root: bytes, parent_tree):
        if len(self.roots) == 1:
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

    def _record(self, root_tree) -> SnapshotRecord:
        rec = super()._record(root_tree)
        rec.paths = [printable(r) for r in self.roots]
        rec.tags = list(self.tags)
        if self.host:
            rec.hostname = self.host
        return rec
