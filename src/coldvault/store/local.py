"""A directory as a store: the embedded default, with a simulated cold tier.

Each object is a file at ``<root>/<name>``, written to a temporary file and
renamed into place, so a crash never leaves a partial object under its name.
An object written with a cold storage class gets a sidecar ``<name>.cold``
(JSON: storage class, restore request time, days, tier); reads are refused
until a restore was requested and `restore_delay` seconds have passed.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time

from coldvault import privatefiles
from coldvault.faults import crash_point
from coldvault.store.base import (
    HOT_CLASS,
    ArchivedError,
    Capabilities,
    NoSpaceError,
    NotFoundError,
    ObjectInfo,
    PermissionDeniedError,
    RestoreInProgressError,
    RestoreState,
    Store,
    StoreError,
    is_cold_class,
)
from coldvault.store.coldsim import ColdRecord

COLD_SUFFIX = ".cold"
TMP_PREFIX = privatefiles.TMP_PREFIX


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") for p in parts) or "\0" in name or name.endswith(COLD_SUFFIX):
        raise StoreError(f"invalid object name {name!r}", name)


# What a file system says when it cannot fsync a directory (some network and FUSE file
# systems): durability is then the file system's own, and the write goes on.
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EISDIR}


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise


class LocalStore(Store):
    def __init__(self, root: str, restore_delay: float = 0.0, fsync: bool = True):
        self.root = os.path.abspath(root)
        self.url = self.root
        self.restore_delay = restore_delay
        self.fsync = fsync
        self._lock = threading.Lock()  # guards sidecar read-modify-write

    def capabilities(self) -> Capabilities:
        return Capabilities(simulated_restore_delay=self.restore_delay, local_reads=True)

    def _path(self, name: str) -> str:
        _check_name(name)
        return os.path.join(self.root, *name.split("/"))

    def _os_error(self, exc: OSError, name: str) -> StoreError:
        if exc.errno == errno.ENOENT:
            return NotFoundError(f"object {name} does not exist", name)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return PermissionDeniedError(f"cannot access object {name}: {exc.strerror}", name)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "no space left" if exc.errno == errno.ENOSPC else "no space left (disk quota exceeded)"
            return NoSpaceError(f"{what} on the device of the vault at {self.root} (writing {name})", name,
                                hint="free some space (coldvault forget, then prune) or move the vault")
        return StoreError(f"cannot access object {name} in {self.root}: {exc.strerror}", name)

    def _cold(self, path: str) -> ColdRecord | None:
        try:
            with open(path + COLD_SUFFIX) as f:
                return ColdRecord.from_json(json.load(f))
        except FileNotFoundError:
            return None

    def _write_file(self, path: str, data: bytes) -> None:
        """Write, fsync, rename into place, fsync the directory: when put returns, the object
        survives a power loss, so the write order of docs/format.md section 8 holds on disk."""
        directory = os.path.dirname(path)
        privatefiles.makedirs(directory)
        tmp = os.path.join(directory, privatefiles.temp_name(os.path.basename(path)))
        try:
            with os.fdopen(privatefiles.create(tmp), "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            crash_point("store-rename")  # written, not yet in place: what a kill leaves mid-put
            os.replace(tmp, path)
            if self.fsync:
                self._sync_dirs(directory)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _sync_dirs(self, directory: str) -> None:
        """fsync `directory` and its parents up to the root: whoever created a directory,
        an entry in it is durable only once the directory's own entry is (an fsync of an
        unchanged directory costs next to nothing)."""
        d = directory
        while True:
            _fsync_dir(d)
            if d == self.root or not d.startswith(self.root):
                return
            d = os.path.dirname(d)

    def put(self, name, data, storage_class=None):
        path = self._path(name)
        try:
            if is_cold_class(storage_class):
                self._write_file(path + COLD_SUFFIX, json.dumps(ColdRecord(storage_class).to_json()).encode())
            else:
                try:
                    os.unlink(path + COLD_SUFFIX)
                except FileNotFoundError:
                    pass
            self._write_file(path, data)
        except OSError as exc:
            raise self._os_error(exc, name) from exc

    def get(self, name, start=0, length=None):
        path = self._path(name)
        cold = self._cold(path)
        if cold is not None:
            state = cold.state(self.restore_delay)
            if state.status == "in-progress":
                raise RestoreInProgressError(f"object {name} is being restored", name)
            if state.status != "restored":
                raise ArchivedError(f"object {name} is in {cold.storage_class} and must be restored first", name)
        try:
            with open(path, "rb") as f:
                if start:
                    f.seek(start)
                return f.read() if length is None else f.read(length)
        except OSError as exc:
            raise self._os_error(exc, name) from exc

    def head(self, name):
        path = self._path(name)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise self._os_error(exc, name) from exc
        cold = self._cold(path)
        if cold is None:
            return ObjectInfo(name, st.st_size, HOT_CLASS, RestoreState(), st.st_mtime)
        return ObjectInfo(name, st.st_size, cold.storage_class, cold.state(self.restore_delay), st.st_mtime)

    def list(self, prefix=""):
        # Walk only the directory the prefix points into.
        base, _, _ = prefix.rpartition("/")
        top = os.path.join(self.root, *base.split("/")) if base else self.root
        for dirpath, dirnames, filenames in os.walk(top):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for fn in filenames:
                if fn.startswith(TMP_PREFIX) or fn.endswith(COLD_SUFFIX):
                    continue
                name = rel + fn
                if not name.startswith(prefix):
                    continue
                try:
                    yield self.head(name)
                except NotFoundError:
                    continue  # deleted while listing

    def discard_partial_writes(self):
        """Temporary files of writes killed before their rename, and cold-class sidecars
        whose object never arrived (the sidecar is written first). locks/ is left alone:
        other processes write there even while prune holds the vault; so is a temporary
        file whose writer (the pid in its name) still runs, unless it is an hour old: a
        restore request (`thaw`, a mount) rewrites sidecars without holding the vault."""
        count = nbytes = 0
        now = time.time()
        for dirpath, dirnames, filenames in os.walk(self.root):
            if dirpath == self.root and "locks" in dirnames:
                dirnames.remove("locks")
            names = set(filenames)
            for fn in filenames:
                partial = fn.startswith(TMP_PREFIX) or (
                    fn.endswith(COLD_SUFFIX) and fn[: -len(COLD_SUFFIX)] not in names)
                if not partial:
                    continue
                path = os.path.join(dirpath, fn)
                try:
                    st = os.stat(path)
                    if fn.startswith(TMP_PREFIX) and not privatefiles.abandoned(fn, st.st_mtime, now):
                        continue
                    size = st.st_size
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self._os_error(exc, os.path.relpath(path, self.root)) from exc
                count += 1
                nbytes += size
        return count, nbytes

    def delete(self, name):
        """Remove the object; durable when this returns (prune deletes old indexes before
        the packs they name, and that order must survive a power loss too)."""
        path = self._path(name)
        removed = False
        for p in (path, path + COLD_SUFFIX):
            try:
                os.unlink(p)
                removed = True
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._os_error(exc, name) from exc
        if removed and self.fsync:
            try:
                _fsync_dir(os.path.dirname(path))
            except OSError as exc:
                raise self._os_error(exc, name) from exc

    def restore(self, name, days=7, tier="Bulk"):
        path = self._path(name)
        with self._lock:
            cold = self._cold(path)
            if cold is None:
                if not os.path.exists(path):
                    raise NotFoundError(f"object {name} does not exist", name)
                return False
            new = cold.request(days, tier, self.restore_delay)
            self._write_file(path + COLD_SUFFIX, json.dumps(cold.to_json()).encode())
            return new
